"""Captions: every true sentence about a scene, in English and Korean, from the one phrase table.

Several templates per scene: everything at once, colour+shape, a count, colour only, shape only, colour and shape
in separate words ("the circle on the left is red"), size+shape, and relations. Naming colour and shape apart as
well as together is what lets a model compose an unseen pair from words it has seen.
"""

from __future__ import annotations

import random

from .language import (
    KO_COLOUR_NOUNS,
    KO_POSITIONS,
    KO_SHAPES,
    WHERE,
    check_lang,
    count_phrase,
    josa,
    listing,
    noun_phrase,
)
from .world import Obj, Scene, above, left_of

# The templates of `captions`, in their fixed order (other modules index them: [0] is the complete description).
CAPTION_TEMPLATES = ("full", "colour_shape", "count", "colour_only", "shape_only", "colour_shape_apart",
                     "size_shape")
# Objects are described in reading order in the canonical caption, so it has one right answer.
READING_ORDER = ("top", "left", "centre", "right", "bottom")


def _colour_apart(o: Obj, lang: str) -> str:
    """Colour and shape in separate words: "the circle on the left is red" / "왼쪽의 원은 빨간색"."""
    if lang == "en":
        return f"the {o.shape} {WHERE[o.position]} is {o.colour}"
    return f"{KO_POSITIONS[o.position]}의 {josa(KO_SHAPES[o.shape], '은', '는')} {KO_COLOUR_NOUNS[o.colour]}"


def _relation(a: Obj, b: Obj, relation: str, lang: str) -> str:
    """ "a red circle to the left of a blue star" / "빨간 원이 파란 별의 왼쪽에 있다"."""
    first, second = (noun_phrase(o, size=False, where=False, lang=lang) for o in (a, b))
    if lang == "en":
        return f"{first} {'to the left of' if relation == 'left_of' else 'above'} {second}"
    where = "의 왼쪽에 있다" if relation == "left_of" else "보다 위에 있다"
    return f"{josa(first, '이', '가')} {second}{where}"


def captions(scene: Scene, lang: str = "en") -> list[str]:
    """Every caption template realised for `scene`, each one true of it: the 7 CAPTION_TEMPLATES in that order
    (index 0 = every attribute of every object, objects in scene order), then for two-object scenes one caption per
    relation that holds ("A to the left of B", "A above B"; 1 or 2 of them)."""
    check_lang(lang)
    objs = scene.objects

    def each(size: bool = True, colour: bool = True, shape: bool = True, where: bool = True) -> list[str]:
        return [noun_phrase(o, size, colour, shape, where, lang) for o in objs]   # one phrase per object

    apart = [_colour_apart(o, lang) for o in objs]
    caps = [
        listing(each(), lang),
        listing(each(size=False, where=False), lang),
        count_phrase(each(where=False), lang),
        listing(each(size=False, shape=False), lang),
        listing(each(size=False, colour=False), lang),
        listing(apart) if lang == "en" else "이고, ".join(apart) + "이다",
        listing(each(colour=False, where=False), lang),
    ]
    pairs = [(a, b) for a in objs for b in objs if a is not b] if len(objs) == 2 else []
    caps += [_relation(a, b, "left_of", lang) for a, b in pairs if left_of(a, b)]
    caps += [_relation(a, b, "above", lang) for a, b in pairs if above(a, b)]
    return caps


def caption(scene: Scene, rng: random.Random, lang: str = "en") -> str:
    """One caption drawn with `rng` from `captions(scene, lang)`; lang="both" first picks the language."""
    if lang == "both":
        lang = rng.choice(("en", "ko"))
    return rng.choice(captions(scene, lang))


def canonical_caption(scene: Scene) -> str:
    """The full English caption (size, colour, shape, place of every object) with objects in reading order."""
    ordered = Scene(tuple(sorted(scene.objects, key=lambda o: READING_ORDER.index(o.position))))
    return captions(ordered, "en")[0]
