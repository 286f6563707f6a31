"""Free wordings of a scene for training: word orders, size synonyms, "a picture of …", lists and relative phrases,
in English and Korean — so that a CLIP trained on them reads language rather than seven fixed templates.

Every sentence names each object's size, colour, shape and position, like the world's full caption, but in one of
many wordings drawn with `rng`. The wordings the course evaluates with are a separate set kept outside this package,
which no training code reads; these templates never produce them (a test checks).

    free_caption(scene, rng, "en")    # "a picture of a tiny red circle sitting on the left and a big blue star …"
"""

from __future__ import annotations

import random

from .language import KO_COLOURS, KO_LOCATED, KO_LOCATED_SHORT, KO_POSITIONS, KO_SHAPES, WHERE, indefinite, josa
from .world import Obj, Scene

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
KO_SIZE_WORDS = {"small": ("작은", "조그만", "자그마한"), "large": ("큰", "커다란", "큼직한")}

_EN_OBJECT = (
    lambda o, z: indefinite(f"{z} {o.colour} {o.shape}") + f" {WHERE[o.position]}",
    lambda o, z: indefinite(f"{o.colour} {o.shape}") + f" {WHERE[o.position]} that is {z}",
    lambda o, z: f"the {z} {o.colour} {o.shape} sitting {WHERE[o.position]}",
    lambda o, z: f"one {o.colour} {o.shape} ({z}) {WHERE[o.position]}",
    lambda o, z: indefinite(f"{o.colour}, {z} {o.shape}") + f" {WHERE[o.position]}",
    lambda o, z: f"{WHERE[o.position]} there is " + indefinite(f"{z} {o.colour} {o.shape}"),
)
_EN_SCENE = ("{}", "a picture of {}", "an image of {}", "a photo of {}", "this shows {}", "a drawing with {}",
             "in this image: {}", "there is {}")
_EN_JOIN = (" and ", ", ", " plus ", "; ")

_KO_OBJECT = (
    lambda o, z: f"{KO_POSITIONS[o.position]}{KO_LOCATED} {z} {KO_COLOURS[o.colour]} {KO_SHAPES[o.shape]}",
    lambda o, z: f"{KO_POSITIONS[o.position]}{KO_LOCATED_SHORT} {z} {KO_COLOURS[o.colour]} {KO_SHAPES[o.shape]}",
    lambda o, z: f"{z} {KO_COLOURS[o.colour]} {KO_SHAPES[o.shape]} 하나 ({KO_POSITIONS[o.position]})",
    lambda o, z: f"{KO_COLOURS[o.colour]} {KO_SHAPES[o.shape]}, {z} 것, {KO_POSITIONS[o.position]}",
)
_KO_SCENE = ("{}", "{} 사진", "{}의 그림", "이 그림에는 {}")
_KO_JOIN = (", ", " 그리고 ", "; ")


def _phrase(o: Obj, rng: random.Random, lang: str) -> str:
    if lang == "en":
        return rng.choice(_EN_OBJECT)(o, rng.choice(SIZE_WORDS[o.size]))
    return rng.choice(_KO_OBJECT)(o, rng.choice(KO_SIZE_WORDS[o.size]))


def free_caption(scene: Scene, rng: random.Random, lang: str = "en") -> str:
    """One freely worded sentence naming every object's size, colour, shape and position."""
    if lang not in ("en", "ko"):
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")
    objs = list(scene.objects)
    rng.shuffle(objs)   # any order: the sentence must be read, not matched position by position
    phrases = [_phrase(o, rng, lang) for o in objs]
    joined = rng.choice(_EN_JOIN if lang == "en" else _KO_JOIN).join(phrases)
    if lang == "ko" and rng.random() < 0.3:
        return f"{josa(joined, '이', '가')} 있는 그림"
    return rng.choice(_EN_SCENE if lang == "en" else _KO_SCENE).format(joined)
