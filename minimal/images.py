"""Generic image code, not about shapes: PIL image -> RGB -> tensor, CLIP's normalisation, CLIP's resize and
centre crop, and `ImageCaptionFolder`, the real-data path (an image–caption folder as Flickr8k/COCO exports use).

    x = to_tensor(Image.open("photo.jpg"))        # (3, H, W) float in [0, 1], any PIL mode
    x = normalize(to_tensor(resize_and_crop(img, 224)))   # what OpenAI CLIP's preprocessing does

How every PIL mode becomes RGB (`to_rgb`; `to_tensor`, `ImageCaptionFolder` and `MLLM.chat` all go through it):
- RGB: unchanged. 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX: PIL's own conversion.
- Transparency (RGBA, LA, PA, RGBa, or any mode with a "transparency" entry, e.g. a P or RGB PNG with a tRNS
  chunk): composited over white.
- 16-bit integers (I;16, I;16L, I;16B, I;16N): rescaled by the 16-bit range, value / 65535 (then 8 bits, rounded).
- 32-bit integers (I): treated as 16-bit — values must lie in 0..65535 and are rescaled the same way (a 16-bit PNG
  or TIFF may open as I); anything outside is a ValueError (rescale such data yourself).
- 32-bit floats (F): values must lie in [0, 1] and are kept (x 255, rounded); anything else (0-255 floats, NaN,
  inf) is a ValueError.
So the result is always 8 bits per channel, as every other path here. Anything that is not a PIL image (None, a
numpy array, a path string, a tensor) is a TypeError saying what to do instead.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .weights import can_read_back

# The pixel statistics of OpenAI CLIP's preprocessing. Using them for our world too means one normalisation serves
# our tiny models and the real CLIP weights of chapter 07 (which were trained with them).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
# `normalize` accepts pixels in [-SLACK, 1 + SLACK]: a little overshoot (interpolation, added noise) is fine, while
# 0-255 pixels or an already normalised batch (about -1.8..2.1) are far outside.
SLACK = 0.5

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def check_image(img: object, name: str = "img") -> None:
    """Raise a TypeError naming `name` unless `img` is a PIL image, with a hint for the usual mix-ups."""
    if isinstance(img, Image.Image):
        return
    hints = {np.ndarray: "; for a numpy array use PIL.Image.fromarray(arr) (uint8 (H, W, 3) for RGB)",
             torch.Tensor: "; a tensor is already pixels: skip to_rgb / to_tensor",
             str: "; for a file use PIL.Image.open(path)", bytes: "; for encoded bytes use "
             "PIL.Image.open(io.BytesIO(data))"}
    hint = next((h for t, h in hints.items() if isinstance(img, t)), "")
    hint = hint or ("; for a file use PIL.Image.open(path)" if isinstance(img, os.PathLike) else "")
    got = type(img).__qualname__
    got = got if type(img).__module__ == "builtins" else f"{type(img).__module__}.{got}"
    raise TypeError(f"{name} must be a PIL.Image.Image, got {got}{hint}")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> contiguous float tensor (3, H, W) in [0, 1] (any mode becomes RGB first, see `to_rgb`)."""
    arr = np.array(to_rgb(img), dtype=np.uint8)          # a writable copy, (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel; x is a float (3, H, W) or (B, 3, H, W) in [0, 1], as `to_tensor` gives.

    Refused with a ValueError naming the problem: integer dtypes (uint8 pixels: use x.float() / 255), NaN or inf,
    and values clearly outside [0, 1] (beyond `SLACK`): 0-255 floats, or a batch that is already normalised.
    (The value check reads two numbers back from the device; it is skipped inside torch.compile and while a CUDA
    graph is captured.)"""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (3, H, W) or (B, 3, H, W) in [0, 1], got {type(x).__name__}"
                        + ("; for a PIL image use to_tensor(img) first" if isinstance(x, Image.Image) else ""))
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x has dtype {x.dtype}; normalize expects floats in [0, 1] (to_tensor gives them). "
                         f"For 0-255 integer pixels use x.float() / 255")
    _check_pixel_range(x)
    mean = torch.tensor(IMAGE_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def _check_pixel_range(x: torch.Tensor) -> None:
    if x.numel() == 0 or x.is_meta or not can_read_back(x):   # see weights.can_read_back: never stall a GPU step
        return
    lo, hi = torch.stack(torch.aminmax(x.detach())).float().tolist()   # one read-back
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("x contains NaN or inf values; normalize expects pixels in [0, 1]")
    if lo < -SLACK or hi > 1 + SLACK:
        # normalised pixels lie in about -1.8..2.15; 0-255 pixels are never negative and rarely all that dark
        hint = ("this looks like 0-255 pixels: divide by 255 first" if lo >= -SLACK and hi > 2.5 else
                "is it normalised already (normalize applied twice)?")
        raise ValueError(f"x has values in {lo:g}..{hi:g}; normalize expects pixels in [0, 1]: {hint}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (8 bits per channel), by the rules in this module's docstring: transparency composited
    over white (a plain convert("RGB") would show whatever colour hides under alpha=0, often black), 16-bit and
    32-bit integer images rescaled by the 16-bit range, float images kept if in [0, 1]; otherwise a clear error."""
    check_image(img)
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        img = _to_8bit(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = _convert(img, "RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return _convert(img, "RGB")


def _convert(img: Image.Image, mode: str) -> Image.Image:
    try:
        return img.convert(mode)
    except ValueError as e:   # PIL cannot convert some rare modes (La, ...)
        raise ValueError(f"cannot convert a PIL image of mode {img.mode!r} to {mode} ({e})") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """An I;16*, I or F image -> L (or LA when a "transparency" value marks pixels), by the documented rule."""
    arr = np.asarray(img)
    if img.mode == "F":
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            got = "NaN or inf values" if not np.isfinite(arr).all() else f"values {arr.min():g}..{arr.max():g}"
            raise ValueError(f"a float (mode 'F') image must hold values in [0, 1]; this one has {got}. Rescale it "
                             f"to [0, 1] first (0-255 floats: divide by 255)")
        scaled = arr.astype(np.float64) * 255.0
    else:
        if img.mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"a 32-bit integer (mode 'I') image is read as 16-bit, values 0..65535; this one spans "
                             f"{arr.min()}..{arr.max()}. Rescale it to 0..65535 (or to 8 bits) first")
        scaled = arr.astype(np.float64) / 257.0       # 65535 -> 255; an 8-bit value v stored as v * 257 -> v
    out = Image.fromarray(np.floor(scaled + 0.5).astype(np.uint8))   # round half up
    t = img.info.get("transparency")
    if isinstance(t, int | float) and img.mode != "F":
        alpha = Image.fromarray(np.where(arr == t, 0, 255).astype(np.uint8))
        return Image.merge("LA", (out, alpha))
    return out


def resize_and_crop(img: Image.Image, size: int) -> Image.Image:
    """CLIP's geometry: resize the shorter side to `size` (bicubic), then centre-crop to size x size."""
    check_image(img)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int (pixels), got {size!r}")
    w, h = img.size
    if not w or not h:
        raise ValueError(f"img is empty ({w}x{h} pixels)")
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def collate(items: list[dict]) -> dict:
    """DataLoader collate: stacks tensors ("image" -> (B, 3, H, W)), keeps everything else as lists."""
    if not items:
        raise ValueError("collate got no items (an empty batch)")
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
            else [it[k] for it in items] for k in items[0]}


# ----------------------------------------------------------------------------------------------------------------
# The real-data path: an image-caption folder as Flickr8k/COCO are exported on the HF hub (`imagefolder` layout):
#   root/metadata.jsonl   one JSON object per line: {"file_name": "xyz.jpg", "text": "a dog runs"}
#   root/xyz.jpg          ("caption" or "captions" [list] are accepted instead of "text")


class ImageCaptionFolder(Dataset):
    """Images + metadata.jsonl. item: {"image": (3, H, W) float in [0,1] (or transform's output), "caption": str
    (the first one), "captions": list[str], "file_name": str}.

    Every line is checked when the folder is opened; a malformed JSON line, a line without a caption or with an
    empty one, or an image that cannot be used raises ValueError naming the metadata file, the line number and the
    image. metadata.jsonl must be UTF-8 (a leading byte-order mark is skipped). Blank lines are skipped.

    The folder is a boundary: a file_name must name a file inside `root` — absolute names, ".." leading outside
    and symlinks that resolve outside are refused. A missing file, a file PIL cannot read and a name outside the
    folder all get the same message ("... is not a readable image inside the folder"), so a metadata file cannot be
    used to learn which files exist elsewhere on the machine. Images of any mode (L, LA, P, RGBA, CMYK, 16-bit...)
    become RGB by `to_rgb`'s rules, with transparency composited over white.
    size: if given, resize the shorter side to `size` (bicubic) and centre-crop to size x size, as CLIP does.
    transform: if given, called on the RGB PIL image (after `size`) instead of `to_tensor`.
    """

    CAPTION_KEYS = ("text", "caption", "captions")

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], object] | None = None,
                 size: int | None = None, metadata: str = "metadata.jsonl"):
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a folder path (str or Path), got {type(root).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (PIL image -> anything) or None, "
                            f"got {type(transform).__name__}")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"size must be a positive int (pixels) or None, got {size!r}")
        self.root, self.transform, self.size = Path(root), transform, size
        self.metadata = self.root / metadata
        if not self.metadata.is_file():
            raise FileNotFoundError(f"{self.metadata} not found: an image-caption folder needs a {metadata} "
                                    f"with one JSON object per line")
        self._real_root = self.root.resolve()
        data = self.metadata.read_bytes()
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")   # skip a byte-order mark some editors write
        except UnicodeDecodeError as e:
            bad = data.count(b"\n", 0, e.start) + 1
            raise ValueError(f"{self.metadata}:{bad}: not UTF-8 text (byte 0x{data[e.start]:02x}); save {metadata} "
                             f"as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
        self.records: list[tuple[str, list[str], str]] = []   # (file_name, captions, "metadata:line")
        for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):   # \n, \r\n and \r end a line
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
        path = self._inside(name)
        if path is None or not path.is_file():
            raise self._unreadable(where, name)
        try:
            with Image.open(path) as im:
                im.verify()               # cheap header/structure check; full decoding happens on access
        except Exception as e:  # PIL raises many types; all mean "unreadable" (the file is inside the folder)
            raise self._unreadable(where, name) from e
        return name, [c.strip() for c in caps], where

    def _inside(self, name: str) -> Path | None:
        """The real path of `name` if it lies inside the folder (symlinks followed), else None."""
        rel = Path(name)
        if rel.is_absolute() or rel.anchor:
            return None
        try:
            real = (self._real_root / rel).resolve()
        except (OSError, ValueError, RuntimeError):   # a NUL byte, a symlink loop, ...
            return None
        return real if real.is_relative_to(self._real_root) else None

    @staticmethod
    def _unreadable(where: str, name: str) -> ValueError:
        # One message for missing, unreadable and outside-the-folder names: it reveals nothing about other files.
        return ValueError(f"{where}: image {name!r} is not a readable image inside the folder (missing, not an "
                          f"image, or outside the folder)")

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, i: int) -> Image.Image:
        """The i-th image as RGB PIL (after `size` if set)."""
        name, _, where = self.records[i]
        path = self._inside(name)          # checked again: the folder may have changed since it was opened
        if path is None or not path.is_file():
            raise self._unreadable(where, name)
        try:
            with Image.open(path) as im:
                img = to_rgb(im)
                img.load()
        except Exception as e:  # a file that passed verify() can still fail to decode, or break to_rgb's rules
            raise ValueError(f"{where}: image file {name!r} cannot be decoded ({e})") from None
        if self.size is not None:
            img = resize_and_crop(img, self.size)
        return img

    def __getitem__(self, index: int) -> dict:
        name, caps, _ = self.records[index]
        img = self.load_image(index)
        image = self.transform(img) if self.transform is not None else to_tensor(img)
        return {"image": image, "caption": caps[0], "captions": caps, "file_name": name}

    collate_fn = staticmethod(collate)


def augment(x: torch.Tensor, generator: torch.Generator, shift: float = 1.0, turn_degrees: float = 8.0,
            blur: float = 0.7, jitter: float = 0.08) -> torch.Tensor:
    """A renderer-independent look for the same content: x (B, 3, H, W) in [0, 1] -> the same shape, each image moved
    by up to `shift` pixels (sub-pixel, bilinear), turned by up to `turn_degrees`, blurred by a Gaussian of random
    width up to `blur` pixels, and each channel scaled by up to ±`jitter`. Small enough that no label changes (an
    object stays in its cell, a colour stays its colour); random enough that a model must read shapes, not one
    renderer's pixels. Deterministic given `generator`."""
    check_floating_images(x)
    b, _, h, w = x.shape

    def u(*size: int) -> torch.Tensor:   # uniform in [-1, 1]
        return torch.rand(*size, generator=generator) * 2 - 1

    turn = u(b) * math.radians(turn_degrees)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = turn.cos(), -turn.sin(), turn.sin(), turn.cos()
    theta[:, 0, 2], theta[:, 1, 2] = u(b) * 2 * shift / w, u(b) * 2 * shift / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sigma = torch.rand(b, generator=generator) * blur + 1e-3                       # (B,) blur widths in pixels
    taps = torch.arange(-2, 3, dtype=x.dtype)
    k1 = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)                                                # (B, 5) per-image kernels
    kernel = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, 0)[:, None]     # (3B, 1, 5, 5)
    out = F.conv2d(F.pad(out.reshape(1, 3 * b, h, w), (2, 2, 2, 2), mode="replicate"), kernel, groups=3 * b)
    out = out.reshape(b, 3, h, w) * (1 + jitter * u(b, 3, 1, 1))
    return out.clamp(0, 1)


def as_image_tensor(image: Image.Image | torch.Tensor, size: int, name: str = "image") -> torch.Tensor:
    """One image as an encoder of `size`-px images reads it: a PIL image of any mode (made RGB by `to_rgb`, resized
    bicubic) or a float tensor (3, size, size) in [0, 1] -> float tensor (3, size, size); else an error naming
    `name` and what came."""
    if isinstance(image, Image.Image):
        image = to_tensor(to_rgb(image).resize((size, size), resample=Image.Resampling.BICUBIC))
    want = f"a PIL image, or a float tensor (3, {size}, {size}) in [0, 1]"
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be {want}, got {type(image).__module__}.{type(image).__qualname__}")
    if not image.is_floating_point() or image.shape != (3, size, size):
        raise ValueError(f"{name} must be {want}, got dtype {image.dtype} and shape {tuple(image.shape)}")
    lo, hi = torch.aminmax(image.detach())
    if not (0 <= lo and hi <= 1):   # NaN fails too
        raise ValueError(f"{name} must be {want}, got values from {float(lo):g} to {float(hi):g}")
    return image


def check_floating_images(x: torch.Tensor) -> None:
    """A clear error unless x is a float tensor (B, 3, H, W)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected float images (B, 3, H, W) in [0, 1], got {got}")
