"""The Shapes world: the small synthetic image–caption world the whole course trains on.

Real photos cannot be downloaded in every classroom and a laptop CPU must learn in minutes, so the course draws
its own CLEVR-like world with PIL, deterministic from a seed::

    from minimal import shapes
    rng = random.Random(0)
    scene = shapes.sample_scene(rng)                   # Scene(objects=(Obj('star', 'red', 'small', 'left'), ...))
    img = shapes.render(scene, size=32, rng_or_seed=0) # PIL RGB image, 32x32 (use size=64 for pictures)
    shapes.captions(scene, "en"), shapes.captions(scene, "ko")   # several templates each, English and Korean
    shapes.questions(scene)                            # [QA('what colour is the star?', 'red', 'colour'), ...]
    shapes.ZERO_SHOT_TASKS["colour_shape"].sample(rng, "heldout")   # (Scene, "yellow circle")

One module per part: `world` (vocabulary, objects, scenes, held-out pairs), `render` (pixels), `language` (the one
phrase table every sentence is built from), `captions`, `questions`, `requests` (what a user asks the output side),
`tasks` (zero-shot datasets) and `datasets` (torch Datasets, folder export). Their public names are gathered here.
"""

from .captions import CAPTION_TEMPLATES, READING_ORDER, canonical_caption, caption, captions
from .datasets import ShapesCaptions, ShapesQA, export_folder
from .language import (
    KO,
    KO_COLOUR_NOUNS,
    KO_COLOURS,
    KO_NUMBERS,
    KO_POSITIONS,
    KO_SHAPES,
    KO_SIZES,
    KO_THING,
    WHERE,
    fix_articles,
    indefinite,
    josa,
    listing,
    noun_phrase,
    pair_phrase,
)
from .questions import QA, QA_KINDS, questions
from .render import draw_shape, object_px, render, render_batch, shape_mask
from .requests import (
    Request,
    all_target_phrases,
    drawing_request,
    ordinary_question,
    request_set,
    target_phrase,
)
from .tasks import ZERO_SHOT_TASKS, ZeroShotTask, zero_shot_set
from .world import (
    ALL_PAIRS,
    COLOURS,
    HELD_OUT_PAIRS,
    MAX_OBJECTS,
    NUMBER_WORDS,
    POSITIONS,
    RGB,
    SHAPES,
    SIZES,
    SPLITS,
    TRAIN_PAIRS,
    Obj,
    Scene,
    above,
    left_of,
    sample_scene,
)

__all__ = [
    "ALL_PAIRS", "CAPTION_TEMPLATES", "COLOURS", "HELD_OUT_PAIRS", "KO", "KO_COLOURS",
    "KO_COLOUR_NOUNS", "KO_NUMBERS", "KO_POSITIONS", "KO_SHAPES", "KO_SIZES", "KO_THING", "MAX_OBJECTS",
    "NUMBER_WORDS", "POSITIONS", "QA", "QA_KINDS", "READING_ORDER", "RGB", "SHAPES", "SIZES", "SPLITS",
    "TRAIN_PAIRS", "WHERE", "ZERO_SHOT_TASKS", "Obj", "Request", "Scene", "ShapesCaptions", "ShapesQA",
    "ZeroShotTask", "above", "all_target_phrases", "canonical_caption", "caption", "captions", "draw_shape",
    "drawing_request", "export_folder", "fix_articles", "indefinite", "josa", "left_of", "listing", "noun_phrase",
    "object_px", "ordinary_question", "pair_phrase", "questions", "render", "render_batch", "request_set",
    "sample_scene", "shape_mask", "target_phrase", "zero_shot_set",
]
