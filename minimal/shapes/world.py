"""The Shapes world's things: vocabulary, objects, scenes and the held-out colour–shape pairs.

Real photos cannot be downloaded in every classroom and a laptop CPU must learn in minutes, so the course draws
its own CLEVR-like world. Everything is deterministic from a seed::

    rng = random.Random(0)
    scene = sample_scene(rng)        # Scene(objects=(Obj('star', 'red', 'small', 'left'), ...))

- 6 shapes x 8 hues x 2 sizes, 1-3 objects per scene. Each object sits in one of five slots of a plus-shaped
  layout (left, right, top, bottom, centre), so positions never overlap and "where" always has one answer.
- Relations "left of" / "above" are stated for two-object scenes. Slots lie on a 3x3 grid with a gutter
  between cells, so "A left of B" holds for every pixel of A and B, not only their centres.
- HELD_OUT_PAIRS: 8 colour-shape pairs (one per colour) never rendered in the "train" split. Every colour and
  every shape still appears in train, so a model that learned "red" and "square" separately can be asked, zero
  shot, for the unseen "red square" — the course's proof that language supervision composes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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
SLOTS = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2), "centre": (1, 1)}


def left_of(a: Obj, b: Obj) -> bool:
    """Every pixel of `a` is left of every pixel of `b` (their grid columns differ)."""
    return SLOTS[a.position][0] < SLOTS[b.position][0]


def above(a: Obj, b: Obj) -> bool:
    """Every pixel of `a` is above every pixel of `b` (their grid rows differ)."""
    return SLOTS[a.position][1] < SLOTS[b.position][1]


def sample_scene(rng: random.Random, n_objects: int | None = None,
                 split: str = "train") -> Scene:
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
