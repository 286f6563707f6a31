"""Drawing a scene: anti-aliased shapes on a light, mildly noisy background, with PIL and numpy.

    img = render(scene, size=32, rng_or_seed=0)          # PIL RGB image, 32x32 (use size=64 for pictures)
    batch = render_batch(scenes, 32, "my-seed")          # (B, 3, 32, 32) float in [0, 1]

Measured choices (reproduce with `python benchmarks/shapes_world.py`; tables in data/README.md)
- Size. On a 32 px canvas a cell is 10 px: large objects fill it (10 px), small ones are 7 px (20 and 14 at 64).
  A CNN probe reads every shape, colour and size perfectly at any small size from 4 to 8 px when objects sit on
  whole pixels (as here), so pixel-level decidability does not constrain the choice. With random sub-pixel
  placement, which forces reading the shape rather than one pixel pattern, small-shape accuracy is 83 % at 5 px
  (cross <-> circle), 97.6 % at 6 px and 98.7 % at 7 px (large objects: 99.6 %). 7 px keeps every shape legible
  and still halves the area of a large object. Within its slot a small object is jittered by the renderer's seed
  (augmentation that never changes a label).
- Speed: ~9k images/s for `render` and ~13k/s for `render_batch` at 32 px on one idle Xeon core (~11k and ~18k on
  a quiet 2-core laptop-class VM); a 256-image batch costs ~20 ms. Fresh per-image noise was the biggest cost,
  so every image adds a random crop of one fixed noise tile instead.

Each shape is drawn once per pixel size into an anti-aliased alpha mask (4x supersampled, then box-filtered
down) and cached; a picture is then a few numpy blends, which is why rendering takes ~50 us.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from PIL import Image, ImageDraw

from .world import RGB, SHAPES, SLOTS, Scene

SUPERSAMPLE = 4
BACKGROUND = 235           # light grey; each image shifts it by up to +-8 levels
NOISE_STD = 4.0            # mild per-pixel Gaussian noise (levels of 255)
SIZE_FRACTION = {"large": 1.0, "small": 0.7}   # of the cell width: 10 and 7 px at 32, 20 and 14 at 64 (measured)


def check_canvas(size: int) -> None:
    """Raise a clear ValueError unless `size` is a canvas size the renderer draws (an int in 16..512 px)."""
    _grid(size)


@cache
def _grid(size: int) -> tuple[int, int, int]:
    """(margin, cell, gutter) of the 3x3 grid: margin + 3 cells + 2 gutters = size. The gutter (>= 1 px) keeps two
    large objects in neighbouring cells visibly apart, e.g. two large red squares never merge into one rectangle."""
    if not isinstance(size, int) or not 16 <= size <= 512:
        raise ValueError(f"canvas size must be an int in 16..512 px, got {size!r}")
    gutter = max(1, round(size / 32))
    cell = (size - 2 * gutter) // 3
    margin = (size - 3 * cell - 2 * gutter) // 2
    return margin, cell, gutter


def object_px(size_word: str, canvas: int) -> int:
    """Side of an object's bounding box in pixels: large fills its cell, small is SIZE_FRACTION["small"] of it."""
    return max(3, round(SIZE_FRACTION[size_word] * _grid(canvas)[1]))


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    # inner radius 0.45 R (a textbook star uses 0.38): fatter points survive downsampling to 7 px
    return [(cx + (r if k % 2 == 0 else 0.45 * r) * np.sin(np.pi * k / 5),
             cy - (r if k % 2 == 0 else 0.45 * r) * np.cos(np.pi * k / 5)) for k in range(10)]


def draw_shape(shape: str, px: int, supersample: int = SUPERSAMPLE) -> Image.Image:
    """`shape` drawn white on black in a (px*supersample)^2 "L" image: the high-resolution source of a mask."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    big = px * supersample
    lo, hi = 0.04 * big, 0.96 * big      # a hair of inset softens edges that touch the box
    mid, span = big / 2, hi - lo
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([lo, lo, hi, hi], fill=255)
    elif shape == "square":
        draw.rectangle([lo, lo, hi, hi], fill=255)
    elif shape == "triangle":
        draw.polygon([(mid, lo), (hi, hi), (lo, hi)], fill=255)
    elif shape == "diamond":
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=255)
    elif shape == "cross":
        # arms ~36 % of the box, snapped to whole pixels of the same parity as px so they are centred on pixel
        # edges: a 7 px cross gets crisp 3 px arms instead of 2.5 px ones smeared over 4 pixels.
        arm = round(0.36 * px)
        arm += (arm - px) % 2 if arm > 1 else 0
        a, b = (big - arm * supersample) // 2, (big + arm * supersample) // 2 - 1   # PIL boxes are inclusive
        draw.rectangle([lo, a, hi, b], fill=255)
        draw.rectangle([a, lo, b, hi], fill=255)
    else:  # star: as wide as the box, centred vertically (a 5-point star is 0.95 as tall as it is wide)
        r = span / (2 * np.sin(2 * np.pi / 5))
        height = r * (1 + np.cos(np.pi / 5))
        draw.polygon(_star(mid, lo + (span - height) / 2 + r, r), fill=255)
    return img


@cache
def shape_mask(shape: str, px: int) -> np.ndarray:
    """Anti-aliased coverage of `shape` in a px x px box: float32 array (px, px) in [0, 1]. Cached: drawn 4x
    supersampled, then box-filtered down, so an edge pixel holds the fraction of it the shape covers."""
    small = draw_shape(shape, px).resize((px, px), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


VARIANTS = 32              # drawn variants per (shape, pixel size) that `render_batch(..., variety=...)` picks from


@cache
def variant_masks(shape: str, px: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Variant `k` of `shape` in a px x px box: (fill, stroke) coverages, float32 arrays (px, px) in [0, 1].

    Another hand could draw the same shape a little differently: turned by up to 10 degrees, placed at a sub-pixel
    offset, with other proportions (cross arms 26-44 % of the box, star inner radius 0.38-0.55, a diamond 70-100 %
    as wide as tall, a triangle 80-100 % as tall as wide) and, for half the variants, a darker outline. Variants are
    deterministic from (shape, px, k) and cached; none changes what the shape is called."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    rng = random.Random(f"variant/{shape}/{px}/{k}")
    big = px * SUPERSAMPLE
    turn = np.radians(rng.uniform(-10, 10))
    r = big / 2 * rng.uniform(0.82, 0.94)                      # room left for the offset and the turn
    cx = big / 2 + rng.uniform(-1, 1) * (big / 2 - r) * 0.9
    cy = big / 2 + rng.uniform(-1, 1) * (big / 2 - r) * 0.9
    if shape == "square":
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif shape == "triangle":
        h = r * rng.uniform(0.8, 1.0)
        pts = [(0.0, -h), (r, h), (-r, h)]
    elif shape == "diamond":
        wd = r * rng.uniform(0.7, 1.0)
        pts = [(0.0, -r), (wd, 0.0), (0.0, r), (-wd, 0.0)]
    elif shape == "cross":
        a = r * rng.uniform(0.26, 0.44)
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a),
               (-a, -a)]
    elif shape == "star":
        inner = rng.uniform(0.38, 0.55)
        pts = [((r if i % 2 == 0 else inner * r) * np.sin(np.pi * i / 5),
                -(r if i % 2 == 0 else inner * r) * np.cos(np.pi * i / 5)) for i in range(10)]
    else:   # circle: an ellipse, turned like the rest
        ax, ay = r, r * rng.uniform(0.9, 1.0)
        pts = [(ax * np.cos(t), ay * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 48, endpoint=False)]
    c, s = np.cos(turn), np.sin(turn)
    poly = [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    width = round(rng.uniform(0.08, 0.16) * big) if k % 2 else 0      # odd variants carry an outline
    fill, line = Image.new("L", (big, big), 0), Image.new("L", (big, big), 0)
    ImageDraw.Draw(fill).polygon(poly, fill=255)
    if width:
        ImageDraw.Draw(line).polygon(poly, outline=255, width=width)

    def down(img: Image.Image) -> np.ndarray:
        return np.asarray(img.resize((px, px), Image.Resampling.BOX), dtype=np.float32) / 255.0

    stroke = down(line)
    return down(fill) * (1 - stroke), stroke


@cache
def _noise_bank() -> np.ndarray:
    """A fixed 512x512 tile of Gaussian noise (in levels); each image adds a random crop of it. Fresh noise per image
    would cost more than the rest of rendering put together (~60 us for 32x32x3 on a laptop core), and crops of one
    tile already give >200k distinct noise patterns per canvas size."""
    return (np.random.default_rng(2026).standard_normal((512, 512, 3)) * NOISE_STD).astype(np.float32)


_RGB_F32 = {c: np.asarray(v, dtype=np.float32) for c, v in RGB.items()}


def _as_rng(rng_or_seed: int | str | random.Random) -> random.Random:
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if isinstance(rng_or_seed, int | str):
        return random.Random(rng_or_seed)
    raise TypeError(f"rng_or_seed must be an int, a str or a random.Random, got {type(rng_or_seed).__name__}")


def _check_scene(scene: object, name: str = "scene") -> None:
    if not isinstance(scene, Scene):
        raise TypeError(f"{name} must be a shapes.Scene (e.g. from sample_scene), got {type(scene).__name__}")


def _draw(scene: Scene, size: int, rng: random.Random, variety: float = 0.0) -> np.ndarray:
    """The renderer proper: (size, size, 3) uint8. Draws from `rng` in a fixed order: background, jitter, noise
    (and, only when `variety` > 0, per object: whether to draw a variant, which one and its outline's shade)."""
    margin, cell, gutter = _grid(size)
    canvas = np.full((size, size, 3), BACKGROUND + rng.randrange(-8, 9), dtype=np.float32)
    for obj in scene.objects:
        px = object_px(obj.size, size)
        col, row = SLOTS[obj.position]
        slack = cell - px                              # jitter stays inside the cell, so labels never change
        x0 = margin + col * (cell + gutter) + rng.randrange(slack + 1)
        y0 = margin + row * (cell + gutter) + rng.randrange(slack + 1)
        patch = canvas[y0:y0 + px, x0:x0 + px]
        colour = _RGB_F32[obj.colour]
        if variety and rng.random() < variety:
            fill, stroke = variant_masks(obj.shape, px, rng.randrange(VARIANTS))
            patch += fill[..., None] * (colour - patch)
            patch += stroke[..., None] * (colour * rng.uniform(0.45, 0.8) - patch)   # a darker outline
        else:
            patch += shape_mask(obj.shape, px)[..., None] * (colour - patch)     # alpha blend, in place
    bank = _noise_bank()
    oy, ox = rng.randrange(bank.shape[0] - size + 1), rng.randrange(bank.shape[1] - size + 1)
    canvas += bank[oy:oy + size, ox:ox + size]
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)   # +0.5 then truncate = round


def render(scene: Scene, size: int = 32, rng_or_seed: int | str | random.Random = 0) -> Image.Image:
    """Draw `scene` as a size x size RGB PIL image. Same scene + same seed -> byte-identical image.

    rng_or_seed: an int (or str) seeds the background shade, the jitter of small objects and the noise crop; a
    random.Random is consumed instead, so successive calls with one generator give different images.
    """
    _check_scene(scene)
    return Image.fromarray(_draw(scene, size, _as_rng(rng_or_seed)))   # (H, W, 3) uint8 -> RGB


def render_batch(scenes: Sequence[Scene], size: int = 32, rng_or_seed: int | str | random.Random = 0,
                 variety: float = 0.0) -> torch.Tensor:
    """Render many scenes straight into a float tensor (B, 3, size, size) in [0, 1] (not normalised).

    One generator is consumed in order: image i equals `render(scenes[i], size, rng)` after i earlier calls with
    the same rng. Skipping PIL makes this ~1.5x faster than calling `render` + `to_tensor` per image.
    `variety` (training only, default 0): the fraction of objects drawn as one of `VARIANTS` hand-drawn-like
    variants (`variant_masks`) instead of the one cached mask — a shape must then be read, not matched.
    """
    if not isinstance(variety, int | float) or isinstance(variety, bool) or not 0.0 <= variety <= 1.0:
        raise ValueError(f"variety must be a number in [0, 1], got {variety!r}")
    if isinstance(scenes, Scene) or not isinstance(scenes, Sequence) or isinstance(scenes, str):
        hint = " (one scene? pass [scene])" if isinstance(scenes, Scene) else ""
        raise TypeError(f"scenes must be a list or tuple of shapes.Scene, got {type(scenes).__name__}{hint}")
    for i, scene in enumerate(scenes):
        _check_scene(scene, f"scenes[{i}]")
    check_canvas(size)
    rng = _as_rng(rng_or_seed)
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        out[i] = _draw(scene, size, rng, variety)
    return torch.from_numpy(out.transpose(0, 3, 1, 2).copy()).float().div_(255.0)   # contiguous NCHW
