"""The input projector (입력 프로젝터): the small trained bridge from a frozen image encoder into a frozen LLM
(chapter 08, book §14.1.2).

An image encoder speaks in its own vectors (width 128 for our tiny CLIP, 1024 for CLIP ViT-L/14); an LLM reads
vectors of its own width (576 for SmolLM2-135M, 4096 for Llama-2-7B). The *input projector* (입력 프로젝터)
maps one into the other, patch by patch, so that image patches become "soft tokens" the LLM reads like words.

- LLaVA-1 used one linear layer (선형 프로젝터): ``Linear(d_vision, d_llm)``.
- LLaVA-1.5 used a 2-layer MLP with GELU (MLP 프로젝터): ``Linear(d_vision, d_llm) → GELU → Linear(d_llm, d_llm)``.
- Image-token reduction (이미지 토큰 축소) by **pixel shuffle** (nanoVLM, Idefics3): merge each s×s block of
  neighbouring patches into one token with s²× the channels. Our 32-px image has 4×4 = 16 patches; s=2 gives 4
  LLM tokens. Fewer tokens = a cheaper LLM forward (cost grows with sequence length), at the price of asking the
  projector to unpack more information per token.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from .weights import check_finite, check_floating, check_int

KINDS = ("linear", "mlp")


def pixel_shuffle(x: Tensor, factor: int) -> Tensor:
    """Merge s×s neighbouring patches into one token: (B, N, D) -> (B, N/s², s²·D), N a square grid (row-major).

    Token (i, j) of the output holds patches (s·i + a, s·j + b) for a, b in 0..s-1, concatenated in that order.
    """
    if factor == 1:
        return x
    B, N, D = x.shape
    side = round(N ** 0.5)
    if side * side != N or side % factor:
        raise ValueError(f"pixel shuffle needs a square grid divisible by {factor}; got {N} tokens")
    return rearrange(x, "b (h s1 w s2) d -> b (h w) (s1 s2 d)", s1=factor, s2=factor, h=side // factor)


class InputProjector(nn.Module):
    """Project frozen image features into the LLM's embedding space.

    Args:
        vision_dim: width of the image features (D_v). llm_dim: the LLM's hidden size (D).
        kind: "linear" (LLaVA-1) or "mlp" (LLaVA-1.5: Linear → GELU → Linear, hidden = llm_dim).
        shuffle: pixel-shuffle factor s (1 = keep every patch as a token).
        cond_dim: 0 (default, LLaVA) or the width of an instruction vector that conditions every token
            (InstructBLIP's *instruction-aware* idea): its projection is added to the first layer's output, and
            one extra **summary token** — the mean over patches of that (conditioned) hidden layer — is appended.
    forward: features (B, N, D_v) [, cond (B, cond_dim)] -> tokens (B, N/s² [+1], D).
    """

    def __init__(self, vision_dim: int, llm_dim: int, kind: str = "mlp", shuffle: int = 1, cond_dim: int = 0):
        super().__init__()
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        check_int(vision_dim, "vision_dim")
        check_int(llm_dim, "llm_dim")
        check_int(shuffle, "shuffle")
        check_int(cond_dim, "cond_dim", minimum=0)
        self.kind, self.shuffle, self.cond_dim, self.vision_dim = kind, shuffle, cond_dim, vision_dim
        d_in = vision_dim * shuffle * shuffle
        if kind == "linear":
            self.net = nn.Sequential(nn.Linear(d_in, llm_dim))
        else:
            self.net = nn.Sequential(nn.Linear(d_in, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
        self.cond = nn.Linear(cond_dim, llm_dim, bias=False) if cond_dim else None

    def num_tokens(self, num_patches: int) -> int:
        """LLM tokens one image costs, given the encoder's patch count."""
        return num_patches // (self.shuffle * self.shuffle) + int(self.cond is not None)

    def forward(self, features: Tensor, cond: Tensor | None = None) -> Tensor:
        check_floating(features, "features")
        if features.dim() != 3 or features.shape[-1] != self.vision_dim:
            raise ValueError(f"features must be (B, N, {self.vision_dim}), got {tuple(features.shape)}")
        check_finite(features, "features", row="image")
        x = pixel_shuffle(features, self.shuffle)
        if self.cond is None:
            if cond is not None:
                raise ValueError("this projector takes no instruction vector (cond_dim=0)")
            return self.net(x)
        if cond is None or cond.shape != (x.shape[0], self.cond_dim):
            raise ValueError(f"an instruction-aware projector needs cond of shape ({x.shape[0]}, {self.cond_dim})")
        check_floating(cond, "cond")
        check_finite(cond, "cond (the instruction vector)")
        h = self.net[0](x) + self.cond(cond).unsqueeze(1)            # every patch sees the instruction
        if self.kind == "linear":
            return torch.cat([h, h.mean(1, keepdim=True)], dim=1)
        h = self.net[1](h)
        return self.net[2](torch.cat([h, h.mean(1, keepdim=True)], dim=1))   # + the summary token
