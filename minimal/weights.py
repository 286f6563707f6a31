"""Loading and saving weights, strictly, and the course's checkpoint plumbing. Shared by every model in `minimal`.

Two rules, both learned the hard way in other codebases:

* A state dict either fits the model exactly or loading fails **loudly**, listing every missing, unexpected and
  mis-shaped key. A silently skipped key gives a model that runs, produces plausible numbers, and is wrong.
* Checkpoints are safetensors (no pickle: loading one never runs code) with the model's config as JSON in the same
  file, so a checkpoint is self-describing.

Every shipped checkpoint lives in `CHECKPOINT_DIR` (data/checkpoints/) with a JSON *card* next to it (same stem,
.json): the command that made it, the machine, the date and its figures. `save_with_card` writes both, each
atomically (a temporary file in the same folder, then `os.replace`), so an interrupted run leaves the previous
checkpoint and card intact; `read_card` reads a card back.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
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


def check_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                     what: str = "model") -> None:
    """Raise ValueError unless `given` has exactly the keys of `expected`, each with the same shape.

    The message lists missing keys (the model needs them, the dict lacks them), unexpected keys (the dict has
    them, the model has no place for them) and mis-shaped keys (``name: dict (a, b) vs model (c, d)``).
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = [f"{k}: given {tuple(given[k].shape)} vs {what} {tuple(expected[k].shape)}"
                 for k in sorted(set(expected) & set(given))
                 if tuple(given[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"  missing ({len(missing)}): {_fmt(missing)}")
    if unexpected:
        problems.append(f"  unexpected ({len(unexpected)}): {_fmt(unexpected)}")
    if misshaped:
        problems.append(f"  mis-shaped ({len(misshaped)}): {_fmt(misshaped)}")
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


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: dict | None = None) -> Path:
    """Write `tensors` (name -> tensor) and a JSON-able `config` dict into one safetensors file.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing memory (tied weights) are stored as
    separate copies. The config lives in the file's metadata under the key "config". Returns the path.
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


class atomic_path:
    """``with atomic_path(path) as tmp:`` write to `tmp`; on success it replaces `path` in one step (os.replace),
    on failure it is removed. Readers see the old file or the new one, never half of one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


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
    """Write a checkpoint (`save_safetensors`) and then its card (with `file_bytes` added), each atomically."""
    path = save_safetensors(path, tensors, config)
    write_json(card_path(path), {**card, "file_bytes": path.stat().st_size})
    return path


def read_card(checkpoint: str | os.PathLike) -> dict:
    """The JSON card next to a checkpoint (a clear error if there is none)."""
    path = card_path(checkpoint)
    if not path.is_file():
        raise ValueError(f"no card next to {checkpoint}: expected {path}")
    return json.loads(path.read_text(encoding="utf-8"))


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
    module = cls(cfg_cls(**config))
    load_state_dict_strict(module, tensors, what)
    return module.eval()


def module_config(module: nn.Module) -> dict:
    """The metadata `load_module` reads back: {"config": the module's dataclass config as a dict}."""
    return {"config": asdict(module.cfg)}   # type: ignore[call-overload]
