"""Quality of the shipped checkpoints on a freshly generated Shapes world: prints one JSON object.

    python benchmarks/quality.py --seed 12345          # every part
    python benchmarks/quality.py --seed 7 --parts clip

`--seed` seeds the world the checkpoints are evaluated on (scenes, renders); use a seed no training run used.
Each part is one function `<part>_quality(seed, n) -> dict`, keyed by its name in the output; a part whose
checkpoint is missing reports {"missing": "..."} instead of failing the others.

"clip" (data/checkpoints/tiny_clip.*): zero-shot classification with the world's caption phrasing as prompts
(see `minimal.checkpoints.task_prompts`): `zeroshot_seen` / `zeroshot_unseen` — one-object images of training
colour–shape pairs / of the 8 held-out pairs, each classified among all 48 "a {colour} {shape}" labels — and one
accuracy per task (colour, shape, size, position, count). "clip_photo_prompts" repeats the headline numbers with
CLIP's "a photo of a {label}." prompts, whose words our captions never use. `t2i_r1, t2i_r5, i2t_r1, i2t_r5`:
retrieval Recall@K with the paired-image definition (CLIP_benchmark's; `minimal.zeroshot.retrieval_metrics`) on
`n` fresh scenes of any split, each with its most detailed English caption (every object's size, colour, shape
and position): text->image, is a caption's own image in the top K of the n images; image->text, is the image's own
caption in the top K of the n captions (see `clip_retrieval`).

"mllm" (data/checkpoints/tiny_clip.* + mllm_projector.*): `vqa`, `vqa_unseen`, `caption_attr` (see `mllm_quality`).

"generator" (tiny_clip.* + generator.* + output_projector.*): `decision`, `drawing`, `judge_agreement` (see
`generator_quality`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def clip_quality(seed: int, n: int = 1000) -> dict:
    """The tiny CLIP's zero-shot figures on world seed `seed` (see the module docstring)."""
    from minimal.checkpoints import evaluate_clip
    from minimal.clip import TINY_CLIP, load_tiny_clip

    if not TINY_CLIP.is_file():
        return {"missing": f"{TINY_CLIP} (run `make checkpoints`)"}
    model, tok = load_tiny_clip()
    t0 = time.perf_counter()
    out = evaluate_clip(model, tok, seed=seed, n=n)
    photo = evaluate_clip(model, tok, seed=seed, n=n, style="photo")
    out["photo_prompts"] = {k: photo[k] for k in ("zeroshot_seen", "zeroshot_unseen", "colour", "shape")}
    out.update(clip_retrieval(model, tok, seed, n))
    out["checkpoint"] = str(TINY_CLIP.relative_to(TINY_CLIP.parent.parent.parent))
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def clip_retrieval(model, tok, seed: int, n: int = 1000) -> dict:
    """Recall@1/5 both ways on `n` fresh scenes (world seed `seed`), one detailed English caption per image."""
    import random

    from minimal import data, zeroshot

    rng = random.Random(f"retrieval/{seed}")
    scenes = [data.sample_scene(rng, None, "any") for _ in range(n)]
    encode_image, encode_text = zeroshot.encoders(model, tok, image_transform=data.normalize)
    images = zeroshot.embed(encode_image, data.render_batch(scenes, model.cfg.vision.image_size, f"retrieval/{seed}"))
    texts = zeroshot.embed(encode_text, [data.captions(s, "en")[0] for s in scenes])
    return zeroshot.retrieval_metrics(images, texts, ks=(1, 5))     # caption i belongs to image i


def mllm_quality(seed: int, n: int = 1000) -> dict:
    """The MLLM (tiny CLIP vision tower + shipped projector + frozen SmolLM2) on world seed `seed`.

    `vqa`: exact-answer accuracy (first word, lower-case) on fresh train-split images, one question each, the
    kind drawn uniformly (colour, shape, count, exists, position); `vqa_unseen`: the same on images that contain a
    held-out colour–shape pair; `caption_attr`: attribute accuracy of generated captions ("Describe the image."):
    per image, true (place, size/colour/shape) facts stated / max(facts in the scene, facts stated), averaged.
    Generation is slow on a CPU, so at most 300 images per figure (`n` caps it lower).
    """
    from minimal import mllm
    from minimal.clip import TINY_CLIP

    for path in (TINY_CLIP, mllm.MLLM_PROJECTOR):
        if not path.is_file():
            return {"missing": f"{path} (run `make checkpoints` / `python -m minimal.mllm`)"}
    import os

    n = min(n, 300)
    model = mllm.build_mllm(projector_path=mllm.MLLM_PROJECTOR, verbose=False)
    model.eval()
    t0, cpu0 = time.perf_counter(), time.process_time()
    seen = mllm.eval_set(n, seed=seed, split="train")
    unseen = mllm.eval_set(n, seed=seed + 1, split="heldout")
    vqa, vqa_unseen = mllm.evaluate_vqa(model, seen), mllm.evaluate_vqa(model, unseen)
    captions = mllm.evaluate_captions(model, seen)
    counts = model.parameter_counts()
    card = json.loads(mllm.MLLM_PROJECTOR.with_suffix(".json").read_text())
    return {"vqa": vqa["accuracy"], "vqa_unseen": vqa_unseen["accuracy"], "caption_attr": captions["caption_attr"],
            "vqa_per_kind": vqa["per_kind"], "vqa_unseen_per_kind": vqa_unseen["per_kind"], "images": n,
            "trained_fraction": counts["trainable"] / counts["total"],
            "checkpoint": str(mllm.MLLM_PROJECTOR.relative_to(mllm.MLLM_PROJECTOR.parents[2])),
            "checkpoint_date": card.get("date"), "train_seconds": card.get("train_seconds", {}).get("total"),
            "eval_seconds": round(time.perf_counter() - t0, 1), "eval_cpu_seconds": round(time.process_time() - cpu0, 1),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def generator_quality(seed: int, n: int = 1000) -> dict:
    """The output side (frozen SmolLM2 + shipped output projector + shipped generator, judged by the tiny CLIP).

    On fresh requests from world seed `seed`, worded with *held-out* templates and questions (EN and KO, half
    drawing requests): `decision` — share routed right (image vs text); `drawing` — share of drawing requests whose
    drawing the tiny CLIP's zero-shot classifier reads as the requested colour and shape; `judge_agreement` — the
    same judge on the renderer's own image of each request (the judge's accuracy). At most 400 requests (`n` caps
    it lower); see `minimal.generator.evaluate` for the other figures.
    """
    from minimal import generator
    from minimal.clip import TINY_CLIP, load_tiny_clip

    for path in (TINY_CLIP, generator.GENERATOR_PATH, generator.PROJECTOR_PATH):
        if not path.is_file():
            return {"missing": f"{path} (run `python -m minimal.generator generator` / `... projector`)"}
    import os

    clip, tok = load_tiny_clip()
    side = generator.OutputSide.load(verbose=False)     # stdout carries the JSON object only
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = generator.evaluate(side, generator.Judge(clip, tok), generator.PhraseTable(clip, tok), seed=seed,
                             n=min(n, 400))
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    out["eval_cpu_seconds"] = round(time.process_time() - cpu0, 1)
    out["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    out["checkpoints"] = {name: generator.read_card(path)["date"] for name, path in
                          (("generator", generator.GENERATOR_PATH), ("output_projector", generator.PROJECTOR_PATH))}
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
