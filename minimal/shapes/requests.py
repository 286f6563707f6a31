"""Requests a user types to the output side (chapter 09): "draw a small blue star on the left", or an ordinary
question that wants a text answer.

A drawing request names one object: its colour and shape always, its size and position sometimes. The *target* is
the English noun phrase, in the tiny CLIP's caption style, for what was asked ("a small blue star on the left",
"a blue star"): the output projector learns to land where the CLIP text tower puts that phrase. Request templates
and ordinary questions come in two disjoint sets, "train" and "heldout", so the projector is checked on phrasings it
never saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .language import KO_LOCATED, KO_LOCATED_SHORT, LANGS, josa, noun_phrase
from .questions import questions
from .world import COLOURS, POSITIONS, SHAPES, SIZES, Obj, sample_scene

DRAW_TEMPLATES = {
    ("en", "train"): ("draw {np}", "draw {np}.", "please draw {np}.", "can you draw {np}?", "could you draw me {np}?",
                      "draw me {np}, please", "make a picture of {np}", "generate an image of {np}",
                      "show me a picture of {np}", "I want a picture of {np}.", "paint {np}", "sketch {np} for me"),
    ("en", "heldout"): ("create an image with {np}", "I'd like a drawing of {np}.", "would you mind drawing {np}?",
                        "an image of {np}, please"),
    ("ko", "train"): ("{obj} 그려 줘", "{obj} 그려 주세요", "{obj} 그려줄래?", "{np} 그림을 그려 줘",
                      "{np} 그림 좀 그려 주세요", "{np} 이미지를 만들어 줘", "{np} 이미지를 생성해 주세요",
                      "{obj} 그림으로 보여 줘"),
    ("ko", "heldout"): ("{obj} 그려 줄 수 있어?", "{np}의 그림이 필요해", "{np} 그림 하나 부탁해"),
}

# Ordinary questions get a text answer. Many name colours, shapes or drawing on purpose ("who drew the Mona Lisa?"):
# the decision must rest on what is asked, not on a word. Every fourth one is held out of training.
QUESTIONS = {
    "en": ("what is the capital of France?", "how many days are there in a week?", "what is 12 times 7?",
           "who wrote Romeo and Juliet?", "what is photosynthesis?", "how do I boil an egg?",
           "translate 'thank you' into Korean.", "what is the largest planet in the solar system?",
           "give me a synonym for happy.", "why is the sky blue?", "what colour is a banana?",
           "how many sides does a triangle have?", "how many points does a star have?", "who drew the Mona Lisa?",
           "what shape is a stop sign?", "what colour do you get by mixing blue and yellow?",
           "describe a red circle in one sentence.", "is drawing a good hobby?", "what does the word 'draw' mean?",
           "tell me a joke about squares.", "what is the area of a circle with radius 2?",
           "name three primary colours.", "how do you say 'star' in Korean?", "what is a diamond made of?",
           "recommend a book about painting.", "what time zone is Seoul in?", "explain what an image is.",
           "how many legs does a spider have?", "write a haiku about the sea.", "what is the boiling point of water?",
           "can you help me with my homework?", "what is a cross product?", "who painted the Starry Night?",
           "what is the square root of 81?", "is a square a rectangle?", "how are you today?",
           "what is machine learning?", "list the colours of the rainbow.", "what does CLIP stand for?",
           "how far is the Moon from the Earth?"),
    "ko": ("프랑스의 수도는 어디인가요?", "일주일은 며칠인가요?", "12 곱하기 7은 얼마인가요?",
           "로미오와 줄리엣은 누가 썼나요?", "광합성이란 무엇인가요?", "달걀은 어떻게 삶나요?",
           "'감사합니다'를 영어로 번역해 주세요.", "태양계에서 가장 큰 행성은?", "하늘은 왜 파란가요?",
           "바나나는 무슨 색인가요?", "삼각형의 변은 몇 개인가요?", "별은 꼭짓점이 몇 개인가요?",
           "모나리자는 누가 그렸나요?", "파란색과 노란색을 섞으면 무슨 색이 되나요?",
           "빨간 원을 한 문장으로 설명해 주세요.", "그림 그리기는 좋은 취미인가요?",
           "그림을 잘 그리는 방법을 알려 주세요.", "정사각형은 직사각형인가요?", "무지개의 색을 말해 주세요.",
           "서울은 어느 시간대에 있나요?", "거미는 다리가 몇 개인가요?", "바다에 대한 짧은 시를 써 주세요.",
           "물의 끓는점은 몇 도인가요?", "오늘 기분이 어때요?", "기계 학습이란 무엇인가요?",
           "원의 넓이는 어떻게 구하나요?", "별이 빛나는 밤은 누가 그렸나요?", "81의 제곱근은 얼마인가요?",
           "마름모와 정사각형의 차이는 무엇인가요?", "숙제를 도와줄 수 있나요?", "이미지란 무엇인가요?",
           "파란색을 좋아하는 사람이 많은 이유는?"),
}
REQUEST_SPLITS = ("train", "heldout")


def _split_of(index: int) -> str:
    return "heldout" if index % 4 == 3 else "train"


@dataclass(frozen=True)
class Request:
    """One user turn. `wants_image`: is it a drawing request? Drawing requests also carry `obj` (what was asked
    for; when `size_given`/`position_given` is False any size/position is right) and `target`, the English caption
    phrase whose tiny-CLIP text embedding the output projector regresses onto."""

    text: str
    lang: str
    wants_image: bool
    obj: Obj | None = None
    size_given: bool = True
    position_given: bool = True
    target: str | None = None

    def drawing(self) -> tuple[Obj, str]:
        """(obj, target) of a drawing request; a clear error if this is an ordinary question."""
        if self.obj is None or self.target is None:
            raise ValueError(f"{self.text!r} is not a drawing request: it has no object or target")
        return self.obj, self.target


def target_phrase(obj: Obj, size: bool = True, position: bool = True) -> str:
    """Caption-style English phrase for a requested object: "a small blue star on the left", "an orange cross"."""
    return noun_phrase(obj, size=size, where=position)


def all_target_phrases() -> list[str]:
    """Every phrase a request can target: 48 colour–shape pairs × (small, large, unsaid) × (5 positions, unsaid)."""
    return sorted({target_phrase(Obj(s, c, z, p), size, pos) for c in COLOURS for s in SHAPES for z in SIZES
                   for p in POSITIONS for size in (True, False) for pos in (True, False)})


def drawing_request(rng: random.Random, lang: str = "en", split: str = "train") -> Request:
    """A random request to draw one object, worded with a random template of `split` ("train" or "heldout")."""
    obj = sample_scene(rng, 1, "any").objects[0]
    size, position = rng.random() < 0.6, rng.random() < 0.6
    template = rng.choice(DRAW_TEMPLATES[(lang, split)])
    if lang == "en":
        text = template.format(np=target_phrase(obj, size, position))
    else:
        located = rng.choice((KO_LOCATED, KO_LOCATED_SHORT)) if position else ""   # "왼쪽에 있는 ..." / "왼쪽에 ..."
        phrase = noun_phrase(obj, size=size, where=position, lang="ko", located=located)
        text = template.format(np=phrase, obj=josa(phrase, "을", "를"))
    return Request(text, lang, True, obj, size, position, target_phrase(obj, size, position))


def ordinary_question(rng: random.Random, lang: str = "en", split: str = "train") -> Request:
    """A question that wants a text answer: half general ones (many naming colours, shapes or drawing), half the
    Shapes world's own questions ("what colour is the star?"), asked without an image."""
    if rng.random() < 0.5:
        pool = [q for i, q in enumerate(QUESTIONS[lang]) if _split_of(i) == split]
        return Request(rng.choice(pool), lang, False)
    return Request(rng.choice(questions(sample_scene(rng), lang)).question, lang, False)


def request_set(n: int, seed: int, split: str = "train", langs: tuple[str, ...] = ("en", "ko")) -> list[Request]:
    """n requests: drawing requests and ordinary questions alternate, and so do the languages. Deterministic."""
    if split not in REQUEST_SPLITS:
        raise ValueError(f"split must be one of {REQUEST_SPLITS}, got {split!r}")
    if not langs or any(lang not in LANGS for lang in langs):
        raise ValueError(f"langs must be a non-empty tuple of 'en'/'ko', got {langs!r}")
    rng = random.Random(f"requests/{seed}/{split}")
    return [(drawing_request if i % 2 == 0 else ordinary_question)(rng, langs[(i // 2) % len(langs)], split)
            for i in range(n)]
