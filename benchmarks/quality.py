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
CLIP's "a photo of a {label}." prompts, whose words our captions never use.
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
    out["checkpoint"] = str(TINY_CLIP.relative_to(TINY_CLIP.parent.parent.parent))
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


PARTS: dict[str, Callable[[int, int], dict]] = {
    "clip": clip_quality,
    # "mllm": mllm_quality,           -- added by the MLLM chapter
    # "generator": generator_quality, -- added by the output-side chapter
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
