"""Where the code runs: device choice, seeding, the fast-mode switch, online/offline and Colab detection.

Every chapter starts with::

    from minimal import env
    device = env.pick_device()      # prints what it chose and why
    env.seed_everything(0)
    FAST = env.fast_mode()          # MINIMAL_FAST=1 shrinks data and steps (the notebook tests set it)
"""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
from functools import lru_cache

import numpy as np
import torch

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
        print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
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
