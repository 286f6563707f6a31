"""Tests for minimal.images — generic image code: PIL -> RGB -> tensor, CLIP's normalisation, and the
image-caption folder loader (the real-data path)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from minimal import shapes
from minimal.images import IMAGE_MEAN, IMAGE_STD, ImageCaptionFolder, augment, normalize, to_tensor

REPO = Path(__file__).resolve().parents[1]


def test_to_tensor_and_normalize():
    img = shapes.render(shapes.sample_scene(random.Random(0), None, "any"), 32, 0)
    x = to_tensor(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    y = normalize(x.unsqueeze(0))
    mean, std = torch.tensor(IMAGE_MEAN).view(3, 1, 1), torch.tensor(IMAGE_STD).view(3, 1, 1)
    assert torch.allclose(y[0] * std + mean, x, atol=1e-6)
    with pytest.raises(ValueError):
        normalize(torch.zeros(4, 32, 32))


# ---------------------------------------------------------------------------------------------------------------
# ImageCaptionFolder


def make_folder(root: Path, lines: list[str], images: dict[str, Image.Image | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in images.items():
        if isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            content.save(root / name)
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def good_image() -> Image.Image:
    return Image.new("RGB", (20, 10), (200, 10, 10))


@pytest.mark.parametrize("bad_line, extra_images, message", [
    ('{"file_name": "missing.png", "text": "a cat"}', {}, r"missing\.png.*not a readable image inside the folder"),
    ('{"file_name": "broken.png", "text": "a cat"}', {"broken.png": b"this is not a png"},
     r"broken\.png.*not a readable image inside the folder"),
    ('{"file_name": "b.png"}', {"b.png": None}, r"b\.png.*no caption"),
    ('{"file_name": "b.png", "text": "   "}', {"b.png": None}, r"b\.png.*empty caption"),
    ('{"file_name": "b.png", "captions": ["ok", ""]}', {"b.png": None}, r"b\.png.*empty caption"),
    ('{"file_name": "b.png", "text": "a cat"', {"b.png": None}, r"malformed JSON"),
    ('["b.png", "a cat"]', {"b.png": None}, r"JSON object"),
    ('{"text": "a cat"}', {}, r"file_name"),
])
def test_folder_rejects_bad_lines_naming_file_and_line(tmp_path, bad_line, extra_images, message):
    images = {"a.png": good_image(), **{k: (v if v is not None else good_image()) for k, v in extra_images.items()}}
    lines = ['{"file_name": "a.png", "text": "a red box"}', "", bad_line]   # bad line is line 3
    root = make_folder(tmp_path / "f", lines, images)
    with pytest.raises(ValueError, match=message) as err:
        ImageCaptionFolder(root)
    assert f"{root / 'metadata.jsonl'}:3:" in str(err.value)


def test_folder_reads_modes_keys_and_sizes(tmp_path):
    rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))                  # fully transparent -> white, not black
    pal = Image.new("P", (16, 16))
    pal.putpalette([0, 0, 255] * 256)
    images = {"l.png": Image.new("L", (12, 12), 100), "rgba.png": rgba, "p.png": pal, "c.jpg": good_image()}
    lines = [json.dumps({"file_name": "l.png", "text": "grey"}),
             json.dumps({"file_name": "rgba.png", "caption": "clear"}),
             json.dumps({"file_name": "p.png", "captions": ["blue", "a blue square"]}),
             json.dumps({"file_name": "c.jpg", "text": "한국어 캡션도 됩니다"}, ensure_ascii=False)]
    root = make_folder(tmp_path / "g", lines, images)
    ds = ImageCaptionFolder(root)
    assert len(ds) == 4
    items = [ds[i] for i in range(4)]
    assert all(it["image"].shape[0] == 3 for it in items)
    assert torch.allclose(items[0]["image"], torch.full((3, 12, 12), 100 / 255))
    assert torch.equal(items[1]["image"], torch.ones(3, 20, 30))
    assert items[2]["captions"] == ["blue", "a blue square"] and items[2]["caption"] == "blue"
    assert torch.equal(items[2]["image"][:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert items[3]["caption"] == "한국어 캡션도 됩니다"
    sized = ImageCaptionFolder(root, size=8)
    assert all(sized[i]["image"].shape == (3, 8, 8) for i in range(4))
    custom = ImageCaptionFolder(root, transform=lambda im: im.size)
    assert custom[3]["image"] == (20, 10)


def test_folder_reports_truncated_image_on_access(tmp_path):
    good_image().resize((64, 64)).save(tmp_path / "t.png")
    blob = (tmp_path / "t.png").read_bytes()
    root = make_folder(tmp_path / "h", [json.dumps({"file_name": "t.png", "text": "x"})],
                       {"t.png": blob[: len(blob) - 30]})
    try:
        ds = ImageCaptionFolder(root)     # verify() may or may not notice; decoding must
    except ValueError as e:
        assert "metadata.jsonl:1:" in str(e) and "t.png" in str(e)
        return
    with pytest.raises(ValueError, match=r"metadata\.jsonl:1:.*t\.png"):
        ds[0]


def test_shipped_sample_folder_loads():
    root = REPO / "data" / "sample_captions"
    ds = ImageCaptionFolder(root, size=32)
    names = [ds.records[i][0] for i in range(len(ds))]
    assert "grace_hopper.jpg" in names and len(ds) >= 6
    for i in range(len(ds)):
        it = ds[i]
        assert it["image"].shape == (3, 32, 32) and it["caption"]
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 200_000


def test_augment_keeps_shape_range_and_is_deterministic():
    scenes = [shapes.sample_scene(random.Random(i), None, "any") for i in range(8)]
    x = shapes.render_batch(scenes, 32, 0)
    a = augment(x.clone(), torch.Generator().manual_seed(1))
    b = augment(x.clone(), torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert 0.005 < float((a - x).abs().mean()) < 0.1, "a small change, not a copy and not a different picture"
    with pytest.raises(ValueError, match="float images"):
        augment((x * 255).to(torch.uint8), torch.Generator())
