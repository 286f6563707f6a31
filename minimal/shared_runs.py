"""A training run done once and shared with an identical later call — used only by the course's test command.

The test command executes every chapter twice, in English and in Korean. The two editions hold the same code
cells (tests/test_i18n.py checks it), so each `train()` call of the Korean run gets exactly the inputs that the
English run's call got and would compute exactly the same result, step for step. With `MINIMAL_SHARE_DIR` set (the
test command sets it to a fresh empty folder; nothing else does), `train()` keeps the outcome of each run there, and
a later call with the same inputs takes that outcome instead of repeating the steps. Every cell still runs; only the
optimizer steps of a call that was already made are not made twice.

"The same inputs" is a SHA-256 fingerprint of everything a run depends on:

* the model: each part's class, forward code and plain settings (numbers, strings, configs), and every parameter
  and buffer (name, dtype, shape, requires_grad, bytes);
* the loss function: its code (bytecode, constants, names), the values it closes over or reads as globals
  (tensors, numbers, strings, modules as above, functions by their code), a `functools.partial`'s arguments, an
  object's attributes; a value it cannot see into (an open file, say) means the run is not shared. The globals
  are followed for the notebook's own functions; a library function counts by its name and code, since the
  library is the same for the whole test run;
* the training arguments, the device, the number of CPU threads and the random-number states (torch, numpy, python);
* every batch: a record lists the fingerprint of each step's batch, and a later call makes all its batches and
  compares them one by one before it takes anything. A single differing bit anywhere means: train.

The outcome restored on a hit is what a run leaves behind: the weights and buffers it changed, the gradients of the
last step, the loss history and the random-number states after the last step.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import types
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import env
from .weights import check_state_dict, load_safetensors, save_safetensors

SHARE_ENV_VAR = "MINIMAL_SHARE_DIR"


class _Unshareable(Exception):
    """Something a run depends on that the fingerprint cannot see: such a run is never shared."""


def _feed(h: Any, obj: Any, depth: int = 0) -> None:
    """Add `obj` to the hash `h`: tensors by bytes, containers item by item, modules by state, code by bytecode."""
    if depth > 6:
        raise _Unshareable("nested too deep")
    h.update(type(obj).__qualname__.encode())
    if isinstance(obj, torch.Tensor):
        h.update(f"{obj.dtype}{tuple(obj.shape)}{obj.requires_grad}".encode())
        h.update(_tensor_digest(obj))
    elif isinstance(obj, nn.Module):
        _feed_module(h, obj, depth + 1)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        h.update(repr(obj).encode())
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _feed(h, item, depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _feed(h, key, depth + 1)
            _feed(h, value, depth + 1)
    elif isinstance(obj, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(obj)), depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, [getattr(obj, f.name) for f in dataclasses.fields(obj)], depth + 1)
    elif hasattr(obj, "backend_tokenizer") and hasattr(obj, "chat_template"):      # a Hugging Face tokenizer
        _feed(h, [obj.backend_tokenizer.to_str(), str(obj.chat_template), obj.padding_side], depth + 1)
    elif isinstance(obj, types.ModuleType):
        h.update(obj.__name__.encode())
    elif callable(obj):
        _feed_callable(h, obj, depth + 1)
    else:
        raise _Unshareable(f"a {type(obj).__name__} value")


def _feed_callable(h: Any, fn: Any, depth: int) -> None:
    """A function by its code, the values it closes over and the globals it reads; a partial by its parts."""
    if isinstance(fn, functools.partial):
        _feed(h, [fn.func, fn.args, fn.keywords], depth)
    elif isinstance(fn, types.MethodType):
        _feed(h, [fn.__func__, fn.__self__], depth)
    elif isinstance(fn, types.FunctionType):
        h.update(f"{fn.__module__}.{fn.__qualname__}".encode())
        _feed_code(h, fn.__code__)
        _feed(h, [cell.cell_contents for cell in fn.__closure__ or ()], depth)
        if fn.__module__ == "__main__":     # the notebook's own function: the globals it reads can change any time
            read = sorted(_names(fn.__code__) & fn.__globals__.keys())      # sorted: a set's order varies by process
            _feed(h, {name: fn.__globals__[name] for name in read}, depth)
    elif isinstance(vars(type(fn)).get("__call__"), types.FunctionType) and hasattr(fn, "__dict__"):
        _feed(h, [vars(type(fn))["__call__"], vars(fn)], depth)           # an object called like a function
    elif isinstance(fn, (types.BuiltinFunctionType, type)):
        h.update(f"{getattr(fn, '__module__', '')}.{fn.__qualname__}".encode())
    else:
        raise _Unshareable(f"the callable {type(fn).__name__}")


def _feed_module(h: Any, module: nn.Module, depth: int) -> None:
    """A module by its parts' classes and forward code, their plain settings (numbers, strings, configs) and
    every parameter and buffer; a Hugging Face tokenizer by its vocabulary, rules and chat template; other
    attributes (a logger, say) count by their type only."""
    for name, part in module.named_modules():
        h.update(f"{name}:{type(part).__qualname__}:{part.training}".encode())
        if isinstance(type(part).forward, types.FunctionType):
            _feed_code(h, type(part).forward.__code__)
        for key, value in sorted(vars(part).items()):
            if not key.startswith("_"):
                try:
                    _feed(h, [key, value], depth + 1) if not isinstance(value, nn.Module) else None
                except _Unshareable:
                    h.update(f"{key}:{type(value).__qualname__}".encode())
    _feed(h, dict(module.named_parameters()) | dict(module.named_buffers()), depth)


_DIGESTS: dict[int, tuple[weakref.ref, int, bytes]] = {}


def _tensor_digest(t: torch.Tensor) -> bytes:
    """SHA-256 of a tensor's bytes. A large tensor's digest is kept while the tensor lives and is not written to:
    PyTorch counts every in-place write in `t._version` (an optimizer step, `copy_`, `load_state_dict`), so a frozen
    LLM is read once however many calls it takes part in."""
    kept = _DIGESTS.get(id(t))
    if kept is not None and kept[0]() is t and kept[1] == t._version:
        return kept[2]
    data = t.detach().cpu().contiguous()
    digest = hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy().data if data.numel() else b"").digest()
    if t.numel() >= 1 << 16:
        key = id(t)
        _DIGESTS[key] = (weakref.ref(t, lambda _: _DIGESTS.pop(key, None)), t._version, digest)
    return digest


def _names(code: types.CodeType) -> set[str]:
    """Global names a code object (and the code nested in it) reads."""
    return set(code.co_names).union(*(_names(c) for c in code.co_consts if isinstance(c, types.CodeType)))


def _feed_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        _feed_code(h, const) if isinstance(const, types.CodeType) else h.update(repr(const).encode())


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of `parts` as `_feed` sees them; raises _Unshareable for a value it cannot see into."""
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()


class SharedRun:
    """One `train()` call as the share folder sees it.

        run = SharedRun.begin(model, loss_fn, batches, steps, settings)   # None: not shared
        if run is not None and run.found:          # an identical earlier call: its outcome, no step made again
            return run.restore(model, trainable_state, was_training)
        ... train, taking the batches from run.watch(batches) ...
        run.keep(model, trainable_state, history)
    """

    def __init__(self, path: Path, steps: int, found: dict | None) -> None:
        self.path, self.steps, self.record = path, steps, found
        self.seen: list[str] = []

    @property
    def found(self) -> bool:
        return self.record is not None

    @classmethod
    def begin(cls, model: nn.Module, loss_fn: Callable, batches: Any, steps: int, settings: dict
              ) -> SharedRun | None:
        """A SharedRun if sharing is on (`MINIMAL_SHARE_DIR`), the batches come from a factory (`step -> batch`)
        and the fingerprint sees every input; None otherwise. `found` tells whether an identical call was kept."""
        folder = os.environ.get(SHARE_ENV_VAR, "").strip()
        if not folder or not callable(batches) or isinstance(batches, Iterable) or steps < 1:
            return None
        rng_tensors, rng_meta = env.rng_state()
        try:
            key = fingerprint(model, loss_fn, settings, steps, torch.get_num_threads(), rng_tensors, rng_meta)
        except _Unshareable:
            return None
        path = Path(folder) / f"{key}.safetensors"
        record = cls._matching(path, batches, steps) if path.exists() else None
        env.set_rng_state(rng_tensors, rng_meta)        # making the batches to compare must not move any RNG
        return cls(path, steps, record)

    @staticmethod
    def _matching(path: Path, batches: Callable[[int], Any], steps: int) -> dict | None:
        """The record at `path` if every batch of this call has the fingerprint the recorded run's batch had."""
        tensors, meta = load_safetensors(path)
        try:
            same = all(fingerprint(batches(step)) == meta["batches"][step] for step in range(steps))
        except _Unshareable:
            return None
        return {"tensors": tensors, **meta} if same and len(meta["batches"]) == steps else None

    def watch(self, batches: Any) -> Callable[[int], Any]:
        """The factory `batches`, noting each batch's fingerprint as the loop takes it (for `keep`)."""
        def noted(step: int) -> Any:
            batch = batches(step)
            self.seen.append(fingerprint(batch))
            return batch
        return noted

    def keep(self, model: nn.Module, trainable: dict[str, torch.Tensor], history: list[float]) -> None:
        """Write what the run left behind: `trainable` (weights and buffers it may change), the gradients, the
        RNG states, the history and the batches' fingerprints (atomically: a later reader sees all or nothing)."""
        if len(self.seen) != self.steps:
            return                                       # not a plain run from step 0: nothing to share
        rng_tensors, rng_meta = env.rng_state()
        grads = {f"grad.{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
        tensors = {**{f"state.{k}": v for k, v in trainable.items()}, **grads, **rng_tensors}
        save_safetensors(self.path, {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
                         {"history": history, "batches": self.seen, "rng": rng_meta})

    def restore(self, model: nn.Module, trainable: dict[str, torch.Tensor], training: bool) -> list[float]:
        """Put the recorded outcome into `model` (strictly: the same keys, shapes and dtypes) and the RNGs, set
        the model's train/eval mode to `training`; return the recorded loss history."""
        assert self.record is not None
        tensors = self.record["tensors"]
        state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        check_state_dict(trainable, state, what=f"{type(model).__name__} (shared run {self.path.name})")
        model.load_state_dict(state, strict=False)
        for name, p in model.named_parameters():
            grad = tensors.get(f"grad.{name}")
            p.grad = None if grad is None else grad.to(p.device, p.dtype)
        env.set_rng_state(tensors, self.record["rng"])
        model.train(training)
        return list(self.record["history"])


def shared_result(fn: Callable) -> Callable:
    """A function whose result is shared like a training run: with `MINIMAL_SHARE_DIR` set, a call whose
    arguments (`self` included: a model by its weights) and RNG states have the fingerprint of an earlier call gets
    that call's result, and the RNG states that call left. Results of tensors, numbers, strings and lists, tuples
    and dicts of them are shared; a call with another result, or with an argument the fingerprint cannot see
    into, simply runs."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        folder = os.environ.get(SHARE_ENV_VAR, "").strip()
        if not folder:
            return fn(*args, **kwargs)
        rng_tensors, rng_meta = env.rng_state()
        try:
            key = fingerprint(fn.__module__, fn.__qualname__, args, kwargs, rng_tensors, rng_meta)
            path = Path(folder) / f"{key}.result.safetensors"
        except _Unshareable:
            return fn(*args, **kwargs)
        if path.exists():
            tensors, meta = load_safetensors(path)
            env.set_rng_state(tensors, meta["rng"])
            return _unpack(meta["result"], tensors)
        result = fn(*args, **kwargs)
        tensors = {}
        try:
            packed = _pack(result, tensors)
        except _Unshareable:
            return result
        rng_tensors, rng_meta = env.rng_state()
        save_safetensors(path, {**tensors, **rng_tensors}, {"result": packed, "rng": rng_meta})
        return result
    return call


def _pack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`obj` as JSON, its tensors moved into `tensors` (under "result.N")."""
    if isinstance(obj, torch.Tensor):
        name = f"result.{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"tensor": {"name": name, "device": str(obj.device), "requires_grad": obj.requires_grad}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return {type(obj).__name__: [_pack(x, tensors) for x in obj]}
    if type(obj) is dict:
        return {"dict": [[_pack(k, tensors), _pack(v, tensors)] for k, v in obj.items()]}
    raise _Unshareable(f"a {type(obj).__name__} result")


def _unpack(packed: dict, tensors: dict[str, torch.Tensor]) -> Any:
    (kind, value), = packed.items()                    # every node of `_pack` is {kind: value}
    if kind == "tensor":
        return tensors[value["name"]].to(value["device"]).requires_grad_(value["requires_grad"])
    if kind == "value":
        return value
    if kind in ("list", "tuple"):
        items = [_unpack(x, tensors) for x in value]
        return items if kind == "list" else tuple(items)
    return {_unpack(k, tensors): _unpack(v, tensors) for k, v in value}
