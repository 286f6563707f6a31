"""The Vision Transformer (ViT) — the **modality encoder** of a multimodal LLM (chapter 02, book §14.1.1).

Words come from a vocabulary; image patches do not. So instead of looking patches up in a table, the ViT cuts the
image into p×p patches (패치), flattens each, and maps it to a vector with one shared linear layer — the *patch
embedding* (패치 임베딩). A learned [CLS] vector is put in front, learned position embeddings (위치 임베딩) are
added, and the sequence goes through the same pre-LN transformer as text. The [CLS] output is the image's summary.

Input: float pixels (B, C, S, S), normalised (`images.normalize`). PIL images of any mode (L, RGBA, P, ...) are made
RGB by `images.to_tensor` (via `images.to_rgb`: transparency composited on white) — the model itself only checks and
refuses, with a ValueError naming the value: non-float (uint8/int) pixels, NaN or inf pixels, a wrong channel
count, a size not divisible by the patch size or not the configured size.

Layout and semantics follow Hugging Face's `CLIPVisionModel`, so its weights load by renaming
(`VisionTransformer.from_hf_state_dict`): norm before the transformer (`pre_layernorm`, HF's `pre_layrnorm`),
`last_hidden_state` *before* the final norm, and ``pooled = post_layernorm(last_hidden_state[:, 0])``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from einops import rearrange
from torch import nn

from .transformer import HFTower, LayerNorm, Transformer, get_activation, hf_tower_settings, rename_hf_tower
from .weights import check_finite, check_int, check_real, load_state_dict_strict


@dataclass
class ViTConfig:
    """Hyper-parameters of the ViT. Defaults: 32-px images, 8-px patches -> 16 patches + [CLS]."""

    image_size: int = 32
    patch_size: int = 8        # p: an image is cut into (image_size / p)^2 patches of p x p pixels
    channels: int = 3
    width: int = 128           # D: every patch becomes one D-dimensional token
    layers: int = 4            # transformer blocks
    heads: int = 4             # attention heads per block (D / heads dimensions each)
    mlp_hidden: int = 512      # the MLP's hidden width (4 D in CLIP)
    act: str = "quick_gelu"    # CLIP's x * sigmoid(1.702 x)
    eps: float = 1e-5          # LayerNorm epsilon

    def __post_init__(self):
        for name in ("image_size", "patch_size", "channels", "width", "layers", "heads", "mlp_hidden"):
            check_int(getattr(self, name), f"ViTConfig.{name}")
        check_real(self.eps, "ViTConfig.eps", low=0, low_open=True)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")
        get_activation(self.act)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf(cls, hf_config) -> ViTConfig:
        """From a HF `CLIPVisionConfig` (or its dict, or a `CLIPConfig`, whose `vision_config` is used)."""
        c = hf_tower_settings(hf_config, "vision_config")
        return cls(image_size=c["image_size"], patch_size=c["patch_size"], channels=c.get("num_channels", 3),
                   width=c["hidden_size"], layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
                   mlp_hidden=c["intermediate_size"], act=c.get("hidden_act", "quick_gelu"),
                   eps=c.get("layer_norm_eps", 1e-5))


@dataclass
class VisionOutput:
    """What the ViT returns.

    last_hidden_state: (B, 1+N, D), the transformer's output *before* `post_layernorm` (HF convention).
    pooled: (B, D) = post_layernorm(last_hidden_state[:, 0]) — the [CLS] summary CLIP projects.
    hidden_states: None, or a tuple of layers+1 tensors (B, 1+N, D): after `pre_layernorm`, then after each block.
    """

    last_hidden_state: torch.Tensor
    pooled: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


def patchify(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches and flatten each: (B, C, H, W) -> (B, N, p*p*C).

    Patches are ordered row by row (left to right, top to bottom), N = (H/p)·(W/p); inside a patch the values run
    over rows, columns, then channels — ``(p1 p2 c)``, the order `conv_weight_to_linear` assumes.
    """
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be (B, C, H, W), got shape {tuple(pixels.shape)}")
    H, W = pixels.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not divisible by patch size {patch_size}")
    return rearrange(pixels, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of `patchify` for square images: (B, N, p*p*C) -> (B, C, H, W)."""
    grid = int(round(patches.shape[1] ** 0.5))
    if grid * grid != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patches do not form a square grid")
    return rearrange(patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=grid, p1=patch_size, p2=patch_size,
                     c=channels)


def conv_weight_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """A stride-p Conv2d weight (D, C, p, p) -> the equal Linear weight (D, p*p*C) for `patchify`'s layout.

    A convolution with kernel = stride = p sees each patch exactly once and takes a dot product with each of its
    D filters: that *is* a linear layer on the flattened patch, once the filter is flattened in the same order.
    """
    if weight.ndim != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"expected a square conv weight (D, C, p, p), got {tuple(weight.shape)}")
    return rearrange(weight, "d c p1 p2 -> d (p1 p2 c)")


class VisionTransformer(HFTower, nn.Module):
    """ViT: patchify -> linear patch embedding -> [CLS] + positions -> pre-norm -> transformer -> pooled [CLS]."""

    config_class = ViTConfig   # what `from_hf` (HFTower) reads a HF CLIPVisionConfig into

    def __init__(self, cfg: ViTConfig | None = None):
        super().__init__()
        cfg = cfg or ViTConfig()
        self.cfg = cfg
        D, p, C = cfg.width, cfg.patch_size, cfg.channels
        # "Patches have no vocabulary": a Linear on the flattened patch is the tokeniser + embedding table of vision.
        self.patch_embed = nn.Linear(p * p * C, D, bias=False)
        scale = D ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(D))
        self.position_embedding = nn.Parameter(scale * torch.randn(1 + cfg.num_patches, D))
        self.pre_layernorm = LayerNorm(D, eps=cfg.eps)
        self.transformer = Transformer(D, cfg.layers, cfg.heads, cfg.mlp_hidden, cfg.act, cfg.eps)
        self.post_layernorm = LayerNorm(D, eps=cfg.eps)

    def check_pixels(self, pixels: torch.Tensor) -> None:
        """Raise a ValueError naming the problem unless `pixels` is a float (B, C, S, S) batch this model takes."""
        cfg = self.cfg
        if not isinstance(pixels, torch.Tensor):
            raise ValueError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}")
        if not pixels.is_floating_point():
            raise ValueError(f"pixels have dtype {pixels.dtype}; expected floats (e.g. images.to_tensor gives "
                             f"[0, 1] floats; then normalise). Integer/uint8 images must be converted first")
        if pixels.ndim != 4:
            hint = " (a single image? use pixels.unsqueeze(0))" if pixels.ndim == 3 else ""
            raise ValueError(f"pixels must be (B, C, H, W), got shape {tuple(pixels.shape)}{hint}")
        _, C, H, W = pixels.shape
        if C != cfg.channels:
            raise ValueError(f"pixels have {C} channels, the model expects {cfg.channels} "
                             f"(shape {tuple(pixels.shape)}; PIL images of any mode become RGB through "
                             "images.to_tensor / images.to_rgb)")
        if H % cfg.patch_size or W % cfg.patch_size:
            raise ValueError(f"image size {H}x{W} is not divisible by patch size {cfg.patch_size}")
        if (H, W) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"image size {H}x{W} does not match the model's {cfg.image_size}x{cfg.image_size} "
                             f"(its position embeddings are learned for that grid)")
        check_finite(pixels, "pixels", row="image")

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, S, S) -> token embeddings (B, 1+N, D): [CLS] + patch embeddings + positions (pre-norm)."""
        self.check_pixels(pixels)
        patches = patchify(pixels.to(self.patch_embed.weight.dtype), self.cfg.patch_size)  # (B, N, p*p*C)
        x = self.patch_embed(patches)                                                     # (B, N, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)                   # (B, 1, D)
        return torch.cat([cls, x], dim=1) + self.position_embedding.to(x.dtype)

    def forward(self, pixels: torch.Tensor, return_hidden: bool = False) -> VisionOutput:
        """pixels: float (B, C, S, S), normalised -> `VisionOutput` (see there for shapes)."""
        x = self.pre_layernorm(self.embed(pixels))
        x, hidden = self.transformer(x, return_hidden=True)
        pooled = self.post_layernorm(x[:, 0])
        return VisionOutput(x, pooled, hidden if return_hidden else None)

    @torch.no_grad()
    def attention_maps(self, pixels: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of every layer: (layers, B, heads, 1+N, 1+N); token 0 is [CLS]."""
        return self.transformer.attention_maps(self.pre_layernorm(self.embed(pixels)))

    @classmethod
    def from_hf_state_dict(cls, state_dict: dict, cfg: ViTConfig | None = None) -> VisionTransformer:
        """Build a ViT from a HF `CLIPVisionModel` state dict (keys with or without the ``vision_model.`` prefix).

        Every key must be used and every shape must match, or a ValueError lists what is missing, unexpected or
        mis-shaped. Without `cfg`, the config is inferred from the tensors' shapes (heads default to width // 64,
        act to quick_gelu — pass `cfg` or use `from_hf` when those differ).
        """
        sd = convert_hf_state_dict(state_dict)
        cfg = cfg or _infer_config(sd)
        cfg = cfg if isinstance(cfg, ViTConfig) else ViTConfig.from_hf(cfg)
        return load_state_dict_strict(cls(cfg), sd, what=f"VisionTransformer({cfg})")


# HF name (after stripping "vision_model.") -> ours. Encoder layers are renamed by prefix below.
_HF_RENAMES = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.position_embedding.weight": "position_embedding",
    "embeddings.patch_embedding.weight": "patch_embed.weight",
    "pre_layrnorm.weight": "pre_layernorm.weight",
    "pre_layrnorm.bias": "pre_layernorm.bias",
    "post_layernorm.weight": "post_layernorm.weight",
    "post_layernorm.bias": "post_layernorm.bias",
}


def convert_hf_state_dict(state_dict: dict, prefix: str = "vision_model.") -> dict[str, torch.Tensor]:
    """Rename a HF CLIP vision state dict into ours; the conv patch weight becomes a Linear weight.

    `prefix` is stripped when every key carries it (a `CLIPVisionModel` saved by older transformers, or the vision
    half of a `CLIPModel` dict that the caller split off). See `transformer.rename_hf_tower`.
    """
    return rename_hf_tower(state_dict, prefix, _HF_RENAMES,
                           convert={"embeddings.patch_embedding.weight": conv_weight_to_linear})


def _infer_config(sd: dict[str, torch.Tensor]) -> ViTConfig:
    """Guess a ViTConfig from converted tensors' shapes (used when no config is given)."""
    try:
        D, ppc = sd["patch_embed.weight"].shape
        n_pos = sd["position_embedding"].shape[0]
        layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.blocks."))
        hidden = sd["transformer.blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise ValueError(f"cannot infer a ViTConfig from this state dict (missing {e}); pass cfg") from e
    grid = int(round((n_pos - 1) ** 0.5))
    channels = 3
    p = int(round((ppc / channels) ** 0.5))
    return ViTConfig(image_size=grid * p, patch_size=p, channels=channels, width=D, layers=layers,
                     heads=max(1, D // 64), mlp_hidden=hidden)
