"""The held-out evaluation material of the tiny CLIP stays held out: no code in minimal/ reads the evaluation
wordings or draws with the second renderer while training, and the wordings never coincide with a training caption."""

import importlib.util
import random
from pathlib import Path

import pytest
import torch

from minimal import shapes
from minimal.shapes.grammar import free_caption
from minimal.shapes.questions import question_specs
from minimal.shapes.sketch import sketch_batch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paraphrase", ROOT / "benchmarks" / "paraphrase.py")
paraphrase = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paraphrase)


def test_no_training_code_reads_the_evaluation_wordings():
    readers = [str(p.relative_to(ROOT)) for p in (ROOT / "minimal").rglob("*.py")
               if any(word in p.read_text() for word in ("clip_eval_wordings", "mllm_eval_questions", "wordings/",
                                                         "paraphrase"))]
    assert readers == [], f"minimal/ must never read the evaluation wordings: {readers}"


def test_recipes_never_draw_with_the_second_renderer():
    recipes = (ROOT / "minimal" / "recipes").rglob("*.py")
    users = [str(p.relative_to(ROOT)) for p in recipes if "sketch" in p.read_text()]
    assert users == [], users


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_paraphrases_are_never_a_training_caption_and_name_every_object(lang):
    rng = random.Random(0)
    for _ in range(500):
        scene = shapes.sample_scene(rng, None, "any")
        said = paraphrase.paraphrase(scene, rng, lang)
        assert said not in shapes.captions(scene, lang), said
        for o in scene.objects:
            colour = o.colour if lang == "en" else shapes.KO_COLOURS[o.colour]
            shape = o.shape if lang == "en" else shapes.KO_SHAPES[o.shape]
            assert colour in said and shape in said, (said, o)


def test_paraphrases_are_deterministic_and_varied():
    scenes = [shapes.sample_scene(random.Random(i)) for i in range(50)]
    first = [paraphrase.paraphrase(s, random.Random(7)) for s in scenes]
    assert first == [paraphrase.paraphrase(s, random.Random(7)) for s in scenes]
    assert len({p.split(" ")[0] for p in first}) >= 4, "several scene templates should be in use"


def test_sketch_renderer_draws_the_same_scenes_differently():
    scenes = [shapes.sample_scene(random.Random(i), None, "any") for i in range(16)]
    ours, other = shapes.render_batch(scenes, 32, 3), sketch_batch(scenes, 32, 3)
    assert other.shape == ours.shape and other.dtype == torch.float32
    assert 0.0 <= float(other.min()) and float(other.max()) <= 1.0
    assert torch.equal(other, sketch_batch(scenes, 32, 3)), "deterministic from the seed"
    assert (other - ours).abs().mean() > 0.01, "a different drawing, not a copy"
    # each object's colour is where the main renderer put it: the mean colour of the two images agrees roughly
    assert (other.mean((2, 3)) - ours.mean((2, 3))).abs().max() < 0.08


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_free_training_wordings_never_produce_an_evaluation_sentence(lang):
    rng = random.Random(1)
    for _ in range(200):
        scene = shapes.sample_scene(rng, 1, "any")           # one object: the sentences are short and may collide
        held_out = {paraphrase.paraphrase(scene, random.Random(k), lang) for k in range(30)}
        trained = {free_caption(scene, random.Random(k), lang) for k in range(60)}
        assert not held_out & trained, held_out & trained


def test_held_out_questions_are_never_a_training_question_and_keep_the_kind():
    wordings = paraphrase.question_wordings()
    specs_seen = set()
    rng = random.Random(5)
    for _ in range(300):
        scene = shapes.sample_scene(rng, None, "any")
        trained = {qa.question for k in range(40) for qa in shapes.questions(scene, "en", random.Random(k))}
        for qa, (kind, template, _, answer) in zip(shapes.questions(scene, "en"),
                                                   question_specs(scene), strict=True):
            said = paraphrase.reword_question(scene, qa.question, rng)
            assert said not in trained, said
            assert kind == qa.kind and answer == qa.answer
            specs_seen.add(f"{kind}/{template}")
    assert specs_seen == set(wordings), "every held-out template is used, and every kind of question has some"
    with pytest.raises(ValueError, match="not a question"):
        paraphrase.reword_question(shapes.sample_scene(random.Random(0)), "what is the capital of France?", rng)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_varied_training_questions_keep_kind_and_answer_and_vary(lang):
    rng = random.Random(11)
    for _ in range(100):
        scene = shapes.sample_scene(rng, None, "any")
        world = shapes.questions(scene, lang)
        drawn = [shapes.questions(scene, lang, random.Random(k)) for k in range(12)]
        for qas in drawn:
            assert [(q.kind, q.answer) for q in qas] == [(q.kind, q.answer) for q in world]
        wordings = {q.question for qas in drawn for q in qas}
        assert wordings - {q.question for q in world}     # other wordings than the world's are drawn
        assert all(w.strip() and "{" not in w for w in wordings)
