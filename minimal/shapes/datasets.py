"""torch Datasets of the Shapes world, and an exporter to the image–caption folder layout real datasets use.

Scenes are drawn once (cheap); images and the chosen caption/question are made on access from a per-index seed, so
item i is the same in every epoch, every worker and every run. Items hold a Scene, which torch's default collate
cannot stack: pass `collate_fn=collate` to the DataLoader.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..images import collate
from ..weights import atomic_path
from .captions import captions
from .questions import questions
from .render import check_canvas, render, render_batch
from .world import SPLITS, Scene, sample_scene

_NUMBERED = re.compile(rb"shapes_(\d+)\.png")   # the names export_folder writes


class _ShapesBase(Dataset):
    def __init__(self, n: int, seed: int = 0, split: str = "train", lang: str = "en", size: int = 32):
        if lang not in ("en", "ko", "both"):
            raise ValueError(f"lang must be 'en', 'ko' or 'both', got {lang!r}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        check_canvas(size)
        self.n, self.seed, self.split, self.lang, self.size = n, seed, split, lang, size
        rng = random.Random(seed)
        self.scenes = [sample_scene(rng, None, split) for _ in range(n)]   # n=100 is a prefix of n=1000

    def __len__(self) -> int:
        return self.n

    def _item(self, i: int) -> tuple[Scene, torch.Tensor, random.Random, str]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} items")
        i %= self.n
        scene = self.scenes[i]
        rng = random.Random(f"{self.seed}/{i}")   # str seeds hash with sha512: stable across runs and processes
        image = render_batch([scene], self.size, rng)[0]   # = to_tensor(render(scene, size, rng)), without PIL
        lang = rng.choice(("en", "ko")) if self.lang == "both" else self.lang
        return scene, image, rng, lang

    collate_fn = staticmethod(collate)


class ShapesCaptions(_ShapesBase):
    """n (image, caption) pairs. item: {"image": (3, size, size) float in [0,1], "caption": str, "scene": Scene}.

    split: "train" (no held-out pair), "heldout" (>= 1 held-out pair per scene) or "any". lang: "en", "ko" or
    "both" (each item picks one language). Not normalised: apply `normalize` in the model or the loop.
    """

    def __getitem__(self, index: int) -> dict:
        scene, image, rng, lang = self._item(index)
        return {"image": image, "caption": rng.choice(captions(scene, lang)), "scene": scene}


class ShapesQA(_ShapesBase):
    """n (image, question, answer) triples for instruction tuning and evaluation.

    item: {"image": (3, size, size), "question": str, "answer": str, "kind": str, "scene": Scene}. The kind is drawn
    uniformly first, then a question of that kind, so counting is not drowned by the many existence questions.
    """

    def __getitem__(self, index: int) -> dict:
        scene, image, rng, lang = self._item(index)
        qas = questions(scene, lang)
        kind = rng.choice(sorted({qa.kind for qa in qas}))
        qa = rng.choice([qa for qa in qas if qa.kind == kind])
        return {"image": image, "question": qa.question, "answer": qa.answer, "kind": qa.kind, "scene": scene}


def export_folder(root: str | Path, n: int, seed: int = 0, split: str = "train", size: int = 64) -> Path:
    """Write n Shapes scenes as an image-caption folder: shapes_000.png... and metadata.jsonl with lines
    {"file_name", "text", "text_ko"} holding the complete English and Korean captions (every attribute of every
    object) — the layout `ImageCaptionFolder` reads and the HF hub's `imagefolder` loader understands (extra
    columns such as text_ko become extra features).

    A folder that already holds files is added to, never overwritten: an existing metadata.jsonl keeps its lines
    and the new ones follow them, and the numbering continues after the highest shapes_NNN.png found on disk or
    named in metadata.jsonl (a second call writes shapes_007.png... after shapes_006.png), so every caption keeps
    describing its own picture. The same seed draws the same scenes again: pass another seed for new ones.
    metadata.jsonl is replaced in one step (a temporary file, then os.replace) after every image is written, so an
    interrupted export leaves the old metadata intact (and its stray images are numbered past next time)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_canvas(size)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = root / "metadata.jsonl"
    old = meta.read_bytes() if meta.is_file() else b""
    taken = [int(m) for m in _NUMBERED.findall(old)]
    taken += [int(m.group(1)) for p in root.iterdir() if (m := _NUMBERED.fullmatch(p.name.encode()))]
    start = max(taken, default=-1) + 1
    rng = random.Random(seed)
    lines = []
    for i in range(start, start + n):
        scene = sample_scene(rng, None, split)
        name = f"shapes_{i:03d}.png"
        render(scene, size, rng).save(root / name, optimize=True)
        lines.append(json.dumps({"file_name": name, "text": captions(scene, "en")[0],
                                 "text_ko": captions(scene, "ko")[0]}, ensure_ascii=False))
    if old and not old.endswith(b"\n"):
        old += b"\n"                        # the last old line had no line end: do not glue a new line onto it
    with atomic_path(meta) as tmp:
        tmp.write_bytes(old + "".join(line + "\n" for line in lines).encode("utf-8"))
    return root
