"""The training loop: loss falls, schedule shape, exact resume, frozen parameters, bad inputs."""

from __future__ import annotations

import os
import random
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from minimal.train import CKPT_NAME, _trainable_state, lr_at, train
from minimal.weights import load_safetensors


class _Net(nn.Module):
    """Small MLP with dropout (uses the torch RNG during training) and a frozen layer."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(0)  # the frozen part is rebuilt identically (as a pretrained backbone would be)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(self.frozen(x)).squeeze(-1)


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _stream():
    """A one-shot batch iterator with a position (i) that also draws from the global RNGs as it goes."""
    i = 0
    while True:
        x = torch.randn(8, 4)
        noise = random.random() + float(np.random.rand())
        yield x, x.sum(-1) + 0.01 * noise + 0.1 * i
        i += 1


class _Interrupt(Exception):
    pass


def test_loss_falls_and_history_length():
    torch.manual_seed(0)
    model = _Net(0)
    hist = train(model, _loss, lambda step: _batch(step), steps=60, lr=1e-2, warmup=5, progress=False, device="cpu")
    assert len(hist) == 60 and np.mean(hist[-10:]) < 0.5 * np.mean(hist[:10])


def _batch(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(-1)


def test_one_argument_loss_fn_and_dict_batches():
    model = _Net(0)

    def dict_batch(step):
        x, y = _batch(step)
        return {"x": x, "y": [y]}

    hist = train(model, lambda b: ((model(b["x"]) - b["y"][0]) ** 2).mean(), dict_batch, steps=3, progress=False,
                 device="cpu")
    assert len(hist) == 3


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 1.0, warmup=10, min_lr_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1)


@pytest.mark.parametrize("source", ["iterator", "factory"])
def test_resume_is_bit_identical(tmp_path, source):
    n = 6

    def batches():
        return _stream() if source == "iterator" else _batch_rng

    def run(ckpt_dir, crash_at=None, resume=False, init_seed=0):
        torch.manual_seed(1)
        random.seed(1)
        np.random.seed(1)
        model = _Net(init_seed)
        torch.manual_seed(1)
        src = batches()
        if crash_at is not None:
            src = _crashing(src, crash_at)
        hist = train(model, _loss, src, steps=2 * n, lr=3e-3, warmup=2, weight_decay=0.1, grad_clip=0.5,
                     device="cpu", ckpt_dir=ckpt_dir, ckpt_every=n, resume=resume, progress=False)
        return model, hist

    straight, hist_straight = run(tmp_path / "a")
    with pytest.raises(_Interrupt):
        run(tmp_path / "b", crash_at=n)
    # a fresh process would build the model from another seed: resume must overwrite all of it
    resumed, hist_resumed = run(tmp_path / "b", resume=True, init_seed=99)

    assert hist_straight == hist_resumed
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        if not k.startswith("frozen"):
            assert torch.equal(a, b), k
    ta, ca = load_safetensors(tmp_path / "a" / CKPT_NAME)
    tb, cb = load_safetensors(tmp_path / "b" / CKPT_NAME)
    assert ta.keys() == tb.keys() and any(k.startswith("optim.") for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # weights, Adam moments, step counts, RNG states
    assert ca == cb                                     # step, history, param groups, python/numpy RNG


def _batch_rng(step):
    # a factory that also consumes the global RNG: resume must restore it
    x = torch.randn(8, 4)
    return x, x.sum(-1) + float(np.random.rand()) * 0.01 + step * 0.0


def _crashing(src, at):
    if callable(src):
        def f(step):
            if step == at:
                raise _Interrupt
            return src(step)
        return f

    def gen():
        for i, b in enumerate(src):
            if i == at:
                raise _Interrupt
            yield b
    return gen()


def test_frozen_parameters_untouched_and_not_saved(tmp_path):
    model = _Net(0)
    before = model.frozen.weight.clone()
    train(model, _loss, _stream(), steps=3, device="cpu", ckpt_dir=tmp_path, ckpt_every=3, progress=False)
    assert torch.equal(before, model.frozen.weight)
    tensors, _ = load_safetensors(tmp_path / CKPT_NAME)
    assert not any(k.startswith("model.frozen") for k in tensors)


def test_resume_into_wrong_model_lists_keys(tmp_path):
    train(_Net(0), _loss, _stream(), steps=2, device="cpu", ckpt_dir=tmp_path, ckpt_every=2, progress=False)
    other = _Net(0)
    other.body[3] = nn.Linear(16, 2)
    with pytest.raises(ValueError, match=r"mis-shaped.*body\.3\.weight"):
        train(other, _loss, _stream(), steps=4, device="cpu", ckpt_dir=tmp_path, resume=True, progress=False)


def test_nan_loss_stops_with_step():
    def bad(model, batch):
        return _loss(model, batch) * float("nan")
    with pytest.raises(FloatingPointError, match="step 0"):
        train(_Net(0), bad, _stream(), steps=2, device="cpu", progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ckpt_dir"):
        train(_Net(0), _loss, _stream(), steps=2, device="cpu", ckpt_every=1, progress=False)
    with pytest.raises(TypeError, match="callable step -> batch or an iterable"):
        train(_Net(0), _loss, 42, steps=2, device="cpu", progress=False)
    with pytest.raises(ValueError, match="ran out at step 2"):
        train(_Net(0), _loss, iter([_batch(0), _batch(1)]), steps=3,
              device="cpu", progress=False)
    with pytest.raises(ValueError, match="scalar tensor"):
        train(_Net(0), lambda m, b: m(b[0]), _stream(), steps=1, device="cpu", progress=False)


_DDP_SCRIPT = r'''
import sys, torch
from torch import nn
from minimal.train import finish_distributed, train, world
from minimal.weights import save_safetensors

torch.set_num_threads(1)

def batches(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=g)
    y = x.sum(-1, keepdim=True)
    rank, size = world()
    shard = slice(rank * 8 // size, (rank + 1) * 8 // size)
    return x[shard], y[shard]

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
hist = train(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), batches, steps=5, lr=1e-2, warmup=1,
             weight_decay=0.1, device="cpu", progress=False)
if world()[0] == 0:
    save_safetensors(sys.argv[1], model.state_dict(), {"history": hist})
finish_distributed()
'''


@pytest.mark.slow
def test_ddp_under_torchrun_equals_single_process(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT)
    single, multi = tmp_path / "single.safetensors", tmp_path / "multi.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads, argv = torch.get_num_threads(), sys.argv
    try:                       # one process: run here, in this interpreter (its torch is already imported)
        sys.argv = [str(script), str(single)]
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script), str(multi)], check=True, env=env, capture_output=True)
    (a, ca), (b, cb) = load_safetensors(single), load_safetensors(multi)
    assert np.allclose(ca["history"], cb["history"], atol=1e-6)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_workers_give_the_same_run_as_the_training_process():
    """Batches made ahead in worker processes are the factory's own: same losses, same weights, same torch RNG
    afterwards (the workers' seeds do not come from the global generator), and the order of steps is kept."""
    def run(workers):
        torch.manual_seed(3)
        model = _Net(0)
        hist = train(model, _loss, _batch, steps=12, lr=1e-2, warmup=2, progress=False, device="cpu",
                     workers=workers)
        return hist, model.state_dict(), torch.rand(1)

    (h0, w0, r0), (h2, w2, r2) = run(0), run(2)
    assert h0 == h2 and r0 == r2
    assert all(torch.equal(w0[k], w2[k]) for k in w0)


@pytest.mark.parametrize("workers", [-1, 1.5, "2"])
def test_bad_workers_are_named(workers):
    with pytest.raises((TypeError, ValueError), match="workers"):
        train(_Net(0), _loss, _batch, steps=2, progress=False, device="cpu", workers=workers)


def test_losses_read_in_batches_name_the_bad_step():
    """On a GPU the loop reads its losses back every READ_EVERY steps (`_Losses`): the history is the same, and a
    NaN still stops training with its own step, not the step of the read."""
    from minimal.train import _Losses

    history: list[float] = []
    losses = _Losses(history, world_size=1, every=3)
    assert [losses.add(torch.tensor(v), read_now=False) for v in (1.0, 2.0, 3.0)] == [False, False, True]
    assert history == [1.0, 2.0, 3.0]
    assert losses.add(torch.tensor(4.0), read_now=True) and history == [1.0, 2.0, 3.0, 4.0]
    losses.add(torch.tensor(5.0), read_now=False)
    with pytest.raises(FloatingPointError, match="nan at step 5"):
        losses.add(torch.tensor(float("nan")), read_now=True)


def test_checkpoints_leave_out_a_frozen_weight_under_every_name():
    """A frozen weight tied under a second name (an LLM's lm_head.weight is its embedding) is not saved twice, nor
    once: whoever builds the model rebuilds it."""
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    emb.weight.requires_grad_(False)
    model = nn.ModuleDict({"emb": emb, "head": head, "proj": nn.Linear(4, 4)})
    assert set(_trainable_state(model)) == {"proj.weight", "proj.bias"}
