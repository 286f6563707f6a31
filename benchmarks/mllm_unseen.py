"""Why the shipped MLLM answers less well about held-out colour–shape pairs: two measurements, one JSON object.

    python benchmarks/mllm_unseen.py --seed 2027 --out benchmarks/results/mllm_unseen_2026-12-02.json

1. `errors`: every shape and is-there question the world asks about `--scenes` fresh held-out-split scenes (each
   holds at least one of the 8 colour–shape pairs that no training run ever showed), put to the shipped MLLM, and
   its error rate per question template and answer: "is there a circle?" (shape only), "is there a red thing?"
   (colour only), "is there a red circle?" (the pair; split into pairs named in training and held-out pairs), "what
   shape is on the left?", "what shape is the red thing?".
2. `probe`: how well the frozen image encoder's features say which shape sits at each place, trained on
   train-split scenes and tested on held-out-split scenes — separately for objects of a held-out pair and of a
   training pair — for several sets of its hidden states (0 = the patch embeddings, k = after block k; a set is
   concatenated along the channels and normalised per token, as `MLLMConfig(feature_layer=[...],
   feature_norm=True)` does). Two readers (softmax over the 6 shapes and "nothing" at each place): `linear`, one
   linear map of all tokens; `mlp`, the input projector's shape (one small MLP per token) followed by an MLP over
   all tokens. A gap the linear reader shows and the MLP reader closes is information the features do carry about
   an unseen pair, only not linearly; a gap both show is blurred in the features themselves.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
from collections import Counter

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minimal import env
from minimal.clip import load_tiny_clip
from minimal.images import normalize
from minimal.mllm import MLLM, MLLM_ADAPTERS, build_mllm
from minimal.recipes.mllm_eval import normalise_answer
from minimal.shapes import SHAPES, questions, render_batch, sample_scene
from minimal.shapes.questions import question_specs
from minimal.shapes.world import HELD_OUT_PAIRS, POSITIONS


def error_table(mllm: MLLM, n_scenes: int, seed: int, batch: int = 64) -> dict[str, dict]:
    """{template (+ answer): {"asked", "wrong", "error"}} over every shape / is-there question of `n_scenes`
    held-out-split scenes, and a few wrong answers as examples."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng, None, "heldout") for _ in range(n_scenes)]
    images = render_batch(scenes, 32, random.Random(seed + 1))
    items = []
    for image, scene in zip(images, scenes, strict=True):
        for (kind, template, arg, _), qa in zip(question_specs(scene), questions(scene, "en"), strict=True):
            if kind in ("exists", "shape"):
                held = " (held-out pair)" if template == "pair" and arg in HELD_OUT_PAIRS else ""
                answer = f", answer {qa.answer}" if kind == "exists" else ""
                items.append((image, qa, f"{kind}/{template}{held}{answer}", scene))
    asked, wrong, examples = Counter(), Counter(), []
    for k in tqdm(range(0, len(items), batch), desc="questions", leave=False):
        chunk = items[k:k + batch]
        replies = mllm.generate(torch.stack([c[0] for c in chunk]), [c[1].question for c in chunk], 4)
        for reply, (_, qa, key, scene) in zip(replies, chunk, strict=True):
            asked[key] += 1
            if normalise_answer(reply) != qa.answer:
                wrong[key] += 1
                if len(examples) < 12:
                    examples.append({"question": qa.question, "truth": qa.answer, "reply": reply,
                                     "scene": [f"{o.colour} {o.shape} {o.position}" for o in scene.objects]})
    table = {key: {"asked": asked[key], "wrong": wrong[key], "error": round(wrong[key] / asked[key], 3)}
             for key in sorted(asked)}
    return {"scenes": n_scenes, "table": table, "examples": examples}


def _encoder_states(vision, n: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden states (L+1, n, tokens, width), shape label per place (n, places), held-out pair there (n, places))."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng, None, split) for _ in range(n)]
    images = render_batch(scenes, 32, random.Random(seed + 1))
    with torch.no_grad():
        states = torch.cat([torch.stack(vision(normalize(images[i:i + 500]), return_hidden=True).hidden_states)
                            for i in range(0, n, 500)], dim=1)
    labels = torch.full((n, len(POSITIONS)), len(SHAPES))            # len(SHAPES): nothing at this place
    held = torch.zeros(n, len(POSITIONS), dtype=torch.bool)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            labels[i, POSITIONS.index(o.position)] = SHAPES.index(o.shape)
            held[i, POSITIONS.index(o.position)] = (o.colour, o.shape) in HELD_OUT_PAIRS
    return states, labels, held


LAYER_SETS: tuple[tuple[int, ...], ...] = ((0,), (1,), (2,), (3,), (0, 3), (1, 2, 3), (0, 1, 2, 3))


def _reader(kind: str, width: int, tokens: int, out: int) -> torch.nn.Module:
    """A probe: (n, tokens, width) -> (n, out) logits; "linear" or "mlp" (see the module doc)."""
    if kind == "linear":
        return torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(tokens * width, out))
    return torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.GELU(), torch.nn.Linear(256, 64),
                               torch.nn.Flatten(1), torch.nn.Linear(tokens * 64, 256), torch.nn.GELU(),
                               torch.nn.Linear(256, out))


def encoder_probe(n_train: int, n_test: int, seed: int, steps: int = 1500) -> dict:
    """{reader: {layer set: {"held_out_pairs", "training_pairs"}}}: shape-at-each-place accuracy of a linear and an
    MLP probe on the frozen encoder's tokens, trained on train-split scenes (see the module doc)."""
    vision = load_tiny_clip()[0].visual.eval()
    train_x, train_y, _ = _encoder_states(vision, n_train, "train", seed)
    test_x, test_y, test_held = _encoder_states(vision, n_test, "heldout", seed + 2)
    classes, there = len(SHAPES) + 1, test_y < len(SHAPES)
    out: dict[str, dict] = {}
    for kind, layers in tqdm([(k, s) for k in ("linear", "mlp") for s in LAYER_SETS], desc="probes"):
        torch.manual_seed(seed)
        x, xt = (F.layer_norm(h, h.shape[-1:]) for h in (torch.cat([states[k] for k in layers], -1)
                                                        for states in (train_x, test_x)))
        probe = _reader(kind, x.shape[-1], x.shape[1], len(POSITIONS) * classes)
        opt = torch.optim.AdamW(probe.parameters(), lr=2e-3, weight_decay=1e-2)
        for _ in range(steps):
            pick = torch.randint(0, len(x), (256,))
            loss = F.cross_entropy(probe(x[pick]).view(-1, classes), train_y[pick].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            right = probe(xt).view(len(xt), len(POSITIONS), classes).argmax(-1) == test_y
        out.setdefault(kind, {})["+".join(map(str, layers))] = {
            "held_out_pairs": round(right[there & test_held].float().mean().item(), 3),
            "training_pairs": round(right[there & ~test_held].float().mean().item(), 3)}
    return {"train_scenes": n_train, "test_scenes": n_test, "steps": steps, "batch": 256,
            "layer_sets": "hidden state 0 = the patch embeddings, k = after block k; '0+3' = both, concatenated",
            "accuracy": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--scenes", type=int, default=150, help="held-out-split scenes asked about")
    parser.add_argument("--probe-train", type=int, default=20000)
    parser.add_argument("--probe-test", type=int, default=3000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env.seed_everything(args.seed)
    mllm = build_mllm(adapters_path=MLLM_ADAPTERS).eval()
    command = "python benchmarks/mllm_unseen.py " + " ".join(sys.argv[1:])
    result = {"what": __doc__.split("\n")[0], "command": command, "seed": args.seed,
              "date": datetime.date.today().isoformat(), "machine": env.machine(),
              "checkpoint": str(MLLM_ADAPTERS.name), "errors": error_table(mllm, args.scenes, args.seed),
              "probe": encoder_probe(args.probe_train, args.probe_test, args.seed)}
    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
