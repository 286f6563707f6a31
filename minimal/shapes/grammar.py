"""Free wordings of a scene for training, so that a CLIP trained on them reads language rather than seven templates.

A sentence is built from parts drawn with `rng`: for each object a phrase (one of many word orders, size synonyms
such as tiny/little/small, three or four ways to say where it is), the phrases in any order with one of several
joiners, then a frame around them ("a picture of …", "이 그림에는 …") — or a few ordinary words that say nothing
about the scene (`common_words.py`), so the model learns to let such words pass. English and Korean alike.

Every sentence names each object's size, colour, shape and position, like the world's full caption. The wordings
the course *evaluates* with are a separate set kept outside this package, which no training code reads; these parts
never produce one of those sentences (a test checks).

    free_caption(scene, rng, "en")    # "a picture of a tiny red circle sitting on the left and a big blue star …"
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .common_words import EN_WORDS, KO_WORDS
from .language import KO_COLOURS, KO_LOCATED, KO_LOCATED_SHORT, KO_POSITIONS, KO_SHAPES, indefinite, josa
from .world import Obj, Scene

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
KO_SIZE_WORDS = {"small": ("작은", "조그만", "자그마한", "조그마한"), "large": ("큰", "커다란", "큼직한", "거대한")}
KO_SIZE_AND = {"small": "작고", "large": "크고"}            # "작고 빨간 원": small and red
KO_SIZE_IS = {"small": "작다", "large": "크다"}             # the plain predicate

# Words for each position; the phrases around them come from the position forms below.
EN_PLACES = {"left": ("left",), "right": ("right",), "top": ("top",), "bottom": ("bottom",),
             "centre": ("centre", "center", "middle")}
KO_PLACES: dict[str, tuple[str, ...]] = {p: (w,) for p, w in KO_POSITIONS.items()}
KO_PLACES.update(left=(KO_POSITIONS["left"], "왼편"), right=(KO_POSITIONS["right"], "오른편"),
                 centre=(KO_POSITIONS["centre"], "중앙", "한가운데"))

_EN_PLACE_FORMS = ("on the {}", "at the {}", "in the {}", "in the {} part", "over on the {}")
_EN_VERBS = ("sitting", "placed", "located", "drawn", "shown", "lying")

# An English object phrase from: d(noun phrase) adds the determiner, z size, c colour, s shape, p place phrase,
# w the bare place word, v a verb ("sitting on the left").
EnPhrase = Callable[[Callable[[str], str], str, str, str, str, str, str], str]
_EN_OBJECT: tuple[EnPhrase, ...] = (
    lambda d, z, c, s, p, w, v: f"{d(f'{z} {c} {s}')} {p}",
    lambda d, z, c, s, p, w, v: f"{d(f'{c} {s}')} {p} that is {z}",
    lambda d, z, c, s, p, w, v: f"{d(f'{z} {c} {s}')} {v} {p}",
    lambda d, z, c, s, p, w, v: f"{d(f'{c} {s}')} ({z}) {p}",
    lambda d, z, c, s, p, w, v: f"{d(f'{c}, {z} {s}')} {p}",
    lambda d, z, c, s, p, w, v: f"{p} there is {indefinite(f'{z} {c} {s}')}",
    lambda d, z, c, s, p, w, v: f"{p}: {d(f'{z} {c} {s}')}",
    lambda d, z, c, s, p, w, v: f"{d(f'{z} {s}')} coloured {c} {p}",
    lambda d, z, c, s, p, w, v: f"{d(f'{z} {s}')}, {c}, {p}",
    lambda d, z, c, s, p, w, v: f"{s}: {c}, {z}, {w}",
    lambda d, z, c, s, p, w, v: f"{d(f'{c} {s}')} of {z} size {p}",
    lambda d, z, c, s, p, w, v: f"{d(f'{z} {c} {s}')}, {p}",
    lambda d, z, c, s, p, w, v: f"{d(f'{c} {z} {s}')} {p}",
)
_EN_DETERMINERS: tuple[Callable[[str], str], ...] = (indefinite, lambda x: f"the {x}", lambda x: f"one {x}",
                                                      lambda x: x)
_EN_SCENE = ("{}", "a picture of {}", "an image of {}", "a photo of {}", "this shows {}", "a drawing with {}",
             "in this image: {}", "there is {}", "this picture has {}", "a scene containing {}", "shown here: {}",
             "{} in the picture", "{} in a drawing")
_EN_JOIN = (" and ", ", ", " plus ", " and also ", ", and ", " as well as ")

# A Korean object phrase from: z size (adnominal), c colour, s shape, p place word, o the Obj (for other forms).
KoPhrase = Callable[[str, str, str, str, Obj], str]
_KO_OBJECT: tuple[KoPhrase, ...] = (
    lambda z, c, s, p, o: f"{p}{KO_LOCATED} {z} {c} {s}",
    lambda z, c, s, p, o: f"{p}{KO_LOCATED_SHORT} {z} {c} {s}",
    lambda z, c, s, p, o: f"{p}에 그려진 {z} {c} {s}",
    lambda z, c, s, p, o: f"{p}에 위치한 {z} {c} {s}",
    lambda z, c, s, p, o: f"{z} {c} {s} 하나 ({p})",
    lambda z, c, s, p, o: f"{c} {s}, {z} 것, {p}",
    lambda z, c, s, p, o: f"{p}{KO_LOCATED} {KO_SIZE_AND[o.size]} {c + '인' if c.endswith('색') else c} {s}",
    lambda z, c, s, p, o: f"크기가 {z} {c} {s} ({p})",
    lambda z, c, s, p, o: f"{c} {s}: {p}, {KO_SIZE_IS[o.size]}",
)
_KO_SCENE = ("{}", "{} 사진", "{}의 그림", "이 그림에는 {}", "사진: {}", "{} 장면")
_KO_JOIN = (", ", " 그리고 ", " 및 ")

FILLER = 0.3          # fraction of sentences whose frame is a few ordinary words instead of a phrase


def _phrase(o: Obj, rng: random.Random, lang: str) -> str:
    if lang == "en":
        w = rng.choice(EN_PLACES[o.position])
        p = rng.choice(_EN_PLACE_FORMS).format(w)
        z = rng.choice(SIZE_WORDS[o.size])
        d, v = rng.choice(_EN_DETERMINERS), rng.choice(_EN_VERBS)
        return rng.choice(_EN_OBJECT)(d, z, o.colour, o.shape, p, w, v)
    z, p = rng.choice(KO_SIZE_WORDS[o.size]), rng.choice(KO_PLACES[o.position])
    return rng.choice(_KO_OBJECT)(z, KO_COLOURS[o.colour], KO_SHAPES[o.shape], p, o)


def _frame(joined: str, rng: random.Random, lang: str) -> str:
    words = EN_WORDS if lang == "en" else KO_WORDS
    if rng.random() < FILLER:      # e.g. "look here: …", "바로 이 …"
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) + " " + joined
    if lang == "ko" and not joined.endswith("다") and rng.random() < 0.3:
        return f"{josa(joined, '이', '가')} {rng.choice(('있는 그림', '그려져 있다'))}"
    return rng.choice(_EN_SCENE if lang == "en" else _KO_SCENE).format(joined)


def free_caption(scene: Scene, rng: random.Random, lang: str = "en") -> str:
    """One freely worded sentence naming every object's size, colour, shape and position."""
    if lang not in ("en", "ko"):
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")
    objs = list(scene.objects)
    rng.shuffle(objs)   # any order: the sentence must be read, not matched position by position
    phrases = [_phrase(o, rng, lang) for o in objs]
    joined = rng.choice(_EN_JOIN if lang == "en" else _KO_JOIN).join(phrases)
    return _frame(joined, rng, lang)
