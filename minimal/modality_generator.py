"""The modality generator (모달리티 생성기, frozen — "ice"; chapter 09, book §14.1.1, §14.3).

A pretrained image generator that draws from a conditioning vector. Ours is conditioned on the tiny CLIP's
*text-embedding* space (chapter 04): it learned to draw from the embedding of a caption, the way DALL·E 2
("unCLIP") decodes images from CLIP embeddings. It is a tiny conditional **flow-matching** model (rectified flow, a
close cousin of diffusion): it starts from noise and follows a learned velocity field to an image in a few Euler
steps; with one step it collapses to a regression decoder's blurry average, which is the comparison chapter 09
measures. It is trained once (`python -m minimal.recipes.output_side generator`), then frozen and shipped.

    generator = load_modality_generator()                   # frozen
    images = generator.sample(cond, steps=10, guidance=2.0) # cond (B, 64) -> (B, 3, 32, 32) in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .accounting import freeze
from .weights import CHECKPOINT_DIR, check_finite, check_floating, check_int, check_real, load_module

GENERATOR_PATH = CHECKPOINT_DIR / "generator.safetensors"


# The sampler's defaults (chapter 09 measures steps x guidance). With the shipped generator, guidance 2, 3 and 4 draw
# equally well (0.948-0.958 of held-out requests on world seeds 999 and 31); a generator trained half as long was
# helped by 4 (0.85 against 0.805 at 2).
SAMPLE_STEPS = 10
GUIDANCE = 2.0


@dataclass
class GeneratorConfig:
    """A U-Net velocity field v(x_t, t, c) over image_size² RGB images, conditioned on a `cond_dim` vector."""

    image_size: int = 32
    cond_dim: int = 64
    channels: list[int] = field(default_factory=lambda: [24, 48, 96])
    patch: int = 2              # pixel-unshuffle 2×2 cells into 12 channels first: 4× less work at full resolution
    emb_dim: int = 128
    groups: int = 8
    cond_drop: float = 0.1      # share of training examples with the condition dropped (classifier-free guidance)

    def __post_init__(self):
        for name in ("image_size", "cond_dim", "patch", "emb_dim", "groups"):
            check_int(getattr(self, name), f"GeneratorConfig.{name}")
        if not isinstance(self.channels, (list, tuple)) or not self.channels:
            raise ValueError(f"GeneratorConfig.channels must be a non-empty list of ints, got {self.channels!r}")
        for i, c in enumerate(self.channels):
            check_int(c, f"GeneratorConfig.channels[{i}]")
            if c % self.groups:
                raise ValueError(f"GeneratorConfig.channels[{i}]={c} is not divisible by groups={self.groups}")
        if self.emb_dim % 2:
            raise ValueError(f"GeneratorConfig.emb_dim must be even (sine and cosine halves), got {self.emb_dim}")
        if self.image_size % self.patch:
            raise ValueError(f"GeneratorConfig.image_size={self.image_size} is not divisible by patch={self.patch}")
        check_real(self.cond_drop, "GeneratorConfig.cond_drop", low=0, high=1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: (B,) -> (B, dim) (t is scaled to [0, 1000) as diffusion steps are)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResBlock(nn.Module):
    """Norm → SiLU → conv → FiLM by the embedding → norm → SiLU → conv, plus a skip: (B,C,H,W) -> (B,C',H,W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)   # each block starts as the identity: a deep net trains from step one
        nn.init.zeros_(self.conv2.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class ModalityGenerator(nn.Module):
    """Draws 32-px Shapes-world images from a conditioning vector (the tiny CLIP text-embedding space).

    Flow matching (rectified flow): x_t = (1 − t)·noise + t·image, and the network learns the velocity
    image − noise. Sampling integrates dx/dt = v(x, t, c) from t = 0 (noise) to t = 1 (image) with Euler steps.
    """

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        ch, e, g, p = cfg.channels, cfg.emb_dim, cfg.groups, cfg.patch
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.cond_mlp = nn.Sequential(nn.Linear(cfg.cond_dim, e), nn.SiLU(), nn.Linear(e, e))
        self.null_cond = nn.Parameter(torch.zeros(cfg.cond_dim))   # "no condition", for classifier-free guidance
        self.stem = nn.Sequential(nn.PixelUnshuffle(p), nn.Conv2d(3 * p * p, ch[0], 3, padding=1))
        self.down = nn.ModuleList([ResBlock(ch[max(i - 1, 0)], c, e, g) for i, c in enumerate(ch)])
        self.downsample = nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1) for c in ch[:-1]])
        self.mid = ResBlock(ch[-1], ch[-1], e, g)
        self.up = nn.ModuleList([ResBlock(ch[min(i + 1, len(ch) - 1)] + ch[i], ch[i], e, g)
                                 for i in reversed(range(len(ch)))])
        self.out_norm = nn.GroupNorm(g, ch[0])
        self.out = nn.Sequential(nn.Conv2d(ch[0], 3 * p * p, 3, padding=1), nn.PixelShuffle(p))
        out_conv = self.out[0]
        assert isinstance(out_conv, nn.Conv2d) and out_conv.bias is not None
        nn.init.zeros_(out_conv.weight)   # the velocity starts at zero
        nn.init.zeros_(out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Velocity (B,3,H,W) at x (B,3,H,W) in [-1,1], time t (B,) in [0,1]; cond (B,cond_dim) or None
        (unconditional)."""
        if cond is None:
            cond = self.null_cond.expand(x.shape[0], -1)
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.cfg.emb_dim)) + self.cond_mlp(cond))
        h, skips = self.stem(x), []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))

    def loss(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss for images (B,3,H,W) in [0,1] and their conditions (B,cond_dim).

        t is mostly drawn logit-normal (as in Stable Diffusion 3): middle times, where the object's shape is
        decided, get most of the training; a quarter is uniform, so t = 0 — where one Euler step must give the
        average picture — is learned too.
        """
        x1 = images * 2 - 1
        x0 = torch.randn_like(x1)
        b = x1.shape[0]
        t = torch.where(torch.rand(b, device=x1.device) < 0.25, torch.rand(b, device=x1.device),
                        torch.sigmoid(torch.randn(b, device=x1.device)))
        drop = torch.rand(b, device=x1.device) < self.cfg.cond_drop
        cond = torch.where(drop[:, None], self.null_cond.expand_as(cond), cond)
        tt = t[:, None, None, None]
        return F.mse_loss(self((1 - tt) * x0 + tt * x1, t, cond), x1 - x0)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one image per condition: cond (B, cond_dim) -> images (B, 3, H, W) in [0, 1].

        steps: Euler steps from noise to image (1 step = the regression decoder's average picture).
        guidance: classifier-free guidance weight w, v = v_uncond + w·(v_cond − v_uncond); 1 = plain conditional.
        generator: a torch.Generator for the starting noise (same generator state → same drawing).
        """
        check_floating(cond, "cond")
        if cond.dim() != 2 or cond.shape[1] != self.cfg.cond_dim:
            raise ValueError(f"cond must be (B, {self.cfg.cond_dim}), got {tuple(cond.shape)}")
        check_finite(cond, "cond", row="condition")
        check_int(steps, "steps")
        check_real(guidance, "guidance")
        b, s = cond.shape[0], self.cfg.image_size
        x = torch.randn(b, 3, s, s, generator=generator, device=generator.device if generator else "cpu")
        x = x.to(cond.device)
        for k in range(steps):
            t = torch.full((b,), k / steps, device=cond.device)
            if guidance == 1.0:
                v = self(x, t, cond)
            else:   # one batched call for the conditional and the unconditional velocity
                v_c, v_u = self(torch.cat([x, x]), torch.cat([t, t]),
                                torch.cat([cond, self.null_cond.expand_as(cond)])).chunk(2)
                v = v_u + guidance * (v_c - v_u)
            x = x + v / steps
        return ((x + 1) / 2).clamp(0, 1)


# ---- conditioning: the tiny CLIP's text-embedding space ---------------------------------------------------------


def load_modality_generator(path: str | Path = GENERATOR_PATH) -> ModalityGenerator:
    """The shipped modality generator, frozen (requires_grad False, eval mode)."""
    return freeze(load_module(path, ModalityGenerator, GeneratorConfig, "modality generator",
                              train_command="python -m minimal.recipes.output_side generator"))
