"""Search over MLLM recipes on one GPU: train each variant and measure what the course reports about it.

    python benchmarks/mllm_search.py --trials trials.json --device cuda --parallel 3 --out results.json

`trials.json` is a list of {"name": ..., "recipe": {field: value}} over `minimal.recipes.mllm.MLLMRecipe`'s fields
(a nested "mllm" dict updates the model config). Each trial runs in its own process (trials share the GPU, so
their wall times are not solo figures: only the shipped run's card is), trains both stages with batches made by
`--workers` processes, and is evaluated on fresh world seeds with the figures of `benchmarks/quality.py`'s "mllm"
part: vqa, vqa_unseen, vqa_ko, caption_attr (the recipe's `evaluate_all`) and vqa_paraphrase, each per kind.
Results are written as each trial ends (one JSON file per trial next to `--out`, merged into it at the end).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import quality
import torch

from minimal import env
from minimal.mllm import MLLMConfig, build_mllm
from minimal.recipes.mllm import MLLMRecipe, train_stages
from minimal.recipes.mllm_eval import evaluate_all


def make_recipe(overrides: dict) -> MLLMRecipe:
    recipe = MLLMRecipe()
    for key, value in overrides.items():
        if key == "mllm":
            recipe.mllm.update(value)
        elif hasattr(recipe, key):
            setattr(recipe, key, value)
        else:
            raise ValueError(f"MLLMRecipe has no field {key!r}")
    return recipe


def run_trial(trial: dict, device: str, seeds: list[int], n: int, workers: int) -> dict:
    recipe = make_recipe(trial["recipe"])
    env.seed_everything(recipe.seed)
    mllm = build_mllm(MLLMConfig(**recipe.mllm), verbose=False).to(device)
    start = time.perf_counter()
    histories = train_stages(mllm, recipe, device=device, workers=workers)
    wall = round(time.perf_counter() - start, 1)
    counts = mllm.parameter_counts()
    out: dict = {"name": trial["name"], "overrides": trial["recipe"], "recipe": asdict(recipe),
                 "train_wall_s_shared_gpu": wall, "trained_fraction": counts["trainable"] / counts["total"],
                 "trainable": counts["trainable"],
                 "final_loss": round(sum(histories[2][-20:]) / min(20, len(histories[2])), 4)}
    for seed in seeds:
        figures = evaluate_all(mllm, n, seed) | quality.mllm_wordings(mllm, n, seed)
        out[str(seed)] = {k: v for k, v in figures.items() if k not in ("eval_images", "eval_seed")}
    out["eval_images"] = n
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time, each its own process")
    parser.add_argument("--workers", type=int, default=4, help="batch-making processes per trial")
    parser.add_argument("--seeds", default="2027", help="world seeds to evaluate on, comma-separated")
    parser.add_argument("--n", type=int, default=300, help="images per figure")
    parser.add_argument("--out", required=True)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # run trial i in this process
    args = parser.parse_args(argv)
    trials = json.loads(Path(args.trials).read_text())
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.one is not None:
        torch.set_num_threads(2)
        result = run_trial(trials[args.one], args.device, seeds, args.n, args.workers)
        result["machine"] = env.machine(torch.device(args.device))
        out.with_name(f"{out.stem}.{trials[args.one]['name']}.json").write_text(json.dumps(result, indent=1))
        return
    pending = list(range(len(trials)))
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            i = pending.pop(0)
            log = open(out.with_name(f"{out.stem}.{trials[i]['name']}.log"), "w")   # noqa: SIM115 (lives with it)
            running.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--one", str(i)],
                                            stdout=log, stderr=subprocess.STDOUT))
        time.sleep(2)
        running = [p for p in running if p.poll() is None]
    merged = [json.loads(p.read_text()) for t in trials
              if (p := out.with_name(f"{out.stem}.{t['name']}.json")).exists()]
    out.write_text(json.dumps(merged, indent=1))
    print(json.dumps([{k: r.get(k) for k in ("name", "train_wall_s_shared_gpu", "final_loss")} |
                      {s: {k: round(v, 3) for k, v in r[s].items() if isinstance(v, float)} for s in map(str, seeds)}
                      for r in merged], indent=1))


if __name__ == "__main__":
    main()
