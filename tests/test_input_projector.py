"""minimal.input_projector: shapes, pixel shuffle layout, parameter counts, bad arguments."""

import pytest
import torch

from minimal.accounting import count_parameters
from minimal.input_projector import InputProjector, pixel_shuffle


def test_linear_and_mlp_shapes_and_counts():
    x = torch.randn(2, 16, 96)
    lin, mlp = InputProjector(96, 576, "linear"), InputProjector(96, 576, "mlp")
    assert lin(x).shape == mlp(x).shape == (2, 16, 576)
    assert count_parameters(lin) == 96 * 576 + 576                          # LLaVA-1: one Linear
    assert count_parameters(mlp) == 96 * 576 + 576 + 576 * 576 + 576        # LLaVA-1.5: Linear, GELU, Linear
    assert isinstance(mlp.net[1], torch.nn.GELU)


def test_pixel_shuffle_reduces_tokens_and_keeps_neighbours_together():
    # a 4x4 grid whose patch (r, c) holds the value 10r + c in every channel
    grid = torch.tensor([[10 * r + c for c in range(4)] for r in range(4)], dtype=torch.float)
    x = grid.reshape(1, 16, 1).expand(1, 16, 3)
    y = pixel_shuffle(x, 2)
    assert y.shape == (1, 4, 12)
    # token (i, j) holds patches (2i+a, 2j+b) for a, b in 0..1, in that order, each with its 3 channels
    assert y[0, :, ::3].tolist() == [[0, 1, 10, 11], [2, 3, 12, 13], [20, 21, 30, 31], [22, 23, 32, 33]]
    p = InputProjector(3, 8, "linear", shuffle=2)
    assert p(x).shape == (1, 4, 8) and p.num_tokens(16) == 4
    assert pixel_shuffle(x, 1) is x


def test_a_32px_image_costs_at_most_16_tokens():
    # tiny CLIP: 32-px images, 8-px patches -> 16 patches
    assert InputProjector(96, 576, shuffle=1).num_tokens(16) == 16
    assert InputProjector(96, 576, shuffle=2).num_tokens(16) == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        InputProjector(8, 8, "conv")
    with pytest.raises(ValueError, match="shuffle"):
        InputProjector(8, 8, shuffle=0)
    with pytest.raises(ValueError, match="square grid"):
        pixel_shuffle(torch.randn(1, 15, 4), 2)
    with pytest.raises(ValueError, match="square grid"):
        pixel_shuffle(torch.randn(1, 9, 4), 2)


def test_trainable_only_count():
    p = InputProjector(4, 8, "mlp")
    p.net[0].requires_grad_(False)
    assert count_parameters(p, trainable_only=True) == 8 * 8 + 8


def test_instruction_aware_projector_adds_a_summary_token_and_needs_its_instruction():
    x, cond = torch.randn(2, 16, 8), torch.randn(2, 12)
    for kind in ("linear", "mlp"):
        p = InputProjector(8, 12, kind, cond_dim=12)
        assert p.num_tokens(16) == 17 and p(x, cond).shape == (2, 17, 12)
        assert not torch.allclose(p(x, cond), p(x, cond + 1))          # the instruction changes every token
        with pytest.raises(ValueError, match="instruction"):
            p(x)
    with pytest.raises(ValueError, match="no instruction"):
        InputProjector(8, 12)(x, cond)
    assert InputProjector(8, 12, "mlp", shuffle=2, cond_dim=12)(x, cond).shape == (2, 5, 12)
