"""Strict state-dict loading and safetensors checkpoints with their config."""

import pytest
import torch
from torch import nn

from minimal.weights import check_state_dict, load_safetensors, load_state_dict_strict, save_safetensors


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_strict_load_copies_everything():
    a, b = _net(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    load_state_dict_strict(b, a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_strict_load_lists_every_problem():
    sd = dict(_net().state_dict())
    sd.pop("0.bias")
    sd["2.weight"] = torch.zeros(2, 5)
    sd["3.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        load_state_dict_strict(_net(), sd, what="tiny net")
    msg = str(e.value)
    assert "does not fit tiny net" in msg
    assert "missing (1): 0.bias" in msg
    assert "unexpected (1): 3.weight" in msg
    assert "mis-shaped (1): 2.weight: given (2, 5) vs tiny net (2, 4)" in msg


def test_long_lists_are_summarised():
    with pytest.raises(ValueError, match=r"\+8 more"):
        check_state_dict({}, {f"k{i}": torch.zeros(1) for i in range(20)})
    with pytest.raises(ValueError, match="is a list, not a tensor"):
        load_state_dict_strict(_net(), {"0.weight": [1.0]})


def test_safetensors_roundtrip_with_config(tmp_path):
    net = _net()
    tied = {"a": net[0].weight, "b": net[0].weight, "c": net[2].weight.t()}  # shared memory + non-contiguous
    path = save_safetensors(tmp_path / "m.safetensors", tied, {"width": 4, "name": "tiny", "nested": {"x": [1]}})
    tensors, config = load_safetensors(path)
    assert config == {"width": 4, "name": "tiny", "nested": {"x": [1]}}
    assert torch.equal(tensors["a"], net[0].weight) and torch.equal(tensors["b"], net[0].weight)
    assert torch.equal(tensors["c"], net[2].weight.t())


def test_safetensors_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_safetensors(tmp_path / "m.pt", {"a": torch.zeros(1)})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_safetensors(tmp_path / "m.safetensors", {"a": torch.zeros(1)}, {"f": object()})
    with pytest.raises(ValueError, match="no checkpoint file"):
        load_safetensors(tmp_path / "absent.safetensors")
    pickle_file = tmp_path / "p.safetensors"
    torch.save({"a": torch.zeros(3)}, pickle_file)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_safetensors(pickle_file)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ValueError, match="only 3 bytes"):
        load_safetensors(tiny)
    good = save_safetensors(tmp_path / "g.safetensors", {"a": torch.randn(100)}, {"k": 1})
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-50])
    with pytest.raises(ValueError, match="truncated"):
        load_safetensors(cut)
