"""How the course's multimodal LLM is measured (chapter 08, `benchmarks/quality.py`, the checkpoint's card):
exact-answer accuracy on fresh questions, per question kind, and how many facts a generated caption gets right.

    figures = evaluate_all(mllm, n=200, seed=10_000)   # vqa, vqa_unseen, vqa_ko, caption_attr (+ per kind)
"""

from __future__ import annotations

import re

import torch

from ..mllm import MLLM
from ..shapes import COLOURS, SHAPES, WHERE, Scene, ShapesQA

CAPTION_PROMPT = "Describe the image."   # the caption request, in training (stage 1 and 2) and evaluation alike


def normalise_answer(text: str) -> str:
    """Lower-case, first word, no punctuation: "Red." -> "red" (answers in the world are single words)."""
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""


def eval_set(n: int, seed: int, split: str = "train", lang: str = "en") -> list[dict]:
    """n fresh (image, question, answer, kind, scene) items; the kind is drawn uniformly per image."""
    return [ShapesQA(n, seed=seed, split=split, lang=lang)[i] for i in range(n)]


@torch.no_grad()
def evaluate_vqa(mllm: MLLM, items: list[dict], batch_size: int = 64, max_new_tokens: int = 4) -> dict:
    """Exact-answer accuracy -> {"accuracy", "per_kind": {kind: acc}, "answers": [str]}."""
    answers: list[str] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        answers += mllm.generate(torch.stack([it["image"] for it in chunk]), [it["question"] for it in chunk],
                                 max_new_tokens)
    right = [normalise_answer(a) == it["answer"] for a, it in zip(answers, items, strict=True)]
    kinds = sorted({it["kind"] for it in items})
    per_kind = {k: sum(r for r, it in zip(right, items, strict=True) if it["kind"] == k)
                / sum(it["kind"] == k for it in items) for k in kinds}
    return {"accuracy": sum(right) / len(right), "per_kind": per_kind, "answers": answers}


_PLACE = {phrase: position for position, phrase in WHERE.items()}    # position phrase -> position word
_OBJ_RE = re.compile(r"\b(small|large) (" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r") ("
                     + "|".join(_PLACE) + r")")


def caption_facts(text: str) -> set[tuple[str, str, str]]:
    """Facts a full caption states: {(place, "size"|"colour"|"shape", value)} for each "size colour shape place"."""
    facts = set()
    for size, colour, shape, where in _OBJ_RE.findall(text.lower()):
        place = _PLACE[where]
        facts |= {(place, "size", size), (place, "colour", colour), (place, "shape", shape)}
    return facts


def caption_score(text: str, scene: Scene) -> float:
    """Attribute accuracy of one generated caption: true facts stated / max(facts in the scene, facts stated),
    so a missing object and an invented one both cost. 1.0 = every size, colour and shape at every place."""
    truth = {(o.position, attr, getattr(o, attr)) for o in scene.objects for attr in ("size", "colour", "shape")}
    said = caption_facts(text)
    return len(truth & said) / max(len(truth), len(said))


@torch.no_grad()
def evaluate_captions(mllm: MLLM, items: list[dict], batch_size: int = 64, max_new_tokens: int = 40) -> dict:
    """Mean `caption_score` of generated captions -> {"caption_attr", "captions": [str]}."""
    captions: list[str] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        captions += mllm.generate(torch.stack([it["image"] for it in chunk]), [CAPTION_PROMPT] * len(chunk),
                                  max_new_tokens)
    scores = [caption_score(c, it["scene"]) for c, it in zip(captions, items, strict=True)]
    return {"caption_attr": sum(scores) / len(scores), "captions": captions}


def evaluate_all(mllm: MLLM, n: int, seed: int) -> dict:
    """The card's figures on `n` fresh images each: vqa (train split), vqa_unseen (held-out pairs), vqa_ko (vqa's
    questions asked in Korean), caption_attr; the three question sets also per kind."""
    mllm.eval()
    seen, unseen = eval_set(n, seed=seed, split="train"), eval_set(n, seed=seed + 1, split="heldout")
    korean = eval_set(n, seed=seed, split="train", lang="ko")
    vqa, vqa_unseen, vqa_ko = evaluate_vqa(mllm, seen), evaluate_vqa(mllm, unseen), evaluate_vqa(mllm, korean)
    return {"vqa": vqa["accuracy"], "vqa_unseen": vqa_unseen["accuracy"], "vqa_ko": vqa_ko["accuracy"],
            "caption_attr": evaluate_captions(mllm, seen)["caption_attr"], "vqa_per_kind": vqa["per_kind"],
            "vqa_unseen_per_kind": vqa_unseen["per_kind"], "vqa_ko_per_kind": vqa_ko["per_kind"],
            "eval_images": n, "eval_seed": seed}
