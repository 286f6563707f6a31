"""A `train()` call shared with an identical later one (minimal/shared_runs.py, on only in the test command).

A shared call must leave exactly what training would have left (weights, gradients, history, RNG states), and any
difference in what a run depends on — one batch, the loss function's code or the values it reads, an argument,
the RNG state, the starting weights — must make it train.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models
from torch import nn
from transformers import PreTrainedTokenizerFast

from minimal.shared_runs import SHARE_ENV_VAR, fingerprint, shared_result
from minimal.train import train

STEPS = 6


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))


def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)


class Counted:
    """A loss function object (the fingerprint reads its attributes)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return ((model(x) - y) ** 2).mean() * self.scale


def run(loss=None, factory=batches, seed: int = 1, lr: float = 1e-2, model=None) -> SimpleNamespace:
    """Train from a fixed start: the model, the history, how many forward passes training made (counted by a hook,
    which the fingerprint does not see) and RNG draws made right after."""
    model = model if model is not None else make_model()
    forwards: list[int] = []
    model.register_forward_hook(lambda module, args, out: forwards.append(1))
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    history = train(model, loss if loss is not None else Counted(), factory, steps=STEPS, lr=lr, device="cpu",
                    progress=False)
    after = (torch.rand(3), random.random(), np.random.rand())
    return SimpleNamespace(model=model, history=history, trained=len(forwards), after=after)


def same_outcome(a: SimpleNamespace, b: SimpleNamespace) -> None:
    assert a.history == b.history
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb), na
        assert torch.equal(pa.grad, pb.grad), f"gradient of {na}"
    assert torch.equal(a.after[0], b.after[0]) and a.after[1:] == b.after[1:], "the RNG states after training differ"
    assert a.model.training == b.model.training


def test_off_unless_the_test_command_turns_it_on(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARE_ENV_VAR, raising=False)
    assert run().trained == run().trained == STEPS


def test_an_identical_call_gets_exactly_what_training_leaves(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARE_ENV_VAR, raising=False)
    reference = run()
    monkeypatch.setenv(SHARE_ENV_VAR, str(tmp_path))
    first = run()
    assert first.trained == STEPS and len(list(tmp_path.glob("*.safetensors"))) == 1
    second = run()
    assert second.trained == 0, "the identical call trained again"
    same_outcome(reference, first)
    same_outcome(reference, second)


def test_every_difference_trains(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARE_ENV_VAR, str(tmp_path))
    run()
    assert run().trained == 0, "the same call is shared: so what trains below trains because of its difference"

    def one_batch_differs(step: int):
        x, y = batches(step)
        if step == STEPS - 1:
            x = x.clone()
            x[0, 0] = torch.nextafter(x[0, 0], torch.tensor(1e9))      # one bit
        return x, y

    def other_loss(model, batch):                                     # other code
        x, y = batch
        return (model(x) - y).abs().mean()

    moved = make_model()
    with torch.no_grad():
        moved[0].bias[0] += 1e-6
    assert run(factory=one_batch_differs).trained == STEPS
    assert run(loss=other_loss).trained == STEPS
    assert run(seed=2).trained == STEPS
    assert run(lr=2e-2).trained == STEPS
    assert run(loss=Counted(scale=2.0)).trained == STEPS
    assert run(model=moved).trained == STEPS

    notebook = {"__name__": "__main__", "SCALE": 1.0}                  # a chapter's cells run in __main__
    exec("def notebook_loss(model, batch):\n    x, y = batch\n    return ((model(x) - y) ** 2).mean() * SCALE",
         notebook)
    assert run(loss=notebook["notebook_loss"]).trained == STEPS
    assert run(loss=notebook["notebook_loss"]).trained == 0
    notebook["SCALE"] = 2.0                                           # a global the notebook's loss function reads
    assert run(loss=notebook["notebook_loss"]).trained == STEPS


def test_a_run_it_cannot_see_into_is_never_shared(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARE_ENV_VAR, str(tmp_path))
    opaque = object()

    def loss_reading_an_opaque_value(model, batch):
        assert opaque is not None
        x, y = batch
        return ((model(x) - y) ** 2).mean()

    assert run(loss=loss_reading_an_opaque_value).trained == STEPS
    assert not list(tmp_path.glob("*.safetensors"))


def test_fingerprints_see_values_not_identities():
    assert fingerprint(torch.ones(3), {"a": 1}) == fingerprint(torch.ones(3), {"a": 1})
    assert fingerprint(torch.ones(3)) != fingerprint(torch.ones(3, dtype=torch.float64))
    assert fingerprint(torch.ones(3)) != fingerprint(torch.ones(3).requires_grad_())
    assert fingerprint([1, 2]) != fingerprint([2, 1])
    with pytest.raises(Exception, match="object"):
        fingerprint(object())


RAN: list[int] = []


@shared_result
def noisy_features(model: nn.Module, x: torch.Tensor, scale: float = 1.0) -> dict:
    """A model's output plus a draw from the global RNG (a sampled decoding would draw like this)."""
    RAN.append(1)
    with torch.no_grad():
        out = model(x) * scale + torch.randn(x.shape[0], 1)
    return {"out": out, "mean": float(out.mean()), "rows": [f"row {i}" for i in range(x.shape[0])], 7: (1, None)}


def test_a_shared_result_is_the_result_and_leaves_the_rng_as_the_call_did(tmp_path, monkeypatch):
    model, x = make_model(), torch.randn(5, 4)
    torch.manual_seed(3)
    reference, after = noisy_features(model, x), torch.rand(2)
    monkeypatch.setenv(SHARE_ENV_VAR, str(tmp_path))
    RAN.clear()
    for _ in range(2):
        torch.manual_seed(3)
        result = noisy_features(model, x)
        assert torch.equal(result["out"], reference["out"]) and result.keys() == reference.keys()
        assert result["mean"] == reference["mean"] and result["rows"] == reference["rows"] and result[7] == (1, None)
        assert torch.equal(torch.rand(2), after)
    assert len(RAN) == 1, "the second identical call ran again"
    torch.manual_seed(4)                                              # another RNG state: runs
    noisy_features(model, x)
    torch.manual_seed(3)
    noisy_features(model, x, scale=2.0)                               # another argument: runs
    with torch.no_grad():
        model[2].bias.add_(1e-3)                                      # the model written to in place: runs
    torch.manual_seed(3)
    noisy_features(model, x)
    assert len(RAN) == 4


def test_a_result_it_cannot_store_is_computed_each_time(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARE_ENV_VAR, str(tmp_path))
    calls = []

    @shared_result
    def opaque(n: int) -> object:
        calls.append(n)
        return SimpleNamespace(n=n)

    assert opaque(1).n == opaque(1).n == 1 and len(calls) == 2


def test_a_hugging_face_tokenizer_counts_by_its_vocabulary_and_chat_template():
    def tokenizer(vocab: dict[str, int], template: str = "{{ messages }}") -> PreTrainedTokenizerFast:
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="?")))
        tok.chat_template = template
        return tok

    base = {"?": 0, "red": 1, "star": 2}
    assert fingerprint(tokenizer(base)) == fingerprint(tokenizer(dict(base)))
    assert fingerprint(tokenizer(base)) != fingerprint(tokenizer({**base, "star": 3}))
    assert fingerprint(tokenizer(base)) != fingerprint(tokenizer(base, "{{ messages[0] }}"))


def test_the_fingerprint_of_a_notebook_function_is_the_same_in_every_process():
    """Each chapter runs in its own kernel, and Python orders a set of names differently in each process (string
    hashes are salted per process): the globals a notebook function reads must count in a fixed order."""
    script = ("import torch\nfrom minimal.shared_runs import _names, fingerprint\n"
              "ns = {'__name__': '__main__', 'torch': torch, 'A': 1.0, 'B': 2.0, 'C': 3.0, 'D': 4.0}\n"
              "exec('def f(x):\\n    return torch.tanh(x) * A + B * C - D', ns)\n"
              "print(list(_names(ns['f'].__code__)), fingerprint(ns['f']))")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.rsplit(" ", 1) for seed in (1, 2)]
    (order1, print1), (order2, print2) = runs
    assert order1 != order2, "these two hash seeds should order the set of names differently"
    assert print1 == print2
