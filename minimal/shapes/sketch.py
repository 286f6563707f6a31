"""A second, independent way to draw the Shapes world — for evaluation only, never for training.

The main renderer (`render.py`) fills cached, box-filtered masks at whole-pixel positions on a flat, noisy
background. This one draws every object afresh as an outlined polygon: at a sub-pixel position, turned by a few
degrees, with other proportions (a fatter star, thinner cross arms, a narrower diamond), a darker stroke around the
fill, Lanczos downsampling instead of a box filter, a slight blur, and a soft gradient behind. Same vocabulary, same
slots and sizes, so every label keeps its meaning: a model that learned *shapes* rather than one renderer's pixel
patterns should read these images as well as its own (`benchmarks/quality.py`: zeroshot_unseen_other_renderer).

    pixels = sketch_batch(scenes, 32, "seed")      # (B, 3, 32, 32) floats in [0, 1], like render_batch
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .render import _grid, check_canvas, object_px
from .world import RGB, SLOTS, Scene

SCALE = 8                     # drawn 8x larger, then Lanczos-downsampled
STROKE = 0.09                 # outline width as a fraction of the object's side
TURN_DEGREES = 8.0            # each object is turned by up to this much either way


def _outline(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]] | None:
    """The polygon of a shape of half-side r centred on (cx, cy), turned by `turn` radians (None: a circle)."""
    if shape == "circle":
        return None
    if shape == "square":
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif shape == "triangle":
        pts = [(0.0, -r), (r, 0.8 * r), (-r, 0.8 * r)]
    elif shape == "diamond":
        pts = [(0.0, -r), (0.75 * r, 0.0), (0.0, r), (-0.75 * r, 0.0)]
    elif shape == "cross":
        a = 0.3 * r
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a),
               (-a, -a)]
    else:   # star: five points, inner radius half the outer one
        pts = [((r if k % 2 == 0 else 0.5 * r) * math.sin(math.pi * k / 5),
                -(r if k % 2 == 0 else 0.5 * r) * math.cos(math.pi * k / 5)) for k in range(10)]
    c, s = math.cos(turn), math.sin(turn)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _sketch(scene: Scene, size: int, rng: random.Random) -> np.ndarray:
    """(size, size, 3) uint8: one scene in the sketch style. Consumes `rng` in a fixed order."""
    big = size * SCALE
    top, bottom = np.array([246.0, 244, 238]), np.array([222.0, 226, 232])
    ramp = np.linspace(0, 1, big)[:, None, None]
    canvas = Image.fromarray(((1 - ramp) * top + ramp * bottom).repeat(big, 1).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    margin, cell, gutter = _grid(size)
    for obj in scene.objects:
        side = object_px(obj.size, size)
        col, row = SLOTS[obj.position]
        slack = cell - side
        x0 = margin + col * (cell + gutter) + rng.uniform(0, slack)        # sub-pixel placement inside the cell
        y0 = margin + row * (cell + gutter) + rng.uniform(0, slack)
        r = side * SCALE / 2
        cx, cy = (x0 * SCALE + r), (y0 * SCALE + r)
        fill = tuple(int(np.clip(v + rng.randint(-12, 12), 0, 255)) for v in RGB[obj.colour])
        stroke = tuple(int(0.6 * v) for v in fill)
        width = max(1, round(STROKE * side * SCALE))
        outline = _outline(obj.shape, cx, cy, 0.95 * r, math.radians(rng.uniform(-TURN_DEGREES, TURN_DEGREES)))
        if outline is None:
            draw.ellipse([cx - 0.95 * r, cy - 0.95 * r, cx + 0.95 * r, cy + 0.95 * r], fill=fill, outline=stroke,
                         width=width)
        else:
            draw.polygon(outline, fill=fill, outline=stroke, width=width)
    small = canvas.resize((size, size), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.35))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 3.0, (size, size, 3))
    return np.clip(np.asarray(small, dtype=np.float64) + noise + 0.5, 0, 255).astype(np.uint8)


def sketch_batch(scenes: Sequence[Scene], size: int = 32, rng_or_seed: int | str | random.Random = 0) -> torch.Tensor:
    """The scenes drawn in the sketch style: (B, 3, size, size) floats in [0, 1] (not normalised), deterministic
    from `rng_or_seed` (an int or str seeds a generator; a random.Random is consumed)."""
    check_canvas(size)
    if isinstance(scenes, Scene) or not all(isinstance(s, Scene) for s in scenes):
        raise TypeError("scenes must be a list of shapes.Scene")
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(rng_or_seed)
    out = np.stack([_sketch(scene, size, rng) for scene in scenes]) if scenes else np.zeros((0, size, size, 3))
    return torch.from_numpy(out.transpose(0, 3, 1, 2).copy()).float().div_(255.0)
