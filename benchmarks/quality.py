"""Quality of the shipped checkpoints on a freshly generated Shapes world: prints one JSON object.

    python benchmarks/quality.py --seed 12345          # every part
    python benchmarks/quality.py --seed 7 --parts clip

`--seed` seeds the world the checkpoints are evaluated on (scenes, renders); use a seed no training run used.
Each part is one function `<part>_quality(seed, n) -> dict`, keyed by its name in the output; a part whose
checkpoint is missing reports {"missing": "..."} instead of failing the others.

"clip" (data/checkpoints/tiny_clip.*): zero-shot classification with the world's caption phrasing as prompts
(see `minimal.zeroshot.task_prompts`): `zeroshot_seen` / `zeroshot_unseen` — one-object images of training
colour–shape pairs / of the 8 held-out pairs, each classified among all 48 "a {colour} {shape}" labels — and one
accuracy per task (colour, shape, size, position, count). "clip_photo_prompts" repeats the headline numbers with
CLIP's "a photo of a {label}." prompts, whose words our captions never use. `t2i_r1, t2i_r5, i2t_r1, i2t_r5`:
retrieval Recall@K with the paired-image definition (CLIP_benchmark's; `minimal.retrieval.retrieval_metrics`) on
`n` fresh scenes of any split, each with its most detailed English caption (every object's size, colour, shape
and position): text->image, is a caption's own image in the top K of the n images; image->text, is the image's own
caption in the top K of the n captions (see `clip_retrieval`). `t2i_r5_paraphrase` / `t2i_r5_paraphrase_ko`: the
same images and facts, each caption worded with the held-out templates of benchmarks/wordings/ (English / Korean),
which no training run reads. `zeroshot_unseen_photo_prompt`: zeroshot_unseen with "a photo of a {label}." prompts;
`zeroshot_unseen_other_renderer`: zeroshot_unseen on images drawn by the second renderer (`minimal.shapes.sketch`).

"mllm" (data/checkpoints/tiny_clip.* + mllm_adapters.*): `vqa`, `vqa_unseen`, `vqa_ko`, `caption_attr` (see
`mllm_quality`) and `vqa_paraphrase` (see `mllm_wordings`), each with its accuracy per question kind.

"generator" (tiny_clip.* + generator.* + output_projector.*): `decision`, `drawing`, `judge_agreement` (see
`generator_quality`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable

from paraphrase import paraphrase, reword_question  # benchmarks/paraphrase.py: wordings no run trains on

from minimal import env, retrieval, zeroshot
from minimal.clip import TINY_CLIP, load_tiny_clip
from minimal.images import normalize
from minimal.mllm import MLLM_ADAPTERS, build_mllm
from minimal.modality_generator import GENERATOR_PATH
from minimal.output_projector import OUTPUT_PROJECTOR_PATH, TargetTable
from minimal.output_side import OutputSide
from minimal.recipes import mllm_eval
from minimal.recipes import output_side as output_recipe
from minimal.shapes import ZERO_SHOT_TASKS, captions, render_batch, sample_scene, zero_shot_set
from minimal.shapes.sketch import sketch_batch
from minimal.weights import CHECKPOINT_DIR, read_card


def _missing(*paths) -> dict | None:
    """{"missing": ...} for the first checkpoint that is not there (a part then reports instead of failing)."""
    for path in paths:
        if not path.is_file():
            return {"missing": f"{path} (run `make checkpoints`)"}
    return None


def clip_quality(seed: int, n: int = 1000) -> dict:
    """The tiny CLIP's zero-shot figures on world seed `seed` (see the module docstring)."""
    if missing := _missing(TINY_CLIP):
        return missing
    model, tok = load_tiny_clip()
    with env.Timer() as timer:
        out = zeroshot.evaluate_tasks(model, tok, seed=seed, n=n)
        photo = zeroshot.evaluate_tasks(model, tok, seed=seed, n=n, style="photo")
        out["photo_prompts"] = {k: photo[k] for k in ("zeroshot_seen", "zeroshot_unseen", "colour", "shape")}
        out["zeroshot_unseen_photo_prompt"] = photo["zeroshot_unseen"]
        out["zeroshot_unseen_other_renderer"] = other_renderer_unseen(model, tok, seed, 2 * n)
        out.update(clip_retrieval(model, tok, seed, n))
    out["checkpoint"] = str(TINY_CLIP.relative_to(CHECKPOINT_DIR.parent.parent))
    out["eval_seconds"] = round(timer.wall, 1)
    return out


def clip_retrieval(model, tok, seed: int, n: int = 1000) -> dict:
    """Recall@1/5 both ways on `n` fresh scenes (world seed `seed`), one detailed English caption per image."""
    rng = random.Random(f"retrieval/{seed}")
    scenes = [sample_scene(rng, None, "any") for _ in range(n)]
    encode_image, encode_text = zeroshot.encoders(model, tok, image_transform=normalize)
    images = zeroshot.embed(encode_image, render_batch(scenes, model.cfg.vision.image_size, f"retrieval/{seed}"))
    texts = zeroshot.embed(encode_text, [captions(s, "en")[0] for s in scenes])
    out = retrieval.retrieval_metrics(images, texts, ks=(1, 5))     # caption i belongs to image i
    for lang, key in (("en", "paraphrase"), ("ko", "paraphrase_ko")):   # the same facts, in held-out wordings
        said = [paraphrase(s, rng, lang) for s in scenes]
        metrics = retrieval.retrieval_metrics(images, zeroshot.embed(encode_text, said), ks=(1, 5))
        out |= {f"t2i_r1_{key}": metrics["t2i_r1"], f"t2i_r5_{key}": metrics["t2i_r5"]}
        out[f"example_{key}"] = said[0]
    return out


def other_renderer_unseen(model, tok, seed: int, n: int) -> float:
    """zeroshot_unseen on the same kind of images drawn by the other renderer (`minimal.shapes.sketch`): n
    one-object images of held-out colour–shape pairs, classified among all 48 labels with the course's prompts."""
    _, targets, scenes = zero_shot_set("colour_shape", n, seed=seed + 1, split="heldout")
    classifier = zeroshot.task_classifier(model, tok, "colour_shape")
    assert classifier.labels == ZERO_SHOT_TASKS["colour_shape"].labels
    return zeroshot.accuracy(classifier(sketch_batch(scenes, model.cfg.vision.image_size, f"sketch/{seed}")), targets)


def mllm_quality(seed: int, n: int = 1000) -> dict:
    """The MLLM (tiny CLIP vision tower + shipped input projector and LoRA adapters + frozen SmolLM2) on world seed
    `seed`, measured by the recipe's own evaluation (`minimal.recipes.mllm_eval.evaluate_all`).

    `vqa`: exact-answer accuracy (first word, lower-case) on fresh train-split images, one question each, the
    kind drawn uniformly (colour, shape, count, exists, position); `vqa_unseen`: the same on images that contain a
    held-out colour–shape pair; `vqa_ko`: `vqa`'s questions asked in Korean (answers still the world's English
    words); `caption_attr`: attribute accuracy of generated captions ("Describe the image."):
    per image, true (place, size/colour/shape) facts stated / max(facts in the scene, facts stated), averaged.
    Generation is slow on a CPU, so at most 300 images per figure (`n` caps it lower).
    """
    if missing := _missing(TINY_CLIP, MLLM_ADAPTERS):
        return missing
    n = min(n, 300)
    model = build_mllm(adapters_path=MLLM_ADAPTERS, verbose=False)
    with env.Timer() as timer:
        out = mllm_eval.evaluate_all(model, n, seed)
        out.update(mllm_wordings(model, n, seed))
    counts = model.parameter_counts()
    card = read_card(MLLM_ADAPTERS)
    out.pop("eval_images")
    out.pop("eval_seed")
    return {**out, "images": n, "trained_fraction": counts["trainable"] / counts["total"],
            "checkpoint": str(MLLM_ADAPTERS.relative_to(CHECKPOINT_DIR.parent.parent)),
            "checkpoint_date": card.get("date"), "train_seconds": card.get("train_seconds", {}).get("total"),
            "eval_seconds": round(timer.wall, 1), "eval_cpu_seconds": round(timer.cpu, 1),
            "load_average_1_5_15": timer.load_after}


def mllm_wordings(model, n: int, seed: int) -> dict:
    """`vqa_paraphrase`: the questions of `vqa` in held-out English wordings (benchmarks/wordings/
    mllm_eval_questions.json, which no training code reads), with its accuracy per question kind."""
    seen = mllm_eval.eval_set(n, seed=seed, split="train")
    rng = random.Random(f"vqa-paraphrase/{seed}")
    reworded = [{**it, "question": reword_question(it["scene"], it["question"], rng)} for it in seen]
    para = mllm_eval.evaluate_vqa(model, reworded)
    return {"vqa_paraphrase": para["accuracy"], "vqa_paraphrase_per_kind": para["per_kind"],
            "example_paraphrase": reworded[0]["question"]}


def generator_quality(seed: int, n: int = 1000) -> dict:
    """The output side (frozen SmolLM2 + shipped output projector + shipped generator, judged by the tiny CLIP).

    On fresh requests from world seed `seed`, worded with *held-out* templates and questions (EN and KO, half
    drawing requests): `decision` — share routed right (image vs text); `drawing` — share of drawing requests whose
    drawing the tiny CLIP's zero-shot classifier reads as the requested colour and shape; `judge_agreement` — the
    same judge on the renderer's own image of each request (the judge's accuracy). At most 400 requests (`n` caps
    it lower); see `minimal.recipes.output_side.evaluate` for the other figures.
    """
    if missing := _missing(TINY_CLIP, GENERATOR_PATH, OUTPUT_PROJECTOR_PATH):
        return missing
    clip, tok = load_tiny_clip()
    side = OutputSide.load(verbose=False)     # stdout carries the JSON object only
    with env.Timer() as timer:
        out = output_recipe.evaluate(side, zeroshot.task_classifier(clip, tok, "colour_shape"), TargetTable(clip, tok),
                                     seed=seed, n=min(n, 400))
    out["eval_seconds"], out["eval_cpu_seconds"] = round(timer.wall, 1), round(timer.cpu, 1)
    out["load_average_1_5_15"] = timer.load_after
    out["checkpoints"] = {name: read_card(path)["date"] for name, path in
                          (("generator", GENERATOR_PATH), ("output_projector", OUTPUT_PROJECTOR_PATH))}
    return out


PARTS: dict[str, Callable[[int, int], dict]] = {
    "clip": clip_quality,
    "mllm": mllm_quality,
    "generator": generator_quality,
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=12345, help="world seed to evaluate on (unseen by training)")
    parser.add_argument("--n", type=int, default=1000, help="images per task (colour+shape uses 2n per split)")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    args = parser.parse_args(argv)
    result = {"seed": args.seed}
    for part in args.parts:
        result[part] = PARTS[part](args.seed, args.n)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
