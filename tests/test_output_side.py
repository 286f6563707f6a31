"""The output side: requests, reading the LLM, the output projector, the flow-matching generator, the whole loop.

Everything here runs on tiny random models (a 3-layer Llama, a tiny CLIP, a tiny U-Net) so it takes seconds. The
shipped checkpoints (data/checkpoints/generator.*, output_projector.*) are part of the repository: a missing one
fails; they must be small, carry a card and load strictly, and the shipped generator must draw what the shipped
tiny CLIP reads. Only the output projector learns: its training leaves the LLM and the generator bit-identical,
and a backward pass through the whole loop gives gradients to the projector only.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
import transformers

from minimal import zeroshot
from minimal.accounting import freeze
from minimal.clip import CLIP, TINY_CLIP, CLIPConfig, load_tiny_clip
from minimal.hidden_states import llm_states
from minimal.llm import chat_prompt, pad_states
from minimal.modality_generator import (
    GENERATOR_PATH,
    GeneratorConfig,
    ModalityGenerator,
    load_modality_generator,
)
from minimal.output_projector import (
    OUTPUT_PROJECTOR_PATH,
    OutputProjector,
    OutputProjectorConfig,
    ProjectorOutput,
    TargetTable,
    load_output_projector,
    output_projector_loss,
)
from minimal.output_side import SYSTEM, OutputSide
from minimal.recipes.output_side import (
    GeneratorBatches,
    GeneratorRecipe,
    ProjectorRecipe,
    evaluate,
    targets_for,
    train_generator,
    train_output_projector,
)
from minimal.shapes import HELD_OUT_PAIRS, Obj, all_target_phrases, request_set, target_phrase
from minimal.shapes.requests import DRAW_TEMPLATES, QUESTIONS
from minimal.text import TextConfig
from minimal.tokenizer import shapes_tokenizer
from minimal.vit import ViTConfig
from minimal.weights import load_safetensors, module_config, read_card, save_safetensors, save_with_card


class CharTokenizer:
    """A stand-in for a chat tokenizer: one id per character, a plain-text chat template."""

    pad_token_id, eos_token_id, vocab_size = 0, 1, 260
    chat_template = "plain"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, return_tensors=None, **kwargs):   # add_/split_special_tokens: it has none
        ids = [2 + ord(c) % 250 for c in text]
        if return_tensors == "pt":
            return transformers.BatchEncoding({"input_ids": torch.tensor([ids]),
                                               "attention_mask": torch.ones(1, len(ids), dtype=torch.long)})
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + int(i) % 26) for i in ids if int(i) > 1)


@pytest.fixture(scope="module")
def tiny_llm():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return freeze(transformers.LlamaForCausalLM(cfg)), CharTokenizer()


@pytest.fixture(scope="module")
def tiny_clip():
    tok = shapes_tokenizer(n_scenes=50, vocab_size=400)
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(vision=ViTConfig(image_size=32, patch_size=8, width=16, layers=1, heads=2, mlp_hidden=32),
                           text=TextConfig(vocab_size=tok.vocab_size, context_length=32, width=16, layers=1, heads=2,
                                           mlp_hidden=32, eos_token_id=tok.eos_token_id,
                                           pad_token_id=tok.pad_token_id), embed_dim=8))
    return clip.eval(), tok


TINY_GEN = dict(channels=[8, 16], groups=4, emb_dim=16, cond_dim=8)
TINY_PROJ = dict(hidden_size=32, layer=2, cond_dim=8, heads=2, width=16)


def _side(tiny_llm) -> OutputSide:
    torch.manual_seed(0)
    llm, tok = tiny_llm
    return OutputSide(llm, tok, OutputProjector(OutputProjectorConfig(**TINY_PROJ)),
                      ModalityGenerator(GeneratorConfig(**TINY_GEN)), steps=2)


# ---- requests ---------------------------------------------------------------------------------------------------

def test_target_phrase_reads_like_a_caption():
    assert target_phrase(Obj("star", "blue", "small", "left")) == "a small blue star on the left"
    assert target_phrase(Obj("cross", "orange", "large", "top"), size=False, position=False) == "an orange cross"
    phrases = all_target_phrases()
    assert len(phrases) == 48 * 3 * 6 == len(set(phrases))


def test_requests_are_deterministic_balanced_and_split():
    train, again = request_set(80, 0, "train"), request_set(80, 0, "train")
    assert train == again
    assert sum(r.wants_image for r in train) == 40
    assert {r.lang for r in train} == {"en", "ko"}
    phrases = set(all_target_phrases())
    assert all(r.target in phrases for r in train if r.wants_image)
    assert all(r.obj is None and r.target is None for r in train if not r.wants_image)
    held = request_set(200, 1, "heldout")
    general = {q for qs in QUESTIONS.values() for q in qs}
    train_q = {r.text for r in request_set(400, 0, "train") if r.text in general}
    held_q = {r.text for r in held if r.text in general}
    assert train_q and held_q and not train_q & held_q
    for lang in ("en", "ko"):
        assert not set(DRAW_TEMPLATES[(lang, "train")]) & set(DRAW_TEMPLATES[(lang, "heldout")])
    # held-out colour-shape pairs are requested too: the generator was pretrained on every pair
    assert any((r.obj.colour, r.obj.shape) in HELD_OUT_PAIRS for r in held if r.wants_image)


def test_korean_requests_use_the_right_particle():
    ko = [r for r in request_set(200, 3, "train", langs=("ko",)) if r.wants_image]
    assert all(("를 " in r.text or "을 " in r.text) for r in ko if "그려 줘" in r.text and "그림을" not in r.text)
    assert any("별을" in r.text for r in ko) or any("원을" in r.text for r in ko)


def test_request_set_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        request_set(4, 0, "test")
    with pytest.raises(ValueError, match="langs"):
        request_set(4, 0, "train", langs=("fr",))


# ---- reading the LLM ----------------------------------------------------------------------------------------------

def test_llm_states_equal_the_full_forward_and_ignore_padding(tiny_llm):
    llm, tok = tiny_llm
    texts = ["draw a red circle", "what is 2+2?", "왼쪽에 작은 파란 별을 그려 줘"]   # three lengths: padding in a batch
    states = llm_states(llm, tok, texts, layer=2, batch_size=8, system=SYSTEM)
    for text, s in zip(texts, states, strict=True):
        ids = torch.tensor([tok(chat_prompt(tok, text, system=SYSTEM))["input_ids"]])
        with torch.no_grad():
            ref = llm(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
        assert s.shape == ref.shape
        torch.testing.assert_close(s, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="layer"):
        llm_states(llm, tok, texts, layer=4, system=SYSTEM)
    cache: dict = {}
    cached = llm_states(llm, tok, texts + texts[:1], layer=2, cache=cache, system=SYSTEM)
    assert len(cache) == 3 and all(torch.equal(a, b) for a, b in zip(cached, states + states[:1], strict=True))


# ---- output projector ---------------------------------------------------------------------------------------------

def test_projector_shapes_padding_and_errors():
    torch.manual_seed(0)
    proj = OutputProjector(OutputProjectorConfig(**TINY_PROJ)).eval()
    states = [torch.randn(5, 32), torch.randn(9, 32)]
    x, mask = pad_states(states)
    out = proj(x, mask)
    assert out.logit.shape == (2,) and out.cond.shape == (2, 8)
    torch.testing.assert_close(out.cond.norm(dim=-1), torch.ones(2))
    x2 = x.clone()
    x2[0, 5:] = 1e3                                   # garbage in the padding changes nothing
    torch.testing.assert_close(proj(x2, mask).cond, out.cond)
    with pytest.raises(ValueError, match="states"):
        proj(torch.randn(2, 5, 31), mask[:, :5])
    with pytest.raises(ValueError, match="mask"):
        proj(x, mask[:, :3])


def test_output_projector_loss_ignores_targets_of_questions():
    out = ProjectorOutput(torch.tensor([3.0, -3.0]), torch.nn.functional.normalize(torch.randn(2, 8), dim=-1))
    wants = torch.tensor([True, False])
    a = output_projector_loss(out, wants, torch.stack([out.cond[0], torch.randn(8)]))
    b = output_projector_loss(out, wants, torch.stack([out.cond[0], torch.randn(8)]))
    torch.testing.assert_close(a, b)


# ---- modality generator ---------------------------------------------------------------------------------------------

def test_generator_shapes_determinism_and_errors():
    torch.manual_seed(0)
    gen = ModalityGenerator(GeneratorConfig(**TINY_GEN))
    cond = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    loss = gen.loss(torch.rand(3, 3, 32, 32), cond)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    a = gen.sample(cond, steps=3, generator=torch.Generator().manual_seed(1))
    b = gen.sample(cond, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="cond"):
        gen.sample(torch.randn(3, 5))
    with pytest.raises(ValueError, match="steps"):
        gen.sample(cond, steps=0)


def test_generator_batches_are_deterministic_and_match_the_phrase(tiny_clip):
    table = TargetTable(*tiny_clip)
    batches = GeneratorBatches(table, batch=6, seed=0, cond_noise=0.0, mention=0.6)
    a, b = batches(3), batches(3)
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["cond"], b["cond"])
    assert a["image"].shape == (6, 3, 32, 32) and a["cond"].shape == (6, 8)
    # without noise every condition is exactly one phrase's embedding
    assert ((a["cond"] @ table.embeddings.T).max(-1).values > 0.9999).all()


def test_train_generator_returns_a_frozen_average_and_leaves_clip_alone(tiny_clip):
    clip, tok = tiny_clip
    clip_before = {k: v.clone() for k, v in clip.state_dict().items()}
    recipe = GeneratorRecipe(steps=3, batch=4, warmup=1, config={**asdict(GeneratorConfig()), **TINY_GEN})
    gen, history, timer = train_generator(recipe, clip, tok, progress=False)
    assert len(history) == 3 and timer.wall > 0 and timer.cpu > 0
    assert not gen.training and not any(p.requires_grad for p in gen.parameters())
    assert all(torch.equal(v, clip_before[k]) for k, v in clip.state_dict().items())


# ---- only the output projector trains -------------------------------------------------------------------------------

def test_only_the_output_projector_trains(tiny_llm, tiny_clip):
    llm, tok = tiny_llm
    side = _side(tiny_llm)
    llm_before = {k: v.clone() for k, v in llm.state_dict().items()}
    gen_before = {k: v.clone() for k, v in side.generator.state_dict().items()}
    recipe = ProjectorRecipe(n_train=16, steps=3, batch=8, warmup=1, config=TINY_PROJ)
    projector, history, _ = train_output_projector(recipe, llm, tok, TargetTable(*tiny_clip), progress=False)
    assert len(history) == 3
    torch.manual_seed(0)                                               # the recipe's initialisation
    fresh = OutputProjector(OutputProjectorConfig(**TINY_PROJ))
    assert any(not torch.equal(p, q) for p, q in zip(projector.parameters(), fresh.parameters(), strict=True))
    side.projector = projector
    side(["draw a red circle", "what is 2+2?"], max_new_tokens=2)       # the whole loop runs after training too
    for k, v in llm.state_dict().items():
        assert torch.equal(v, llm_before[k]), f"LLM parameter {k} changed"
    for k, v in side.generator.state_dict().items():
        assert torch.equal(v, gen_before[k]), f"generator parameter {k} changed"
    assert not any(p.requires_grad for p in llm.parameters())
    assert not any(p.requires_grad for p in side.generator.parameters())
    assert all(p.requires_grad for p in projector.parameters())
    # the last training step left gradients on the projector, and on nothing else
    assert all(p.grad is not None for p in projector.parameters())
    assert all(p.grad is None for p in llm.parameters())
    assert all(p.grad is None for p in side.generator.parameters())


def test_gradients_reach_only_the_output_projector(tiny_llm, tiny_clip):
    """Even with autograd on through the whole loop (LLM forward, projector, generator velocity), a backward pass
    gives gradients to the output projector's parameters only: the frozen parts are leaves that do not learn."""
    llm, tok = tiny_llm
    side = _side(tiny_llm)
    side.projector.train()
    table = TargetTable(*tiny_clip)
    requests = request_set(4, 0, "train")
    ids = [torch.tensor(tok(chat_prompt(tok, r.text, system=SYSTEM))["input_ids"]) for r in requests]
    states = [llm(input_ids=i[None], output_hidden_states=True).hidden_states[side.projector.cfg.layer][0]
              for i in ids]                                               # autograd on: no torch.no_grad here
    x, mask = pad_states(states)
    out = side.projector(x, mask)
    wants, targets = targets_for(requests, table)
    loss = output_projector_loss(out, wants, targets)
    t = torch.full((len(out.cond),), 0.5)
    loss = loss + side.generator(torch.zeros(len(out.cond), 3, 32, 32), t, out.cond).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in side.projector.parameters())
    assert side.projector.to_cond.weight.grad.abs().sum() > 0 and side.projector.decide.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.parameters())
    assert all(p.grad is None for p in side.generator.parameters())


# ---- the whole loop --------------------------------------------------------------------------------------------------

def test_output_side_routes_to_image_or_text(tiny_llm):
    side = _side(tiny_llm)
    texts = ["draw a small blue star on the left", "what is the capital of France?"]
    with torch.no_grad():
        side.projector.decide.bias.fill_(50.0)       # force "image" for everything
    replies = side(texts)
    assert all(r.wants_image and r.image.shape == (3, 32, 32) and r.text is None for r in replies)
    with torch.no_grad():
        side.projector.decide.bias.fill_(-50.0)      # force "text"
    reply = side(texts[1], max_new_tokens=3)
    assert not reply.wants_image and reply.image is None and isinstance(reply.text, str)


def test_evaluate_reports_every_figure(tiny_llm, tiny_clip):
    side = _side(tiny_llm)
    judge = zeroshot.task_classifier(*tiny_clip, "colour_shape")
    out = evaluate(side, judge, TargetTable(*tiny_clip), seed=5, n=8)
    for key in ("decision", "drawing", "judge_agreement", "generator_alone", "nearest_phrase"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["n_drawing_requests"] == 4 and set(out["decision_by_language"]) == {"en", "ko"}


# ---- checkpoints -----------------------------------------------------------------------------------------------------

def test_checkpoint_round_trip_is_strict(tmp_path):
    torch.manual_seed(0)
    gen = ModalityGenerator(GeneratorConfig(**TINY_GEN))
    path = save_with_card(tmp_path / "g.safetensors", gen.state_dict(), module_config(gen), {"name": "test", "seed": 0})
    loaded = load_modality_generator(path)
    assert not any(p.requires_grad for p in loaded.parameters())
    cond = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    torch.testing.assert_close(loaded.sample(cond, 2, generator=torch.Generator().manual_seed(0)),
                               gen.sample(cond, 2, generator=torch.Generator().manual_seed(0)))
    assert json.loads((tmp_path / "g.json").read_text())["file_bytes"] == path.stat().st_size
    projector = OutputProjector(OutputProjectorConfig(**TINY_PROJ))
    proj = save_with_card(tmp_path / "p.safetensors", projector.state_dict(), module_config(projector), {})
    with pytest.raises((ValueError, TypeError)):
        load_modality_generator(proj)
    with pytest.raises(ValueError, match="python -m minimal.recipes.output_side generator"):
        load_modality_generator(tmp_path / "missing.safetensors")


SHIPPED = [GENERATOR_PATH, OUTPUT_PROJECTOR_PATH]


@pytest.mark.parametrize("path", SHIPPED, ids=["generator", "output_projector"])
def test_shipped_checkpoints_are_small_carry_a_card_and_load_strictly(path, tmp_path):
    # shipped in the repository: a missing file is a failure, not a skip (retrain with the command in the message)
    assert path.is_file(), f"{path.name} missing: `python -m minimal.recipes.output_side {path.stem.split('_')[-1]}`"
    assert path.stat().st_size <= 5 * 2**20
    card = read_card(path)
    for key in ("config", "command", "seed", "metrics", "machine", "date", "train"):
        assert key in card, key
    assert card["file_bytes"] == path.stat().st_size
    load = load_modality_generator if path == GENERATOR_PATH else load_output_projector
    module = load(path)
    assert asdict(module.cfg) == card["config"]
    assert sum(p.numel() for p in module.parameters()) == card["parameters"]
    # strict: one tensor too many, or one too few, is refused (no silently random weights)
    tensors, config = load_safetensors(path)
    extra = save_safetensors(tmp_path / "extra.safetensors", {**tensors, "stray.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="stray"):
        load(extra)
    name = sorted(tensors)[0]
    short = save_safetensors(tmp_path / "short.safetensors", {k: v for k, v in tensors.items() if k != name},
                               config)
    with pytest.raises(ValueError, match="missing"):
        load(short)


def test_shipped_generator_draws_what_the_shipped_clip_reads():
    """The frozen generator, conditioned on the exact tiny-CLIP embedding of a phrase, draws that colour and shape."""
    assert TINY_CLIP.is_file() and GENERATOR_PATH.is_file()
    clip, tok = load_tiny_clip()
    gen = load_modality_generator()
    pairs = [("red", "circle"), ("blue", "star"), ("green", "cross"), ("yellow", "triangle"), ("purple", "square"),
             ("orange", "diamond"), *sorted(HELD_OUT_PAIRS)[:4]]
    objs = [Obj(s, c, "large", "centre") for c, s in pairs]
    encode_text = zeroshot.encoders(clip, tok)[1]
    cond = zeroshot.embed(encode_text, [target_phrase(o) for o in objs])     # "a large red circle in the centre"
    judge = zeroshot.task_classifier(clip, tok, "colour_shape")
    read = judge.names(gen.sample(cond, 10, 2.0, torch.Generator().manual_seed(0)))   # "red circle"
    want = [f"{c} {s}" for c, s in pairs]
    assert sum(r == w for r, w in zip(read, want, strict=True)) >= 9, list(zip(want, read, strict=True))
