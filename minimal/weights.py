"""Loading and saving weights, strictly, and the course's checkpoint plumbing. Shared by every model in `minimal`.

Two rules, both learned the hard way in other codebases:

* A state dict either fits the model exactly or loading fails **loudly**, listing every missing, unexpected and
  mis-shaped key. A silently skipped key gives a model that runs, produces plausible numbers, and is wrong.
* Checkpoints are safetensors (no pickle: loading one never runs code) with the model's config as JSON in the same
  file, so a checkpoint is self-describing.

Every shipped checkpoint lives in `CHECKPOINT_DIR` (data/checkpoints/) with a JSON *card* next to it (same stem,
.json): the command that made it, the machine, the date and its figures. `save_with_card` writes both, each
atomically (in full to a temporary folder next to it, then `os.replace`), so an interrupted run — even one killed
by SIGKILL — leaves the previous checkpoint and card intact; `read_card` reads a card back.

Loading also refuses numbers no trained model holds: NaN or inf in a tensor, and integer tensors where the model
has floats (or the reverse). `check_int`, `check_real`, `check_floating` and `check_finite` are the checks every
config and numeric door of the package uses, so each bad number meets one kind of message: which argument, what
was expected, what came.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"
M = TypeVar("M", bound=nn.Module)

_MAX_LISTED = 12  # keys listed per category in an error; the rest are counted


def _fmt(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


# ---- checks of numbers: config fields, arguments and tensors ------------------------------------------------------

def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """`value` if it is an int (not a bool, not a string of digits) ≥ `minimum`; else a ValueError naming `name`,
    what was expected and what came."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int ≥ {minimum}"
        raise ValueError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    return value


def check_real(value: Any, name: str, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """`value` if it is a finite real number (int or float, not a bool or a string) inside the given bounds (closed
    unless `low_open` / `high_open`); else a ValueError naming `name`, the expected range and what came."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        bounds = [f"{'>' if low_open else '≥'} {low:g}" if low is not None else "",
                  f"{'<' if high_open else '≤'} {high:g}" if high is not None else ""]
        expected = "a finite number" + (" " + " and ".join(b for b in bounds if b) if any(bounds) else "")
        raise ValueError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    return value


def check_floating(x: Any, name: str) -> None:
    """A ValueError naming `name` unless `x` is a tensor of floats (integer or bool tensors are refused)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a float torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got dtype {x.dtype}")


def can_read_back(x: torch.Tensor) -> bool:
    """Whether a check may read a value back here: not inside torch.compile (it would split the graph), not while a
    CUDA graph is being captured (reading back is not allowed at all), and not in a GPU training step (gradients on):
    there every read waits for the GPU and stalls a step that is bound by launching kernels (measured: 73 % against
    84 % two-GPU scaling, benchmarks/NOTES_speed.md), while a non-finite value still stops training — `train()`
    refuses a NaN loss and names the step. On the CPU, and whenever gradients are off (evaluation, inference,
    `torch.no_grad`), every check runs."""
    if torch.compiler.is_compiling() or not x.is_cuda:
        return not torch.compiler.is_compiling()
    return not torch.cuda.is_current_stream_capturing() and not torch.is_grad_enabled()


def check_finite(x: torch.Tensor, name: str, row: str = "row") -> None:
    """A ValueError naming `name` and how many of its rows (entries along dim 0, called `row`) hold NaN or inf.

    One `isfinite(x).all()` (a single read-back) when all is well; the rows are counted only on failure. Skipped
    inside torch.compile and CUDA graph capture. Non-float tensors are always finite.
    """
    if not (x.is_floating_point() or x.is_complex()) or not can_read_back(x) or bool(torch.isfinite(x).all()):
        return
    if x.dim() == 0:
        raise ValueError(f"{name} is {x.item()}; expected a finite number")
    bad = (~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)).nonzero().flatten()
    rows = row[:-1] + "ies" if row.endswith("y") else row + "s"
    raise ValueError(f"{name} contains NaN or inf values in {len(bad)} of {x.shape[0]} {rows} (first: {row} "
                     f"{int(bad[0])}); check the inputs, the weights and the learning rate")


def _dtype_kind(t: torch.Tensor) -> str:
    return ("bool" if t.dtype == torch.bool else "complex" if t.is_complex() else
            "float" if t.is_floating_point() else "integer")


def check_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                     what: str = "model") -> None:
    """Raise ValueError unless `given` has exactly the keys of `expected`, each with the same shape, a dtype of the
    same kind (floats for floats — any precision — integers for integers) and, for floats, finite values only.

    The message lists missing keys (the model needs them, the dict lacks them), unexpected keys (the dict has
    them, the model has no place for them), mis-shaped keys (``name: dict (a, b) vs model (c, d)``), keys of the
    wrong dtype kind (an int64 tensor where the model has float weights) and keys holding NaN or inf.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    common = sorted(set(expected) & set(given))
    misshaped = [f"{k}: given {tuple(given[k].shape)} vs {what} {tuple(expected[k].shape)}"
                 for k in common if tuple(given[k].shape) != tuple(expected[k].shape)]
    wrong_dtype = [f"{k}: given {given[k].dtype} vs {what} {expected[k].dtype}"
                   for k in common if _dtype_kind(given[k]) != _dtype_kind(expected[k])]
    non_finite = [f"{k}: {n} of {given[k].numel()} values" for k in sorted(given)
                  if (given[k].is_floating_point() or given[k].is_complex())
                  and (n := int((~torch.isfinite(given[k])).sum()))]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
                        ("wrong dtype", wrong_dtype), ("NaN or inf", non_finite)):
        if keys:
            problems.append(f"  {label} ({len(keys)}): {_fmt(keys)}")
    if problems:
        raise ValueError(f"state dict does not fit {what}:\n" + "\n".join(problems))


def load_state_dict_strict(module: M, state_dict: Mapping[str, torch.Tensor], what: str | None = None) -> M:
    """Copy `state_dict` into `module` after checking every key and shape (see `check_state_dict`).

    Values are cast to each parameter's dtype and device by `load_state_dict`. Returns `module`.
    """
    what = what or type(module).__name__
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"state dict entry {k!r} for {what} is a {type(v).__name__}, not a tensor")
    check_state_dict(module.state_dict(), state_dict, what)
    module.load_state_dict(dict(state_dict), strict=True)
    return module


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: dict | None = None,
                     card: dict | None = None) -> Path:
    """Write `tensors` (name -> tensor) and a JSON-able `config` dict into one safetensors file.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing memory (tied weights) are stored as
    separate copies. The config lives in the file's metadata under the key "config". Returns the path.
    `card`: also write this card next to it (`save_with_card`): both files are written in full to temporary
    names first, and only then renamed, card first — never a new card for a half-written checkpoint.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {str(path)!r}")
    try:
        config_json = json.dumps(config if config is not None else {})
    except TypeError as e:
        raise ValueError(f"config for {path} is not JSON-serialisable: {e}") from e
    out, seen = {}, set()
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"entry {k!r} is a {type(v).__name__}, not a tensor")
        v = v.detach().to("cpu").contiguous()
        if v.untyped_storage().data_ptr() in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt", "config": config_json})
        if card is not None:   # the card's temporary file too, so the two renames follow each other at once
            write_json(card_path(path), {**card, "file_bytes": tmp.stat().st_size})
    return path


def _check_safetensors_file(path: Path) -> None:
    """Reject a missing, non-safetensors or truncated file with a message that says which and why."""
    if not path.is_file():
        raise ValueError(f"no checkpoint file at {str(path)!r}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise ValueError(f"{path} is not a safetensors file or is truncated "
                             f"(header claims {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a safetensors file (header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a JSON object)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    needed = 8 + n + (max(ends) if ends else 0)
    if size < needed:
        raise ValueError(f"{path} is truncated: {size} bytes on disk, {needed} needed")


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by `save_safetensors` -> ``(tensors, config)``.

    A file without our config metadata (e.g. a HF `model.safetensors`) loads with ``config == {}``.
    """
    path = Path(path)
    _check_safetensors_file(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type; re-raise with the path in the message
        raise ValueError(f"could not read safetensors file {path}: {e}") from e
    try:
        config = json.loads(meta.get("config", "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: config metadata is not valid JSON: {e}") from e
    return tensors, config


_TMP_TAG = re.compile(r"(\d+)@([0-9a-f]{8})\.[^.]+\.tmp")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary folders of earlier writes of `path` whose process died before renaming (a run killed
    while saving). Only those of this machine whose process no longer exists are touched (POSIX only)."""
    if os.name != "posix":
        return
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        m = _TMP_TAG.fullmatch(tmp.name[len(prefix):])
        if m is None or m.group(2) != _host_tag():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (PermissionError, OverflowError):
            pass


class atomic_path:
    """``with atomic_path(path) as tmp:`` write to `tmp`; on success it replaces `path` in one step (os.replace),
    on failure it is removed. Readers see the old file or the new one, never half of one.

    `tmp` has the name of `path`, inside a private temporary folder next to it
    (``.<name>.<pid>@<host>.<random>.tmp/``), so whatever temporary files the writer itself makes (safetensors
    writes through one) stay inside it too. A process killed while writing cannot remove that folder; the next
    write of the same path does (its process is gone)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.path)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.{os.getpid()}@{_host_tag()}.", suffix=".tmp",
                                            dir=self.path.parent))
        self.tmp = self.folder / self.path.name
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                os.chmod(self.tmp, 0o644)
                os.replace(self.tmp, self.path)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented UTF-8 JSON (Korean kept readable), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)


def card_path(checkpoint: str | os.PathLike) -> Path:
    """The card of a checkpoint: same folder and stem, .json."""
    return Path(checkpoint).with_suffix(".json")


def save_with_card(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: dict | None,
                   card: dict) -> Path:
    """Write a checkpoint (`save_safetensors`) and its card (with `file_bytes` added): both in full to temporary
    files first, then renamed one right after the other, so an interrupted run leaves the previous pair intact."""
    return save_safetensors(path, tensors, config, card=card)


def read_card(checkpoint: str | os.PathLike) -> dict:
    """The JSON card next to a checkpoint (a clear error if there is none, if it is not a JSON object, or if its
    `file_bytes` does not match the checkpoint next to it)."""
    path = card_path(checkpoint)
    if not path.is_file():
        raise ValueError(f"no card next to {checkpoint}: expected {path}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the card {path} is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise ValueError(f"the card {path} must hold a JSON object, got a {type(card).__name__}")
    size = Path(checkpoint).stat().st_size if Path(checkpoint).is_file() else None
    if "file_bytes" in card and size is not None and card["file_bytes"] != size:
        raise ValueError(f"the card {path} describes a {card['file_bytes']}-byte checkpoint, but {checkpoint} "
                         f"has {size} bytes: they do not belong together (replaced or interrupted save?)")
    return card


def read_checkpoint(path: str | os.PathLike, key: str, what: str, train_command: str
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config[key]) of a course checkpoint, with a clear error when the file is missing (naming the
    command that trains it) or was not written for `what` (no `key` in its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no {what} checkpoint at {path}; train one with `{train_command}`")
    tensors, config = load_safetensors(path)
    if key not in config:
        raise ValueError(f"{path} is not a {what} checkpoint (no {key!r} in its metadata)")
    return tensors, config[key]


def load_module(path: str | os.PathLike, cls: Callable[..., M], cfg_cls: Callable[..., Any], what: str,
                train_command: str) -> M:
    """Build `cls(cfg_cls(**config))` from a checkpoint written with `module_config(module)` and load its weights
    strictly; eval mode. `train_command` goes into the error when the file is missing."""
    tensors, config = read_checkpoint(path, "config", what, train_command)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the {what} config must be a JSON object, got a {type(config).__name__}")
    try:
        cfg = cfg_cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} does not hold a {what} config: {e}") from e
    module = cls(cfg)
    load_state_dict_strict(module, tensors, what)
    return module.eval()


def module_config(module: nn.Module) -> dict:
    """The metadata `load_module` reads back: {"config": the module's dataclass config as a dict}."""
    return {"config": asdict(module.cfg)}   # type: ignore[call-overload]
