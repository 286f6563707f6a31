"""How the output side's two shipped checkpoints are trained and how the whole is measured (chapter 09).

    python -m minimal.recipes.output_side generator    # the modality generator (≈10 min on 2 CPU cores)
    python -m minimal.recipes.output_side projector    # the output projector (frozen LLM features + a small head)
    python -m minimal.recipes.output_side evaluate --seed 12345

Each writes weights + a JSON card into data/checkpoints/. The generator is pretrained once on all 48 colour–shape
pairs from the tiny CLIP's text embeddings and then frozen; the output projector is the only part chapter 09
trains. Drawings are judged by the tiny CLIP's zero-shot classifier (`minimal.zeroshot.task_classifier`).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import env
from ..accounting import freeze
from ..clip import TINY_CLIP, load_tiny_clip
from ..hidden_states import llm_states
from ..llm import load_llm, pad_states
from ..modality_generator import (
    GENERATOR_PATH,
    GUIDANCE,
    SAMPLE_STEPS,
    GeneratorConfig,
    ModalityGenerator,
    load_modality_generator,
)
from ..output_projector import (
    OUTPUT_PROJECTOR_PATH,
    OutputProjector,
    OutputProjectorConfig,
    TargetTable,
    output_projector_loss,
)
from ..output_side import SYSTEM, OutputSide
from ..shapes import Obj, Request, Scene, pair_phrase, render_batch, request_set, sample_scene, target_phrase
from ..train import train
from ..weights import CHECKPOINT_DIR, module_config, save_with_card
from ..zeroshot import ZeroShotClassifier, task_classifier


@dataclass
class GeneratorRecipe:
    """Everything that decides the shipped generator (see data/checkpoints/generator.json)."""

    seed: int = 0
    steps: int = 4800           # ~18 min on the 2-core CPU (held-out drawings right: 0.835 at 2,400 steps, 0.935)
    batch: int = 128            # fresh one-object scenes every step (the world is infinite)
    lr: float = 3e-3
    warmup: int = 50
    ema: float = 0.999          # the shipped weights are an exponential moving average of the trained ones
    cond_noise: float = 0.05    # per-dimension noise on the condition: the projector's output is never exact
    mention: float = 0.6        # chance that the conditioning phrase names the size (and, apart, the position)
    config: dict = field(default_factory=lambda: asdict(GeneratorConfig()))

    def small(self) -> GeneratorRecipe:
        """Fast-mode variant: same model, far fewer steps (blurry drawings; the chapter loads the shipped one)."""
        return replace(copy.deepcopy(self), steps=60, batch=64, warmup=10)


class GeneratorBatches:
    """batches(step) -> {"image": (B,3,32,32) in [0,1], "cond": (B,E)}: fresh one-object scenes every step, each
    with the (noised) CLIP embedding of a phrase describing it. Deterministic from (seed, step)."""

    def __init__(self, table: TargetTable, batch: int, seed: int, cond_noise: float, mention: float, size: int = 32):
        self.table, self.batch, self.seed, self.cond_noise, self.mention, self.size = (
            table, batch, seed, cond_noise, mention, size)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = random.Random(f"generator/{self.seed}/{step}")
        scenes = [sample_scene(rng, 1, "any") for _ in range(self.batch)]
        phrases = [target_phrase(s.objects[0], rng.random() < self.mention, rng.random() < self.mention)
                   for s in scenes]
        images = render_batch(scenes, self.size, rng)
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        cond = self.table(phrases)
        noise = torch.randn(cond.shape, generator=g) * torch.rand(len(cond), 1, generator=g) * self.cond_noise
        return {"image": images, "cond": F.normalize(cond + noise, dim=-1)}


def generator_loss(model: ModalityGenerator, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.loss(batch["image"], batch["cond"])


def train_generator(recipe: GeneratorRecipe, clip: nn.Module, clip_tokenizer, device: str | torch.device = "cpu",
                    progress: bool = True) -> tuple[ModalityGenerator, list[float], env.Timer]:
    """Pretrain the modality generator -> (EMA generator, frozen, eval mode; loss history; its `env.Timer`)."""
    torch.manual_seed(recipe.seed)
    model = ModalityGenerator(GeneratorConfig(**recipe.config))
    ema = copy.deepcopy(model).requires_grad_(False)
    batches = GeneratorBatches(TargetTable(clip, clip_tokenizer), recipe.batch, recipe.seed, recipe.cond_noise,
                               recipe.mention)

    def update_ema(step: int, loss: float) -> None:
        decay = min(recipe.ema, (1 + step) / (10 + step))   # short warm-up: early averages forget the random init
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p.detach().to(e.device), 1 - decay)

    ema.to(device)
    with env.Timer() as timer:
        history = train(model, generator_loss, batches, steps=recipe.steps, lr=recipe.lr, warmup=recipe.warmup,
                        weight_decay=0.0, grad_clip=1.0, device=device, progress=progress, on_step=update_ema)
    return freeze(ema), history, timer



# ---- the output projector (the only thing chapter 09 trains) ---------------------------------------------------

@dataclass
class ProjectorRecipe:
    """Everything that decides the shipped output projector (see data/checkpoints/output_projector.json)."""

    seed: int = 0
    n_train: int = 600          # requests (half drawing requests, half questions; EN and KO) from "train" templates
    steps: int = 600            # cheap: the frozen LLM's states are computed once, then only the head trains
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.01
    cond_weight: float = 4.0    # weight of the (1 - cosine) term against the decision's cross-entropy
    config: dict = field(default_factory=lambda: asdict(OutputProjectorConfig()))

    def small(self) -> ProjectorRecipe:
        """Fast-mode variant: fewer requests and steps. Chapter 09 in fast mode: the loss falls from 4.6 to 0.24, all
        48 held-out requests are routed right and 0.54 of the drawings are judged right (250 steps: 0.04, 1.0, 0.83)."""
        return replace(copy.deepcopy(self), n_train=160, steps=120)


class ProjectorBatches:
    """batches(step) -> {"states": (B,T,D), "mask": (B,T), "wants": (B,), "target": (B,E)} from cached LLM states."""

    def __init__(self, states: list[torch.Tensor], wants: torch.Tensor, targets: torch.Tensor, batch: int, seed: int):
        self.states, self.wants, self.targets, self.batch, self.seed = states, wants, targets, batch, seed

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(len(self.states), (min(self.batch, len(self.states)),), generator=g).tolist()
        states, mask = pad_states([self.states[i] for i in idx])
        return {"states": states, "mask": mask, "wants": self.wants[idx], "target": self.targets[idx]}


def targets_for(requests: list[Request], table: TargetTable) -> tuple[torch.Tensor, torch.Tensor]:
    """(wants (N,) bool, targets (N, E)): zeros as the target of ordinary questions (their target is never used)."""
    wants = torch.tensor([r.wants_image for r in requests])
    targets = torch.zeros(len(requests), table.embeddings.shape[1])
    draw = [i for i, r in enumerate(requests) if r.wants_image]
    if draw:
        targets[draw] = table([requests[i].drawing()[1] for i in draw])
    return wants, targets


def train_output_projector(recipe: ProjectorRecipe, llm: nn.Module, llm_tokenizer, table: TargetTable,
                           states: list[torch.Tensor] | None = None, progress: bool = True
                           ) -> tuple[OutputProjector, list[float], env.Timer]:
    """Train the output projector on the frozen LLM's states -> (projector in eval mode, losses, its timer).

    The LLM runs forward only, once per request (its states are cached: it is frozen, so they never change); the
    generator is not needed at all — the projector learns to hit the CLIP embedding the generator reads.
    `states` may be passed in (from `llm_states`) to skip that forward pass.
    """
    cfg = OutputProjectorConfig(**recipe.config)
    requests = request_set(recipe.n_train, recipe.seed, "train")
    with env.Timer() as timer:
        if states is None:
            states = llm_states(llm, llm_tokenizer, [r.text for r in requests], cfg.layer, progress=progress,
                                system=SYSTEM)
        wants, targets = targets_for(requests, table)
        torch.manual_seed(recipe.seed)
        projector = OutputProjector(cfg)
        history = train(projector, lambda m, b: output_projector_loss(m(b["states"], b["mask"]), b["wants"],
                                                                      b["target"], recipe.cond_weight),
                        ProjectorBatches(states, wants, targets, recipe.batch, recipe.seed), steps=recipe.steps,
                        lr=recipe.lr, warmup=recipe.warmup, weight_decay=recipe.weight_decay, grad_clip=1.0,
                        device="cpu", progress=progress)
    return projector.eval(), history, timer



def render_request(obj: Obj, seed: int = 0) -> torch.Tensor:
    """What the renderer draws for a requested object: (3, 32, 32) in [0, 1] (the judge's ground-truth check)."""
    return render_batch([Scene((obj,))], 32, seed)[0]





@torch.no_grad()
def evaluate(side: OutputSide, judge: ZeroShotClassifier, table: TargetTable, seed: int = 12345, n: int = 400,
             split: str = "heldout", states: list[torch.Tensor] | None = None) -> dict:
    """Decision and drawing quality on `n` fresh requests (world seed `seed`; "heldout" templates and questions).

    decision: share of requests routed right (image vs text). drawing: share of *drawing requests* that got a
    drawing whose colour and shape the tiny CLIP reads as requested (a missed decision counts as wrong).
    judge_agreement: how often the same judge reads the renderer's own image of each request right — the judge's
    accuracy, so `drawing` can be read against it. generator_alone: drawings from the exact CLIP embedding of the
    target phrase (no LLM, no projector). cond_cosine / nearest_phrase: how close the projector lands to its target.
    """
    requests = request_set(n, seed, split)
    if states is None:
        states = side.states([r.text for r in requests])
    x, mask = pad_states(states)
    out = side.projector(x, mask)
    wants = torch.tensor([r.wants_image for r in requests])
    right = out.wants_image == wants
    draw = [i for i, r in enumerate(requests) if r.wants_image]
    objs, targets = zip(*[requests[i].drawing() for i in draw], strict=True)
    truth = [pair_phrase(o.pair) for o in objs]   # the judge reads "red circle": the colour_shape task's labels
    gen = torch.Generator().manual_seed(seed)
    drawn = judge.names(side.generator.sample(out.cond[draw], side.steps, side.guidance, gen))
    target = table(list(targets))
    oracle = judge.names(side.generator.sample(target, side.steps, side.guidance, torch.Generator().manual_seed(seed)))
    real = judge.names(torch.stack([render_request(o, seed * 7919 + k) for k, o in enumerate(objs)]))
    ok = [bool(out.wants_image[i]) and d == t for i, d, t in zip(draw, drawn, truth, strict=True)]
    by_lang = {lang: round(float(right[[r.lang == lang for r in requests]].float().mean()), 4) for lang in ("en", "ko")}
    return {
        "decision": round(float(right.float().mean()), 4),
        "decision_by_language": by_lang,
        "drawing": round(sum(ok) / len(draw), 4),
        "judge_agreement": round(sum(a == t for a, t in zip(real, truth, strict=True)) / len(draw), 4),
        "generator_alone": round(sum(a == t for a, t in zip(oracle, truth, strict=True)) / len(draw), 4),
        "cond_cosine": round(float((out.cond[draw] * target).sum(-1).mean()), 4),
        "nearest_phrase": round(sum(p == t for p, t in zip(table.nearest(out.cond[draw]), targets, strict=True))
                                / len(draw), 4),
        "n_requests": n, "n_drawing_requests": len(draw), "split": split, "world_seed": seed,
        "sampler": {"steps": side.steps, "guidance": side.guidance},
    }




# ---- command line: retrain the shipped checkpoints ------------------------------------------------------------------

def _clip_identity(path: str | Path | None) -> dict:
    """Which tiny CLIP a checkpoint was trained against (its conditioning space): path and SHA-256."""
    path = Path(path or TINY_CLIP)
    root = CHECKPOINT_DIR.parent.parent
    return {"path": str(path.relative_to(root) if path.is_relative_to(root) else path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _card(name: str, what: str, module: OutputProjector | ModalityGenerator, recipe: GeneratorRecipe | ProjectorRecipe,
          timer: env.Timer,
          history: list[float], metrics: dict, command: str, clip_path: str | Path | None = None) -> dict:
    return {
        "name": name, "what": what, "config": asdict(module.cfg), "recipe": asdict(recipe),
        "command": command, "seed": recipe.seed, "metrics": metrics,
        "train": {"steps": recipe.steps, "device": "cpu", **timer.as_dict(),
                  "first_loss": round(history[0], 5), "final_loss": round(sum(history[-20:]) / 20, 5)},
        "parameters": sum(p.numel() for p in module.parameters()),
        "clip": _clip_identity(clip_path),
        "machine": env.machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def generator_alone(generator: ModalityGenerator, judge: ZeroShotClassifier, table: TargetTable, seed: int) -> dict:
    """The generator's figure on its own: drawings from the exact CLIP embedding of 200 held-out request targets."""
    targets = [r for r in request_set(400, seed, "heldout") if r.wants_image]
    drawn = judge.names(generator.sample(table([r.drawing()[1] for r in targets]), SAMPLE_STEPS, GUIDANCE,
                                         torch.Generator().manual_seed(seed)))
    right = sum(d == pair_phrase(r.drawing()[0].pair) for d, r in zip(drawn, targets, strict=True))
    return {"generator_alone": round(right / len(targets), 4), "n": len(targets), "world_seed": seed,
            "sampler": {"steps": SAMPLE_STEPS, "guidance": GUIDANCE}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minimal.recipes.output_side", description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["generator", "projector", "evaluate"])
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--seed", type=int, default=None, help="training seed (evaluate: world seed)")
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--clip", type=Path, default=None, help="tiny CLIP checkpoint (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the checkpoint + card (default: the shipped path in data/checkpoints/)")
    args = parser.parse_args(argv)
    command = "python -m minimal.recipes.output_side" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    clip, clip_tok = load_tiny_clip(args.clip) if args.clip else load_tiny_clip()
    table, judge = TargetTable(clip, clip_tok), task_classifier(clip, clip_tok, "colour_shape")
    seed_override = {"seed": args.seed} if args.seed is not None else {}
    if args.which == "generator":
        recipe = GeneratorRecipe(**seed_override)
        recipe.steps = args.steps or recipe.steps
        generator, history, timer = train_generator(recipe, clip, clip_tok)
        card = _card("generator", "flow-matching U-Net drawing 32-px Shapes images from tiny-CLIP text embeddings "
                     "(pretrained on all 48 colour-shape pairs, then frozen)", generator, recipe, timer, history,
                     generator_alone(generator, judge, table, args.eval_seed), command, args.clip)
        save_with_card(args.out or GENERATOR_PATH, generator.state_dict(), module_config(generator), card)
    elif args.which == "projector":
        p_recipe = ProjectorRecipe(**seed_override)
        p_recipe.steps = args.steps or p_recipe.steps
        llm, tok = load_llm()
        projector, history, timer = train_output_projector(p_recipe, llm, tok, table)
        metrics = evaluate(OutputSide(llm, tok, projector, load_modality_generator()), judge, table, args.eval_seed)
        card = _card("output_projector", "attention pooling + MLP on SmolLM2-135M-Instruct hidden states: "
                     "image-or-text decision and tiny-CLIP text embedding of the request", projector, p_recipe,
                     timer, history, metrics, command, args.clip)
        save_with_card(args.out or OUTPUT_PROJECTOR_PATH, projector.state_dict(), module_config(projector), card)
    else:
        card = evaluate(OutputSide.load(), judge, table, args.seed if args.seed is not None else args.eval_seed)
    print(json.dumps(card, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
