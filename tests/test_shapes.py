"""Tests for minimal.shapes — the Shapes world: vocabulary, scenes, rendering, captions, questions, zero-shot
tasks and the torch Datasets.

The caption and question checks do not trust the generator: they parse every English and Korean sentence back
with independent regular expressions and verify each claim (size, colour, shape, position, count, relation)
against the scene, so a template that states something false, or a sentence nobody can parse, fails.
"""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from minimal import shapes
from minimal.images import collate, to_tensor
from minimal.shapes import (
    COLOURS,
    HELD_OUT_PAIRS,
    KO,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    ShapesCaptions,
    ShapesQA,
    captions,
    questions,
    render,
    render_batch,
    sample_scene,
)

NUM = {"one": 1, "two": 2, "three": 3}


def scenes(n: int, seed: int = 0, split: str = "any") -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, None, split) for _ in range(n)]


def matches(o: Obj, c: dict) -> bool:
    return all(c.get(k) in (None, getattr(o, k)) for k in ("size", "colour", "shape", "position"))


# Relations recomputed here from the slot geometry (not with shapes.left_of), so a wrong relation caption is caught.
COLUMN = {"left": 0, "top": 1, "centre": 1, "bottom": 1, "right": 2}
ROW = {"top": 0, "left": 1, "centre": 1, "right": 1, "bottom": 2}


def is_left_of(a: Obj, b: Obj) -> bool:
    return COLUMN[a.position] < COLUMN[b.position]


def is_above(a: Obj, b: Obj) -> bool:
    return ROW[a.position] < ROW[b.position]


def assign_distinct(objs, constraints) -> bool:
    """Is there a distinct object for every noun phrase? (brute force: scenes have <= 3 objects)"""
    return any(all(matches(o, c) for o, c in zip(perm, constraints, strict=False))
               for perm in itertools.permutations(objs, len(constraints)))


# ---------------------------------------------------------------------------------------------------------------
# vocabulary, scenes, splits


def test_vocabulary_and_held_out_pairs():
    assert len(SHAPES) == 6 and len(COLOURS) == 8 and len(set(shapes.RGB.values())) == 8
    assert len(HELD_OUT_PAIRS) == 8
    assert all(c in COLOURS and s in SHAPES for c, s in HELD_OUT_PAIRS)
    train = set(shapes.TRAIN_PAIRS)
    assert not train & HELD_OUT_PAIRS and len(train) == 40
    assert {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES)
    # colours are distinct hues: every pair is far apart in RGB
    rgb = np.array([shapes.RGB[c] for c in COLOURS], dtype=float)
    dists = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(8) * 1e9
    assert dists.min() > 60
    # every answer/label word has a Korean translation
    words = set(SHAPES) | set(COLOURS) | set(SIZES) | set(POSITIONS) | {"one", "two", "three", "yes", "no"}
    assert words <= set(KO)


def test_korean_vocabulary():
    """Written out here (not derived from minimal.shapes), so a wrong or swapped Korean word fails the caption tests
    too."""
    assert shapes.KO_SHAPES == {"circle": "원", "square": "정사각형", "triangle": "삼각형", "diamond": "마름모",
                              "cross": "십자 모양", "star": "별"}
    assert shapes.KO_COLOURS == {"red": "빨간", "orange": "주황색", "yellow": "노란", "green": "초록색",
                               "cyan": "청록색", "blue": "파란", "purple": "보라색", "pink": "분홍색"}
    assert shapes.KO_COLOUR_NOUNS == {"red": "빨간색", "orange": "주황색", "yellow": "노란색", "green": "초록색",
                                    "cyan": "청록색", "blue": "파란색", "purple": "보라색", "pink": "분홍색"}
    assert shapes.KO_SIZES == {"small": "작은", "large": "큰"}
    assert shapes.KO_POSITIONS == {"left": "왼쪽", "right": "오른쪽", "top": "위쪽", "bottom": "아래쪽",
                                 "centre": "가운데"}
    assert [shapes.josa(w, "이", "가") for w in ("원", "마름모", "별", "십자 모양")] == ["원이", "마름모가", "별이",
                                                                                 "십자 모양이"]


def test_bad_objects_and_scenes_are_rejected():
    with pytest.raises(ValueError, match="colour"):
        Obj("circle", "mauve", "small", "left")
    with pytest.raises(ValueError, match="shape"):
        Obj("hexagon", "red", "small", "left")
    o = Obj("circle", "red", "small", "left")
    with pytest.raises(ValueError, match="share a position"):
        Scene((o, Obj("star", "blue", "large", "left")))
    with pytest.raises(ValueError, match="1-3"):
        Scene(())
    with pytest.raises(ValueError, match="split"):
        sample_scene(random.Random(0), 1, "test")
    with pytest.raises(ValueError, match="n_objects"):
        sample_scene(random.Random(0), 4)
    with pytest.raises(ValueError, match="canvas"):
        render(Scene((o,)), size=8)


def test_held_out_pairs_never_in_train_split():
    train = scenes(6000, seed=1, split="train")
    assert not any(s.pairs & HELD_OUT_PAIRS for s in train)
    seen = set().union(*(s.pairs for s in train))
    assert seen == set(shapes.TRAIN_PAIRS)            # ...while every training pair (all colours, shapes) occurs
    held = scenes(2000, seed=2, split="heldout")
    assert all(s.pairs & HELD_OUT_PAIRS for s in held)
    assert set().union(*(s.pairs & HELD_OUT_PAIRS for s in held)) == HELD_OUT_PAIRS
    ds = ShapesCaptions(500, seed=3, split="train")
    assert not any(s.is_heldout() for s in ds.scenes)
    for task in shapes.ZERO_SHOT_TASKS.values():
        rng = random.Random(4)
        assert not any(task.sample(rng, "train")[0].is_heldout() for _ in range(300))
    n_objects = {len(s.objects) for s in train}
    assert n_objects == {1, 2, 3}


# ---------------------------------------------------------------------------------------------------------------
# rendering


def test_same_seed_same_bytes_different_seed_different_image():
    for scene in scenes(20, seed=5):
        for size in (32, 64):
            a, b = render(scene, size, 123), render(scene, size, 123)
            assert a.mode == "RGB" and a.size == (size, size)
            assert a.tobytes() == b.tobytes()
            assert render(scene, size, 124).tobytes() != a.tobytes()
    # the whole pipeline: two datasets built from one seed give identical items
    d1, d2 = ShapesCaptions(40, seed=9, lang="both"), ShapesCaptions(40, seed=9, lang="both")
    for i in range(40):
        assert torch.equal(d1[i]["image"], d2[i]["image"]) and d1[i]["caption"] == d2[i]["caption"]
    d3 = ShapesCaptions(40, seed=10)
    assert any(not torch.equal(d1[i]["image"], d3[i]["image"]) for i in range(40))


def test_render_batch_matches_render():
    sc = scenes(16, seed=6)
    batch = render_batch(sc, 32, 77)
    assert batch.shape == (16, 3, 32, 32) and batch.dtype == torch.float32 and batch.is_contiguous()
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    rng = random.Random(77)
    for i, scene in enumerate(sc):
        assert torch.equal(batch[i], to_tensor(render(scene, 32, rng)))


def _object_pixels(obj: Obj, size: int, seed: int) -> np.ndarray:
    """Boolean mask of the pixels an object covers when it is drawn alone (far from the light background)."""
    img = np.asarray(render(Scene((obj,)), size, seed), dtype=float)
    background = np.median(img.reshape(-1, 3), axis=0)
    return np.abs(img - background).sum(-1) > 60


@pytest.mark.parametrize("size", [32, 64])
def test_positions_sizes_and_no_overlap_hold_in_pixels(size):
    """Position words are true of the drawn pixels, small is always smaller than large, objects never touch."""
    rng = random.Random(size)
    third = size / 3
    extents = {"small": [], "large": []}
    for _ in range(150):
        scene = sample_scene(rng, 3, "any")
        masks = [_object_pixels(o, size, rng.randrange(10**6)) for o in scene.objects]
        for o, m in zip(scene.objects, masks, strict=True):
            ys, xs = np.nonzero(m)
            col, row = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2), "centre": (1, 1)}[
                o.position]
            assert col * third - 0.5 <= xs.min() and xs.max() <= (col + 1) * third + 0.5, o
            assert row * third - 0.5 <= ys.min() and ys.max() <= (row + 1) * third + 0.5, o
            extents[o.size].append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
        for a, b in itertools.combinations(masks, 2):   # not even 4-neighbours: a visible gap between objects
            pad = np.pad(a, 1)
            grown = a | pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]   # a, dilated by 1 px
            assert not (grown & b).any()
    assert max(extents["small"]) < min(extents["large"])


def test_relations_hold_in_pixels():
    rng = random.Random(11)
    for _ in range(100):
        scene = sample_scene(rng, 2, "any")
        a, b = scene.objects
        ma, mb = (_object_pixels(o, 32, 0) for o in (a, b))
        xa, xb, ya, yb = np.nonzero(ma)[1], np.nonzero(mb)[1], np.nonzero(ma)[0], np.nonzero(mb)[0]
        assert shapes.left_of(a, b) == is_left_of(a, b) == (xa.max() < xb.min())
        assert shapes.above(a, b) == is_above(a, b) == (ya.max() < yb.min())


# ---------------------------------------------------------------------------------------------------------------
# captions: parse back and verify every claim

COL = "|".join(COLOURS)
SHP = "|".join(SHAPES)
EN_WHERE = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom",
            "in the centre": "centre"}
WHERE = "|".join(EN_WHERE)


def en_np(tag: str) -> str:
    return (rf"(?P<det{tag}>an?|the) (?:(?P<size{tag}>small|large) )?(?:(?P<colour{tag}>{COL}) )?"
            rf"(?P<shape{tag}>{SHP}|shape)(?: (?P<where{tag}>{WHERE}))?(?: is (?P<pred{tag}>{COL}))?")


def en_constraints(m: re.Match, tag: str = "") -> dict:
    g = m.groupdict()
    det, nxt = g[f"det{tag}"], m.string[m.end(f"det{tag}") + 1:].split()[0]
    assert det == "the" or det == ("an" if nxt[0] in "aeiou" else "a"), m.group(0)   # a/an agreement
    shape = g[f"shape{tag}"]
    colour = g[f"colour{tag}"] or g[f"pred{tag}"]
    assert not (g[f"colour{tag}"] and g[f"pred{tag}"])
    return {"size": g[f"size{tag}"], "colour": colour, "shape": None if shape == "shape" else shape,
            "position": EN_WHERE.get(g[f"where{tag}"])}


def check_en_caption(cap: str, scene: Scene) -> None:
    objs = scene.objects
    m = re.match(r"there (is|are) (one|two|three) (shapes?): ", cap)
    if m:
        n = NUM[m.group(2)]
        assert n == len(objs), cap
        assert (m.group(1), m.group(3)) == (("is", "shape") if n == 1 else ("are", "shapes")), cap
        cap = cap[m.end():]
    rel = re.fullmatch(en_np("1") + r" (?P<rel>to the left of|above) " + en_np("2"), cap)
    if rel:
        c1, c2 = en_constraints(rel, "1"), en_constraints(rel, "2")
        test = is_left_of if rel.group("rel") == "to the left of" else is_above
        assert any(matches(a, c1) and matches(b, c2) and test(a, b) for a in objs for b in objs if a is not b), cap
        return
    pos, found = 0, []
    for i, np_match in enumerate(re.finditer(en_np(""), cap)):
        glue = cap[pos:np_match.start()]
        assert glue in ("", ", ", " and "), (cap, glue)
        assert (glue == "") == (i == 0), cap
        found.append(en_constraints(np_match))
        pos = np_match.end()
    assert found and pos == len(cap), f"unparsed text in {cap!r}"
    assert assign_distinct(objs, found), f"{cap!r} is not true of {scene}"
    for c, np_match in zip(found, re.finditer(en_np(""), cap), strict=True):   # "the X ..." must be unique
        if np_match.group("det") == "the":
            assert sum(matches(o, c) for o in objs) == 1, cap


KO_COL = {v: k for k, v in shapes.KO_COLOURS.items()}
KO_COL_NOUN = {v: k for k, v in shapes.KO_COLOUR_NOUNS.items()}
KO_SHP = {v: k for k, v in shapes.KO_SHAPES.items()}
KO_POS = {v: k for k, v in shapes.KO_POSITIONS.items()}
KO_SIZE = {v: k for k, v in shapes.KO_SIZES.items()}


def alt(words) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


def ko_np(tag: str) -> str:
    return (rf"(?:(?P<where{tag}>{alt(KO_POS)})에 있는 )?(?:(?P<size{tag}>{alt(KO_SIZE)}) )?"
            rf"(?:(?P<colour{tag}>{alt(KO_COL)}) )?(?P<shape{tag}>{alt(KO_SHP)}|도형)")


def ko_constraints(m: re.Match, tag: str = "") -> dict:
    g = m.groupdict()
    return {"size": KO_SIZE.get(g[f"size{tag}"]), "colour": KO_COL.get(g[f"colour{tag}"]),
            "shape": KO_SHP.get(g[f"shape{tag}"]), "position": KO_POS.get(g[f"where{tag}"])}


def batchim(word: str) -> bool:
    return (ord(word[-1]) - 0xAC00) % 28 != 0


def check_particle(word: str, particle: str, pair: tuple[str, str]) -> None:
    assert particle == (pair[0] if batchim(word) else pair[1]), f"{word}{particle}"


def check_ko_caption(cap: str, scene: Scene) -> None:
    objs = scene.objects
    m = re.match(r"도형 (한|두|세) 개: ", cap)
    if m:
        assert {"한": 1, "두": 2, "세": 3}[m.group(1)] == len(objs), cap
        cap = cap[m.end():]
    rel = re.fullmatch(ko_np("1") + r"(이|가) " + ko_np("2") + r"(의 왼쪽에 있다|보다 위에 있다)", cap)
    if rel:
        check_particle(rel.group("shape1"), cap[rel.end("shape1")], ("이", "가"))
        c1, c2 = ko_constraints(rel, "1"), ko_constraints(rel, "2")
        test = is_left_of if cap.endswith("왼쪽에 있다") else is_above
        assert any(matches(a, c1) and matches(b, c2) and test(a, b) for a in objs for b in objs if a is not b), cap
        return
    sep = re.fullmatch(rf"(?:(?:{alt(KO_POS)})의 (?:{alt(KO_SHP)})(?:은|는) (?:{alt(KO_COL_NOUN)})이고, )*"
                       rf"(?:{alt(KO_POS)})의 (?:{alt(KO_SHP)})(?:은|는) (?:{alt(KO_COL_NOUN)})이다", cap)
    if sep:
        for clause in re.finditer(rf"({alt(KO_POS)})의 ({alt(KO_SHP)})(은|는) ({alt(KO_COL_NOUN)})", cap):
            where, shape, particle, colour = clause.groups()
            check_particle(shape, particle, ("은", "는"))
            c = {"position": KO_POS[where], "shape": KO_SHP[shape], "colour": KO_COL_NOUN[colour]}
            assert sum(matches(o, c) for o in objs) == 1, cap
        return
    pos, found, items = 0, [], list(re.finditer(ko_np(""), cap))
    for i, np_match in enumerate(items):
        glue = cap[pos:np_match.start()]
        if i == 0:
            assert glue == "", cap
        elif i == len(items) - 1:           # "A와 B" / "A, B와 C": the particle agrees with the word before it
            assert glue in ("과 ", "와 "), (cap, glue)
            check_particle(items[i - 1].group("shape"), glue[0], ("과", "와"))
        else:
            assert glue == ", ", (cap, glue)
        found.append(ko_constraints(np_match))
        pos = np_match.end()
    assert found and pos == len(cap), f"unparsed text in {cap!r}"
    assert assign_distinct(objs, found), f"{cap!r} is not true of {scene}"


def test_every_caption_is_true_of_its_scene():
    for scene in scenes(500, seed=12):
        en, ko = captions(scene, "en"), captions(scene, "ko")
        relations = sum(is_left_of(a, b) + is_above(a, b) for a in scene.objects for b in scene.objects
                        if len(scene.objects) == 2)
        assert len(en) == len(ko) == len(shapes.CAPTION_TEMPLATES) + relations
        assert len(set(en)) == len(en) and len(set(ko)) == len(ko)
        for cap in en:
            check_en_caption(cap, scene)
        for cap in ko:
            check_ko_caption(cap, scene)


def test_caption_checker_catches_false_captions():
    """The checker itself must be able to fail: swap one word for a wrong one and it must object."""
    scene = Scene((Obj("circle", "red", "small", "left"), Obj("square", "blue", "large", "top")))
    bad_en = ["a small blue circle on the left and a large blue square at the top",
              "a red circle to the left of a blue star", "there are three shapes: a red circle and a blue square",
              "a large red circle", "the circle on the left is blue", "a blue square above a red circle and a cat"]
    for cap in bad_en:
        with pytest.raises(AssertionError):
            check_en_caption(cap, scene)
    bad_ko = ["왼쪽에 있는 작은 파란 원과 위쪽에 있는 큰 파란 정사각형", "빨간 원이 파란 정사각형보다 위에 있다",
              "도형 세 개: 빨간 원과 파란 정사각형", "왼쪽의 원는 빨간색이다", "빨간 원와 파란 정사각형"]
    for cap in bad_ko:
        with pytest.raises(AssertionError):
            check_ko_caption(cap, scene)


def test_relations_and_separate_naming_are_present():
    scene = Scene((Obj("star", "green", "small", "top"), Obj("cross", "orange", "large", "left")))
    en, ko = captions(scene, "en"), captions(scene, "ko")
    assert "a small green star at the top and a large orange cross on the left" in en
    assert "an orange cross to the left of a green star" in en and "a green star above an orange cross" in en
    assert "the star at the top is green and the cross on the left is orange" in en
    assert "위쪽에 있는 작은 초록색 별과 왼쪽에 있는 큰 주황색 십자 모양" in ko
    assert "주황색 십자 모양이 초록색 별의 왼쪽에 있다" in ko and "초록색 별이 주황색 십자 모양보다 위에 있다" in ko
    one = Scene((Obj("circle", "red", "small", "left"),))
    assert "a small red circle on the left" in captions(one) and "왼쪽에 있는 작은 빨간 원" in captions(one, "ko")
    rng = random.Random(0)
    assert shapes.caption(one, rng, "en") in captions(one, "en")
    assert shapes.caption(one, rng, "ko") in captions(one, "ko")


# ---------------------------------------------------------------------------------------------------------------
# questions: parse back and recompute the answer


def the_one(scene: Scene, q: str, **c):
    """The single object of `scene` with attributes `c`: a question that says "the X" must mean exactly one."""
    hits = [o for o in scene.objects if matches(o, c)]
    assert len(hits) == 1, (q, scene)
    return hits[0]


def answer_en(q: str, scene: Scene) -> tuple[str, str]:
    """(kind, answer) computed from the scene; asserts that every "the X" refers to exactly one object."""
    objs = scene.objects

    def only(**c):
        return the_one(scene, q, **c)

    plural = {s + ("es" if s.endswith("s") else "s"): s for s in SHAPES}
    rules = [
        (rf"what colour is the shape ({WHERE})\?", lambda w: ("colour", only(position=EN_WHERE[w]).colour)),
        (rf"what colour is the ({SHP})\?", lambda s: ("colour", only(shape=s).colour)),
        (rf"what shape is ({WHERE})\?", lambda w: ("shape", only(position=EN_WHERE[w]).shape)),
        (rf"what shape is the ({COL}) thing\?", lambda c: ("shape", only(colour=c).shape)),
        (r"how many shapes are there\?", lambda: ("count", shapes.NUMBER_WORDS[len(objs)])),
        (rf"how many ({'|'.join(plural)}) are there\?",
         lambda p: ("count", shapes.NUMBER_WORDS[sum(o.shape == plural[p] for o in objs)])),
        (rf"is there an? ({COL}) ({SHP})\?",
         lambda c, s: ("exists", "yes" if any(matches(o, {"colour": c, "shape": s}) for o in objs) else "no")),
        (rf"is there an? ({SHP})\?", lambda s: ("exists", "yes" if any(o.shape == s for o in objs) else "no")),
        (rf"is there an? ({COL}) thing\?",
         lambda c: ("exists", "yes" if any(o.colour == c for o in objs) else "no")),
        (rf"where is the ({COL}) ({SHP})\?", lambda c, s: ("position", only(colour=c, shape=s).position)),
        (rf"where is the ({SHP})\?", lambda s: ("position", only(shape=s).position)),
    ]
    hits = [(rx, f) for rx, f in rules if re.fullmatch(rx, q)]
    assert len(hits) == 1, f"question {q!r} matches {len(hits)} patterns"
    rx, f = hits[0]
    return f(*re.fullmatch(rx, q).groups())


def answer_ko(q: str, scene: Scene) -> tuple[str, str]:
    objs = scene.objects

    def only(**c):
        return the_one(scene, q, **c)

    P, S, C = alt(KO_POS), alt(KO_SHP), alt(KO_COL)
    rules = [
        (rf"({P})에 있는 도형은 무슨 색인가요\?", lambda w: ("colour", only(position=KO_POS[w]).colour)),
        (rf"({S})(은|는) 무슨 색인가요\?", lambda s, p: ("colour", only(shape=KO_SHP[s]).colour), ("은", "는")),
        (rf"({P})에 있는 도형은 어떤 모양인가요\?", lambda w: ("shape", only(position=KO_POS[w]).shape)),
        (rf"({C}) 도형은 어떤 모양인가요\?", lambda c: ("shape", only(colour=KO_COL[c]).shape)),
        (r"도형이 몇 개 있나요\?", lambda: ("count", shapes.NUMBER_WORDS[len(objs)])),
        (rf"({S})(이|가) 몇 개 있나요\?",
         lambda s, p: ("count", shapes.NUMBER_WORDS[sum(o.shape == KO_SHP[s] for o in objs)]), ("이", "가")),
        (rf"({C}) ({S})(이|가) 있나요\?", lambda c, s, p: (
            "exists", "yes" if any(matches(o, {"colour": KO_COL[c], "shape": KO_SHP[s]}) for o in objs) else "no"),
         ("이", "가")),
        (rf"({S})(이|가) 있나요\?", lambda s, p: ("exists", "yes" if any(o.shape == KO_SHP[s] for o in objs)
                                                  else "no"), ("이", "가")),
        (rf"({C}) 도형이 있나요\?", lambda c: ("exists", "yes" if any(o.colour == KO_COL[c] for o in objs)
                                             else "no")),
        (rf"({C}) ({S})(은|는) 어디에 있나요\?",
         lambda c, s, p: ("position", only(colour=KO_COL[c], shape=KO_SHP[s]).position), ("은", "는")),
        (rf"({S})(은|는) 어디에 있나요\?", lambda s, p: ("position", only(shape=KO_SHP[s]).position), ("은", "는")),
    ]
    hits = [r for r in rules if re.fullmatch(r[0], q)]
    assert len(hits) == 1, f"question {q!r} matches {len(hits)} patterns"
    rx, f, *particles = hits[0]
    groups = re.fullmatch(rx, q).groups()
    if particles:   # the particle agrees with the noun right before it
        check_particle(groups[-2], groups[-1], particles[0])
    return f(*groups)


def test_question_answers_are_right_and_unambiguous():
    kinds = set()
    for scene in scenes(400, seed=13):
        en, ko = questions(scene, "en"), questions(scene, "ko")
        assert [(q.answer, q.kind) for q in en] == [(q.answer, q.kind) for q in ko]
        assert len({q.question for q in en}) == len(en)
        for qa_en, qa_ko in zip(en, ko, strict=True):
            assert answer_en(qa_en.question, scene) == (qa_en.kind, qa_en.answer), qa_en
            assert answer_ko(qa_ko.question, scene) == (qa_ko.kind, qa_ko.answer), qa_ko
            assert " " not in qa_en.answer and qa_en.kind in shapes.QA_KINDS
            kinds.add(qa_en.kind)
        exists = [q.answer for q in en if q.kind == "exists"]
        assert exists.count("yes") == exists.count("no") > 0          # balanced in every scene
        for q in en:                                                  # "no" never names a held-out pair
            m = re.fullmatch(rf"is there an? ({COL}) ({SHP})\?", q.question)
            if m and q.answer == "no":
                assert tuple(m.groups()) not in HELD_OUT_PAIRS
    assert kinds == set(shapes.QA_KINDS)


def test_question_checker_catches_wrong_answers():
    scene = Scene((Obj("circle", "red", "small", "left"), Obj("circle", "blue", "large", "top")))
    assert answer_en("what colour is the shape on the left?", scene) == ("colour", "red")
    with pytest.raises(AssertionError):      # two circles: "the circle" is ambiguous
        answer_en("what colour is the circle?", scene)
    assert answer_en("how many circles are there?", scene) == ("count", "two")
    assert answer_en("is there a red square?", scene) == ("exists", "no")
    assert "what colour is the circle?" not in [q.question for q in questions(scene)]
    assert answer_ko("원이 몇 개 있나요?", scene) == ("count", "two")
    with pytest.raises(AssertionError):
        answer_ko("원가 몇 개 있나요?", scene)


def test_binding_negatives_are_asked():
    scene = Scene((Obj("circle", "green", "small", "left"), Obj("square", "blue", "large", "top")))
    qs = {q.question: q.answer for q in questions(scene)}
    assert qs["is there a green circle?"] == "yes"
    assert qs.get("is there a green square?") == "no" or qs.get("is there a blue circle?") == "no"


# ---------------------------------------------------------------------------------------------------------------
# zero-shot tasks


def test_zero_shot_tasks_are_unambiguous():
    assert set(shapes.ZERO_SHOT_TASKS) == {"colour", "shape", "colour_shape", "size", "position", "count"}
    truth = {"colour": lambda s: s.objects[0].colour, "shape": lambda s: s.objects[0].shape,
             "colour_shape": lambda s: f"{s.objects[0].colour} {s.objects[0].shape}",
             "size": lambda s: s.objects[0].size, "position": lambda s: s.objects[0].position,
             "count": lambda s: shapes.NUMBER_WORDS[len(s.objects)]}
    for name, task in shapes.ZERO_SHOT_TASKS.items():
        assert task.name == name and len(set(task.labels)) == len(task.labels)
        for split in ("train", "heldout", "any"):
            rng = random.Random(len(name))
            labels = set()
            for _ in range(300):
                scene, label = task.sample(rng, split)
                assert label in task.labels and label == truth[name](scene)
                if name != "count":
                    assert len(scene.objects) == 1       # one object: the scene has exactly one colour, shape...
                if split != "any":
                    assert scene.is_heldout() == (split == "heldout")
                labels.add(label)
            if name != "colour_shape":                   # every class is posed, in every split
                assert labels == set(task.labels), (name, split)
    held = {f"{c} {s}" for c, s in HELD_OUT_PAIRS}
    assert held <= set(shapes.ZERO_SHOT_TASKS["colour_shape"].labels)
    rng = random.Random(0)
    assert {shapes.ZERO_SHOT_TASKS["colour_shape"].sample(rng, "heldout")[1] for _ in range(400)} == held
    images, targets, sc = shapes.zero_shot_set("count", 30, seed=1)
    assert images.shape == (30, 3, 32, 32) and targets.dtype == torch.long
    assert [shapes.ZERO_SHOT_TASKS["count"].labels[t] for t in targets] == [
        shapes.NUMBER_WORDS[len(s.objects)] for s in sc]


# ---------------------------------------------------------------------------------------------------------------
# torch Datasets


def test_datasets_items_and_dataloader():
    ds = ShapesCaptions(24, seed=0, split="train", lang="both", size=64)
    item = ds[3]
    assert item["image"].shape == (3, 64, 64) and isinstance(item["scene"], Scene)
    assert item["caption"] in captions(item["scene"], "en") + captions(item["scene"], "ko")
    langs = {bool(re.search("[가-힣]", ds[i]["caption"])) for i in range(24)}
    assert langs == {True, False}
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate)))
    assert batch["image"].shape == (8, 3, 64, 64) and len(batch["caption"]) == 8 and len(batch["scene"]) == 8
    assert ShapesCaptions(10, seed=0).scenes == ShapesCaptions(30, seed=0).scenes[:10]
    with pytest.raises(IndexError):
        ds[24]
    with pytest.raises(ValueError):
        ShapesCaptions(5, lang="fr")

    qa = ShapesQA(300, seed=1, split="heldout", lang="en")
    kinds = []
    for i in range(300):
        it = qa[i]
        assert answer_en(it["question"], it["scene"]) == (it["kind"], it["answer"])
        assert it["scene"].is_heldout()
        kinds.append(it["kind"])
    assert set(kinds) == set(shapes.QA_KINDS) and min(kinds.count(k) for k in shapes.QA_KINDS) > 30
    qa_ko = ShapesQA(50, seed=1, lang="ko")
    for i in range(50):
        it = qa_ko[i]
        assert answer_ko(it["question"], it["scene"]) == (it["kind"], it["answer"])
    batch = next(iter(DataLoader(qa_ko, batch_size=4, collate_fn=ShapesQA.collate_fn)))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["answer"]) == 4
