"""The Shapes world: the small synthetic image–caption world the whole course trains on (DESIGN §4).

Real photos cannot be downloaded in every classroom and a laptop CPU must learn in minutes, so the course draws
its own CLEVR-like world with PIL. Everything is deterministic from a seed::

    rng = random.Random(0)
    scene = sample_scene(rng)                 # Scene(objects=(Obj('star', 'red', 'small', 'left'), ...))
    img = render(scene, size=32, rng_or_seed=0)   # PIL RGB image, 32x32 (use size=64 for pictures)
    captions(scene, "en"), captions(scene, "ko")  # several templates each, English and Korean
    questions(scene)                          # [QA('what colour is the star?', 'red', 'colour'), ...]
    ZERO_SHOT_TASKS["colour_shape"].sample(rng, "heldout")   # (Scene, "yellow circle")

The world
- 6 shapes x 8 hues x 2 sizes, 1-3 objects per scene. Each object sits in one of five slots of a plus-shaped
  layout (left, right, top, bottom, centre), so positions never overlap and "where" always has one answer;
  within its slot a small object is jittered by the renderer's seed (augmentation that never changes a label).
- Relations "left of" / "above" are stated for two-object scenes. Slots lie on a 3x3 grid with a gutter
  between cells, so "A left of B" holds for every pixel of A and B, not only their centres.
- HELD_OUT_PAIRS: 8 colour-shape pairs (one per colour) never rendered in the "train" split. Every colour and
  every shape still appears in train, so a model that learned "red" and "square" separately can be asked, zero
  shot, for the unseen "red square" — the course's proof that language supervision composes.

Measured choices (reproduce with `python benchmarks/shapes_world.py`; tables in data/README.md)
- Size. On a 32 px canvas a cell is 10 px: large objects fill it (10 px), small ones are 7 px (20 and 14 at 64).
  A CNN probe reads every shape, colour and size perfectly at any small size from 4 to 8 px when objects sit on
  whole pixels (as here), so pixel-level decidability does not constrain the choice. With random sub-pixel
  placement, which forces reading the shape rather than one pixel pattern, small-shape accuracy is 83 % at 5 px
  (cross <-> circle), 97.6 % at 6 px and 98.7 % at 7 px (large objects: 99.6 %). 7 px keeps every shape legible
  and still halves the area of a large object.
- Speed: ~9k images/s for `render` and ~13k/s for `render_batch` at 32 px on one idle Xeon core (~11k and ~18k on
  a quiet 2-core laptop-class VM); a 256-image batch costs ~20 ms. Fresh per-image noise was the biggest cost,
  so every image adds a random crop of one fixed noise tile instead.

Korean
- Captions are written in Korean directly (not word-for-word translations): noun phrases such as
  "왼쪽에 있는 작은 빨간 원", with particles (과/와, 이/가, 은/는) chosen by the final consonant.
- Questions exist in both languages with the SAME single-word English answers ("red", "two", "yes"), so one
  answer vocabulary and one accuracy metric serve both; `KO[answer]` gives the Korean word for display.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

# ----------------------------------------------------------------------------------------------------------------
# Vocabulary

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
SPLITS = ("train", "heldout", "any")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
MAX_OBJECTS = 3

# Eight hues spread around the colour wheel (0, 30, 50, 130, 190, 225, 275, 320 degrees), saturated and mid-dark
# so each stands out on the light background; with mild noise the nearest pair is still >60 RGB levels apart.
RGB = {
    "red": (215, 35, 35),
    "orange": (240, 130, 15),
    "yellow": (220, 190, 0),
    "green": (40, 150, 50),
    "cyan": (0, 170, 190),
    "blue": (35, 65, 215),
    "purple": (130, 45, 185),
    "pink": (230, 80, 180),
}

# One pair per colour; shapes circle and square are held out twice, the other four once. Each colour keeps 5
# training shapes and each shape keeps >= 6 training colours: 40 training pairs, 8 unseen.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "square"),
    ("orange", "cross"),
    ("yellow", "circle"),
    ("green", "star"),
    ("cyan", "triangle"),
    ("blue", "diamond"),
    ("purple", "circle"),
    ("pink", "square"),
})
ALL_PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES)
TRAIN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS)

# Korean. Colours have two forms: the adjective before a noun ("빨간 원") and the noun used as an answer or a
# predicate ("원은 빨간색이다"). The cross is 십자 모양 ("cross shape"): bare 십자 + the subject particle 가 would
# read 십자가, "a crucifix".
KO_SHAPES = {"circle": "원", "square": "정사각형", "triangle": "삼각형", "diamond": "마름모", "cross": "십자 모양",
             "star": "별"}
KO_COLOURS = {"red": "빨간", "orange": "주황색", "yellow": "노란", "green": "초록색", "cyan": "청록색",
              "blue": "파란", "purple": "보라색", "pink": "분홍색"}
KO_COLOUR_NOUNS = {"red": "빨간색", "orange": "주황색", "yellow": "노란색", "green": "초록색", "cyan": "청록색",
                   "blue": "파란색", "purple": "보라색", "pink": "분홍색"}
KO_SIZES = {"small": "작은", "large": "큰"}
KO_POSITIONS = {"left": "왼쪽", "right": "오른쪽", "top": "위쪽", "bottom": "아래쪽", "centre": "가운데"}
KO_NUMBERS = {1: "한", 2: "두", 3: "세"}  # counting form, as in "두 개"
KO_THING = "도형"  # "figure": the noun when the shape is not named
# Every English label/answer word -> Korean (for display, glossaries, Korean answers if wanted).
KO: dict[str, str] = {
    **KO_SHAPES, **KO_COLOUR_NOUNS, **KO_SIZES, **KO_POSITIONS,
    "one": "하나", "two": "둘", "three": "셋", "yes": "네", "no": "아니요",
}


def _has_final_consonant(word: str) -> bool:
    """Does the last Hangul syllable end in a consonant (받침)? Decides 과/와, 이/가, 은/는."""
    code = ord(word[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def josa(word: str, after_consonant: str, after_vowel: str) -> str:
    """`word` + the right form of a Korean particle: josa("원", "과", "와") -> "원과", josa("별", "이", "가") -> "별이"."""
    return word + (after_consonant if _has_final_consonant(word) else after_vowel)


# ----------------------------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class Obj:
    """One object: a shape word, a colour word, a size word and a position (slot) word."""

    shape: str
    colour: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for field, value, allowed in (("shape", self.shape, SHAPES), ("colour", self.colour, COLOURS),
                                      ("size", self.size, SIZES), ("position", self.position, POSITIONS)):
            if value not in allowed:
                raise ValueError(f"Obj {field}={value!r} is not one of {allowed}")

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """1-3 objects in distinct slots. Object order is the order captions mention them in."""

    objects: tuple[Obj, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple) or not all(isinstance(o, Obj) for o in self.objects):
            raise ValueError("Scene.objects must be a tuple of Obj")
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has 1-{MAX_OBJECTS} objects, got {len(self.objects)}")
        positions = [o.position for o in self.objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two objects share a position: {positions}")

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {o.pair for o in self.objects}

    def is_heldout(self) -> bool:
        """True if any object is a held-out colour-shape pair (such scenes never occur in the train split)."""
        return bool(self.pairs & HELD_OUT_PAIRS)


# The slots lie on a 3x3 grid: (column, row). Relations compare grid cells, which never overlap.
_SLOT = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2), "centre": (1, 1)}


def left_of(a: Obj, b: Obj) -> bool:
    """Every pixel of `a` is left of every pixel of `b` (their grid columns differ)."""
    return _SLOT[a.position][0] < _SLOT[b.position][0]


def above(a: Obj, b: Obj) -> bool:
    """Every pixel of `a` is above every pixel of `b` (their grid rows differ)."""
    return _SLOT[a.position][1] < _SLOT[b.position][1]


def sample_scene(rng: random.Random, n_objects: int | None = None,
                 split: Literal["train", "heldout", "any"] = "train") -> Scene:
    """Draw a scene. n_objects: 1-3 (default uniform). split: "train" = no held-out pair anywhere in the scene;
    "heldout" = at least one object is a held-out pair; "any" = no constraint. Uses only `rng` (deterministic)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = rng.randint(1, MAX_OBJECTS) if n_objects is None else n_objects
    if not isinstance(n, int) or not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be 1-{MAX_OBJECTS}, got {n_objects!r}")
    positions = rng.sample(POSITIONS, n)
    pairs = [rng.choice(TRAIN_PAIRS if split == "train" else ALL_PAIRS) for _ in range(n)]
    if split == "heldout":  # force one object (a random one) onto a held-out pair
        pairs[rng.randrange(n)] = rng.choice(sorted(HELD_OUT_PAIRS))
    return Scene(tuple(Obj(shape, colour, rng.choice(SIZES), pos)
                       for (colour, shape), pos in zip(pairs, positions, strict=True)))


# ----------------------------------------------------------------------------------------------------------------
# Rendering. Each shape is drawn once per pixel size into an anti-aliased alpha mask (4x supersampled, then box-
# filtered down) and cached; a picture is then a few numpy blends, which is why rendering takes ~50 us.

SUPERSAMPLE = 4
BACKGROUND = 235           # light grey; each image shifts it by up to +-8 levels
NOISE_STD = 4.0            # mild per-pixel Gaussian noise (levels of 255)
SIZE_FRACTION = {"large": 1.0, "small": 0.7}   # of the cell width: 10 and 7 px at 32, 20 and 14 at 64 (measured)


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


@cache
def _noise_bank() -> np.ndarray:
    """A fixed 512x512 tile of Gaussian noise (in levels); each image adds a random crop of it. Fresh noise per image
    would cost more than the rest of rendering put together (~60 us for 32x32x3 on a laptop core), and crops of one
    tile already give >200k distinct noise patterns per canvas size."""
    return (np.random.default_rng(2026).standard_normal((512, 512, 3)) * NOISE_STD).astype(np.float32)


_RGB_F32 = {c: np.asarray(v, dtype=np.float32) for c, v in RGB.items()}


def _as_rng(rng_or_seed: int | random.Random) -> random.Random:
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if isinstance(rng_or_seed, int | str):
        return random.Random(rng_or_seed)
    raise TypeError(f"rng_or_seed must be an int, a str or a random.Random, got {type(rng_or_seed).__name__}")


def _draw(scene: Scene, size: int, rng: random.Random) -> np.ndarray:
    """The renderer proper: (size, size, 3) uint8. Draws from `rng` in a fixed order: background, jitter, noise."""
    margin, cell, gutter = _grid(size)
    canvas = np.full((size, size, 3), BACKGROUND + rng.randrange(-8, 9), dtype=np.float32)
    for obj in scene.objects:
        px = object_px(obj.size, size)
        col, row = _SLOT[obj.position]
        slack = cell - px                              # jitter stays inside the cell, so labels never change
        x0 = margin + col * (cell + gutter) + rng.randrange(slack + 1)
        y0 = margin + row * (cell + gutter) + rng.randrange(slack + 1)
        alpha = shape_mask(obj.shape, px)[..., None]
        patch = canvas[y0:y0 + px, x0:x0 + px]
        patch += alpha * (_RGB_F32[obj.colour] - patch)   # alpha blend, in place
    bank = _noise_bank()
    oy, ox = rng.randrange(bank.shape[0] - size + 1), rng.randrange(bank.shape[1] - size + 1)
    canvas += bank[oy:oy + size, ox:ox + size]
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)   # +0.5 then truncate = round


def render(scene: Scene, size: int = 32, rng_or_seed: int | str | random.Random = 0) -> Image.Image:
    """Draw `scene` as a size x size RGB PIL image. Same scene + same seed -> byte-identical image.

    rng_or_seed: an int (or str) seeds the background shade, the jitter of small objects and the noise crop; a
    random.Random is consumed instead, so successive calls with one generator give different images.
    """
    return Image.fromarray(_draw(scene, size, _as_rng(rng_or_seed)))   # (H, W, 3) uint8 -> RGB


def render_batch(scenes: Sequence[Scene], size: int = 32, rng_or_seed: int | str | random.Random = 0
                 ) -> torch.Tensor:
    """Render many scenes straight into a float tensor (B, 3, size, size) in [0, 1] (not normalised).

    One generator is consumed in order: image i equals `render(scenes[i], size, rng)` after i earlier calls with
    the same rng. Skipping PIL makes this ~1.5x faster than calling `render` + `to_tensor` per image.
    """
    rng = _as_rng(rng_or_seed)
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        out[i] = _draw(scene, size, rng)
    return torch.from_numpy(out.transpose(0, 3, 1, 2).copy()).float().div_(255.0)   # contiguous NCHW


# The pixel statistics of OpenAI CLIP's preprocessing. Using them for our world too means one normalisation serves
# our tiny models and the real CLIP weights of chapter 07 (which were trained with them).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> contiguous float tensor (3, H, W) in [0, 1] (any mode becomes RGB first, see `to_rgb`)."""
    arr = np.array(to_rgb(img), dtype=np.uint8)          # a writable copy, (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel; x is (3, H, W) or (B, 3, H, W) in [0, 1]."""
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W), got {tuple(x.shape)}")
    mean = torch.tensor(IMAGE_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels (RGBA, LA, P with transparency) are composited over white, because a
    plain convert("RGB") would show whatever colour hides under alpha=0 (often black)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


# ----------------------------------------------------------------------------------------------------------------
# Captions. Several templates per scene: everything at once, colour+shape, a count, colour only, shape only,
# colour and shape in separate words ("the circle on the left is red"), size+shape, and relations. Naming colour and
# shape apart as well as together is what lets a model compose an unseen pair from words it has seen.

_EN_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
             "centre": "in the centre"}


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _en_np(o: Obj, size: bool = True, colour: bool = True, shape: bool = True, where: bool = True) -> str:
    """Indefinite noun phrase: "a small red circle on the left"; "shape" stands in when the shape is not named."""
    words = ([o.size] if size else []) + ([o.colour] if colour else []) + [o.shape if shape else "shape"]
    return _a(" ".join(words)) + (" " + _EN_WHERE[o.position] if where else "")


def _en_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _ko_np(o: Obj, size: bool = True, colour: bool = True, shape: bool = True, where: bool = True) -> str:
    """Korean noun phrase, modifiers before the noun: "왼쪽에 있는 작은 빨간 원"."""
    words = ([KO_POSITIONS[o.position] + "에 있는"] if where else []) + ([KO_SIZES[o.size]] if size else [])
    words += [KO_COLOURS[o.colour]] if colour else []
    return " ".join(words + [KO_SHAPES[o.shape] if shape else KO_THING])


def _ko_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-2] + [josa(items[-2], "과", "와") + " " + items[-1]])


def _dedupe(items: list) -> list:
    return list(dict.fromkeys(items))


# The templates of `captions`, in their fixed order (other modules index them: [0] is the complete description).
CAPTION_TEMPLATES = ("full", "colour_shape", "count", "colour_only", "shape_only", "colour_shape_apart",
                     "size_shape")


def captions(scene: Scene, lang: Literal["en", "ko"] = "en") -> list[str]:
    """Every caption template realised for `scene`, each one true of it: the 7 CAPTION_TEMPLATES in that order
    (index 0 = every attribute of every object, objects in scene order), then for two-object scenes one caption per
    relation that holds ("A to the left of B", "A above B"; 1 or 2 of them)."""
    objs, n = scene.objects, len(scene.objects)
    pairs = [(a, b) for a in objs for b in objs if a is not b] if n == 2 else []
    if lang == "en":
        caps = [
            _en_list([_en_np(o) for o in objs]),
            _en_list([_en_np(o, size=False, where=False) for o in objs]),
            f"there {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}: "
            + _en_list([_en_np(o, where=False) for o in objs]),
            _en_list([_en_np(o, size=False, shape=False) for o in objs]),
            _en_list([_en_np(o, size=False, colour=False) for o in objs]),
            _en_list([f"the {o.shape} {_EN_WHERE[o.position]} is {o.colour}" for o in objs]),
            _en_list([_en_np(o, colour=False, where=False) for o in objs]),
        ]
        caps += [f"{_en_np(a, size=False, where=False)} to the left of {_en_np(b, size=False, where=False)}"
                 for a, b in pairs if left_of(a, b)]
        caps += [f"{_en_np(a, size=False, where=False)} above {_en_np(b, size=False, where=False)}"
                 for a, b in pairs if above(a, b)]
    elif lang == "ko":
        caps = [
            _ko_list([_ko_np(o) for o in objs]),
            _ko_list([_ko_np(o, size=False, where=False) for o in objs]),
            f"{KO_THING} {KO_NUMBERS[n]} 개: " + _ko_list([_ko_np(o, where=False) for o in objs]),
            _ko_list([_ko_np(o, size=False, shape=False) for o in objs]),
            _ko_list([_ko_np(o, size=False, colour=False) for o in objs]),
            "이고, ".join(f"{KO_POSITIONS[o.position]}의 {josa(KO_SHAPES[o.shape], '은', '는')} "
                         f"{KO_COLOUR_NOUNS[o.colour]}" for o in objs) + "이다",
            _ko_list([_ko_np(o, colour=False, where=False) for o in objs]),
        ]
        caps += [f"{josa(_ko_np(a, size=False, where=False), '이', '가')} "
                 f"{_ko_np(b, size=False, where=False)}의 왼쪽에 있다" for a, b in pairs if left_of(a, b)]
        caps += [f"{josa(_ko_np(a, size=False, where=False), '이', '가')} "
                 f"{_ko_np(b, size=False, where=False)}보다 위에 있다" for a, b in pairs if above(a, b)]
    else:
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")
    return caps


def caption(scene: Scene, rng: random.Random, lang: Literal["en", "ko", "both"] = "en") -> str:
    """One caption drawn with `rng` from `captions(scene, lang)`; lang="both" first picks the language."""
    if lang == "both":
        lang = rng.choice(("en", "ko"))
    return rng.choice(captions(scene, lang))


# ----------------------------------------------------------------------------------------------------------------
# Questions. Built first as language-neutral specs (kind, template, argument, answer), then worded in English or
# Korean, so both languages ask the same questions with the same answers. A question that refers to "the X" is
# only asked when exactly one object is an X; positions are always unique (one object per slot).


@dataclass(frozen=True)
class QA:
    """A question about a scene and its single-word English answer. kind: colour|shape|count|exists|position."""

    question: str
    answer: str
    kind: str


QA_KINDS = ("colour", "shape", "count", "exists", "position")


def _question_specs(scene: Scene) -> list[tuple[str, str, object, str]]:
    objs = scene.objects
    shapes, colours, pairs = (Counter(o.shape for o in objs), Counter(o.colour for o in objs),
                              Counter(o.pair for o in objs))
    specs: list[tuple[str, str, object, str]] = []
    for o in objs:
        specs.append(("colour", "at", o.position, o.colour))
        if shapes[o.shape] == 1:
            specs.append(("colour", "the_shape", o.shape, o.colour))
    for o in objs:
        specs.append(("shape", "at", o.position, o.shape))
        if colours[o.colour] == 1:
            specs.append(("shape", "the_colour", o.colour, o.shape))
    specs.append(("count", "all", None, NUMBER_WORDS[len(objs)]))
    specs += [("count", "shape", s, NUMBER_WORDS[k]) for s, k in shapes.items()]
    # Existence questions come in yes/no pairs, so the answer is balanced in every scene. "No" questions never
    # name a held-out pair: a train-split QA set mentions no unseen composition, in pixels or in words. The
    # preferred negatives swap the colour of one object with the shape of another ("is there a red square?" next
    # to a red circle and a blue square), which can only be answered by binding colour to shape.
    key = zlib.crc32(repr(scene).encode())        # a deterministic, scene-dependent choice among negatives
    swaps = [(o.colour, p.shape) for o in objs for p in objs if (o.colour, p.shape) not in pairs]
    others = [p for p in TRAIN_PAIRS if p not in pairs]
    others = others[key % len(others):] + others[:key % len(others)]
    negatives = [p for p in _dedupe(swaps + others) if p not in HELD_OUT_PAIRS]
    for yes, no in zip(pairs, negatives, strict=False):
        specs += [("exists", "pair", yes, "yes"), ("exists", "pair", no, "no")]
    absent_shapes = [s for s in SHAPES if s not in shapes]
    absent_colours = [c for c in COLOURS if c not in colours]
    for i, s in enumerate(shapes):
        specs += [("exists", "shape", s, "yes"),
                  ("exists", "shape", absent_shapes[(key + i) % len(absent_shapes)], "no")]
    for i, c in enumerate(colours):
        specs += [("exists", "colour", c, "yes"),
                  ("exists", "colour", absent_colours[(key + i) % len(absent_colours)], "no")]
    for o in objs:
        if pairs[o.pair] == 1:
            specs.append(("position", "pair", o.pair, o.position))
        if shapes[o.shape] == 1:
            specs.append(("position", "shape", o.shape, o.position))
    return _dedupe(specs)


def _ko_pair(pair: tuple[str, str]) -> str:
    return f"{KO_COLOURS[pair[0]]} {KO_SHAPES[pair[1]]}"


# (kind, template) -> wording of the question about `arg` (a position, shape, colour or (colour, shape) pair).
_EN_QUESTIONS: dict[tuple[str, str], Callable] = {
    ("colour", "at"): lambda arg: f"what colour is the shape {_EN_WHERE[arg]}?",
    ("colour", "the_shape"): lambda arg: f"what colour is the {arg}?",
    ("shape", "at"): lambda arg: f"what shape is {_EN_WHERE[arg]}?",
    ("shape", "the_colour"): lambda arg: f"what shape is the {arg} thing?",
    ("count", "all"): lambda arg: "how many shapes are there?",
    ("count", "shape"): lambda arg: f"how many {_plural(arg)} are there?",
    ("exists", "pair"): lambda arg: f"is there {_a(' '.join(arg))}?",
    ("exists", "shape"): lambda arg: f"is there {_a(arg)}?",
    ("exists", "colour"): lambda arg: f"is there {_a(arg)} thing?",
    ("position", "pair"): lambda arg: f"where is the {' '.join(arg)}?",
    ("position", "shape"): lambda arg: f"where is the {arg}?",
}
_KO_QUESTIONS: dict[tuple[str, str], Callable] = {
    ("colour", "at"): lambda arg: f"{KO_POSITIONS[arg]}에 있는 도형은 무슨 색인가요?",
    ("colour", "the_shape"): lambda arg: f"{josa(KO_SHAPES[arg], '은', '는')} 무슨 색인가요?",
    ("shape", "at"): lambda arg: f"{KO_POSITIONS[arg]}에 있는 도형은 어떤 모양인가요?",
    ("shape", "the_colour"): lambda arg: f"{KO_COLOURS[arg]} 도형은 어떤 모양인가요?",
    ("count", "all"): lambda arg: "도형이 몇 개 있나요?",
    ("count", "shape"): lambda arg: f"{josa(KO_SHAPES[arg], '이', '가')} 몇 개 있나요?",
    ("exists", "pair"): lambda arg: f"{josa(_ko_pair(arg), '이', '가')} 있나요?",
    ("exists", "shape"): lambda arg: f"{josa(KO_SHAPES[arg], '이', '가')} 있나요?",
    ("exists", "colour"): lambda arg: f"{KO_COLOURS[arg]} 도형이 있나요?",
    ("position", "pair"): lambda arg: f"{josa(_ko_pair(arg), '은', '는')} 어디에 있나요?",
    ("position", "shape"): lambda arg: f"{josa(KO_SHAPES[arg], '은', '는')} 어디에 있나요?",
}


def questions(scene: Scene, lang: Literal["en", "ko"] = "en") -> list[QA]:
    """All unambiguous questions about `scene` with single-word English answers (see module docstring).

    kinds: colour ("red"), shape ("circle"), count ("one".."three"), exists ("yes"/"no", balanced within every
    scene), position ("left", "right", "top", "bottom", "centre"). lang="ko" words the same questions in Korean,
    in the same order, with the same (English) answers.
    """
    if lang not in ("en", "ko"):
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")
    wording = _EN_QUESTIONS if lang == "en" else _KO_QUESTIONS
    return [QA(wording[kind, template](arg), answer, kind) for kind, template, arg, answer in _question_specs(scene)]


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot tasks: the mini replica of CLIP's "27 datasets". Each task poses scenes on which its label is
# unambiguous: one object for colour/shape/size/position (a two-object scene has no single colour), 1-3 for count.
# count and position play the part of the paper's specialised datasets where zero-shot is weak.


@dataclass(frozen=True)
class ZeroShotTask:
    """name; labels (class names, in order); sample(rng, split) -> (scene, label) with label in labels."""

    name: str
    labels: list[str]
    sample: Callable[[random.Random, str], tuple[Scene, str]]
    description: str = ""


def _single(attribute: Callable[[Obj], str]) -> Callable[[random.Random, str], tuple[Scene, str]]:
    def sample(rng: random.Random, split: str = "any") -> tuple[Scene, str]:
        scene = sample_scene(rng, 1, split)
        return scene, attribute(scene.objects[0])
    return sample


def _count_sample(rng: random.Random, split: str = "any") -> tuple[Scene, str]:
    scene = sample_scene(rng, rng.randint(1, MAX_OBJECTS), split)
    return scene, NUMBER_WORDS[len(scene.objects)]


ZERO_SHOT_TASKS: dict[str, ZeroShotTask] = {
    "colour": ZeroShotTask("colour", list(COLOURS), _single(lambda o: o.colour), "the hue of one object"),
    "shape": ZeroShotTask("shape", list(SHAPES), _single(lambda o: o.shape), "the shape of one object"),
    "colour_shape": ZeroShotTask("colour_shape", [f"{c} {s}" for c, s in ALL_PAIRS],
                                 _single(lambda o: f"{o.colour} {o.shape}"),
                                 "48 colour-shape pairs incl. the 8 held out of training (use split='heldout')"),
    "size": ZeroShotTask("size", list(SIZES), _single(lambda o: o.size), "small or large, one object"),
    "position": ZeroShotTask("position", list(POSITIONS), _single(lambda o: o.position),
                             "where one object is (specialised: weak zero-shot expected)"),
    "count": ZeroShotTask("count", [NUMBER_WORDS[k] for k in range(1, MAX_OBJECTS + 1)], _count_sample,
                          "how many objects, 1-3 (specialised: weak zero-shot expected)"),
}


def zero_shot_set(task: str | ZeroShotTask, n: int, seed: int = 0, split: str = "any", size: int = 32
                  ) -> tuple[torch.Tensor, torch.Tensor, list[Scene]]:
    """n labelled images for one task: (images (n, 3, size, size) in [0,1], targets (n,) long indices into
    task.labels, scenes). Deterministic from `seed`."""
    task = ZERO_SHOT_TASKS[task] if isinstance(task, str) else task
    rng = random.Random(seed)
    drawn = [task.sample(rng, split) for _ in range(n)]
    scenes = [scene for scene, _ in drawn]
    targets = torch.tensor([task.labels.index(label) for _, label in drawn], dtype=torch.long)
    return render_batch(scenes, size, rng), targets, scenes


# ----------------------------------------------------------------------------------------------------------------
# torch Datasets. Scenes are drawn once (cheap); images and the chosen caption/question are made on access from a
# per-index seed, so item i is the same in every epoch, every worker and every run. Items hold a Scene, which
# torch's default collate cannot stack: pass `collate_fn=collate` to the DataLoader.


def collate(items: list[dict]) -> dict:
    """DataLoader collate: stacks tensors ("image" -> (B, 3, H, W)), keeps everything else as lists."""
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
            else [it[k] for it in items] for k in items[0]}


class _ShapesBase(Dataset):
    def __init__(self, n: int, seed: int = 0, split: str = "train", lang: str = "en", size: int = 32):
        if lang not in ("en", "ko", "both"):
            raise ValueError(f"lang must be 'en', 'ko' or 'both', got {lang!r}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        _grid(size)  # validates size
        self.n, self.seed, self.split, self.lang, self.size = n, seed, split, lang, size
        rng = random.Random(seed)
        self.scenes = [sample_scene(rng, None, split) for _ in range(n)]   # n=100 is a prefix of n=1000

    def __len__(self) -> int:
        return self.n

    def _item(self, i: int) -> tuple[Scene, torch.Tensor, random.Random, str]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} items")
        i %= self.n
        scene = self.scenes[i]
        rng = random.Random(f"{self.seed}/{i}")   # str seeds hash with sha512: stable across runs and processes
        image = render_batch([scene], self.size, rng)[0]   # = to_tensor(render(scene, size, rng)), without PIL
        lang = rng.choice(("en", "ko")) if self.lang == "both" else self.lang
        return scene, image, rng, lang

    collate_fn = staticmethod(collate)


class ShapesCaptions(_ShapesBase):
    """n (image, caption) pairs. item: {"image": (3, size, size) float in [0,1], "caption": str, "scene": Scene}.

    split: "train" (no held-out pair), "heldout" (>= 1 held-out pair per scene) or "any". lang: "en", "ko" or
    "both" (each item picks one language). Not normalised: apply `normalize` in the model or the loop.
    """

    def __getitem__(self, i: int) -> dict:
        scene, image, rng, lang = self._item(i)
        return {"image": image, "caption": rng.choice(captions(scene, lang)), "scene": scene}


class ShapesQA(_ShapesBase):
    """n (image, question, answer) triples for instruction tuning and evaluation.

    item: {"image": (3, size, size), "question": str, "answer": str, "kind": str, "scene": Scene}. The kind is drawn
    uniformly first, then a question of that kind, so counting is not drowned by the many existence questions.
    """

    def __getitem__(self, i: int) -> dict:
        scene, image, rng, lang = self._item(i)
        qas = questions(scene, lang)
        kind = rng.choice(sorted({qa.kind for qa in qas}))
        qa = rng.choice([qa for qa in qas if qa.kind == kind])
        return {"image": image, "question": qa.question, "answer": qa.answer, "kind": qa.kind, "scene": scene}


# ----------------------------------------------------------------------------------------------------------------
# The real-data path: an image-caption folder as Flickr8k/COCO are exported on the HF hub (`imagefolder` layout):
#   root/metadata.jsonl   one JSON object per line: {"file_name": "xyz.jpg", "text": "a dog runs"}
#   root/xyz.jpg          ("caption" or "captions" [list] are accepted instead of "text")


class ImageCaptionFolder(Dataset):
    """Images + metadata.jsonl. item: {"image": (3, H, W) float in [0,1] (or transform's output), "caption": str
    (the first one), "captions": list[str], "file_name": str}.

    Every line is checked when the folder is opened; a malformed JSON line, a line without a caption, an empty
    caption, a missing image file or a file PIL cannot read raises ValueError naming the metadata file, the line
    number and the image. Blank lines are skipped. Images of any mode (L, LA, P, RGBA, CMYK...) become RGB, with
    transparency composited over white (`to_rgb`).
    size: if given, resize the shorter side to `size` (bicubic) and centre-crop to size x size, as CLIP does.
    transform: if given, called on the RGB PIL image (after `size`) instead of `to_tensor`.
    """

    CAPTION_KEYS = ("text", "caption", "captions")

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], object] | None = None,
                 size: int | None = None, metadata: str = "metadata.jsonl"):
        self.root, self.transform, self.size = Path(root), transform, size
        self.metadata = self.root / metadata
        if not self.metadata.is_file():
            raise FileNotFoundError(f"{self.metadata} not found: an image-caption folder needs a {metadata} "
                                    f"with one JSON object per line")
        self.records: list[tuple[str, list[str], str]] = []   # (file_name, captions, "metadata:line")
        with open(self.metadata, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    self.records.append(self._check(line, f"{self.metadata}:{lineno}"))

    def _check(self, line: str, where: str) -> tuple[str, list[str], str]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: malformed JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        name = record.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: no \"file_name\" (a non-empty string) in this line")
        key = next((k for k in self.CAPTION_KEYS if k in record), None)
        if key is None:
            raise ValueError(f"{where}: image {name!r} has no caption (expected one of {self.CAPTION_KEYS})")
        caps = record[key] if isinstance(record[key], list) else [record[key]]
        if not caps or not all(isinstance(c, str) for c in caps):
            raise ValueError(f"{where}: image {name!r}: {key!r} must be a string or a non-empty list of strings")
        if any(not c.strip() for c in caps):
            raise ValueError(f"{where}: image {name!r} has an empty caption")
        path = self.root / name
        if not path.is_file():
            raise ValueError(f"{where}: image file {name!r} not found (looked for {path})")
        try:
            with Image.open(path) as im:
                im.verify()               # cheap header/structure check; full decoding happens on access
        except Exception as e:  # PIL raises many types; all mean "unreadable"
            raise ValueError(f"{where}: image file {name!r} cannot be read as an image ({e})") from None
        return name, [c.strip() for c in caps], where

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, i: int) -> Image.Image:
        """The i-th image as RGB PIL (after `size` if set)."""
        name, _, where = self.records[i]
        try:
            with Image.open(self.root / name) as im:
                img = to_rgb(im)
                img.load()
        except Exception as e:  # a file that passed verify() can still fail to decode
            raise ValueError(f"{where}: image file {name!r} cannot be decoded ({e})") from None
        if self.size is not None:
            w, h = img.size
            scale = self.size / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))),
                             Image.Resampling.BICUBIC)
            left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
        return img

    def __getitem__(self, i: int) -> dict:
        name, caps, _ = self.records[i]
        img = self.load_image(i)
        image = self.transform(img) if self.transform is not None else to_tensor(img)
        return {"image": image, "caption": caps[0], "captions": caps, "file_name": name}

    collate_fn = staticmethod(collate)


def export_folder(root: str | Path, n: int, seed: int = 0, split: str = "train", size: int = 64) -> Path:
    """Write n Shapes scenes as an image-caption folder: shapes_000.png... and metadata.jsonl with lines
    {"file_name", "text", "text_ko"} holding the complete English and Korean captions (every attribute of every
    object) — the layout `ImageCaptionFolder` reads and the HF hub's `imagefolder` loader understands (extra
    columns such as text_ko become extra features). Appends to an existing metadata.jsonl."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        scene = sample_scene(rng, None, split)
        name = f"shapes_{i:03d}.png"
        render(scene, size, rng).save(root / name, optimize=True)
        lines.append(json.dumps({"file_name": name, "text": captions(scene, "en")[0],
                                 "text_ko": captions(scene, "ko")[0]}, ensure_ascii=False))
    with open(root / "metadata.jsonl", "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return root
