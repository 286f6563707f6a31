"""Questions about a scene, with single-word English answers, in English and Korean (instruction tuning, VQA).

Built first as language-neutral specs (kind, template, argument, answer), then worded in English or Korean, so both
languages ask the same questions with the same answers ("red", "two", "yes"): one answer vocabulary and one
accuracy metric serve both; `KO[answer]` gives the Korean word for display. A question that refers to "the X" is
only asked when exactly one object is an X; positions are always unique (one object per slot).
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .language import (
    KO_COLOURS,
    KO_POSITIONS,
    KO_SHAPES,
    WHERE,
    check_lang,
    indefinite,
    josa,
    pair_phrase,
    plural,
)
from .world import COLOURS, HELD_OUT_PAIRS, NUMBER_WORDS, SHAPES, TRAIN_PAIRS, Scene


@dataclass(frozen=True)
class QA:
    """A question about a scene and its single-word English answer. kind: colour|shape|count|exists|position."""

    question: str
    answer: str
    kind: str


QA_KINDS = ("colour", "shape", "count", "exists", "position")


def question_specs(scene: Scene) -> list[tuple[str, str, object, str]]:
    """The language-neutral questions about `scene`: (kind, template, argument, answer), in `questions`' order.
    A template names what the question is about ("at" a position, "the_shape", "pair", ...); `english_slots(arg)`
    gives the words a wording of it needs."""
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
    negatives = [p for p in dict.fromkeys(swaps + others) if p not in HELD_OUT_PAIRS]
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
    return list(dict.fromkeys(specs))


# (kind, template) -> the English wording, its slots filled by `english_slots(arg)`, where `arg` is what the question
# is about: a position, a shape, a colour or a (colour, shape) pair.
_ENGLISH: dict[tuple[str, str], str] = {
    ("colour", "at"): "what colour is the shape {where}?",
    ("colour", "the_shape"): "what colour is the {x}?",
    ("shape", "at"): "what shape is {where}?",
    ("shape", "the_colour"): "what shape is the {x} thing?",
    ("count", "all"): "how many shapes are there?",
    ("count", "shape"): "how many {xs} are there?",
    ("exists", "pair"): "is there {a_pair}?",
    ("exists", "shape"): "is there {a_x}?",
    ("exists", "colour"): "is there {a_x} thing?",
    ("position", "pair"): "where is the {pair}?",
    ("position", "shape"): "where is the {x}?",
}


# More ways to ask each question, for instruction tuning only (`questions(..., rng=)`), so that the MLLM learns to
# read a question rather than match eleven templates. The wordings the course *evaluates* with are a separate set
# kept outside this package, which no training code reads; none of these is one of them (a test checks).
_ENGLISH_MORE: dict[tuple[str, str], tuple[str, ...]] = {
    ("colour", "at"): ("what is the colour of the shape {where}?", "what colour is the object {where}?",
                       "name the colour of the thing {where}.", "the shape {where} is what colour?"),
    ("colour", "the_shape"): ("what is the colour of the {x}?", "what colour has the {x} got?",
                              "name the colour of the {x}.", "the {x} is what colour?"),
    ("shape", "at"): ("what is the shape {where}?", "what shape is the object {where}?",
                      "name the shape {where}.", "what is drawn {where}?"),
    ("shape", "the_colour"): ("what shape is the {x} one?", "what is the {x} shape?",
                              "name the shape that is {x}.", "the {x} thing is what shape?",
                              "which shape is {x}?", "what shape has the colour {x}?"),
    ("count", "all"): ("how many shapes are in the image?", "how many objects are there?",
                       "what is the number of shapes?", "how many things are drawn?"),
    ("count", "shape"): ("how many {xs} are in the image?", "what is the number of {xs}?",
                         "how many {xs} are drawn?", "how many {xs} do you see?"),
    ("exists", "pair"): ("is there {a_pair} in the image?", "do you see {a_pair}?",
                         "is {a_pair} shown?", "has the picture got {a_pair}?"),
    ("exists", "shape"): ("is there {a_x} in the image?", "do you see {a_x}?",
                          "is {a_x} shown?", "has the picture got {a_x}?"),
    ("exists", "colour"): ("is there anything {x}?", "do you see {a_x} shape?",
                           "is any shape {x}?", "is something {x} drawn?"),
    ("position", "pair"): ("where is the {pair} placed?", "where do you see the {pair}?",
                           "what is the position of the {pair}?", "where does the {pair} sit?"),
    ("position", "shape"): ("where is the {x} placed?", "where do you see the {x}?",
                            "what is the position of the {x}?", "where does the {x} sit?"),
}


def english_slots(arg: object) -> dict[str, str]:
    """The slots an English question template fills from its argument: {where}, {x}, {xs}, {a_x}, {pair}, {a_pair}."""
    if isinstance(arg, tuple):
        return {"pair": pair_phrase(arg), "a_pair": indefinite(pair_phrase(arg))}
    if arg in WHERE:
        return {"where": WHERE[arg]}
    if isinstance(arg, str):
        return {"x": arg, "xs": plural(arg), "a_x": indefinite(arg)}
    return {}


def _topic(word: str) -> str:      # the topic particle 은/는: "원은"
    return josa(word, "은", "는")


def _subject(word: str) -> str:    # the subject particle 이/가: "별이"
    return josa(word, "이", "가")


# The Korean wording: particles follow the word they attach to, so each entry is a small function of `arg`.
_KOREAN: dict[tuple[str, str], Callable[..., str]] = {
    ("colour", "at"): lambda a: f"{KO_POSITIONS[a]}에 있는 도형은 무슨 색인가요?",
    ("colour", "the_shape"): lambda a: f"{_topic(KO_SHAPES[a])} 무슨 색인가요?",
    ("shape", "at"): lambda a: f"{KO_POSITIONS[a]}에 있는 도형은 어떤 모양인가요?",
    ("shape", "the_colour"): lambda a: f"{KO_COLOURS[a]} 도형은 어떤 모양인가요?",
    ("count", "all"): lambda a: "도형이 몇 개 있나요?",
    ("count", "shape"): lambda a: f"{_subject(KO_SHAPES[a])} 몇 개 있나요?",
    ("exists", "pair"): lambda a: f"{_subject(pair_phrase(a, 'ko'))} 있나요?",
    ("exists", "shape"): lambda a: f"{_subject(KO_SHAPES[a])} 있나요?",
    ("exists", "colour"): lambda a: f"{KO_COLOURS[a]} 도형이 있나요?",
    ("position", "pair"): lambda a: f"{_topic(pair_phrase(a, 'ko'))} 어디에 있나요?",
    ("position", "shape"): lambda a: f"{_topic(KO_SHAPES[a])} 어디에 있나요?",
}

# More Korean ways to ask, for instruction tuning only (as `_ENGLISH_MORE`).
_KOREAN_MORE: dict[tuple[str, str], tuple[Callable[..., str], ...]] = {
    ("colour", "at"): (lambda a: f"{KO_POSITIONS[a]}의 도형은 어떤 색이에요?",
                       lambda a: f"{KO_POSITIONS[a]}에 그려진 도형의 색은 무엇인가요?"),
    ("colour", "the_shape"): (lambda a: f"{KO_SHAPES[a]}의 색은 무엇인가요?",
                              lambda a: f"{_topic(KO_SHAPES[a])} 어떤 색이에요?"),
    ("shape", "at"): (lambda a: f"{KO_POSITIONS[a]}에는 무엇이 그려져 있나요?",
                      lambda a: f"{KO_POSITIONS[a]}의 도형은 무슨 모양이에요?"),
    ("shape", "the_colour"): (lambda a: f"{KO_COLOURS[a]} 것은 무슨 모양인가요?",
                              lambda a: f"{KO_COLOURS[a]} 도형의 모양은 무엇인가요?"),
    ("count", "all"): (lambda a: "그림에 도형이 몇 개예요?", lambda a: "도형은 모두 몇 개인가요?"),
    ("count", "shape"): (lambda a: f"{_topic(KO_SHAPES[a])} 몇 개인가요?",
                         lambda a: f"그림에 {_subject(KO_SHAPES[a])} 몇 개 보이나요?"),
    ("exists", "pair"): (lambda a: f"그림에 {_subject(pair_phrase(a, 'ko'))} 보이나요?",
                         lambda a: f"{_subject(pair_phrase(a, 'ko'))} 그려져 있나요?"),
    ("exists", "shape"): (lambda a: f"그림에 {_subject(KO_SHAPES[a])} 보이나요?",
                          lambda a: f"{_subject(KO_SHAPES[a])} 그려져 있나요?"),
    ("exists", "colour"): (lambda a: f"{KO_COLOURS[a]} 것이 있나요?",
                           lambda a: f"그림에 {KO_COLOURS[a]} 도형이 보이나요?"),
    ("position", "pair"): (lambda a: f"{_topic(pair_phrase(a, 'ko'))} 어디에 그려져 있나요?",
                           lambda a: f"{pair_phrase(a, 'ko')}의 위치는 어디인가요?"),
    ("position", "shape"): (lambda a: f"{_topic(KO_SHAPES[a])} 어디에 그려져 있나요?",
                            lambda a: f"{KO_SHAPES[a]}의 위치는 어디인가요?"),
}


def questions(scene: Scene, lang: str = "en", rng: random.Random | None = None) -> list[QA]:
    """All unambiguous questions about `scene` with single-word English answers (see module docstring).

    kinds: colour ("red"), shape ("circle"), count ("one".."three"), exists ("yes"/"no", balanced within every
    scene), position ("left", "right", "top", "bottom", "centre"). lang="ko" words the same questions in Korean,
    in the same order, with the same (English) answers. With `rng`, each question takes one of several wordings
    (the world's own among them), drawn with it: the training variety of instruction tuning.
    """
    check_lang(lang)
    return [QA(_wording(kind, template, arg, lang, rng), answer, kind)
            for kind, template, arg, answer in question_specs(scene)]


def _wording(kind: str, template: str, arg: object, lang: str, rng: random.Random | None) -> str:
    """One question of `kind`/`template` about `arg`: the world's wording, or (with `rng`) one drawn among all."""
    if lang == "en":
        english = (_ENGLISH[kind, template],) + (_ENGLISH_MORE[kind, template] if rng else ())
        return (rng.choice(english) if rng else english[0]).format(**english_slots(arg))
    korean = (_KOREAN[kind, template],) + (_KOREAN_MORE[kind, template] if rng else ())
    return (rng.choice(korean) if rng else korean[0])(arg)
