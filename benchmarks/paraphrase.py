"""Captions and questions about a Shapes scene in wordings no training run uses, for measuring how far the tiny CLIP
and the MLLM read language rather than their training templates (`benchmarks/quality.py`: t2i_r5_paraphrase,
t2i_r5_paraphrase_ko, vqa_paraphrase).

The wordings live in benchmarks/wordings/clip_eval_wordings.json; nothing in minimal/ reads that file. Each scene gets
one sentence: a scene template filled with one object phrase per object (template and synonyms drawn with `rng`),
every object's size, colour, shape and position named — the same facts as the world's full caption, so Recall@K
against the full-caption figure (t2i_r5) measures the wording alone.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

from minimal.shapes import KO_COLOURS, KO_POSITIONS, KO_SHAPES, WHERE, Obj, Scene, josa, questions
from minimal.shapes.questions import english_slots, question_specs

WORDINGS = Path(__file__).resolve().parent / "wordings" / "clip_eval_wordings.json"


@cache
def wordings() -> dict:
    return json.loads(WORDINGS.read_text(encoding="utf-8"))


def _slots(o: Obj, rng: random.Random) -> dict[str, str]:
    w = wordings()
    return {"colour": o.colour, "shape": o.shape, "size": o.size, "size_syn": rng.choice(w["size_synonyms"][o.size]),
            "where": WHERE[o.position], "where_short": o.position if o.position != "centre" else "middle",
            "side": w["side"][o.position], "ko_colour": KO_COLOURS[o.colour], "ko_shape": KO_SHAPES[o.shape],
            "ko_size_syn": rng.choice(w["ko_size_synonyms"][o.size]), "ko_size_word": w["ko_size_words"][o.size],
            "ko_where": KO_POSITIONS[o.position]}


def paraphrase(scene: Scene, rng: random.Random, lang: str = "en") -> str:
    """One sentence naming every object's size, colour, shape and position, in a held-out wording."""
    if lang not in ("en", "ko"):
        raise ValueError(f"lang must be 'en' or 'ko', got {lang!r}")
    w = wordings()[lang]
    objs = w["joiner"].join(rng.choice(w["object"]).format(**_slots(o, rng)) for o in scene.objects)
    template = rng.choice(w["scene"])
    return template.format(objs=objs, objs_subject=josa(objs, "이", "가") if lang == "ko" else objs)


QUESTIONS = Path(__file__).resolve().parent / "wordings" / "mllm_eval_questions.json"


@cache
def question_wordings() -> dict[str, list[str]]:
    return json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]


def reword_question(scene: Scene, question: str, rng: random.Random) -> str:
    """The same question about `scene` (one of `minimal.shapes.questions(scene)`, English), in a held-out wording:
    same kind, same argument, same answer."""
    qas = questions(scene, "en")
    specs = question_specs(scene)
    i = next((k for k, qa in enumerate(qas) if qa.question == question), None)
    if i is None:
        raise ValueError(f"not a question of this scene: {question!r}")
    kind, template, arg, _ = specs[i]
    return rng.choice(question_wordings()[f"{kind}/{template}"]).format(**english_slots(arg))
