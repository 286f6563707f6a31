"""Generic image code, not about shapes: PIL image -> RGB -> tensor, CLIP's normalisation, CLIP's resize and
centre crop, and `ImageCaptionFolder`, the real-data path (an image–caption folder as Flickr8k/COCO exports use).

    x = to_tensor(Image.open("photo.jpg"))        # (3, H, W) float in [0, 1], any PIL mode
    x = normalize(to_tensor(resize_and_crop(img, 224)))   # what OpenAI CLIP's preprocessing does
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

# The pixel statistics of OpenAI CLIP's preprocessing. Using them for our world too means one normalisation serves
# our tiny models and the real CLIP weights of chapter 07 (which were trained with them).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> contiguous float tensor (3, H, W) in [0, 1] (any mode becomes RGB first, see `to_rgb`)."""
    arr = np.array(to_rgb(img), dtype=np.uint8)          # a writable copy, (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel; x is (3, H, W) or (B, 3, H, W) in [0, 1]."""
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W), got {tuple(x.shape)}")
    mean = torch.tensor(IMAGE_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels (RGBA, LA, P with transparency) are composited over white, because a
    plain convert("RGB") would show whatever colour hides under alpha=0 (often black)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


# ----------------------------------------------------------------------------------------------------------------
# Captions. Several templates per scene: everything at once, colour+shape, a count, colour only, shape only,


def resize_and_crop(img: Image.Image, size: int) -> Image.Image:
    """CLIP's geometry: resize the shorter side to `size` (bicubic), then centre-crop to size x size."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def collate(items: list[dict]) -> dict:
    """DataLoader collate: stacks tensors ("image" -> (B, 3, H, W)), keeps everything else as lists."""
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
            else [it[k] for it in items] for k in items[0]}


# ----------------------------------------------------------------------------------------------------------------
# The real-data path: an image-caption folder as Flickr8k/COCO are exported on the HF hub (`imagefolder` layout):
#   root/metadata.jsonl   one JSON object per line: {"file_name": "xyz.jpg", "text": "a dog runs"}
#   root/xyz.jpg          ("caption" or "captions" [list] are accepted instead of "text")


class ImageCaptionFolder(Dataset):
    """Images + metadata.jsonl. item: {"image": (3, H, W) float in [0,1] (or transform's output), "caption": str
    (the first one), "captions": list[str], "file_name": str}.

    Every line is checked when the folder is opened; a malformed JSON line, a line without a caption, an empty
    caption, a missing image file or a file PIL cannot read raises ValueError naming the metadata file, the line
    number and the image. Blank lines are skipped. Images of any mode (L, LA, P, RGBA, CMYK...) become RGB, with
    transparency composited over white (`to_rgb`).
    size: if given, resize the shorter side to `size` (bicubic) and centre-crop to size x size, as CLIP does.
    transform: if given, called on the RGB PIL image (after `size`) instead of `to_tensor`.
    """

    CAPTION_KEYS = ("text", "caption", "captions")

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], object] | None = None,
                 size: int | None = None, metadata: str = "metadata.jsonl"):
        self.root, self.transform, self.size = Path(root), transform, size
        self.metadata = self.root / metadata
        if not self.metadata.is_file():
            raise FileNotFoundError(f"{self.metadata} not found: an image-caption folder needs a {metadata} "
                                    f"with one JSON object per line")
        self.records: list[tuple[str, list[str], str]] = []   # (file_name, captions, "metadata:line")
        with open(self.metadata, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    self.records.append(self._check(line, f"{self.metadata}:{lineno}"))

    def _check(self, line: str, where: str) -> tuple[str, list[str], str]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: malformed JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        name = record.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: no \"file_name\" (a non-empty string) in this line")
        key = next((k for k in self.CAPTION_KEYS if k in record), None)
        if key is None:
            raise ValueError(f"{where}: image {name!r} has no caption (expected one of {self.CAPTION_KEYS})")
        caps = record[key] if isinstance(record[key], list) else [record[key]]
        if not caps or not all(isinstance(c, str) for c in caps):
            raise ValueError(f"{where}: image {name!r}: {key!r} must be a string or a non-empty list of strings")
        if any(not c.strip() for c in caps):
            raise ValueError(f"{where}: image {name!r} has an empty caption")
        path = self.root / name
        if not path.is_file():
            raise ValueError(f"{where}: image file {name!r} not found (looked for {path})")
        try:
            with Image.open(path) as im:
                im.verify()               # cheap header/structure check; full decoding happens on access
        except Exception as e:  # PIL raises many types; all mean "unreadable"
            raise ValueError(f"{where}: image file {name!r} cannot be read as an image ({e})") from None
        return name, [c.strip() for c in caps], where

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, i: int) -> Image.Image:
        """The i-th image as RGB PIL (after `size` if set)."""
        name, _, where = self.records[i]
        try:
            with Image.open(self.root / name) as im:
                img = to_rgb(im)
                img.load()
        except Exception as e:  # a file that passed verify() can still fail to decode
            raise ValueError(f"{where}: image file {name!r} cannot be decoded ({e})") from None
        if self.size is not None:
            img = resize_and_crop(img, self.size)
        return img

    def __getitem__(self, i: int) -> dict:
        name, caps, _ = self.records[i]
        img = self.load_image(i)
        image = self.transform(img) if self.transform is not None else to_tensor(img)
        return {"image": image, "caption": caps[0], "captions": caps, "file_name": name}

    collate_fn = staticmethod(collate)
