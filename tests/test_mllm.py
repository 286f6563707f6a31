"""The multimodal LLM: no-image equality with the bare LLM, image slots, label masking, errors, generation.

Uses the real frozen SmolLM2 (from the cache; see test_llm.py) and a small random ViT as the encoder, so these
tests check the plumbing, not the trained checkpoint (the chapter 08 notebook and benchmarks/quality.py do that).
"""

from __future__ import annotations

import random

import pytest
import torch

from minimal import data
from minimal.llm import load_llm
from minimal.mllm import (
    IGNORE_INDEX,
    IMAGE_TOKEN_ID,
    MLLM,
    MLLMConfig,
    canonical_caption,
    caption_score,
    make_batches,
    normalise_answer,
    qa_turns,
)
from minimal.vit import VisionTransformer, ViTConfig


@pytest.fixture(scope="module")
def llm():
    return load_llm(verbose=False)


@pytest.fixture
def mllm(llm):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(width=32, layers=2, heads=2, mlp_hidden=64))
    return MLLM(vit, *llm, MLLMConfig(projector="mlp"))


def _images(n: int) -> torch.Tensor:
    rng = random.Random(n)
    return torch.stack([data.to_tensor(data.render(data.sample_scene(rng), 32, i)) for i in range(n)])


def test_without_image_logits_equal_the_bare_llm(mllm, llm):
    model, tokenizer = llm
    ids, _ = mllm.tokenize([("What is the capital of France?", None)])
    ids = torch.tensor([ids])
    assert (ids != IMAGE_TOKEN_ID).all()
    with torch.no_grad():
        ours = mllm(ids).logits
        theirs = model(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_image_features_land_exactly_at_the_placeholders(mllm):
    examples = [mllm.tokenize([("<image>\nwhat colour is the star?", "red")]),
                mllm.tokenize([("a longer question first, then <image> the picture", "blue")])]
    batch = mllm.collate(examples)
    images = _images(2)
    with torch.no_grad():
        embeds = mllm.embed(batch["input_ids"], images)
        tokens = mllm.encode_images(images)                      # (2, 16, 576)
        text = mllm.llm.get_input_embeddings()(batch["input_ids"].clamp(min=0))
    slots = batch["input_ids"] == IMAGE_TOKEN_ID
    assert slots.sum(1).tolist() == [16, 16]
    for b in range(2):
        torch.testing.assert_close(embeds[b, slots[b]], tokens[b], rtol=0, atol=0)
        torch.testing.assert_close(embeds[b, ~slots[b]], text[b, ~slots[b]], rtol=0, atol=0)
    # the slots are one contiguous block per image
    for b in range(2):
        where = slots[b].nonzero().flatten()
        assert (where == torch.arange(where[0], where[0] + 16)).all()


def test_only_answer_tokens_carry_labels(mllm):
    tok = mllm.tokenizer
    turns = [("<image>\nwhat colour is the circle?", "red"), ("how many shapes are there?", "two")]
    ids, labels = mllm.tokenize(turns)
    assert len(ids) == len(labels)
    labelled = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(labelled) == "red<|im_end|>two<|im_end|>"
    assert all(lab == IGNORE_INDEX for i, lab in zip(ids, labels, strict=True) if i == IMAGE_TOKEN_ID)
    assert all(lab == i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX)
    # padding carries no label, whichever side it is on
    for side in ("right", "left"):
        batch = mllm.collate([(ids, labels), mllm.tokenize([("<image>\nhi", "yes")])], padding_side=side)
        pad = batch["attention_mask"] == 0
        assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()


def test_placeholder_image_count_mismatch_is_a_clear_error(mllm):
    batch = mllm.collate([mllm.tokenize([("<image>\nwhat shape is on the left?", "star")])])
    with pytest.raises(ValueError, match="1 <image> placeholders .* but 2 images"):
        mllm.embed(batch["input_ids"], _images(2))
    with pytest.raises(ValueError, match="but 0 images"):
        mllm.embed(batch["input_ids"], None)
    two = mllm.collate([mllm.tokenize([("<image> and <image>: which is larger?", "left")])])
    with pytest.raises(ValueError, match="2 <image> placeholders .* but 1 images"):
        mllm.embed(two["input_ids"], _images(1))
    with pytest.raises(ValueError, match="placeholders"):
        mllm.generate(_images(2), ["no placeholder here", "<image> but two images"])


def test_loss_equals_hf_loss_on_full_logits(mllm):
    batch = make_batches(mllm, 2, batch_size=3, seed=1, n_turns=2)(0)
    with torch.no_grad():
        ours = mllm.loss(batch)
        embeds = mllm.embed(batch["input_ids"], batch["images"])
        logits = mllm.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                            ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_only_the_projector_trains(mllm):
    batch = make_batches(mllm, 1, batch_size=2, seed=0)(0)
    mllm.train()
    assert not mllm.llm.training and not mllm.vision.training
    mllm.loss(batch).backward()
    trained = {n for n, p in mllm.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith("projector.") for n in trained)
    counts = mllm.parameter_counts()
    assert counts["trainable"] == counts["projector"] and counts["projector"] / counts["total"] < 0.01


def test_batched_generation_equals_one_at_a_time(mllm):
    images = _images(2)
    prompts = ["what colour is it?", "is there a large red star in the picture at all?"]
    batched = mllm.generate(images, prompts, max_new_tokens=6)
    single = [mllm.chat(images[i], prompts[i], max_new_tokens=6) for i in range(2)]
    assert batched == single


def test_batches_are_deterministic_per_step(mllm):
    make = make_batches(mllm, 2, batch_size=2, seed=3)
    a, b, c = make(5), make(5), make(6)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["images"], b["images"])
    assert not torch.equal(a["images"], c["images"])


def test_caption_scoring_and_answers():
    scene = data.Scene((data.Obj("star", "red", "small", "right"), data.Obj("circle", "blue", "large", "left")))
    cap = canonical_caption(scene)
    assert cap == "a large blue circle on the left and a small red star on the right"   # reading order
    assert caption_score(cap, scene) == 1.0
    assert caption_score("a large blue circle on the left", scene) == 0.5                 # one object missing
    assert caption_score("a large blue circle on the left and a small red cross on the right", scene) == 5 / 6
    extra = cap + " and a small green square at the top"                                   # one object invented
    assert caption_score(extra, scene) == 6 / 9
    assert normalise_answer(" Red.") == "red" and normalise_answer("") == ""
    turns = qa_turns(scene, random.Random(0), n_turns=3)
    assert turns[0][0].startswith("<image>") and all("<image>" not in q for q, _ in turns[1:])
