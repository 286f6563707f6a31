"""LoRA adapters: start equal to the frozen layer, compute W + (alpha/r)·BA, train only A and B, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minimal.lora import LoRALinear, add_lora, lora_disabled, lora_layers


def _block() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.ModuleDict({"q_proj": nn.Linear(8, 8), "v_proj": nn.Linear(8, 4),
                                        "o_proj": nn.Linear(8, 8)}))


def test_a_fresh_adapter_leaves_the_layer_exactly_as_it_was():
    base = nn.Linear(6, 5)
    x = torch.randn(3, 7, 6)
    expected = base(x)
    layer = LoRALinear(base, rank=2)
    assert torch.equal(layer(x), expected)                 # B = 0: not approximately, exactly
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (5, 2) and layer.scale == 2.0


def test_the_update_is_the_low_rank_product_scaled_by_alpha_over_rank():
    layer = LoRALinear(nn.Linear(6, 5), rank=3, alpha=1.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    delta = layer(x) - layer.base(x)
    torch.testing.assert_close(delta, x @ (0.5 * layer.lora_B @ layer.lora_A).T)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.merged_weight(), layer.base.bias))
    assert torch.linalg.matrix_rank(layer.merged_weight() - layer.base.weight) == 3


def test_only_the_adapters_receive_gradients():
    model = _block().requires_grad_(False)
    names = add_lora(model, ["q_proj", "v_proj"], rank=2)
    assert names == ["0.q_proj", "0.v_proj"]
    assert isinstance(model[0]["q_proj"], LoRALinear) and isinstance(model[0]["o_proj"], nn.Linear)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_B.normal_()
    x = torch.randn(2, 8)
    (model[0]["q_proj"](x).sum() + model[0]["v_proj"](x).sum()).backward()
    trained = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert trained == ["0.q_proj.lora_A", "0.q_proj.lora_B", "0.v_proj.lora_A", "0.v_proj.lora_B"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * (8 + 8) + 2 * (8 + 4)


def test_disabled_adapters_give_the_frozen_model_back():
    model = _block()
    x = torch.randn(2, 8)
    before = model[0]["q_proj"](x)
    add_lora(model, ["q_proj"], rank=4)
    with torch.no_grad():
        model[0]["q_proj"].lora_B.normal_()
    adapted = model[0]["q_proj"](x)
    assert not torch.allclose(adapted, before)
    with lora_disabled(model):
        assert torch.equal(model[0]["q_proj"](x), before)
    assert torch.equal(model[0]["q_proj"](x), adapted)     # switched back on after the block


def test_bad_requests_are_clear_errors():
    model = _block()
    with pytest.raises(ValueError, match=r"no nn.Linear named \['k_proj'\].*'o_proj', 'q_proj', 'v_proj'"):
        add_lora(model, ["k_proj"], rank=2)
    add_lora(model, ["q_proj"], rank=2)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model, ["v_proj"], rank=2)
    with pytest.raises(ValueError, match="positive int"):
        LoRALinear(nn.Linear(2, 2), rank=0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), rank=1)
