"""The Shapes world's zero-shot "datasets": labelled images for each task (colour, shape, size, position, count).

The mini replica of the CLIP paper's comparison across datasets: each task poses scenes on which its label is
unambiguous (one object for colour/shape/size/position — a two-object scene has no single colour — and 1-3 for
count). count and position play the part of the paper's specialised datasets where zero-shot is weak.

    images, targets, scenes = zero_shot_set("colour_shape", 100, seed=0, split="heldout")
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .render import render_batch
from .world import (
    ALL_PAIRS,
    COLOURS,
    MAX_OBJECTS,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    sample_scene,
)


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
    if isinstance(task, str):
        if task not in ZERO_SHOT_TASKS:
            raise ValueError(f"unknown task {task!r}; known: {sorted(ZERO_SHOT_TASKS)}")
        task = ZERO_SHOT_TASKS[task]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (images to draw), got {n!r}")
    rng = random.Random(seed)
    drawn = [task.sample(rng, split) for _ in range(n)]
    scenes = [scene for scene, _ in drawn]
    targets = torch.tensor([task.labels.index(label) for _, label in drawn], dtype=torch.long)
    return render_batch(scenes, size, rng), targets, scenes
