"""Measure the Shapes world (minimal/shapes/): render speed, and whether every label stays decidable at 32 px.

    .venv/bin/python benchmarks/shapes_world.py            # full: minutes on a CPU, ~1 min with a GPU
    .venv/bin/python benchmarks/shapes_world.py --quick    # speed + overlap only, seconds

Prints one JSON object:
- speed: images/s for `render` (32 and 64 px), `render_batch`, and ShapesCaptions items; captions/questions per s.
- overlap: for each candidate small-object size (px at a 32 px canvas), the most similar pair of shapes by soft
  IoU of their anti-aliased masks, best over +-1 px shifts (1.0 = identical pictures, i.e. undecidable).
- classifier: for each candidate small size, a small CNN trained on single-object scenes (random colour, size,
  slot, jitter, noise) to read shape, colour and size at once; held-out accuracy per size and the worst
  confusion among small shapes. A label is "decidable" when the CNN reads it (near) perfectly.
- classifier_subpixel: the same, but every object is drawn at a random quarter-pixel offset and at a random place
  in a 14 px window (its neighbourhood on the canvas), so a shape no longer has one exact pixel pattern to
  memorise: a stricter test of whether the *shape* is still legible at that size (the renderer itself uses
  whole-pixel placement).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from functools import cache

import numpy as np
import torch
from PIL import Image
from torch import nn

from minimal import images, shapes
from minimal.shapes import render as R


def _rate(fn, n: int, repeats: int = 3) -> float:
    """Items per second, best of `repeats` runs (the least disturbed by other work on a shared machine)."""
    fn(min(n, 50))                      # warm caches (shape masks) before timing
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return n / best


def speed() -> dict:
    rng = random.Random(0)
    scenes = [shapes.sample_scene(rng, None, "any") for _ in range(4000)]
    out = {}
    for size in (32, 64):
        out[f"render_{size}px_per_s"] = round(_rate(lambda n, s=size: [shapes.render(scenes[i], s, i)
                                                                       for i in range(n)], 4000))
        out[f"render_batch_{size}px_per_s"] = round(_rate(lambda n, s=size: shapes.render_batch(scenes[:n], s, 0),
                                                          4000))
    ds = shapes.ShapesCaptions(4000, seed=0, lang="both")
    out["shapes_captions_items_per_s"] = round(_rate(lambda n: [ds[i] for i in range(n)], 4000))
    out["captions_en_ko_per_s"] = round(_rate(lambda n: [(shapes.captions(s, "en"), shapes.captions(s, "ko"))
                                                          for s in scenes[:n]], 4000))
    out["questions_en_per_s"] = round(_rate(lambda n: [shapes.questions(s) for s in scenes[:n]], 4000))
    out["threads"] = torch.get_num_threads()
    return out


def overlap(px_values) -> dict:
    def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
        best = 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                s = np.roll(np.roll(np.pad(b, 1), dy, 0), dx, 1)
                a1 = np.pad(a, 1)
                best = max(best, float(np.minimum(a1, s).sum() / np.maximum(a1, s).sum()))
        return best

    out = {}
    for px in px_values:
        masks = {s: R.shape_mask(s, px) for s in shapes.SHAPES}
        pairs = {f"{a}/{b}": round(soft_iou(masks[a], masks[b]), 3)
                 for i, a in enumerate(shapes.SHAPES) for b in shapes.SHAPES[i + 1:]}
        worst = sorted(pairs.items(), key=lambda kv: -kv[1])[:3]
        out[str(px)] = {"most_similar": worst}
    return out


def _labels(scenes) -> torch.Tensor:
    return torch.tensor([[shapes.SHAPES.index(s.objects[0].shape), shapes.COLOURS.index(s.objects[0].colour),
                          shapes.SIZES.index(s.objects[0].size)] for s in scenes])


def _single_object_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    scenes = [shapes.sample_scene(rng, 1, "any") for _ in range(n)]
    return shapes.render_batch(scenes, 32, seed), _labels(scenes)


@cache
def _shifted_mask(shape: str, px: int, kx: int, ky: int) -> np.ndarray:
    """The shape's mask moved right/down by kx/4, ky/4 of a pixel: a (px+1, px+1) array."""
    ss = R.SUPERSAMPLE
    canvas = Image.new("L", ((px + 1) * ss, (px + 1) * ss), 0)
    canvas.paste(R.draw_shape(shape, px), (kx, ky))
    return np.asarray(canvas.resize((px + 1, px + 1), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _single_object_set_subpixel(n: int, seed: int, window: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    scenes = [shapes.sample_scene(rng, 1, "any") for _ in range(n)]
    x = np.empty((n, window, window, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        o = scene.objects[0]
        px = R.object_px(o.size, 32)
        m = _shifted_mask(o.shape, px, rng.randrange(R.SUPERSAMPLE), rng.randrange(R.SUPERSAMPLE))
        canvas = np.full((window, window, 3), R.BACKGROUND + rng.randrange(-8, 9), dtype=np.float32)
        x0, y0 = rng.randrange(window - px), rng.randrange(window - px)
        patch = canvas[y0:y0 + px + 1, x0:x0 + px + 1]
        patch += m[..., None] * (np.asarray(shapes.RGB[o.colour], dtype=np.float32) - patch)
        canvas += np.random.default_rng((seed, i)).standard_normal(canvas.shape) * R.NOISE_STD
        x[i] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).float() / 255, _labels(scenes)


def classifier(px_values, n_train: int, steps: int, device: str, subpixel: bool = False, width: int = 32
               ) -> dict:
    out = {}
    make = _single_object_set_subpixel if subpixel else _single_object_set
    for px in px_values:
        R.SIZE_FRACTION["small"] = px / R._grid(32)[1]
        assert R.object_px("small", 32) == px
        torch.manual_seed(0)
        xtr, ytr = (t.to(device) for t in make(n_train, 1))
        xte, yte = (t.to(device) for t in make(5000, 2))
        w = width
        net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                # 32 -> 16 (14 -> 7)
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),            # -> 8 (-> 3)
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(2 * w, 6 + 8 + 2)).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        t = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, n_train, (128,), device=device)
            logits, y = net(images.normalize(xtr[idx])), ytr[idx]
            loss = sum(nn.functional.cross_entropy(part, y[:, k])
                       for k, part in enumerate(logits.split([6, 8, 2], dim=1)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            pred = torch.cat([p.argmax(1, keepdim=True) for p in net(images.normalize(xte)).split([6, 8, 2], 1)], 1)
        ok = pred == yte
        small = yte[:, 2] == shapes.SIZES.index("small")
        confusions = {}
        for true, guess in zip(yte[small & ~ok[:, 0], 0].tolist(), pred[small & ~ok[:, 0], 0].tolist(),
                               strict=True):
            key = f"{shapes.SHAPES[true]}->{shapes.SHAPES[guess]}"
            confusions[key] = confusions.get(key, 0) + 1
        out[str(px)] = {
            "shape_acc_small": round(ok[small, 0].float().mean().item(), 4),
            "shape_acc_large": round(ok[~small, 0].float().mean().item(), 4),
            "colour_acc": round(ok[:, 1].float().mean().item(), 4),
            "size_acc": round(ok[:, 2].float().mean().item(), 4),
            "small_shape_confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:4]),
            "train_s": round(time.perf_counter() - t, 1),
        }
    R.SIZE_FRACTION["small"] = 0.7
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="speed and mask overlap only")
    p.add_argument("--px", type=int, nargs="*", default=[4, 5, 6, 7], help="small sizes (px at 32) to compare")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--n-train", type=int, default=30000)
    p.add_argument("--width", type=int, default=32, help="channels of the probe CNN's first layer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    result = {"speed": speed(), "overlap": overlap(args.px + [10])}
    if not args.quick:
        result["classifier"] = classifier(args.px, args.n_train, args.steps, args.device, width=args.width)
        result["classifier_subpixel"] = classifier(args.px, args.n_train, args.steps, args.device, subpixel=True,
                                                   width=args.width)
        result["classifier_device"] = args.device
    print(json.dumps(result))


if __name__ == "__main__":
    main()
