"""Bad numbers never give a silent wrong answer: every numeric door of the package refuses NaN/inf inputs, wrong
dtypes, string numbers and out-of-range settings with an error that names the argument, what was expected and what
came — and a save killed midway leaves the previous checkpoint and its card loadable, with no debris left behind.

Each row: (id, a call, the error type, a regex the message must contain).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from minimal import retrieval, shapes, weights, zeroshot
from minimal.clip import CLIP, CLIPConfig
from minimal.input_projector import InputProjector
from minimal.lora import LoRALinear, add_lora
from minimal.losses import clip_loss
from minimal.modality_generator import GeneratorConfig, ModalityGenerator, load_modality_generator
from minimal.output_projector import OutputProjector, OutputProjectorConfig, TargetTable
from minimal.text import TextConfig
from minimal.tokenizer import shapes_tokenizer
from minimal.train import CKPT_NAME, load_train_state, make_optimizer, save_train_state, train
from minimal.transformer import Transformer
from minimal.vit import VisionTransformer, ViTConfig
from minimal.weights import load_state_dict_strict, module_config, read_card, save_safetensors, save_with_card

NAN, INF = float("nan"), float("inf")
VIT = dict(image_size=16, patch_size=8, width=32, layers=1, heads=2, mlp_hidden=64)
TEXT = dict(vocab_size=50, context_length=8, width=32, layers=1, heads=2, mlp_hidden=64)
GEN = dict(channels=[8, 16], groups=4, emb_dim=16, cond_dim=8)
PROJ = dict(hidden_size=32, layer=2, cond_dim=8, heads=2, width=16)

torch.manual_seed(0)
_VIT = VisionTransformer(ViTConfig(**VIT)).eval()
_CLIP = CLIP(CLIPConfig(vision=ViTConfig(**VIT), text=TextConfig(**TEXT), embed_dim=16)).eval()
_GEN = ModalityGenerator(GeneratorConfig(**GEN)).eval()
_OPROJ = OutputProjector(OutputProjectorConfig(**PROJ)).eval()
_IPROJ = InputProjector(32, 48, "mlp")


def bad(shape, rows=(1,), value=NAN):
    """A random tensor whose given rows (dim 0) each hold one `value`."""
    x = torch.randn(*shape)
    for r in rows:
        x[r].view(-1)[0] = value
    return x


def pixels(n=2):
    return torch.randn(n, 3, 16, 16)


def ids():
    return torch.tensor([[1, 5, 7, 3, 0, 0], [1, 9, 3, 0, 0, 0]])   # 3 = <eos>


def clip_with_scale(value):
    model = CLIP(CLIPConfig(vision=ViTConfig(**VIT), text=TextConfig(**TEXT), embed_dim=16)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(value)
    return model


def weights_ec(e=16, c=3):
    return torch.nn.functional.normalize(torch.randn(e, c), dim=0)


def table():
    t = TargetTable.__new__(TargetTable)   # the table without its 864 CLIP embeddings
    t.phrases, t.embeddings = ["a red circle", "a blue star"], torch.eye(2, 8)
    return t


# ---- NaN and inf flowing into answers and metrics -----------------------------------------------------------------

NON_FINITE = [
    ("vit_nan_pixels", lambda: _VIT(bad((2, 3, 16, 16))), ValueError,
     r"pixels contains NaN or inf values in 1 of 2 images"),
    ("vit_inf_pixels", lambda: _VIT(bad((3, 3, 16, 16), rows=(0, 2), value=INF)), ValueError,
     r"pixels .* 2 of 3 images \(first: image 0\)"),
    ("vit_attention_maps_nan", lambda: _VIT.attention_maps(bad((2, 3, 16, 16))), ValueError, "pixels contains NaN"),
    ("clip_encode_image_nan", lambda: _CLIP.encode_image(bad((2, 3, 16, 16))), ValueError, "pixels contains NaN"),
    ("clip_forward_nan_pixels", lambda: _CLIP(bad((2, 3, 16, 16)), ids()), ValueError, "pixels contains NaN"),
    ("clip_forward_huge_logit_scale", lambda: clip_with_scale(100.0)(pixels(), ids()), ValueError,
     r"logit_scale = 100 .*overflows"),
    ("clip_forward_nan_logit_scale", lambda: clip_with_scale(NAN)(pixels(), ids()), ValueError,
     r"logits are not finite: logit_scale = nan"),
    ("clip_loss_nan_rows", lambda: clip_loss(bad((4, 8), rows=(1, 3)), torch.randn(4, 8), 2.0), ValueError,
     r"image_embeds contains NaN or inf values in 2 of 4 rows \(first: row 1\)"),
    ("clip_loss_inf_text", lambda: clip_loss(torch.randn(3, 8), bad((3, 8), value=INF), 2.0), ValueError,
     r"text_embeds .* 1 of 3 rows"),
    ("clip_loss_nan_logit_scale", lambda: clip_loss(torch.randn(3, 8), torch.randn(3, 8), torch.tensor(NAN)),
     ValueError, r"logit_scale is nan"),
    ("clip_loss_string_logit_scale", lambda: clip_loss(torch.randn(3, 8), torch.randn(3, 8), "2.6"), ValueError,
     r"logit_scale must be a number .*got '2.6' \(str\)"),
    ("clip_loss_int_features", lambda: clip_loss(torch.ones(3, 8, dtype=torch.long), torch.randn(3, 8), 2.0),
     ValueError, r"image_embeds must be a float tensor, got dtype torch.int64"),
    ("predict_nan_image_row", lambda: zeroshot.predict(bad((4, 16), rows=(2,)), weights_ec()), ValueError,
     r"image embeddings contains NaN or inf values in 1 of 4 rows \(first: row 2\)"),
    ("predict_nan_weights", lambda: zeroshot.predict(torch.randn(4, 16), bad((16, 3), rows=(0,))), ValueError,
     r"classifier weights contains NaN"),
    ("logits_nan_scale", lambda: zeroshot.zero_shot_logits(torch.randn(4, 16), weights_ec(), scale=NAN),
     ValueError, r"scale must be a finite number > 0, got nan"),
    ("logits_negative_scale", lambda: zeroshot.zero_shot_logits(torch.randn(4, 16), weights_ec(), scale=-100.0),
     ValueError, r"scale must be a finite number > 0, got -100"),
    ("accuracy_nan_predictions", lambda: zeroshot.accuracy(torch.tensor([0.0, NAN, 1.0]), torch.tensor([0, 1, 1])),
     ValueError, r"predictions contains NaN or inf values in 1 of 3 entries \(first: entry 1\)"),
    ("accuracy_list", lambda: zeroshot.accuracy([0, 1], torch.tensor([0, 1])), ValueError,
     r"predictions must be a tensor, got list"),
    ("classifier_nan_image", lambda: zeroshot.ZeroShotClassifier(lambda p: bad((p.shape[0], 16)), weights_ec(),
                                                                  ["a", "b", "c"])(pixels(3)),
     ValueError, r"image embeddings contains NaN or inf values in 1 of 3 rows"),
    ("classifier_nan_weights", lambda: zeroshot.ZeroShotClassifier(lambda p: p, bad((16, 3), rows=(5,)),
                                                                    ["a", "b", "c"]),
     ValueError, r"classifier weights contains NaN .* 1 of 3 rows"),
    ("classifier_weights_nan_text", lambda: zeroshot.classifier_weights(lambda t: bad((len(t), 16)), ["red", "blue"]),
     ValueError, r"text embeddings of the prompts contains NaN"),
    ("embed_int_output", lambda: zeroshot.embed(lambda x: torch.ones(2, 4, dtype=torch.long), None), ValueError,
     r"embeddings must be float embeddings, got dtype torch.int64"),
    ("similarity_nan", lambda: retrieval.similarity(bad((3, 8)), torch.randn(5, 8)), ValueError,
     r"query embeddings contains NaN or inf values in 1 of 3 rows"),
    ("search_nan_gallery", lambda: retrieval.search(torch.randn(3, 8), bad((5, 8), rows=(4,)), k=2), ValueError,
     r"gallery embeddings contains NaN .* \(first: row 4\)"),
    ("recall_all_nan", lambda: retrieval.retrieval_metrics(torch.full((4, 8), NAN), torch.full((4, 8), NAN)),
     ValueError, r"text_embeds contains NaN or inf values in 4 of 4 rows"),
    ("recall_nan_images", lambda: retrieval.retrieval_metrics(bad((4, 8), rows=(0, 1)), torch.randn(4, 8), ks=(1,)),
     ValueError, r"image_embeds contains NaN or inf values in 2 of 4 rows"),
    ("recall_at_k_nan_scores", lambda: retrieval.recall_at_k(bad((3, 3)), torch.eye(3, dtype=torch.bool), 1),
     ValueError, r"scores contains NaN or inf values in 1 of 3 query rows"),
    ("recall_string_scores", lambda: retrieval.recall_at_k("scores", torch.eye(3, dtype=torch.bool), 1),
     ValueError, r"scores must be a 2-D"),
    ("recall_float_pairing", lambda: retrieval.retrieval_metrics(torch.randn(3, 8), torch.randn(3, 8), [0, 1.5, 2]),
     ValueError, r"text_to_image must hold integer image indices, got dtype torch.float32"),
    ("recall_no_ks", lambda: retrieval.retrieval_metrics(torch.randn(3, 8), torch.randn(3, 8), ks=()), ValueError,
     r"ks must be a non-empty list"),
    ("generator_nan_cond", lambda: _GEN.sample(bad((2, 8))), ValueError,
     r"cond contains NaN or inf values in 1 of 2 conditions"),
    ("generator_int_cond", lambda: _GEN.sample(torch.ones(2, 8, dtype=torch.long)), ValueError,
     r"cond must be a float tensor, got dtype torch.int64"),
    ("generator_nan_guidance", lambda: _GEN.sample(torch.randn(2, 8), steps=1, guidance=NAN), ValueError,
     r"guidance must be a finite number, got nan"),
    ("generator_string_guidance", lambda: _GEN.sample(torch.randn(2, 8), steps=1, guidance="2"), ValueError,
     r"guidance must be a finite number, got '2' \(str\)"),
    ("generator_float_steps", lambda: _GEN.sample(torch.randn(2, 8), steps=2.5), ValueError,
     r"steps must be a positive int, got 2.5 \(float\)"),
    ("generator_string_steps", lambda: _GEN.sample(torch.randn(2, 8), steps="10"), ValueError,
     r"steps must be a positive int, got '10' \(str\)"),
    ("output_projector_nan_states", lambda: _OPROJ(bad((2, 5, 32)), torch.ones(2, 5, dtype=torch.bool)), ValueError,
     r"states contains NaN or inf values in 1 of 2 requests"),
    ("output_projector_nan_padding", lambda: _OPROJ(bad((2, 5, 32), rows=(0,)),
                                                    torch.tensor([[False] * 4 + [True]] * 2)),
     ValueError, r"states contains NaN"),
    ("output_projector_empty_mask", lambda: _OPROJ(torch.randn(2, 5, 32), torch.tensor([[True] * 5, [False] * 5])),
     ValueError, r"mask marks no token in 1 of 2 requests \(first: request 1\)"),
    ("output_projector_int_mask", lambda: _OPROJ(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.long)),
     ValueError, r"mask must be a bool tensor of shape \(2, 5\), got torch.int64"),
    ("output_projector_int_states", lambda: _OPROJ(torch.ones(2, 5, 32, dtype=torch.long),
                                                   torch.ones(2, 5, dtype=torch.bool)),
     ValueError, r"states must be a float tensor, got dtype torch.int64"),
    ("target_table_nan_cond", lambda: table().nearest(bad((2, 8))), ValueError, r"cond contains NaN"),
    ("input_projector_nan_features", lambda: _IPROJ(bad((2, 16, 32))), ValueError,
     r"features contains NaN or inf values in 1 of 2 images"),
    ("input_projector_int_features", lambda: _IPROJ(torch.ones(2, 16, 32, dtype=torch.long)), ValueError,
     r"features must be a float tensor"),
]


@pytest.mark.parametrize("call, error, match", [r[1:] for r in NON_FINITE], ids=[r[0] for r in NON_FINITE])
def test_non_finite_and_non_float_inputs_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- configs and arguments: string numbers, signs, kinds ----------------------------------------------------------

CONFIGS = [
    ("vit_string_layers", lambda: ViTConfig(layers="4"), r"ViTConfig.layers must be a positive int, got '4' \(str\)"),
    ("vit_negative_eps", lambda: ViTConfig(eps=-1), r"ViTConfig.eps must be a finite number > 0, got -1"),
    ("vit_nan_eps", lambda: ViTConfig(eps=NAN), r"ViTConfig.eps must be a finite number > 0, got nan"),
    ("vit_string_eps", lambda: ViTConfig(eps="1e-5"), r"ViTConfig.eps must be a finite number > 0, got '1e-5'"),
    ("text_string_width", lambda: TextConfig(vocab_size=50, width="128"), r"TextConfig.width must be a positive int"),
    ("text_negative_pad", lambda: TextConfig(vocab_size=50, pad_token_id=-1),
     r"TextConfig.pad_token_id must be an int ≥ 0, got -1"),
    ("text_pad_outside_vocab", lambda: TextConfig(vocab_size=50, pad_token_id=60),
     r"pad_token_id=60 is outside the vocabulary \(size 50\)"),
    ("text_string_eos", lambda: TextConfig(vocab_size=50, eos_token_id="3"),
     r"TextConfig.eos_token_id must be an int ≥ 0, got '3' \(str\)"),
    ("text_negative_eps", lambda: TextConfig(vocab_size=50, eps=-1), r"TextConfig.eps must be a finite number > 0"),
    ("text_act_list", lambda: TextConfig(vocab_size=50, act=["gelu"]), r"unknown activation \['gelu'\]"),
    ("transformer_negative_eps", lambda: Transformer(32, 1, 2, 64, eps=-1.0), r"eps .* must be a finite number > 0"),
    ("clip_string_embed_dim", lambda: CLIPConfig(embed_dim="64"),
     r"CLIPConfig.embed_dim must be a positive int, got '64' \(str\)"),
    ("clip_bool_embed_dim", lambda: CLIPConfig(embed_dim=True),
     r"CLIPConfig.embed_dim must be a positive int, got True"),
    ("clip_inf_logit_scale_init", lambda: CLIPConfig(logit_scale_init=INF),
     r"CLIPConfig.logit_scale_init must be a finite number, got inf"),
    ("clip_vision_string_field", lambda: CLIPConfig(vision={"layers": "2"}),
     r"ViTConfig.layers must be a positive int"),
    ("clip_vision_unknown_field", lambda: CLIPConfig(vision={"depth": 2}), r"CLIPConfig.vision does not fit ViTConfig"),
    ("clip_text_wrong_type", lambda: CLIPConfig(text=[1]),
     r"CLIPConfig.text must be a TextConfig or its dict, got list"),
    ("clip_string_length_buckets", lambda: _CLIP.encode_text(ids(), length_buckets="2"),
     r"length_buckets must be a positive int, got '2'"),
    ("output_projector_string_width", lambda: OutputProjectorConfig(width="256"),
     r"OutputProjectorConfig.width must be a positive int, got '256' \(str\)"),
    ("output_projector_dropout", lambda: OutputProjectorConfig(dropout=1.5),
     r"OutputProjectorConfig.dropout must be a finite number ≥ 0 and < 1, got 1.5"),
    ("generator_string_cond_dim", lambda: GeneratorConfig(cond_dim="64"),
     r"GeneratorConfig.cond_dim must be a positive int, got '64'"),
    ("generator_string_channel", lambda: GeneratorConfig(channels=[24, "48"]),
     r"GeneratorConfig.channels\[1\] must be a positive int, got '48'"),
    ("generator_nan_cond_drop", lambda: GeneratorConfig(cond_drop=NAN),
     r"GeneratorConfig.cond_drop must be a finite number ≥ 0 and ≤ 1"),
    ("generator_odd_emb_dim", lambda: GeneratorConfig(emb_dim=15), r"GeneratorConfig.emb_dim must be even"),
    ("input_projector_string_dim", lambda: InputProjector("32", 48), r"vision_dim must be a positive int, got '32'"),
    ("input_projector_unknown_kind", lambda: InputProjector(32, 48, kind="conv"), r"kind must be one of .*got 'conv'"),
    ("input_projector_bool_shuffle", lambda: InputProjector(32, 48, shuffle=True),
     r"shuffle must be a positive int, got True \(bool\)"),
    ("input_projector_string_cond_dim", lambda: InputProjector(32, 48, cond_dim="8"),
     r"cond_dim must be an int ≥ 0, got '8'"),
    ("lora_bool_rank", lambda: LoRALinear(nn.Linear(4, 4), rank=True), r"rank must be a positive int, got True"),
    ("lora_string_alpha", lambda: LoRALinear(nn.Linear(4, 4), rank=2, alpha="16"),
     r"alpha must be a finite number > 0, got '16' \(str\)"),
    ("lora_nan_alpha", lambda: LoRALinear(nn.Linear(4, 4), rank=2, alpha=NAN), r"alpha must be a finite number > 0"),
    ("lora_string_targets", lambda: add_lora(nn.Sequential(nn.Linear(2, 2)), "q_proj", rank=2),
     r"targets must be a list of layer names"),
    ("encoders_zero_batch", lambda: zeroshot.encoders(_CLIP, lambda t: t, batch_size=0),
     r"batch_size must be a positive int, got 0"),
    ("train_string_steps", lambda: train(nn.Linear(2, 1), _loss, _batches, steps="10", progress=False, device="cpu"),
     r"steps must be an int ≥ 0, got '10' \(str\)"),
    ("train_nan_lr", lambda: train(nn.Linear(2, 1), _loss, _batches, steps=1, lr=NAN, progress=False, device="cpu"),
     r"lr must be a finite number ≥ 0, got nan"),
    ("train_nan_grad_clip", lambda: train(nn.Linear(2, 1), _loss, _batches, steps=1, grad_clip=NAN, progress=False,
                                          device="cpu"),
     r"grad_clip must be a finite number ≥ 0, got nan"),
    ("train_min_lr_ratio", lambda: train(nn.Linear(2, 1), _loss, _batches, steps=1, min_lr_ratio=2.0, progress=False,
                                         device="cpu"),
     r"min_lr_ratio must be a finite number ≥ 0 and ≤ 1, got 2.0"),
]


def _loss(model, batch):
    return ((model(batch) - 1) ** 2).mean()


def _batches(step):
    return torch.ones(4, 2) * (step + 1)


@pytest.mark.parametrize("call, match", [r[1:] for r in CONFIGS], ids=[r[0] for r in CONFIGS])
def test_bad_configs_and_arguments_name_the_field(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- checkpoints: NaN weights, integer tensors, foreign or corrupt files -------------------------------------------

def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _strict(**change):
    sd = {k: v.clone() for k, v in _net().state_dict().items()}
    sd.update(change)
    return load_state_dict_strict(_net(), sd)


def _saved_clip(tmp_path, key, value):
    path = _CLIP.save(tmp_path / "clip.safetensors")
    tensors, config = weights.load_safetensors(path)
    tensors[key] = value(tensors[key])
    return save_safetensors(path, tensors, config)


def _saved_generator(tmp_path, change=None, config=None):
    sd = {k: v.clone() for k, v in _GEN.state_dict().items()}
    if change:
        sd.update(change(sd))
    return save_with_card(tmp_path / "g.safetensors", sd, config or module_config(_GEN), {"name": "test"})


def _nan_first(t):
    t = t.clone()
    t.view(-1)[0] = NAN
    return t


def _train_state(tmp_path, change=None, drop=(), tensors_change=None):
    """A real train state, then (optionally) damaged: its metadata changed / keys dropped, its tensors changed."""
    model = nn.Linear(2, 1)
    train(model, _loss, _batches, steps=2, device="cpu", ckpt_dir=tmp_path, ckpt_every=2, progress=False)
    path = tmp_path / CKPT_NAME
    tensors, cfg = weights.load_safetensors(path)
    cfg = {k: v for k, v in {**cfg, **(change or {})}.items() if k not in drop}
    if tensors_change:
        tensors = tensors_change(tensors)
    save_safetensors(path, tensors, cfg)
    return tmp_path


def _resume(folder, model=None):
    return train(model or nn.Linear(2, 1), _loss, _batches, steps=4, device="cpu", ckpt_dir=folder, resume=True,
                 progress=False)


CHECKPOINTS = [
    ("strict_nan_weight", lambda tmp: _strict(**{"0.weight": _nan_first(_net()[0].weight)}),
     r"NaN or inf \(1\): 0.weight: 1 of 12 values"),
    ("strict_inf_bias", lambda tmp: _strict(**{"2.bias": torch.tensor([INF, 0.0])}), r"NaN or inf \(1\): 2.bias"),
    ("strict_int64_weight", lambda tmp: _strict(**{"0.weight": torch.ones(4, 3, dtype=torch.long)}),
     r"wrong dtype \(1\): 0.weight: given torch.int64 vs Sequential torch.float32"),
    ("strict_bool_bias", lambda tmp: _strict(**{"0.bias": torch.ones(4, dtype=torch.bool)}),
     r"wrong dtype \(1\): 0.bias: given torch.bool"),
    ("clip_load_nan_logit_scale", lambda tmp: CLIP.load(_saved_clip(tmp, "logit_scale", _nan_first)),
     r"does not fit CLIP from clip.safetensors:\n  NaN or inf \(1\): logit_scale"),
    ("clip_load_int_weight", lambda tmp: CLIP.load(_saved_clip(tmp, "visual_projection.weight", lambda t: t.long())),
     r"wrong dtype \(1\): visual_projection.weight: given torch.int64"),
    ("load_module_nan", lambda tmp: load_modality_generator(
        _saved_generator(tmp, lambda sd: {"null_cond": _nan_first(sd["null_cond"])})), r"NaN or inf \(1\): null_cond"),
    ("load_module_foreign_config", lambda tmp: load_modality_generator(
        _saved_generator(tmp, config={"config": {"hidden_size": 32, "layer": 2}})),
     r"g.safetensors does not hold a modality generator config: .*hidden_size"),
    ("load_module_string_field", lambda tmp: load_modality_generator(
        _saved_generator(tmp, config={"config": {**GEN, "cond_dim": "8"}})),
     r"does not hold a modality generator config: GeneratorConfig.cond_dim must be a positive int, got '8'"),
    ("card_not_json", lambda tmp: (_saved_generator(tmp), (tmp / "g.json").write_text("{oops"),
                                   read_card(tmp / "g.safetensors")), r"g.json is not valid JSON"),
    ("card_of_another_file", lambda tmp: (_saved_generator(tmp), (tmp / "g.json").write_text('{"file_bytes": 5}'),
                                          read_card(tmp / "g.safetensors")),
     r"describes a 5-byte checkpoint, .* do not belong together"),
    ("resume_foreign_checkpoint", lambda tmp: (_CLIP.save(tmp / CKPT_NAME), _resume(tmp)),
     r"train_state.safetensors is not a train state .*lacks \['step', 'history', 'param_groups', 'optim_state', "
     r"'rng'\] \(it holds \['clip'\]\)"),
    ("resume_missing_step", lambda tmp: _resume(_train_state(tmp, drop=("step",))),
     r"train_state.safetensors is not a train state .*lacks \['step'\]"),
    ("resume_string_step", lambda tmp: _resume(_train_state(tmp, change={"step": "2"})),
     r"train_state.safetensors is a corrupt train state: 'step' is a str, expected int"),
    ("resume_short_history", lambda tmp: _resume(_train_state(tmp, change={"history": [1.0]})),
     r"corrupt train state: 'history' holds 1 losses for step 2"),
    ("resume_not_safetensors", lambda tmp: ((tmp / CKPT_NAME).write_bytes(b"\x00" * 64), _resume(tmp)),
     r"train_state.safetensors is not a safetensors file"),
    ("resume_nan_weights", lambda tmp: _resume(_train_state(
        tmp, tensors_change=lambda t: {**t, "model.weight": _nan_first(t["model.weight"])})),
     r"NaN or inf \(1\): weight"),
    ("resume_nan_optimizer", lambda tmp: _resume(_train_state(
        tmp, tensors_change=lambda t: {**t, "optim.0.exp_avg": _nan_first(t["optim.0.exp_avg"])})),
     r"corrupt train state: optimizer tensor 'optim.0.exp_avg' holds NaN or inf"),
    ("resume_missing_rng", lambda tmp: _resume(_train_state(
        tmp, tensors_change=lambda t: {k: v for k, v in t.items() if k != "rng.torch"})),
     r"corrupt train state: tensor 'rng.torch' is missing"),
    ("load_train_state_other_optimizer", lambda tmp: load_train_state(
        _train_state(tmp) / CKPT_NAME, m := nn.Linear(2, 1),
        torch.optim.AdamW([{"params": [m.weight]}, {"params": [m.bias]}, {"params": [nn.Parameter(torch.ones(1))]}])),
     r"train_state.safetensors: its optimizer state has parameter groups of sizes \[1, 1\], "
     r"this optimizer \[1, 1, 1\]"),
]


@pytest.mark.parametrize("call, match", [r[1:] for r in CHECKPOINTS], ids=[r[0] for r in CHECKPOINTS])
def test_bad_checkpoints_are_refused_with_the_keys_and_the_file(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path)


def test_good_train_state_still_resumes(tmp_path):
    """(The checks above must not refuse an honest train state.)"""
    model = nn.Linear(2, 1)
    train(model, _loss, _batches, steps=2, device="cpu", ckpt_dir=tmp_path, ckpt_every=2, progress=False)
    assert len(_resume(tmp_path)) == 4
    opt = make_optimizer(model, 1e-3)
    save_train_state(tmp_path / "s.safetensors", model, opt, 0, [])
    assert load_train_state(tmp_path / "s.safetensors", model, opt) == (0, [])


# ---- a save killed midway ----------------------------------------------------------------------------------------

def _old_pair(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    old = {"w": torch.arange(6.0).reshape(2, 3)}
    path = save_with_card(folder / "m.safetensors", old, {"config": {"v": 1}}, {"name": "old"})
    return path, old


def _assert_old_pair_intact(path: Path, old: dict[str, torch.Tensor]) -> None:
    tensors, config = weights.load_safetensors(path)
    assert torch.equal(tensors["w"], old["w"]) and config == {"config": {"v": 1}}
    card = read_card(path)   # (also checks the card's file_bytes against the checkpoint)
    assert card["name"] == "old" and card["file_bytes"] == path.stat().st_size


@pytest.mark.parametrize("where", ["tensors", "card", "raise_in_block"])
def test_failed_save_leaves_previous_checkpoint_card_and_no_debris(tmp_path, monkeypatch, where):
    path, old = _old_pair(tmp_path)
    if where == "tensors":   # the writer dies half-way through the tensor file
        def half_write(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\x00" * 100)
            raise OSError("disk full")
        monkeypatch.setattr(weights, "save_file", half_write)
        with pytest.raises(OSError, match="disk full"):
            save_with_card(path, {"w": torch.ones(5)}, {}, {"name": "new"})
    elif where == "card":    # the card cannot be written after the tensors were
        with pytest.raises(TypeError):
            save_with_card(path, {"w": torch.ones(5)}, {}, {"name": object()})
    else:
        with pytest.raises(RuntimeError, match="killed"), weights.atomic_path(path) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            raise RuntimeError("killed")
    _assert_old_pair_intact(path, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


_KILLED_WRITER = """
import sys, torch
from minimal.weights import save_with_card
save_with_card(sys.argv[1], {"w": torch.zeros(64 * 1024 * 1024)}, {"config": {"v": 2}}, {"name": "new"})
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_save_killed_by_sigkill_keeps_the_previous_pair(tmp_path):
    path, old = _old_pair(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(weights.__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], env=env)
    deadline, debris = time.monotonic() + 120, []
    while not debris and proc.poll() is None and time.monotonic() < deadline:   # until the 256 MB file is
        debris = [p for p in tmp_path.rglob("*") if p.is_file()   # being written: any new file, at any depth
                  and (p.parent != tmp_path or p.name not in ("m.json", "m.safetensors"))]
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert debris and proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    _assert_old_pair_intact(path, old)   # killed mid-save: the previous checkpoint and card are untouched
    assert [p.name for p in tmp_path.glob(".m.safetensors.*.tmp")]   # what SIGKILL leaves: the dead writer's folder
    # the next save of that checkpoint removes the dead writer's temporary file
    save_with_card(path, old, {"config": {"v": 1}}, {"name": "old"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    _assert_old_pair_intact(path, old)


def test_live_writers_temporary_files_are_left_alone(tmp_path):
    """Only a dead process's temporary file is removed: one of a process still running (this one) stays."""
    path, _ = _old_pair(tmp_path)
    mine = tmp_path / f".m.safetensors.{os.getpid()}@{weights._host_tag()}.abcd1234.tmp"
    mine.mkdir()
    (mine / "m.safetensors").write_bytes(b"in progress")
    save_with_card(path, {"w": torch.ones(1)}, {}, {"name": "x"})
    assert mine.exists()
    assert json.loads((tmp_path / "m.json").read_text())["name"] == "x"


# ---- found by the lead's own battery after the first round ------------------------------------------------------

def _encode_text_of_a_tiny_clip():
    tok = shapes_tokenizer(n_scenes=20, vocab_size=400)
    clip = CLIP(CLIPConfig(vision=ViTConfig(width=16, layers=1, heads=2, mlp_hidden=32),
                           text=TextConfig(vocab_size=tok.vocab_size, width=16, layers=1, heads=2, mlp_hidden=32,
                                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                           embed_dim=8))
    return zeroshot.encoders(clip, tok)[1]


@pytest.mark.parametrize("call, error, match", [
    (lambda enc: zeroshot.classifier_weights(enc, ["Red", "red"]), ValueError, "duplicate labels"),
    (lambda enc: zeroshot.classifier_weights(enc, ["red circle", "red  circle "]), ValueError, "duplicate labels"),
    (lambda enc: zeroshot.classifier_weights(enc, ["red", 3]), ValueError, "labels must be strings"),
    (lambda enc: enc(None), TypeError, "list of strings"),
    (lambda enc: enc(["a red circle", None]), TypeError, "list of strings"),
    (lambda enc: shapes.zero_shot_set("colour", -1), ValueError, "n must be a non-negative int"),
    (lambda enc: shapes.zero_shot_set("colour", 2.5), ValueError, "n must be a non-negative int"),
], ids=["case-duplicates", "space-duplicates", "non-str-label", "texts-none", "texts-holds-none", "n-negative",
        "n-float"])
def test_labels_texts_and_counts_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call(_encode_text_of_a_tiny_clip())
