"""The first cell of every chapter, as one call: device, seed, fast mode, the Korean font, a clock.

    from minimal import notebook
    ch = notebook.setup()             # prints what it chose
    device, FAST = ch.device, ch.fast
    ...
    print(f"chapter run time: {ch.elapsed():.0f} s")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from . import env, plots


@dataclass
class Chapter:
    """What a chapter needs to know about where it runs. `fast`: MINIMAL_FAST=1 (the notebook tests) shrinks data
    and steps but keeps every assertion; `korean_font`: Hangul renders in figures."""

    device: torch.device
    fast: bool
    korean_font: bool
    start: float = field(default_factory=time.time)

    def elapsed(self) -> float:
        """Seconds since `setup` (for the chapter's measured time table)."""
        return time.time() - self.start


def setup(seed: int = 0, device: str | None = None) -> Chapter:
    """Pick the device (`device` forces one, e.g. "cpu"), seed every generator, read the fast-mode switch and
    install the Korean font for figures; print one line saying what was chosen."""
    picked = env.pick_device(device)
    env.seed_everything(seed)
    chapter = Chapter(picked, env.fast_mode(), plots.use_korean_font())
    print(f"mode: {'fast' if chapter.fast else 'full'} | seed {seed} | Korean font for figures: {chapter.korean_font}")
    return chapter
