"""Bad input never gives a silent wrong answer at the image and data doors: `images` (to_rgb / to_tensor /
normalize / resize_and_crop / ImageCaptionFolder), `shapes.render` / `render_batch` / `export_folder`, and the
tokenizer. Each row names the call, the error type, and the words the message must contain (the argument, what was
expected, what came). The documented conversions (16-bit and float images, transparency over white, UTF-8 with a
byte-order mark, continued export numbering) are checked to give the right pixels and files."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from minimal import shapes
from minimal.images import ImageCaptionFolder, normalize, resize_and_crop, to_rgb, to_tensor
from minimal.tokenizer import Tokenizer, shapes_tokenizer

# ---------------------------------------------------------------------------------------------------------------
# Pictures used below


def red_circle(size: int = 32) -> Image.Image:
    """An 8-bit RGB red circle on white, with anti-aliased-looking grey levels from a downscale."""
    big = Image.new("RGB", (4 * size, 4 * size), (255, 255, 255))
    ImageDraw.Draw(big).ellipse([8, 8, 4 * size - 8, 4 * size - 8], fill=(220, 20, 30))
    return big.resize((size, size), Image.Resampling.BOX)


def png16_rgb(a: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one): a (H, W, 3) uint16 array."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def reopen(img: Image.Image, fmt: str) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt)
    buf.seek(0)
    return Image.open(buf)


def grey8() -> np.ndarray:
    return np.asarray(red_circle().convert("L"))          # (32, 32) uint8


# ---------------------------------------------------------------------------------------------------------------
# to_rgb / to_tensor / resize_and_crop: what is not a PIL image, and pixel values no rule can read

I32_TOO_BIG = Image.fromarray(np.full((4, 4), 70_000, dtype=np.int32))
I32_NEGATIVE = Image.fromarray(np.full((4, 4), -5, dtype=np.int32))
F_0_255 = Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32))
F_NAN = Image.fromarray(np.array([[0.5, np.nan], [0.1, 0.2]], dtype=np.float32))


@pytest.mark.parametrize("call, error, match", [
    (lambda: to_tensor(None), TypeError, r"img must be a PIL\.Image\.Image, got NoneType"),
    (lambda: to_tensor(np.zeros((4, 4, 3), np.uint8)), TypeError, r"img must be a PIL.*numpy\.ndarray.*fromarray"),
    (lambda: to_tensor("photo.png"), TypeError, r"img must be a PIL.*got str.*Image\.open\(path\)"),
    (lambda: to_tensor(Path("photo.png")), TypeError, r"img must be a PIL.*Image\.open\(path\)"),
    (lambda: to_rgb(torch.zeros(3, 4, 4)), TypeError, r"img must be a PIL.*torch\.Tensor"),
    (lambda: to_tensor(I32_TOO_BIG), ValueError, r"mode 'I'.*0\.\.65535.*70000"),
    (lambda: to_tensor(I32_NEGATIVE), ValueError, r"mode 'I'.*0\.\.65535.*-5"),
    (lambda: to_tensor(F_0_255), ValueError, r"mode 'F'.*\[0, 1\].*200.*divide by 255"),
    (lambda: to_tensor(F_NAN), ValueError, r"mode 'F'.*\[0, 1\].*NaN"),
    (lambda: to_rgb(Image.new("La", (2, 2))), ValueError, r"cannot convert.*mode 'La'"),
    (lambda: resize_and_crop(None, 32), TypeError, r"img must be a PIL\.Image\.Image, got NoneType"),
    (lambda: resize_and_crop(red_circle(), 0), ValueError, r"size must be a positive int.*got 0"),
    (lambda: resize_and_crop(red_circle(), 32.0), ValueError, r"size must be a positive int.*got 32\.0"),
], ids=["none", "numpy", "path-str", "pathlib", "tensor", "I-too-big", "I-negative", "F-0-255", "F-nan",
        "La-mode", "resize-none", "resize-size-0", "resize-size-float"])
def test_image_door_refuses(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# normalize: only floats in [0, 1]

X = torch.rand(3, 8, 8)


@pytest.mark.parametrize("x, error, match", [
    ((X * 255).to(torch.uint8), ValueError, r"dtype torch\.uint8.*floats in \[0, 1\].*x\.float\(\) / 255"),
    ((X * 255).long(), ValueError, r"dtype torch\.int64.*floats in \[0, 1\]"),
    (X * 255, ValueError, r"values in .*\.\.2\d\d\.\d+; .*\[0, 1\].*looks like 0-255 pixels.*divide by 255"),
    (torch.where(X > 0.5, float("nan"), X), ValueError, r"NaN or inf"),
    (torch.where(X > 0.5, float("inf"), X)[None], ValueError, r"NaN or inf"),
    (torch.stack([X, X]) * 2 - 1.9, ValueError, r"values in -1\.\d+\.\..*normalised already"),
    (X.numpy(), TypeError, r"x must be a torch\.Tensor.*got ndarray"),
    (Image.new("RGB", (8, 8)), TypeError, r"x must be a torch\.Tensor.*to_tensor"),
], ids=["uint8", "int64", "0-255-floats", "nan", "inf", "normalised-twice", "numpy", "pil"])
def test_normalize_refuses(x, error, match):
    with pytest.raises(error, match=match):
        normalize(x)


def test_normalize_refuses_its_own_output():
    with pytest.raises(ValueError, match=r"normalised already"):
        normalize(normalize(to_tensor(red_circle())))


# ---------------------------------------------------------------------------------------------------------------
# The documented conversions give the right pixels


def test_16bit_red_circle_png_matches_8bit():
    rgb8 = np.asarray(red_circle())
    ref = to_tensor(red_circle())
    rgb16 = Image.open(io.BytesIO(png16_rgb(rgb8.astype(np.uint16) * 257)))
    assert (to_tensor(rgb16) - ref).abs().max() <= 1 / 255
    # a 16-bit grey PNG (mode I;16) reads as its 8-bit twin, not pure white
    g8 = grey8()
    ref_grey = to_tensor(Image.fromarray(g8))
    i16 = reopen(Image.fromarray(g8.astype(np.uint16) * 257), "PNG")
    assert i16.mode == "I;16"
    assert (to_tensor(i16) - ref_grey).abs().max() <= 1 / 255


@pytest.mark.parametrize("make, mode", [
    (lambda g: reopen(Image.fromarray(g.astype(np.uint16) * 257), "PNG"), "I;16"),
    (lambda g: reopen(Image.fromarray(g.astype(np.int32) * 257), "TIFF"), "I"),
    (lambda g: reopen(Image.fromarray(g.astype(np.float32) / 255), "TIFF"), "F"),
    (lambda g: Image.frombytes("I;16B", g.shape[::-1], (g.astype(">u2") * 257).tobytes()), "I;16B"),
])
def test_high_depth_modes_read_by_their_range(make, mode):
    g = grey8()
    img = make(g)
    assert img.mode == mode
    assert torch.equal(to_tensor(img), to_tensor(Image.fromarray(g)))   # exact: v * 257 / 257 = v, v / 255 * 255 = v


def test_mode_I_rule_is_16bit():
    """The documented rule for 32-bit integers: read as 16-bit, so 65535 is white and 255 is almost black."""
    img = Image.fromarray(np.array([[0, 255, 32768, 65535]], dtype=np.int32))
    assert to_tensor(img)[0, 0].mul(255).round().tolist() == [0, 1, 128, 255]


def test_transparency_over_white_everywhere():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    assert torch.allclose(to_tensor(rgba)[:, 0, 0], torch.tensor([255, 127, 127]) / 255, atol=1 / 255)
    # premultiplied alpha, and a transparent colour/level (PNG tRNS) in RGB, L and 16-bit grey images
    rgba_pm = Image.new("RGBA", (4, 4), (255, 0, 0, 0)).convert("RGBa")
    rgb_trns = Image.new("RGB", (4, 4), (10, 20, 30))
    rgb_trns.info["transparency"] = (10, 20, 30)
    l_trns = Image.new("L", (4, 4), 7)
    l_trns.info["transparency"] = 7
    i16_trns = Image.fromarray(np.full((4, 4), 7 * 257, dtype=np.uint16))
    i16_trns.info["transparency"] = 7 * 257
    for img in (rgba_pm, rgb_trns, l_trns, i16_trns):
        assert torch.equal(to_tensor(img), torch.ones(3, 4, 4)), img.mode
    # the same through a saved PNG with a tRNS chunk
    assert torch.equal(to_tensor(reopen(l_trns, "PNG")), torch.ones(3, 4, 4))


def test_good_inputs_unchanged():
    img = shapes.render(shapes.sample_scene(random.Random(3)), 32, 3)
    assert to_rgb(img) is img
    x = to_tensor(img)
    assert torch.equal(x, torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert torch.equal(normalize(x), (x - mean.view(3, 1, 1)) / std.view(3, 1, 1))
    normalize(torch.full((3, 2, 2), 1.2))          # a little overshoot (interpolation, noise) is accepted
    normalize(torch.full((3, 2, 2), -0.2, dtype=torch.bfloat16))


# ---------------------------------------------------------------------------------------------------------------
# ImageCaptionFolder: contained to its root, one message for every unusable image, UTF-8 metadata

ONE_MESSAGE = r"is not a readable image inside the folder"


def folder(tmp_path: Path, names: list[str]) -> Path:
    """root/ with a.png (good), broken.png, sub/c.png, and outside.png next to root (a good image outside)."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    red_circle().save(root / "a.png")
    red_circle().save(root / "sub" / "c.png")
    (root / "broken.png").write_bytes(b"not a png")
    red_circle().save(tmp_path / "outside.png")
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": "a red circle"}) + "\n"
                                                 for n in names), encoding="utf-8")
    return root


OUTSIDE_NAMES = {
    "dotdot": lambda t: "../outside.png",
    "dotdot-via-sub": lambda t: "sub/../../outside.png",
    "absolute-existing-image": lambda t: str(t / "outside.png"),
    "absolute-etc-passwd": lambda t: "/etc/passwd",
    "absolute-missing": lambda t: "/no/such/dir/x.png",
    "symlink-out": lambda t: "link.png",
    "missing": lambda t: "missing.png",
    "broken": lambda t: "broken.png",
    "directory": lambda t: "sub",
    "nul-byte": lambda t: "a\u0000.png",
}


@pytest.mark.parametrize("kind", list(OUTSIDE_NAMES))
def test_folder_refuses_unusable_names_with_one_message(tmp_path, kind):
    name = OUTSIDE_NAMES[kind](tmp_path)
    root = folder(tmp_path, ["a.png", name])
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(ValueError, match=ONE_MESSAGE) as err:
        ImageCaptionFolder(root)
    assert f"metadata.jsonl:2: image {name!r}" in str(err.value)


def test_folder_message_reveals_nothing_about_outside_files(tmp_path):
    """/etc/passwd exists, /etc/no-such-file does not, ../outside.png is a good image: the messages differ only by
    the name (and the same for a missing or broken file inside)."""
    messages = set()
    for name in ["/etc/passwd", "/etc/no-such-file-here", "../outside.png", "missing.png", "broken.png"]:
        root = folder(tmp_path / str(len(messages)) / str(hash(name)), [name])
        with pytest.raises(ValueError) as err:
            ImageCaptionFolder(root)
        messages.add(str(err.value).replace(str(root), "ROOT").replace(repr(name), "NAME"))
    assert len(messages) == 1, messages


def test_folder_rechecks_containment_on_access(tmp_path):
    root = folder(tmp_path, ["a.png"])
    ds = ImageCaptionFolder(root)
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(tmp_path / "outside.png")      # swapped after the folder was opened
    with pytest.raises(ValueError, match=r"metadata\.jsonl:1: image 'a\.png' " + ONE_MESSAGE):
        ds[0]


def test_folder_allows_links_and_dotdot_inside(tmp_path):
    root = folder(tmp_path, ["a.png", "sub/../a.png", "inner.png"])
    (root / "inner.png").symlink_to(root / "sub" / "c.png")
    ds = ImageCaptionFolder(root)
    assert len(ds) == 3 and all(torch.equal(ds[i]["image"], to_tensor(red_circle())) for i in range(3))


def test_folder_latin1_metadata_is_a_clear_error(tmp_path):
    root = folder(tmp_path, ["a.png"])
    with open(root / "metadata.jsonl", "ab") as f:
        f.write(json.dumps({"file_name": "a.png", "text": "café"}, ensure_ascii=False).encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=r"metadata\.jsonl:2: not UTF-8 text.*0xe9.*UTF-8"):
        ImageCaptionFolder(root)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"root": None}, TypeError, r"root must be a folder path.*got NoneType"),
    ({"size": 0}, ValueError, r"size must be a positive int.*got 0"),
    ({"size": 32.5}, ValueError, r"size must be a positive int.*got 32\.5"),
    ({"transform": "to_tensor"}, TypeError, r"transform must be callable.*got str"),
], ids=["root-none", "size-0", "size-float", "transform-str"])
def test_folder_arguments(tmp_path, kwargs, error, match):
    root = folder(tmp_path, ["a.png"])
    with pytest.raises(error, match=match):
        ImageCaptionFolder(**{"root": root, **kwargs})


def test_folder_reads_16bit_and_float_images_and_a_bom(tmp_path):
    g = grey8()
    root = folder(tmp_path, [])
    Image.fromarray(g.astype(np.uint16) * 257).save(root / "g16.png")
    Image.fromarray(g.astype(np.float32) / 255).save(root / "gf.tiff")
    Image.fromarray(g).save(root / "g8.png")
    lines = [json.dumps({"file_name": n, "text": "grey"}) for n in ("g16.png", "gf.tiff", "g8.png")]
    (root / "metadata.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())   # BOM, CRLF
    ds = ImageCaptionFolder(root)
    assert torch.equal(ds[0]["image"], ds[2]["image"]) and torch.equal(ds[1]["image"], ds[2]["image"])


def test_folder_float_image_outside_0_1_is_named_on_access(tmp_path):
    root = folder(tmp_path, ["f.tiff"])
    Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32)).save(root / "f.tiff")
    ds = ImageCaptionFolder(root)
    with pytest.raises(ValueError, match=r"metadata\.jsonl:1: image file 'f\.tiff'.*mode 'F'.*\[0, 1\]"):
        ds[0]


# ---------------------------------------------------------------------------------------------------------------
# shapes: render / render_batch / export_folder

SCENE = shapes.sample_scene(random.Random(0))


@pytest.mark.parametrize("call, error, match", [
    (lambda: shapes.render(None), TypeError, r"scene must be a shapes\.Scene.*got NoneType"),
    (lambda: shapes.render("a red circle"), TypeError, r"scene must be a shapes\.Scene.*got str"),
    (lambda: shapes.render_batch(SCENE), TypeError, r"scenes must be a list.*got Scene.*pass \[scene\]"),
    (lambda: shapes.render_batch([SCENE, None]), TypeError, r"scenes\[1\] must be a shapes\.Scene.*NoneType"),
    (lambda: shapes.render_batch([], 0), ValueError, r"canvas size must be an int in 16\.\.512 px, got 0"),
    (lambda: shapes.export_folder("/nonexistent-unused", -1), ValueError, r"n must be a non-negative int, got -1"),
    (lambda: shapes.export_folder("/nonexistent-unused", 2.5), ValueError, r"n must be a non-negative int.*2\.5"),
    (lambda: shapes.export_folder("/nonexistent-unused", 0, split="tarin"), ValueError, r"split must be one of"),
], ids=["render-none", "render-str", "batch-one-scene", "batch-none-item", "batch-size-0", "export-n-negative",
        "export-n-float", "export-bad-split"])
def test_shapes_door_refuses(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _meta(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


def test_export_twice_continues_numbering(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shapes.export_folder(a, 3, seed=1)
    first = {p.name: p.read_bytes() for p in a.iterdir()}
    shapes.export_folder(a, 2, seed=2)
    shapes.export_folder(b, 2, seed=2)                      # the second batch alone, in a fresh folder
    names = [r["file_name"] for r in _meta(a)]
    assert names == [f"shapes_00{i}.png" for i in range(5)]
    assert all((a / n).read_bytes() == blob for n, blob in first.items() if n != "metadata.jsonl")
    for i, r in enumerate(_meta(b)):                        # every caption still describes its own picture
        assert r["text"] == _meta(a)[3 + i]["text"]
        assert (b / r["file_name"]).read_bytes() == (a / f"shapes_00{3 + i}.png").read_bytes()
    assert len(ImageCaptionFolder(a)) == 5


def test_export_after_other_lines_and_stray_images(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    red_circle().save(root / "photo.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "photo.png", "text": "a photo"}),
                                         encoding="utf-8")            # no final newline
    red_circle().save(root / "shapes_004.png")                          # e.g. left by an interrupted export
    shapes.export_folder(root, 1, seed=0)
    assert [r["file_name"] for r in _meta(root)] == ["photo.png", "shapes_005.png"]
    assert len(ImageCaptionFolder(root)) == 2


def test_export_writes_metadata_in_one_step(tmp_path, monkeypatch):
    root = tmp_path / "f"
    shapes.export_folder(root, 2, seed=0)
    before = (root / "metadata.jsonl").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        shapes.export_folder(root, 2, seed=1)
    assert (root / "metadata.jsonl").read_bytes() == before


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer door

TEXTS = [c for s in (shapes.sample_scene(random.Random(i)) for i in range(100)) for c in shapes.captions(s, "en")]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, vocab_size=400, context_length=16)


@pytest.mark.parametrize("call, error, match", [
    (lambda t: t(None), TypeError, r"texts must be a str or a list of str, got NoneType"),
    (lambda t: t(b"a red circle"), TypeError, r"texts must be a str or a list of str, got bytes.*decode"),
    (lambda t: t({"a red circle", "a blue star"}), TypeError, r"texts must be ordered.*got a set"),
    (lambda t: t({"a red circle": 1}), TypeError, r"texts must be ordered.*got a dict"),
    (lambda t: t(42), TypeError, r"texts must be a str or a list of str, got int"),
    (lambda t: t([None]), ValueError, r"caption 0 is a NoneType, not a str.*texts must be a str or a list of str"),
    (lambda t: t([["a red circle"]]), ValueError, r"caption 0 is a list, not a str.*texts must be"),
    (lambda t: t([]), ValueError, r"empty list.*texts must hold at least one caption"),
    (lambda t: t("a red circle", context_length=0), ValueError, r"context_length must be an int >= 3, got 0"),
    (lambda t: t("a red circle", context_length=-4), ValueError, r"context_length must be an int >= 3, got -4"),
    (lambda t: t.encode(None), TypeError, r"text must be a str \(one caption\), got NoneType"),
    (lambda t: t.encode(["a red circle"]), TypeError, r"text must be a str.*got list.*call the tokenizer"),
    (lambda t: t.tokens(5), TypeError, r"text must be a str.*got int"),
    (lambda t: t.decode([2, 10**6, 3]), ValueError, r"ids must be ints in \[0, \d+\).*got 1000000"),
    (lambda t: t.decode([2, -1, 3]), ValueError, r"ids must be ints in \[0, \d+\).*got -1"),
    (lambda t: t.decode(torch.zeros(1, 2, 3, dtype=torch.long)), ValueError, r"ids must be \(T,\).*\(1, 2, 3\)"),
    (lambda t: t.decode(torch.tensor(5)), ValueError, r"ids must be \(T,\).*got shape \(\)"),
    (lambda t: t.decode(torch.tensor([2.0, 5.0, 3.0])), ValueError, r"integer token ids.*float32"),
    (lambda t: t.decode(None), TypeError, r"ids must be a list of int token ids.*got NoneType"),
    (lambda t: t.decode("a red circle"), TypeError, r"ids must be a list of int token ids.*got str"),
    (lambda t: Tokenizer.train(None), TypeError, r"texts must be a str or a list of str, got NoneType"),
    (lambda t: Tokenizer.train([1, 2], vocab_size=400), TypeError, r"texts\[0\] is a int, not a str"),
    (lambda t: Tokenizer.train(TEXTS, vocab_size="400"), TypeError, r"vocab_size must be an int, got str"),
    (lambda t: Tokenizer.train(TEXTS, vocab_size=400, min_frequency=-1), ValueError,
     r"min_frequency must be a non-negative int, got -1"),
    (lambda t: shapes_tokenizer(n_scenes=-3), ValueError, r"n_scenes must be a positive int, got -3"),
], ids=["none", "bytes", "set", "dict", "int", "none-item", "nested-list", "empty-list", "context-0",
        "context-negative", "encode-none", "encode-list", "tokens-int", "decode-id-too-big", "decode-id-negative",
        "decode-3d", "decode-0d", "decode-float", "decode-none", "decode-str", "train-none", "train-int-items",
        "train-vocab-str", "train-min-frequency", "shapes-tokenizer-n"])
def test_tokenizer_door_refuses(tok, call, error, match):
    with pytest.raises(error, match=match):
        call(tok)


def test_tokenizer_load_damaged_file(tok, tmp_path):
    doc = json.loads(tok.save(tmp_path / "t.json").read_text(encoding="utf-8"))
    del doc["pad"]
    (tmp_path / "t.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.json is a damaged tokenizer file: no pad"):
        Tokenizer.load(tmp_path / "t.json")


def test_tokenizer_good_inputs_unchanged(tok):
    ids = tok(["a red circle", "a blue star"])
    assert torch.equal(tok("a red circle"), ids[:1]) and torch.equal(tok(("a red circle", "a blue star")), ids)
    assert tok.decode(ids) == ["a red circle", "a blue star"]
    assert tok.decode(ids[0]) == tok.decode(ids[0].tolist()) == tok.decode(ids[0].numpy()) == "a red circle"
    assert tok.decode([np.int64(i) for i in ids[0].tolist()]) == "a red circle"
    assert tok.decode([]) == "" and tok.decode([[]]) == [""]
