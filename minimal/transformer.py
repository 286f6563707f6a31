"""The one transformer block both towers share (the ViT of chapter 02 and the text tower of chapter 03).

A pre-LN block, as in CLIP: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. Normalising *before* each sub-layer
keeps the residual stream an untouched sum, which is why deep stacks of these train without warm-up tricks.

Attention is computed in exactly one place in the whole package — `attend`, through
`F.scaled_dot_product_attention` (a fused kernel: PyTorch's memory-efficient one on a GPU, see `attend`; a fused
C++ path on the CPU). Even the attention *maps* we draw come from that same call (see `Attention.attention_weights`).

Parameter names mirror Hugging Face's CLIP (`self_attn.out_proj`, `mlp.fc1`, `layer_norm1`, ...) so loading real
CLIP weights is a rename, not a rewrite — plus one stack: HF's `q_proj`, `k_proj`, `v_proj` become the rows of our
one `qkv_proj` (see `stack_qkv`, `vit.convert_hf_state_dict` and `text.convert_hf_state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .weights import check_int, check_real


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation: ``x * sigmoid(1.702 x)``, a cheap sigmoid approximation of GELU.

    Computed as ``silu(1.702 x) / 1.702`` — the same function (silu(y) = y·sigmoid(y)) — because `F.silu` is one
    fused kernel with a fused backward: on the widest activation of the block (B·T × mlp_hidden) that is fewer
    passes over memory and fewer kernel launches than multiplying by a sigmoid by hand (chapter 10 measures it).
    """
    return F.silu(1.702 * x) / 1.702


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# Names follow Hugging Face's `hidden_act` strings so a HF config can be read as-is.
ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,                    # exact (erf) GELU
    "gelu_pytorch_tanh": _gelu_tanh,   # tanh approximation (SigLIP and others)
    "gelu_new": _gelu_tanh,
}


def get_activation(name: str):
    """Look up an activation by its HF name; unknown names are a ValueError listing the known ones."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# Which fused attention kernel a GPU runs. PyTorch's own pick on an H100/H200 is cuDNN's; for CLIP's short
# sequences (50 image tokens, 77 text tokens) the memory-efficient kernel does the same math in 2 kernels a layer
# (forward, backward) where cuDNN's path launches 4 kernels and 2 memsets. Measured in chapter 10 on one H200 at
# batch 256: 96 fewer launches and 1.1 ms less GPU time per step (2.3 % of a step replayed as a CUDA graph); in the
# eager and compiled steps, which wait on the host, the difference was smaller than the run-to-run noise. MATH,
# the plain formula, covers any shape the fused kernel does not take.
GPU_ATTENTION_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
           scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) v for every head: q, k (B, H, T, d) and v (B, H, T, d_v) -> (B, H, T, d_v).

    `scale` defaults to 1/sqrt(d); `causal=True` lets position t attend only to positions <= t (no mask tensor,
    so the fused kernels apply).
    """
    with sdpa_kernel(GPU_ATTENTION_BACKENDS) if q.is_cuda else nullcontext():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def stacked_linear(layers: list[nn.Linear]) -> nn.Linear:
    """One nn.Linear that computes all of `layers` at once: their weights (and biases) stacked row-wise, so its
    output is the layers' outputs side by side. `layers` must share their input size and dtype and all have a bias
    (the new layer is made on the "meta" device, which draws no random numbers, then filled with theirs)."""
    if not layers or not all(isinstance(layer, nn.Linear) and layer.bias is not None for layer in layers):
        raise ValueError(f"layers must be a non-empty list of nn.Linear with biases, got {layers!r}")
    first = layers[0]
    kinds = [(layer.in_features, layer.weight.dtype, layer.weight.device) for layer in layers]
    if len(set(kinds)) > 1:
        raise ValueError(f"layers must share their input size, dtype and device, got {kinds}")
    out = nn.Linear(first.in_features, sum(layer.out_features for layer in layers), device="meta",
                    dtype=first.weight.dtype).to_empty(device=first.weight.device)
    with torch.no_grad():
        out.weight.copy_(torch.cat([layer.weight for layer in layers]))
        out.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return out


def stack_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face's three attention projections -> our one: for every ``X.q_proj.weight`` with its ``k_proj`` and
    ``v_proj`` siblings (and the same for ``.bias``), ``X.qkv_proj.*`` = the three stacked in q, k, v order. Keys
    already in our layout pass through; an incomplete triple is left as it is, so strict loading names what is
    missing instead of this function guessing."""
    out = dict(state_dict)
    for key in state_dict:
        head, sep, tail = key.rpartition("q_proj.")
        if not sep or tail not in ("weight", "bias"):
            continue
        parts = [f"{head}{name}_proj.{tail}" for name in "qkv"]
        if all(p in state_dict for p in parts):
            out[f"{head}qkv_proj.{tail}"] = torch.cat([out.pop(p) for p in parts])
    return out


class Attention(nn.Module):
    """Multi-head self-attention (다중 헤드 셀프 어텐션).

    Each head looks at a `width // heads`-dimensional slice of the projected queries, keys and values; the heads'
    outputs are concatenated and mixed by `out_proj`. All four projections have a bias, as in CLIP.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width={width} is not divisible by heads={heads}")
        self.width, self.heads, self.head_dim = width, heads, width // heads
        # q, k and v are three linear maps of the same x, so their weights live stacked in ONE (3D, D) matrix
        # [W_q; W_k; W_v] (open_clip's `in_proj`, nanoGPT's `c_attn`): one matmul makes all three, and autograd and
        # the optimizer handle one tensor instead of three. Hugging Face stores three `q_proj`/`k_proj`/`v_proj`
        # Linears; loading stacks them (`stack_qkv`). Each block starts as its own nn.Linear(D, D) would.
        self.qkv_proj = stacked_linear([nn.Linear(width, width) for _ in "qkv"])
        self.out_proj = nn.Linear(width, width)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, D) -> q, k, v, each (B, H, T, D/H): every head becomes a batch entry for the attention kernel."""
        B, T, _ = x.shape
        qkv = self.qkv_proj(x).view(B, T, 3, self.heads, self.head_dim)                  # (B, T, 3, H, D/H)
        # Split along the "3" axis first, then move the heads forward: views, no copy. (In this order the backward
        # stacks dq, dk, dv straight into the Linear's (B, T, 3D) layout: one copy, not a stack plus a re-layout.)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        return q, k, v

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D). `causal=True` lets token t attend only to tokens <= t (text tower)."""
        q, k, v = self.qkv(x)
        # softmax(q kᵀ / sqrt(d_head)) v, per head — the one attention call in this package (`attend`).
        out = attend(q, k, v, causal)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """The attention probabilities, (B, T, D) -> (B, H, T, T), rows summing to 1 — for pictures.

        Trick: attention's output is ``P @ v``; feed the identity matrix as `v` and the output *is* P. So the
        maps come from the very same `attend` call the model uses, not from a second copy.
        """
        B, T, _ = x.shape
        q, k, _ = self.qkv(x)
        eye = torch.eye(T, dtype=q.dtype, device=q.device).expand(B, self.heads, T, T)
        return attend(q, k, eye, causal, scale=1 / math.sqrt(self.head_dim))


class MLP(nn.Module):
    """Position-wise feed-forward network: fc1 (D -> hidden), activation, fc2 (hidden -> D)."""

    def __init__(self, width: int, hidden: int, act: str = "quick_gelu"):
        super().__init__()
        self.act_name = act
        self.act = get_activation(act)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D) -> (..., D)."""
        return self.fc2(self.act(self.fc1(x)))


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` that hands back its input's dtype (as open_clip's). Under bf16 autocast PyTorch computes a
    norm in float32 and returns float32; casting back keeps a bf16 residual stream in bf16 — half the bytes through
    every add and norm that follows. In float32, and for a float32 stream, nothing changes."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:   # `input`: nn.LayerNorm's own name for it
        return super().forward(input).to(input.dtype)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int, heads: int, mlp_hidden: int, act: str = "quick_gelu", eps: float = 1e-5):
        super().__init__()
        self.layer_norm1 = LayerNorm(width, eps=eps)
        self.self_attn = Attention(width, heads)
        self.layer_norm2 = LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_hidden, act)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class Transformer(nn.Module):
    """A stack of `layers` identical pre-LN blocks (no final norm: each tower places its own)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_hidden: int, act: str = "quick_gelu",
                 eps: float = 1e-5):
        super().__init__()
        for name, value in (("width", width), ("layers", layers), ("heads", heads), ("mlp_hidden", mlp_hidden)):
            check_int(value, name)
        check_real(eps, "eps (LayerNorm epsilon)", low=0, low_open=True)
        self.width = width
        self.blocks = nn.ModuleList([Block(width, heads, mlp_hidden, act, eps) for _ in range(layers)])

    def forward(self, x: torch.Tensor, causal: bool = False, return_hidden: bool = False):
        """x: (B, T, D) -> (B, T, D), or ``(x, hidden)`` with `return_hidden=True`.

        `hidden` is a tuple of ``layers + 1`` tensors (B, T, D): the input first, then the output of every block
        — Hugging Face's `hidden_states` convention, so ``hidden[-2]`` is the penultimate layer LLaVA reads.
        """
        hidden = [x]
        for block in self.blocks:
            x = block(x, causal=causal)
            hidden.append(x)
        return (x, tuple(hidden)) if return_hidden else x

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """Attention probabilities of every block: x (B, T, D) -> (layers, B, heads, T, T)."""
        maps = []
        for block in self.blocks:
            assert isinstance(block, Block)
            maps.append(block.self_attn.attention_weights(block.layer_norm1(x), causal=causal))
            x = block(x, causal=causal)
        return torch.stack(maps)


class HFTower:
    """What both CLIP towers share for Hugging Face import: `from_hf(hf_model)` builds ours from an in-memory HF
    tower (`CLIPVisionModel` / `CLIPTextModel`: its config and its weights). A tower names its config class in
    `config_class` and defines `from_hf_state_dict(state_dict, cfg)`."""

    config_class: Any
    from_hf_state_dict: Callable[..., Any]

    @classmethod
    def from_hf(cls, hf_model: Any) -> Any:
        return cls.from_hf_state_dict(hf_model.state_dict(), cls.config_class.from_hf(hf_model.config))


def hf_tower_settings(hf_config: Any, tower: str) -> dict:
    """One tower's HF settings as a dict, from its config, that config's dict, or a whole `CLIPConfig` (whose
    `tower` — "text_config" or "vision_config" — is used)."""
    if hasattr(hf_config, tower):
        hf_config = getattr(hf_config, tower)
    return hf_config if isinstance(hf_config, dict) else hf_config.to_dict()


def rename_hf_tower(state_dict: dict, prefix: str, renames: dict[str, str],
                    convert: dict | None = None) -> dict[str, torch.Tensor]:
    """A HF CLIP tower's state dict (vision or text) -> our parameter names.

    `prefix` ("vision_model." / "text_model.") is stripped when every key carries it; ``encoder.layers.i.*`` becomes
    ``transformer.blocks.i.*`` (the blocks' own names match HF's, except that each block's q/k/v projections are
    stacked into one `qkv_proj`: `stack_qkv`); other keys go through `renames`, and
    `convert` maps a HF key to a function applied to its tensor (the vision tower's conv patch weight). The
    ``embeddings.position_ids`` buffer old checkpoints stored is checked to be 0..N-1 and dropped. Unknown keys keep
    their names, so strict loading reports them as unexpected instead of silently dropping them.
    """
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    convert = convert or {}
    out = {}
    for k, v in state_dict.items():
        if k == "embeddings.position_ids":
            if not torch.equal(v.flatten().long(), torch.arange(v.numel())):
                raise ValueError(f"{k} is not 0..N-1; this checkpoint uses a layout we do not support")
            continue
        if k in convert:
            v = convert[k](v)
        if k.startswith("encoder.layers."):
            out["transformer.blocks." + k[len("encoder.layers."):]] = v
        else:
            out[renames.get(k, k)] = v
    return stack_qkv(out)
