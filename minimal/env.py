"""Where the code runs: device choice, seeding, the fast-mode switch, online/offline and Colab detection, and
what a measured figure needs beside it (the machine, wall and CPU time, the load of the machine).

    from minimal import env
    device = env.pick_device()      # prints what it chose and why
    env.seed_everything(0)
    FAST = env.fast_mode()          # MINIMAL_FAST=1 shrinks data and steps (the notebook tests set it)
    with env.Timer() as t:          # t.wall, t.cpu, t.load_before/after: what a checkpoint card records
        ...

(Chapters call `minimal.notebook.setup()`, which does the first three lines and more.)
"""

from __future__ import annotations

import os
import platform
import random
import socket
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from .i18n import tr

FAST_ENV_VAR = "MINIMAL_FAST"


def pick_device(prefer: str | None = None, verbose: bool = True) -> torch.device:
    """Return the best available device: cuda, then mps (Apple silicon), then cpu.

    `prefer` (e.g. "cpu") forces a choice; asking for a device that is not available is an error rather than a
    silent fallback, so a reader who asked for the GPU knows they are not getting it.
    """
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if prefer is not None:
        kind = torch.device(prefer).type
        if not available.get(kind, False):
            raise ValueError(f"device {prefer!r} was asked for but is not available here "
                             f"(available: {[k for k, v in available.items() if v]})")
        device = torch.device(prefer)
    else:
        device = torch.device(next(k for k in ("cuda", "mps", "cpu") if available[k]))
    if verbose:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        print(tr("device: {device} ({name}), torch {version}, {threads} CPU threads", device=device, name=name,
                 version=torch.__version__, threads=torch.get_num_threads()))
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) so a run can be repeated exactly."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every random-number state (torch CPU and CUDA, NumPy, Python) as (tensors, JSON-able metadata)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    meta = {"python": random.getstate(), "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Put back what `rng_state` returned (CUDA states only when the device count matches)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                             key=lambda k: int(k.rsplit(".", 1)[1]))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def fast_mode() -> bool:
    """True when MINIMAL_FAST is set to 1/true/yes: notebooks shrink training but keep their assertions.

    Any other non-empty value is an error, so a typo ("ture") never silently runs the long version.
    """
    raw = os.environ.get(FAST_ENV_VAR, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{FAST_ENV_VAR}={raw!r} is not understood; use 1 (fast) or 0 (full)")


def pick(full, fast):
    """`full` normally, `fast` in fast mode: ``steps = env.pick(full=600, fast=60)``."""
    return fast if fast_mode() else full


@lru_cache(maxsize=1)
def is_online(host: str = "huggingface.co", port: int = 443, timeout: float = 1.5) -> bool:
    """Can we reach the model hub? Answers within ~`timeout` seconds, also with no network at all.

    Set MINIMAL_OFFLINE=1 (or HF_HUB_OFFLINE=1) to force the offline path without touching the network.
    The answer is cached for the session: a notebook asks once and every later cell agrees.
    """
    for var in ("MINIMAL_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    # DNS lookups ignore socket timeouts and can hang on a dead resolver, so the whole probe runs in a daemon
    # thread and we stop waiting at the deadline, whatever it is doing.
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def in_colab() -> bool:
    """True inside Google Colab (its runtime imports `google.colab`)."""
    return "google.colab" in sys.modules


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15-minute load averages, rounded (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str | None = None) -> dict:
    """Where a number was measured: CPU model, cores, torch threads, load average, versions, and the GPU's name
    when `device` is a CUDA device."""
    out = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "load_average_1_5_15": load_average(), "torch": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform()}
    if device is not None and torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


class Timer:
    """``with Timer() as t: ...`` -> t.wall and t.cpu (seconds; CPU time of this process, all threads — on a busy
    machine the fairer measure of the work done) and t.load_before / t.load_after (load averages)."""

    def __enter__(self) -> Timer:
        self.load_before: list[float] | None = load_average()
        self.load_after: list[float] | None = None
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.wall = self.cpu = 0.0
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self.load_after = load_average()

    def as_dict(self) -> dict:
        """{"wall_seconds", "process_cpu_seconds", "load_average_before", "load_average_after"} for a card."""
        return {"wall_seconds": round(self.wall, 1), "process_cpu_seconds": round(self.cpu, 1),
                "load_average_before": self.load_before, "load_average_after": self.load_after}
