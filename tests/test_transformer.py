"""The shared block: attention = the textbook formula, causal masking, the activations, hidden states."""

import math
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minimal.transformer import (
    GPU_ATTENTION_BACKENDS,
    MLP,
    Attention,
    Block,
    Transformer,
    attend,
    get_activation,
    quick_gelu,
    stack_qkv,
    stacked_linear,
)


def _textbook_attention(attn: Attention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v written out by hand — only here, to check the one real implementation."""
    B, T, D = x.shape
    H, d = attn.heads, attn.head_dim
    w_q, w_k, w_v = attn.qkv_proj.weight.chunk(3)   # the stacked matrix's three blocks of rows
    b_q, b_k, b_v = attn.qkv_proj.bias.chunk(3)
    q, k, v = ((x @ w.T + b).view(B, T, H, d).transpose(1, 2) for w, b in ((w_q, b_q), (w_k, b_k), (w_v, b_v)))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return attn.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)), scores.softmax(-1)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_textbook_formula(causal):
    torch.manual_seed(0)
    attn = Attention(width=24, heads=3)
    x = torch.randn(2, 7, 24)
    expected, probs = _textbook_attention(attn, x, causal)
    torch.testing.assert_close(attn(x, causal=causal), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.attention_weights(x, causal=causal), probs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_gpu_backend_choice_still_computes_attention(causal):
    """On a GPU `attend` allows only GPU_ATTENTION_BACKENDS; their last resort (MATH, the only one a CPU has of the
    list) must take every call the package makes, including the attention maps' v of another width than q."""
    from torch.nn.attention import sdpa_kernel

    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    for v in (torch.randn(2, 3, 5, 8), torch.eye(5).expand(2, 3, 5, 5)):
        scores = q @ k.transpose(-1, -2) / math.sqrt(8)
        if causal:
            scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
        with sdpa_kernel(GPU_ATTENTION_BACKENDS):
            torch.testing.assert_close(attend(q, k, v, causal), scores.softmax(-1) @ v, atol=1e-5, rtol=1e-5)


def test_causal_means_no_peeking():
    torch.manual_seed(0)
    block = Block(16, 2, 32)
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)  # change the future
    torch.testing.assert_close(block(x, causal=True)[:, :4], block(y, causal=True)[:, :4])
    assert not torch.allclose(block(x)[:, :4], block(y)[:, :4])  # without the mask the past does change


def test_activations():
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x))
    assert (quick_gelu(x) - F.gelu(x)).abs().max() < 0.03  # close to GELU, not equal
    assert get_activation("gelu") is F.gelu
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        MLP(4, 8, act="swishy")


def test_transformer_hidden_states_convention():
    torch.manual_seed(0)
    tr = Transformer(width=16, layers=3, heads=4, mlp_hidden=32)
    x = torch.randn(2, 5, 16)
    out, hidden = tr(x, return_hidden=True)
    assert len(hidden) == 4 and hidden[0] is x and hidden[-1] is out
    torch.testing.assert_close(hidden[2], tr.blocks[1](tr.blocks[0](x)))
    assert tr.attention_maps(x).shape == (3, 2, 4, 5, 5)


def test_bad_shapes():
    with pytest.raises(ValueError, match="width=10 is not divisible by heads=4"):
        Attention(10, 4)
    with pytest.raises(ValueError, match="layers must be a positive int, got 0"):
        Transformer(8, 0, 2, 16)


def test_one_attention_implementation_in_the_package():
    """The package computes attention in one place: transformer.py, through F.scaled_dot_product_attention."""
    root = pathlib.Path(__file__).resolve().parents[1] / "minimal"
    hits = {p.name for p in root.glob("*.py") if "scaled_dot_product_attention(" in p.read_text()}
    assert hits == {"transformer.py"}


def test_layer_norm_keeps_the_input_dtype():
    """Under bf16 autocast a norm computes in float32; ours hands back bf16 for a bf16 stream (float32 unchanged)."""
    from torch import nn

    from minimal.transformer import LayerNorm

    torch.manual_seed(0)
    ours, plain = LayerNorm(16), nn.LayerNorm(16)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16)
    torch.testing.assert_close(ours(x), plain(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, plain(x.bfloat16().float()).bfloat16())


def test_stacked_projections_start_as_three_linears():
    """The one (3D, D) qkv matrix holds, block by block, what three nn.Linear(D, D) made in q, k, v order would
    hold — the same random draws — and the layers built after it get the same numbers as before."""
    torch.manual_seed(0)
    attn = Attention(width=16, heads=2)
    torch.manual_seed(0)
    q, k, v, out = (nn.Linear(16, 16) for _ in range(4))
    assert torch.equal(attn.qkv_proj.weight, torch.cat([q.weight, k.weight, v.weight]))
    assert torch.equal(attn.qkv_proj.bias, torch.cat([q.bias, k.bias, v.bias]))
    assert torch.equal(attn.out_proj.weight, out.weight)


def test_stack_qkv_makes_hugging_face_projections_ours():
    sd = {f"blocks.0.self_attn.{n}_proj.{t}": torch.full((4, 4) if t == "weight" else (4,), float(i))
          for i, n in enumerate("qkvo") for t in ("weight", "bias")}
    out = stack_qkv(sd)
    assert sorted(out) == ["blocks.0.self_attn.o_proj.bias", "blocks.0.self_attn.o_proj.weight",
                           "blocks.0.self_attn.qkv_proj.bias", "blocks.0.self_attn.qkv_proj.weight"]
    assert out["blocks.0.self_attn.qkv_proj.weight"][:, 0].tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert stack_qkv(out) == out                                           # our own layout passes through
    del sd["blocks.0.self_attn.v_proj.bias"]                               # an incomplete triple: left for the
    assert "blocks.0.self_attn.q_proj.bias" in stack_qkv(sd)               # strict loader to name


@pytest.mark.parametrize("layers", [[], [nn.Linear(4, 4), nn.Linear(3, 4)], [nn.Linear(4, 4, bias=False)],
                                    [nn.Linear(4, 4), nn.Linear(4, 4).double()]])
def test_stacked_linear_refuses_layers_it_cannot_stack(layers):
    with pytest.raises(ValueError, match="layers must"):
        stacked_linear(layers)
