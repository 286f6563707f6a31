"""LoRA — low-rank adaptation (저랭크 적응): a frozen linear layer plus a small trained correction (chapter 08).

A frozen layer computes ``W x`` with W of shape (d_out, d_in). LoRA (Hu et al., 2021) learns a correction of
rank r instead of a new W::

    y = W x + (alpha / r) · B (A x)        A: (r, d_in), B: (d_out, r), r ≪ d_in, d_out

Only A and B train: r·(d_in + d_out) numbers instead of d_in·d_out. B starts at zero, so an adapted model starts
*exactly* equal to the frozen one and training moves it only as far as the data asks. alpha / r keeps the size of
an update independent of the rank chosen.

Why the course needs it. A projector can only change what the LLM *reads*; chapter 08 measures that the frozen
135 M-parameter LLM cannot answer our questions well even from a perfect caption given as text. LoRA on a few of
its attention projections gives the LLM itself a little trainable capacity (LLaVA-1.5 ships a LoRA variant for the
same reason) while keeping the trained fraction of parameters under 1 %.

    from minimal.lora import add_lora
    names = add_lora(llm, targets=("q_proj", "v_proj"), rank=8)   # wraps 60 layers of SmolLM2 in place
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import check_int, check_real


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) · B(A(x))`` with `base` frozen and A, B trained.

    Args:
        base: the frozen nn.Linear (d_in -> d_out) to adapt; kept as ``self.base``, its weights untouched.
        rank: r, the rank of the update. alpha: scale numerator (default 2·r, a common choice).
    forward: x (..., d_in) -> (..., d_out).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA adapts nn.Linear layers, got {type(base).__name__}")
        check_int(rank, "rank")
        if alpha is not None:
            check_real(alpha, "alpha", low=0, low_open=True)
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, float(2 * rank if alpha is None else alpha)
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # as nn.Linear initialises its weight
        self.enabled = True

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        # x -> r numbers -> d_out; the scale goes on the small B (d_out × r), not on the large output
        return y + F.linear(F.linear(x, self.lora_A), self.lora_B * self.scale)

    def merged_weight(self) -> Tensor:
        """W + (alpha/r)·B A: the single matrix this layer now computes (what one would ship after training)."""
        return self.base.weight + self.scale * self.lora_B @ self.lora_A

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def add_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float | None = None) -> list[str]:
    """Wrap every nn.Linear of `model` whose name ends with one of `targets` (e.g. "q_proj") in a LoRALinear,
    in place. Returns the wrapped modules' names. Everything else stays as it was (frozen or not).

    Raises ValueError if no layer matches (a typo would otherwise train nothing) or if the model already carries
    LoRA layers (wrapping twice would stack adapters: load a fresh model instead).
    """
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"targets must be a list of layer names such as ['q_proj', 'v_proj'], got {targets!r}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("this model already has LoRA layers (from another MLLM?); load a fresh copy of the LLM "
                         "for a second adapted model")
    names = [name for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.split(".")[-1] in set(targets)]
    if not names:
        linears = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear named {list(targets)} in the model; its linear layers are {linears}")
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, LoRALinear(getattr(owner, child), rank, alpha))
    return names


def lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    """Every LoRALinear inside `model`."""
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (every A and B) inside `model` — the only ones LoRA ever trains."""
    return [p for layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


@contextmanager
def lora_disabled(model: nn.Module):
    """Inside this block the model computes as its frozen original (every LoRA update switched off)."""
    layers = list(lora_layers(model))
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.enabled = True
