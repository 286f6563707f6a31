"""The Shapes world's one phrase table: every word and noun phrase that captions, questions, prompts and
requests use, in English and Korean. Nothing else in the course spells a position phrase, an article or a noun
phrase of the world; it calls these.

    noun_phrase(obj)                                -> "a small red circle on the left"
    noun_phrase(obj, size=False, where=False)       -> "a red circle"
    noun_phrase(obj, lang="ko")                     -> "왼쪽에 있는 작은 빨간 원"
    listing(["a red circle", "a star"])             -> "a red circle and a star"

Korean
- Captions are written in Korean directly (not word-for-word translations): noun phrases such as
  "왼쪽에 있는 작은 빨간 원", with particles (과/와, 이/가, 은/는) chosen by the final consonant (`josa`).
- Colours have two forms: the adjective before a noun ("빨간 원") and the noun used as an answer or a predicate
  ("원은 빨간색이다"). The cross is 십자 모양 ("cross shape"): bare 십자 + the subject particle 가 would read 십자가,
  "a crucifix".
"""

from __future__ import annotations

import re

from .world import NUMBER_WORDS, Obj

LANGS = ("en", "ko")

# Where an object is, as an English phrase: "a red circle on the left".
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "centre": "in the centre"}
SHAPE_NOUN = "shape"   # stands in when the shape is not named: "a red shape"

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
KO_LOCATED = "에 있는"  # "왼쪽에 있는 원": the circle that is on the left
KO_LOCATED_SHORT = "에"  # "왼쪽에 원 (그려 줘)": the shorter form requests also use
# Every English label/answer word -> Korean (for display, glossaries, Korean answers if wanted).
KO: dict[str, str] = {
    **KO_SHAPES, **KO_COLOUR_NOUNS, **KO_SIZES, **KO_POSITIONS,
    "one": "하나", "two": "둘", "three": "셋", "yes": "네", "no": "아니요",
}


def check_lang(lang: str) -> None:
    """Raise a clear ValueError unless `lang` is "en" or "ko"."""
    if lang not in LANGS:
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")


_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def fix_articles(text: str) -> str:
    """"a" before a vowel becomes "an": "a photo of a orange." -> "a photo of an orange." (the course's one
    article rule: world phrases and zero-shot prompts both use it)."""
    return _ARTICLE.sub(r"\1n ", text)


def indefinite(phrase: str) -> str:
    """The phrase with its English indefinite article: "red circle" -> "a red circle", "orange star" -> "an ..."."""
    return fix_articles("a " + phrase)


def plural(shape: str) -> str:
    """English plural of a shape word: "circle" -> "circles", "cross" -> "crosses"."""
    return shape + ("es" if shape.endswith("s") else "s")


def _has_final_consonant(word: str) -> bool:
    """Does the last Hangul syllable end in a consonant (받침)? Decides 과/와, 이/가, 은/는."""
    code = ord(word[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def josa(word: str, after_consonant: str, after_vowel: str) -> str:
    """`word` + the right form of a Korean particle:
    josa("원", "과", "와") -> "원과", josa("별", "이", "가") -> "별이"."""
    return word + (after_consonant if _has_final_consonant(word) else after_vowel)


def noun_phrase(o: Obj, size: bool = True, colour: bool = True, shape: bool = True, where: bool = True,
                lang: str = "en", located: str = KO_LOCATED) -> str:
    """An indefinite noun phrase for one object, naming only the attributes asked for.

    English: "a small red circle on the left" ("shape" stands in when the shape is not named: "a red shape").
    Korean: modifiers before the noun, "왼쪽에 있는 작은 빨간 원" (도형 when the shape is not named); `located` is the
    particle after the position ("에 있는", or the shorter "에" of a request: "왼쪽에 작은 빨간 원").
    """
    check_lang(lang)
    if lang == "en":
        words = ([o.size] if size else []) + ([o.colour] if colour else []) + [o.shape if shape else SHAPE_NOUN]
        return indefinite(" ".join(words)) + (" " + WHERE[o.position] if where else "")
    words = ([KO_POSITIONS[o.position] + located] if where else []) + ([KO_SIZES[o.size]] if size else [])
    words += [KO_COLOURS[o.colour]] if colour else []
    return " ".join(words + [KO_SHAPES[o.shape] if shape else KO_THING])


def pair_phrase(pair: tuple[str, str], lang: str = "en") -> str:
    """A colour–shape pair without article: ("red", "circle") -> "red circle" / "빨간 원"."""
    check_lang(lang)
    colour, shape = pair
    return f"{colour} {shape}" if lang == "en" else f"{KO_COLOURS[colour]} {KO_SHAPES[shape]}"


def listing(items: list[str], lang: str = "en") -> str:
    """Join phrases: "a, b and c" / "a, b와 c" (the Korean particle follows the last-but-one phrase)."""
    check_lang(lang)
    if len(items) == 1:
        return items[0]
    if lang == "en":
        return ", ".join(items[:-1]) + " and " + items[-1]
    return ", ".join(items[:-2] + [josa(items[-2], "과", "와") + " " + items[-1]])


def count_phrase(items: list[str], lang: str = "en") -> str:
    """How many objects, then which: "there are two shapes: a circle and a star" / "도형 두 개: 원과 별"."""
    check_lang(lang)
    n = len(items)
    if lang == "en":
        return f"there {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}: " + listing(items)
    return f"{KO_THING} {KO_NUMBERS[n]} 개: " + listing(items, "ko")
