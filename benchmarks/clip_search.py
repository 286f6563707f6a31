"""Search over tiny-CLIP recipes: train each variant and measure what the course reports about it.

    python benchmarks/clip_search.py --trials trials.json --device cuda --parallel 8 --out results.json

`trials.json` is a list of {"name": ..., "recipe": {field: value}} (nested "text"/"vit" dicts update the
defaults). Every trial trains with the same step count it would get on the CPU, so a GPU only makes the search
faster, not the recipes bigger; each is then evaluated on fresh world seeds with the figures of
`benchmarks/quality.py`'s "clip" part (zero-shot on unseen pairs with world and photo prompts and on the second
renderer, retrieval with the world's wording and with the held-out wordings in English and Korean).
Trials run in `--parallel` processes of one CPU thread each; results are written as each one ends.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import quality
import torch

from minimal import zeroshot
from minimal.recipes.clip import ClipRecipe, train_tiny_clip


def make_recipe(overrides: dict) -> ClipRecipe:
    recipe = ClipRecipe()
    for key, value in overrides.items():
        if key in ("text", "vit"):
            getattr(recipe, key).update(value)
        elif hasattr(recipe, key):
            setattr(recipe, key, value)
        else:
            raise ValueError(f"ClipRecipe has no field {key!r}")
    return recipe


def run_trial(args: tuple[dict, str, list[int], int]) -> dict:
    trial, device, seeds, n = args
    torch.set_num_threads(1)
    recipe = make_recipe(trial["recipe"])
    start = time.perf_counter()
    trained = train_tiny_clip(recipe, device=device, progress=False)
    wall = round(time.perf_counter() - start, 1)
    out: dict = {"name": trial["name"], "recipe": trial["recipe"], "train_wall_s": wall,
                 "vocab": trained.tokenizer.vocab_size, "final_loss": round(sum(trained.history[-20:]) / 20, 4)}
    model, tok = trained.model.to(device), trained.tokenizer
    for seed in seeds:
        ev = zeroshot.evaluate_tasks(model, tok, seed=seed, n=n)
        photo = zeroshot.evaluate_tasks(model, tok, seed=seed, n=n, style="photo")
        ret = quality.clip_retrieval(model, tok, seed, n)
        out[str(seed)] = {"zeroshot_unseen": ev["zeroshot_unseen"], "zeroshot_seen": ev["zeroshot_seen"],
                          "photo_unseen": photo["zeroshot_unseen"],
                          "other_renderer": quality.other_renderer_unseen(model, tok, seed, 2 * n),
                          **{k: round(float(v), 4) for k, v in ret.items() if not k.startswith("example")},
                          **{k: ev[k] for k in ("colour", "shape", "size", "position", "count")}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--seeds", default="2026")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    trials = json.loads(a.trials.read_text())
    seeds = [int(s) for s in a.seeds.split(",")]
    results = []
    with mp.get_context("spawn").Pool(a.parallel) as pool:
        for r in pool.imap_unordered(run_trial, [(t, a.device, seeds, a.n) for t in trials]):
            results.append(r)
            a.out.write_text(json.dumps(results, indent=1))
            print(json.dumps({k: r[k] for k in ("name", "train_wall_s")} | r[str(seeds[0])]), flush=True)


if __name__ == "__main__":
    main()
