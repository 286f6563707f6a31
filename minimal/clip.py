"""CLIP: two towers and a shared space (chapter 04, book §14.2.1–14.2.2).

An image goes through the ViT (`vit.py`), a caption through the text transformer (`text.py`); each tower's pooled
vector is projected by a bias-free linear map into one shared embedding space (공유 임베딩 공간) of size
`embed_dim`. Training (`losses.clip_loss`) pulls each image towards its own caption and pushes it away from the
other captions of the batch; the learnable `logit_scale` (log inverse temperature, 온도) decides how peaked the
softmax over the batch is.

    model = CLIP(CLIPConfig(vision=ViTConfig(), text=TextConfig(vocab_size=tok.vocab_size)))
    img = model.encode_image(pixels)          # (B, E), un-normalised
    txt = model.encode_text(tok(captions))    # (B, E), un-normalised
    out = model(pixels, ids)                  # logits_per_image (B, B) = exp(logit_scale) · cos

Weights: `CLIP.save(path)` / `CLIP.load(path)` — one safetensors file with the config as JSON inside (no pickle,
nothing else accepted). `CLIP.from_pretrained(dir_or_hub_id)` reads a Hugging Face `CLIPModel` (the output of
`save_pretrained`, or a hub id when online) and gives the same features and logits as HF. `load_tiny_clip()`
returns the course's shipped tiny CLIP and its tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from torch import nn
from transformers import CLIPConfig as HFCLIPConfig

from . import env
from .losses import LOGIT_SCALE_MAX
from .text import TextConfig, TextTransformer
from .text import convert_hf_state_dict as convert_hf_text
from .tokenizer import Tokenizer
from .transformer import stack_qkv
from .vit import VisionTransformer, ViTConfig
from .vit import convert_hf_state_dict as convert_hf_vision
from .weights import (
    CHECKPOINT_DIR,
    can_read_back,
    check_finite,
    check_int,
    check_real,
    load_safetensors,
    load_state_dict_strict,
    save_safetensors,
)

TINY_CLIP = CHECKPOINT_DIR / "tiny_clip.safetensors"
TINY_CLIP_TOKENIZER = CHECKPOINT_DIR / "tiny_clip.tokenizer.json"


@dataclass
class CLIPConfig:
    """Both towers' configs, the shared embedding size and the initial log inverse temperature."""

    vision: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig(vocab_size=512))
    embed_dim: int = 64
    logit_scale_init: float = math.log(1 / 0.07)

    def __post_init__(self):
        for name, cls in (("vision", ViTConfig), ("text", TextConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                try:
                    value = cls(**value)
                except TypeError as e:   # an unknown or missing field
                    raise ValueError(f"CLIPConfig.{name} does not fit {cls.__name__}: {e}") from e
                setattr(self, name, value)
            if not isinstance(value, cls):
                raise ValueError(f"CLIPConfig.{name} must be a {cls.__name__} or its dict, got "
                                 f"{type(value).__name__}")
        check_int(self.embed_dim, "CLIPConfig.embed_dim")
        check_real(self.logit_scale_init, "CLIPConfig.logit_scale_init")

    def to_dict(self) -> dict:
        return {"vision": self.vision.to_dict(), "text": self.text.to_dict(), "embed_dim": self.embed_dim,
                "logit_scale_init": self.logit_scale_init}

    @classmethod
    def from_dict(cls, d: dict) -> CLIPConfig:
        known = {"vision", "text", "embed_dim", "logit_scale_init"}
        if not isinstance(d, dict) or not {"vision", "text"} <= set(d) or set(d) - known:
            raise ValueError(f"not a CLIP config (expected keys {sorted(known)}), got "
                             f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
        return cls(**d)

    @classmethod
    def from_hf(cls, hf_config) -> CLIPConfig:
        """From a HF `CLIPConfig` (object or dict with `text_config`, `vision_config`, `projection_dim`)."""
        c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        return cls(vision=ViTConfig.from_hf(c["vision_config"]), text=TextConfig.from_hf(c["text_config"]),
                   embed_dim=c.get("projection_dim", 512), logit_scale_init=c.get("logit_scale_init_value", 2.6592))


@dataclass
class CLIPOutput:
    """logits_per_image (B_img, B_txt) = exp(logit_scale) · cos(image, text); logits_per_text is its transpose;
    image_embeds (B_img, E) and text_embeds (B_txt, E) are L2-normalised (as HF returns them)."""

    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor


class CLIP(nn.Module):
    """ViT + text transformer + bias-free projections into a shared space + learnable `logit_scale`."""

    def __init__(self, cfg: CLIPConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CLIPConfig()
        self.visual = VisionTransformer(cfg.vision)
        self.text = TextTransformer(cfg.text)
        self.visual_projection = nn.Linear(cfg.vision.width, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.width, cfg.embed_dim, bias=False)
        nn.init.normal_(self.visual_projection.weight, std=cfg.vision.width ** -0.5)
        nn.init.normal_(self.text_projection.weight, std=cfg.text.width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S) float, normalised -> image embeddings (B, E), not normalised."""
        return self.visual_projection(self.visual(pixels).pooled)

    def encode_text(self, input_ids: torch.Tensor, length_buckets: int = 1) -> torch.Tensor:
        """input_ids (B, T) integer token ids (with end-of-text) -> text embeddings (B, E), not normalised.

        length_buckets > 1: sort the captions by length, split them into that many groups and run each group cut
        to its own longest caption. A batch is padded to its longest caption, and with a causal mask nothing after
        <eos> changes the pooled vector, so the padding is pure waste; with mixed lengths this saves a good part
        of the text tower's work. Same result up to float rounding.
        """
        check_int(length_buckets, "length_buckets")
        if length_buckets <= 1 or input_ids.shape[0] <= 1:
            return self.text_projection(self.text(input_ids).pooled)
        self.text.check_ids(input_ids)
        lengths = self.text.eos_positions(input_ids) + 1
        out: torch.Tensor | None = None
        for idx in lengths.argsort().chunk(length_buckets):
            emb = self.text_projection(self.text(input_ids[idx, : int(lengths[idx].max())]).pooled)
            out = emb.new_empty(input_ids.shape[0], emb.shape[1]) if out is None else out
            out[idx] = emb
        assert out is not None   # lengths has one entry per row, so some bucket ran
        return out

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, length_buckets: int = 1) -> CLIPOutput:
        """Similarity logits of every image against every caption (`length_buckets`: see `encode_text`).

        The scale is exp(logit_scale) *unclamped*, as in HF and OpenAI's code (which clamp the parameter during
        training instead); `losses.clip_loss` clamps it at ln 100. A `logit_scale` so large that the logits stop
        being finite numbers (exp overflows past ≈ 88) is a ValueError, never a table of NaN.
        """
        img = nn.functional.normalize(self.encode_image(pixels), dim=-1)
        txt = nn.functional.normalize(self.encode_text(input_ids, length_buckets), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.T
        if can_read_back(logits) and not bool(torch.isfinite(logits).all()):
            check_finite(img, "image embeddings", row="image")
            check_finite(txt, "text embeddings", row="caption")
            raise ValueError(f"CLIP logits are not finite: logit_scale = {float(self.logit_scale.detach()):g} and "
                             f"exp(logit_scale) overflows (training clamps it at ln 100 = {LOGIT_SCALE_MAX:.3f}); "
                             "clamp model.logit_scale or load sane weights")
        return CLIPOutput(logits, logits.T, img, txt)

    # ---- our own checkpoints ----------------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write weights + config into one `.safetensors` file (config JSON in its metadata); `extra` (JSON-able)
        is stored alongside the config, e.g. training metadata."""
        return save_safetensors(path, self.state_dict(), {"clip": self.cfg.to_dict(), **(extra or {})})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CLIP:
        """Read a file written by `save`. Anything else — another format, a truncated file, a file without our
        config, a state dict with missing / unexpected / mis-shaped keys — is a ValueError saying which."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: CLIP checkpoints are .safetensors files (no pickle); got {path.suffix!r}")
        tensors, config = load_safetensors(path)
        if "clip" not in config:
            raise ValueError(f"{path} has no CLIP config in its metadata; it was not written by CLIP.save "
                             "(a HF directory? use CLIP.from_pretrained)")
        model = cls(CLIPConfig.from_dict(config["clip"]))
        # files written before the q/k/v projections were stacked into one `qkv_proj` hold three; stack them
        load_state_dict_strict(model, stack_qkv(tensors), what=f"CLIP from {path.name}")
        return model.to(device).eval()

    # ---- Hugging Face checkpoints ------------------------------------------------------------------------------

    @classmethod
    def from_hf_state_dict(cls, state_dict: dict[str, torch.Tensor], cfg: CLIPConfig) -> CLIP:
        """Build from a HF `CLIPModel` state dict; every key must be used, every shape must match."""
        vision = {k: v for k, v in state_dict.items() if k.startswith("vision_model.")}
        text = {k: v for k, v in state_dict.items() if k.startswith("text_model.")}
        rest = {k: v for k, v in state_dict.items() if k not in vision and k not in text}
        ours = {f"visual.{k}": v for k, v in convert_hf_vision(vision).items()}
        ours |= {f"text.{k}": v for k, v in convert_hf_text(text).items()}
        ours |= rest  # visual_projection.weight, text_projection.weight, logit_scale: same names as ours
        model = cls(cfg)
        return load_state_dict_strict(model, ours, what="CLIP (from a HF CLIPModel)")

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str | torch.device = "cpu") -> CLIP:
        """Load a HF `CLIPModel`: a local directory written by `save_pretrained`, or (online) a hub id such as
        "openai/clip-vit-base-patch32". Reads `config.json` and the safetensors weights (single or sharded);
        pickle-only checkpoints (`pytorch_model.bin`) are refused."""
        path = Path(path_or_id)
        if not path.is_dir():
            path = _download(str(path_or_id))
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json; expected a HF CLIPModel directory (save_pretrained)")
        hf_cfg = HFCLIPConfig.from_pretrained(str(path))
        files = sorted(path.glob("*.safetensors"))
        if not files:
            other = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
            raise ValueError(f"{path} has no .safetensors weights" + (f" (found {other}: pickle files are refused)"
                                                                       if other else ""))
        state_dict: dict[str, torch.Tensor] = {}
        for f in files:
            state_dict.update(load_safetensors(f)[0])
        return cls.from_hf_state_dict(state_dict, CLIPConfig.from_hf(hf_cfg)).to(device).eval()


def _download(hub_id: str) -> Path:
    """Fetch config + safetensors weights of a hub model; a clear error offline or for a bad id."""
    if "/" not in hub_id or not env.is_online():
        raise ValueError(f"{hub_id!r} is not a local directory, and "
                         + ("we are offline, so it cannot be fetched from the hub" if "/" in hub_id
                            else "does not look like a hub id (owner/name)"))
    return Path(snapshot_download(hub_id, allow_patterns=["config.json", "*.safetensors",
                                                          "model.safetensors.index.json"]))


def load_tiny_clip(path: str | Path = TINY_CLIP, device: str | torch.device = "cpu"):
    """The course's shipped tiny CLIP (trained on the Shapes world) and its tokenizer -> (model, tokenizer).

    The tokenizer lives next to the weights as ``<stem>.tokenizer.json``; the model is returned in eval mode.
    Images must be prepared as in training: ``images.normalize(images.to_tensor(img))``, 32×32.
    """
    path = Path(path)
    tok_path = path.with_name(path.name.replace(".safetensors", ".tokenizer.json"))
    if not path.is_file():
        raise ValueError(f"no tiny CLIP checkpoint at {path}; run `make checkpoints` (python -m minimal.recipes.clip) "
                         "to train one")
    if not tok_path.is_file():
        raise ValueError(f"the tokenizer {tok_path.name} is missing next to {path}")
    model = CLIP.load(path, device)
    tokenizer = Tokenizer.load(tok_path)
    if tokenizer.vocab_size != model.cfg.text.vocab_size:
        raise ValueError(f"tokenizer {tok_path.name} has {tokenizer.vocab_size} tokens, the model expects "
                         f"{model.cfg.text.vocab_size}")
    return model, tokenizer
