"""The first cell of every chapter, as one call: language, device, seed, fast mode, the Korean font, a clock.

    from minimal import notebook
    LANG = "en"                       # "ko" in the Korean edition, chapters/ko/
    ch = notebook.setup(lang=LANG)    # prints what it chose
    device, FAST = ch.device, ch.fast
    ...
    print(f"chapter run time: {ch.elapsed():.0f} s")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from . import env, i18n, plots
from .i18n import tr


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


def setup(seed: int = 0, device: str | None = None, lang: str = "en") -> Chapter:
    """Set the language of the chapter's messages (`lang`: "en" or "ko", see `minimal.i18n`), pick the device
    (`device` forces one, e.g. "cpu"), seed every generator, read the fast-mode switch and install the Korean font
    for figures; print one line saying what was chosen."""
    i18n.set_language(lang)
    picked = env.pick_device(device)
    env.seed_everything(seed)
    chapter = Chapter(picked, env.fast_mode(), plots.use_korean_font())
    mode = tr("fast") if chapter.fast else tr("full")
    print(tr("mode: {mode} | seed {seed} | Korean font for figures: {font}", mode=mode, seed=seed,
             font=chapter.korean_font))
    return chapter
