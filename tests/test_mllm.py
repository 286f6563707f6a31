"""The multimodal LLM: no-image equality with the bare LLM, image slots, label masking, errors, generation, LoRA.

Uses the real frozen SmolLM2 (from the cache; see test_llm.py) and a small random ViT as the encoder for the
plumbing; one test loads the shipped adapters (with the tiny CLIP) and asks it held-out questions
(the chapter 08 notebook and benchmarks/quality.py measure it properly). LoRA adds layers *inside* the LLM, so
tests that use it load their own copy of the LLM (`fresh_llm`) instead of the shared one.
"""

from __future__ import annotations

import random

import pytest
import torch

from minimal import shapes
from minimal.images import to_tensor
from minimal.llm import load_llm
from minimal.lora import lora_layers
from minimal.mllm import (
    IGNORE_INDEX,
    IMAGE_TOKEN_ID,
    MLLM,
    MLLM_ADAPTERS,
    MLLMConfig,
    build_mllm,
    load_adapters,
)
from minimal.recipes.mllm import korean_batch, make_batches, qa_turns
from minimal.recipes.mllm_eval import caption_score, eval_set, evaluate_captions, evaluate_vqa, normalise_answer
from minimal.shapes import canonical_caption
from minimal.vit import VisionTransformer, ViTConfig

pytestmark = pytest.mark.slow   # loads the frozen LLM or launches processes: `make unit` skips it


@pytest.fixture(scope="module")
def llm():
    return load_llm(verbose=False)


@pytest.fixture
def fresh_llm():
    return load_llm(verbose=False)


@pytest.fixture
def mllm(llm):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(width=32, layers=2, heads=2, mlp_hidden=64))
    return MLLM(vit, *llm, MLLMConfig(projector="mlp"))


def _images(n: int) -> torch.Tensor:
    rng = random.Random(n)
    return torch.stack([to_tensor(shapes.render(shapes.sample_scene(rng), 32, i)) for i in range(n)])


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
    scene = shapes.Scene((shapes.Obj("star", "red", "small", "right"), shapes.Obj("circle", "blue", "large", "left")))
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


def test_lora_trains_with_the_projector_and_the_shared_prefix_stays_exact(fresh_llm):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(width=32, layers=2, heads=2, mlp_hidden=64))
    mllm = MLLM(vit, *fresh_llm, MLLMConfig(lora_rank=2, lora_targets=["q_proj", "down_proj"]))
    counts = mllm.parameter_counts()
    assert counts["lora"] == 30 * 2 * ((576 + 576) + (1536 + 576)) and counts["trainable"] == counts["projector"] + \
        counts["lora"] and counts["trainable"] / counts["total"] < 0.01
    with torch.no_grad():
        for layer in lora_layers(mllm.llm):
            layer.lora_B.normal_(std=0.02)      # trained-looking adapters, so the prefix's keys depend on them
    batch = make_batches(mllm, 2, batch_size=3, seed=1, n_turns=2)(0)
    assert MLLM._shared_prefix(batch["input_ids"], batch["attention_mask"], batch["labels"]) > 0
    mllm.train()
    mllm.loss(batch).backward()
    grads = {n: p.grad.clone() for n, p in mllm.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("projector.") or n.endswith(("lora_A", "lora_B")) for n in grads)
    assert sum(n.endswith("lora_B") for n in grads) == 60
    # the same gradients through the plain HF forward (every row computes its own prefix, full logits)
    mllm.zero_grad(set_to_none=True)
    embeds = mllm.embed(batch["input_ids"], batch["images"])
    logits = mllm.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                                      ignore_index=IGNORE_INDEX).backward()
    for n, g in grads.items():
        err = float((mllm.get_parameter(n).grad - g).abs().max() / g.abs().max())
        assert err < 1e-4, (n, err)


def test_adapter_checkpoints_round_trip_strictly(fresh_llm, tmp_path):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(width=32, layers=2, heads=2, mlp_hidden=64))
    cfg = MLLMConfig(lora_rank=2, lora_targets=["v_proj"])
    mllm = MLLM(vit, *fresh_llm, cfg)
    with torch.no_grad():
        for layer in lora_layers(mllm.llm):
            layer.lora_B.normal_()
    path = mllm.save_adapters(tmp_path / "adapters.safetensors", {"name": "test"})
    loaded_cfg, state = load_adapters(path)
    assert loaded_cfg == cfg and set(state) == set(mllm.adapter_state_dict())
    assert sum(k.endswith("lora_B") for k in state) == 30 and all(
        k.startswith(("projector.", "llm.")) for k in state)
    other = MLLM(vit, *load_llm(verbose=False), cfg).load_adapters(state)
    for k, v in other.adapter_state_dict().items():
        assert torch.equal(v, state[k]), k
    del state["llm.model.layers.0.self_attn.v_proj.lora_A"]
    with pytest.raises(ValueError, match="missing.*layers.0.self_attn.v_proj.lora_A"):
        other.load_adapters(state)


def test_shipped_checkpoint_loads_strictly_and_answers_held_out_questions(fresh_llm):
    assert MLLM_ADAPTERS.is_file(), (f"the shipped adapters are missing: {MLLM_ADAPTERS} "
                                     "(python -m minimal.recipes.mllm)")
    cfg, state = load_adapters(MLLM_ADAPTERS)
    mllm = build_mllm(adapters_path=MLLM_ADAPTERS, llm=fresh_llm, verbose=False)  # strict: every key, every shape
    assert mllm.cfg == cfg and set(state) == set(mllm.adapter_state_dict())
    counts = mllm.parameter_counts()
    assert counts["trainable"] == counts["projector"] + counts["lora"] and counts["trainable"] / counts["total"] < 0.01
    mllm.eval()
    items = eval_set(40, seed=777, split="train")          # fresh images no training run drew
    vqa = evaluate_vqa(mllm, items)
    chance = sum({"colour": 1 / 8, "shape": 1 / 6, "count": 1 / 3, "exists": 1 / 2, "position": 1 / 5}[it["kind"]]
                 for it in items) / len(items)
    # the shipped MLLM answers nearly every question (its card: vqa 0.98 on 200 fresh images; chance here ~0.3)
    assert chance < 0.5 and vqa["accuracy"] >= 0.85, list(zip([it["question"] for it in items], vqa["answers"],
                                                              strict=True))
    assert all(len(a.split()) <= 2 for a in vqa["answers"])   # stage 2 taught one-word answers
    caps = evaluate_captions(mllm, items[:8])
    assert caps["caption_attr"] >= 0.85, caps["captions"]   # card: 0.999


def test_feature_layers_concatenate_and_normalise(llm):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(width=32, layers=2, heads=2, mlp_hidden=64))
    images = _images(2)
    one = MLLM(vit, *llm, MLLMConfig(feature_layer=-2))
    two = MLLM(vit, *llm, MLLMConfig(feature_layer=[1, 2], feature_norm=True, use_cls=True))
    assert one.image_features(images).shape == (2, 16, 32)
    feats = two.image_features(images)
    assert feats.shape == (2, 17, 64) and two.projector.net[0].in_features == 64 and two.n_image_tokens == 17
    torch.testing.assert_close(feats.pow(2).mean(-1), torch.ones(2, 17), rtol=0, atol=1e-3)   # unit RMS per token
    assert two.encode_images(images).shape == (2, 17, 576)


def test_long_conversations_stop_when_the_questions_run_out():
    scene = shapes.Scene((shapes.Obj("star", "red", "small", "right"),))
    turns = qa_turns(scene, random.Random(0), n_turns=50)
    assert len(turns) == len(shapes.questions(scene)) and len({q for q, _ in turns}) == len(turns)


def test_instruction_aware_image_tokens_depend_on_the_question(llm):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(width=32, layers=2, heads=2, mlp_hidden=64))
    mllm = MLLM(vit, *llm, MLLMConfig(instruction_aware=True, shuffle=2))
    assert mllm.n_image_tokens == 5                                   # 4 shuffled tokens + the summary token
    image = _images(1)
    a = mllm.collate([mllm.tokenize([("<image>\nwhat colour is the star?", None)])])
    b = mllm.collate([mllm.tokenize([("<image>\nhow many shapes are there?", None)])])
    with torch.no_grad():
        ea, eb = mllm.embed(a["input_ids"], image), mllm.embed(b["input_ids"], image)
    slots = a["input_ids"][0] == IMAGE_TOKEN_ID
    assert not torch.allclose(ea[0, slots], eb[0, (b["input_ids"][0] == IMAGE_TOKEN_ID)])
    batch = make_batches(mllm, 2, batch_size=2, seed=0, n_turns=3)(0)   # the image before every question
    assert batch["images"].shape[0] == int((batch["input_ids"] == IMAGE_TOKEN_ID).sum()) // 5 == 6
    assert torch.isfinite(mllm.loss(batch))


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_korean_batches_are_the_share_of_every_window(share):
    """Exactly `share` of any run of consecutive stage-2 batches is Korean (±1), so a few timed steps see the mix."""
    flags = [korean_batch(step, share) for step in range(400)]
    for start in (0, 7, 131):
        for length in (8, 16, 100):
            assert abs(sum(flags[start:start + length]) - share * length) <= 1
