"""The tiny CLIP's training material for generality: free wordings that always tell the truth about the scene, filler
words that carry no scene meaning, and drawn variants that keep every label."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from minimal import shapes
from minimal.shapes.common_words import EN_WORDS, KO_WORDS
from minimal.shapes.grammar import KO_PLACES, KO_SIZE_WORDS, SIZE_WORDS, free_caption
from minimal.shapes.render import VARIANTS, variant_masks

SCENE_WORDS_EN = set(shapes.COLOURS) | set(shapes.SHAPES) | {"small", "large", "little", "tiny", "big", "huge",
                                                              "left", "right", "top", "bottom", "centre", "center",
                                                              "middle", "one", "two", "three", "not", "no"}
SCENE_WORDS_KO = (set(shapes.KO_COLOURS.values()) | set(shapes.KO_SHAPES.values()) | set(shapes.KO_POSITIONS.values())
                  | {w for ws in KO_SIZE_WORDS.values() for w in ws} | {"하나", "한", "두", "세", "없는", "아닌"})


def test_filler_words_say_nothing_about_a_scene():
    assert not set(EN_WORDS) & SCENE_WORDS_EN, set(EN_WORDS) & SCENE_WORDS_EN
    assert not set(KO_WORDS) & SCENE_WORDS_KO, set(KO_WORDS) & SCENE_WORDS_KO
    assert len(EN_WORDS) >= 150 and len(KO_WORDS) >= 60


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_free_captions_name_every_object_truly(lang):
    rng = random.Random(3)
    for _ in range(400):
        scene = shapes.sample_scene(rng, None, "any")
        said = free_caption(scene, rng, lang)
        for o in scene.objects:
            colour = o.colour if lang == "en" else shapes.KO_COLOURS[o.colour]
            shape = o.shape if lang == "en" else shapes.KO_SHAPES[o.shape]
            sizes = SIZE_WORDS[o.size] if lang == "en" else KO_SIZE_WORDS[o.size] + ("작고", "크고", "작다", "크다")
            assert colour in said and shape in said, (said, o)
            assert any(z in said for z in sizes), (said, o)
            if lang == "ko":
                assert any(p in said for p in KO_PLACES[o.position]), (said, o)
        other = "small" if lang == "en" and all(o.size == "large" for o in scene.objects) else None
        if other:   # a scene of large objects is never called small
            assert not any(f" {z} " in f" {said} " for z in SIZE_WORDS["small"]), said


def test_free_captions_are_varied_and_deterministic():
    scene = shapes.sample_scene(random.Random(0), 2, "any")
    said = [free_caption(scene, random.Random(k)) for k in range(200)]
    assert said == [free_caption(scene, random.Random(k)) for k in range(200)]
    assert len(set(said)) > 150
    with pytest.raises(ValueError, match="lang"):
        free_caption(scene, random.Random(0), "fr")


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_variants_keep_the_shape_inside_its_box(shape):
    base = shapes.shape_mask(shape, 10)
    for k in range(VARIANTS):
        fill, stroke = variant_masks(shape, 10, k)
        assert fill.shape == stroke.shape == (10, 10)
        assert 0 <= fill.min() and (fill + stroke).max() <= 1.0 + 1e-5
        cover = (fill + stroke).sum()
        assert 0.35 * base.sum() < cover < 1.4 * base.sum(), (k, cover, base.sum())   # the same object, redrawn
    assert (variant_masks(shape, 10, 0)[1] == 0).all() and variant_masks(shape, 10, 1)[1].sum() > 0   # odd: outlined


def test_render_variety_is_off_by_default_and_deterministic():
    scenes = [shapes.sample_scene(random.Random(i), None, "any") for i in range(16)]
    plain = shapes.render_batch(scenes, 32, 5)
    assert torch.equal(plain, shapes.render_batch(scenes, 32, 5, variety=0.0))
    varied = shapes.render_batch(scenes, 32, 5, variety=1.0)
    assert torch.equal(varied, shapes.render_batch(scenes, 32, 5, variety=1.0))
    assert (varied - plain).abs().mean() > 0.003
    # the same objects in the same colours: the batch's mean colour barely moves
    assert np.abs((varied.mean((0, 2, 3)) - plain.mean((0, 2, 3))).numpy()).max() < 0.03


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, None])
def test_render_variety_is_checked(bad):
    with pytest.raises(ValueError, match="variety"):
        shapes.render_batch([shapes.sample_scene(random.Random(0))], 32, 0, variety=bad)
