"""The BPE tokenizer: layout [bos ... eos pad], Korean pieces, byte fallback, truncation policy, save/load, and the
wrapper around HF's CLIPTokenizer (built offline from a tiny vocabulary)."""

import json
import random

import pytest
import torch

from minimal import shapes
from minimal.text import TextConfig, TextTransformer
from minimal.tokenizer import BYTE_TOKENS, Tokenizer, shapes_tokenizer

TEXTS = ["a small red circle on the left", "a large blue square at the top", "two shapes: a red star and a blue cross",
         "왼쪽에 있는 작은 빨간 원", "위쪽에 있는 큰 파란색 정사각형", "도형 두 개: 빨간 별과 파란색 십자"] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, vocab_size=600, context_length=16)


@pytest.fixture(scope="module")
def world_tok():
    return shapes_tokenizer()


def test_layout_bos_tokens_eos_pad(tok):
    ids = tok(["a small red circle", "왼쪽에 있는 작은 빨간 원"])
    assert ids.shape == (2, 16) and ids.dtype == torch.long
    for row, text in zip(ids.tolist(), ["a small red circle", "왼쪽에 있는 작은 빨간 원"], strict=True):
        n = len(tok.encode(text))
        assert row[0] == tok.bos_token_id and row[n + 1] == tok.eos_token_id
        assert row[n + 2:] == [tok.pad_token_id] * (16 - n - 2)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 3)  # eos is not 2 (HF legacy rule)
    assert tok("a red star").shape == (1, 16)  # a single string is a batch of one
    assert tok(["a red star"], context_length=8).shape == (1, 8)
    assert tok.decode(ids) == ["a small red circle", "왼쪽에 있는 작은 빨간 원"]


def test_frequent_words_are_single_tokens(tok):
    assert tok.tokens("a small red circle") == ["▁a", "▁small", "▁red", "▁circle"]
    assert tok.encode("A  SMALL red") == tok.encode("a small red")  # lower-cased, whitespace collapsed


def test_korean_pieces_on_the_world_captions(world_tok):
    rng = random.Random(5)
    for _ in range(50):
        for c in shapes.captions(shapes.sample_scene(rng, split="any"), "ko"):
            pieces = world_tok.tokens(c)
            assert not set(pieces) & set(BYTE_TOKENS) and "<unk>" not in pieces, (c, pieces)
            assert world_tok.decode(world_tok(c)[0]) == c
            assert len(pieces) <= 3 * len(c.split()), (c, pieces)  # words, stems and particles, not characters
    # a particle splits off its noun, so "십자" is shared by "십자는" and "십자와"
    assert world_tok.tokens("십자는")[0] == world_tok.tokens("십자와")[0] == "▁십자"


def test_unseen_characters_fall_back_to_bytes(tok):
    text = "a 보라색 hexagon 😀"
    pieces = tok.tokens(text)
    assert "<0xF0>" in pieces and "<unk>" not in pieces
    assert tok.decode(tok(text, context_length=64)[0]) == text


def test_too_long_is_truncated_keeping_eos_with_a_warning(tok):
    long = " ".join(["a small red circle on the left"] * 5)
    with pytest.warns(UserWarning, match=r"1 caption\(s\) longer than context_length=16 were truncated"):
        ids = tok([long, "a red star"])
    assert ids.shape == (2, 16)
    assert ids[0, 0] == tok.bos_token_id and ids[0, -1] == tok.eos_token_id
    assert ids[0].tolist()[1:-1] == tok.encode(long)[:14]
    # and the text tower accepts exactly this length, pooling at the kept eos
    cfg = TextConfig(vocab_size=tok.vocab_size, context_length=16, width=16, heads=2, layers=1, mlp_hidden=16,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert TextTransformer(cfg)(ids).eos_positions.tolist() == [15, 4]


def test_bad_captions(tok):
    with pytest.raises(ValueError, match=r"caption 1 is empty: ''"):
        tok(["a red star", ""])
    with pytest.raises(ValueError, match=r"caption 0 is empty: '   '"):
        tok("   ")
    with pytest.raises(ValueError, match="caption 0 is a int"):
        tok([3])
    with pytest.raises(ValueError, match="empty list"):
        tok([])
    with pytest.raises(ValueError, match="context_length must be an int >= 3, got 2"):
        tok("a red star", context_length=2)
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train(TEXTS, vocab_size=100)


def test_save_load_roundtrip(tok, tmp_path):
    path = tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(path)
    assert repr(again) == repr(tok)
    assert torch.equal(again(TEXTS[:6]), tok(TEXTS[:6]))
    with pytest.raises(ValueError, match="must end in .json"):
        tok.save(tmp_path / "tok.txt")
    (tmp_path / "bad.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(ValueError, match="not a minimal tokenizer file"):
        Tokenizer.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_bytes(b"\x00\xff")
    with pytest.raises(ValueError, match="not a tokenizer JSON file"):
        Tokenizer.load(tmp_path / "junk.json")
    with pytest.raises(ValueError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "absent.json")


def test_training_is_deterministic():
    a = Tokenizer.train(TEXTS, vocab_size=400)
    b = Tokenizer.train(TEXTS, vocab_size=400)
    assert a.backend.get_vocab() == b.backend.get_vocab()


def _tiny_hf_clip_tokenizer():
    transformers = pytest.importorskip("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz!.,:":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = [("r", "e"), ("re", "d</w>"), ("c", "i"), ("ci", "r"), ("s", "t"), ("st", "a"), ("sta", "r</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def test_wraps_hf_clip_tokenizer(tmp_path):
    hf = _tiny_hf_clip_tokenizer()
    tok = Tokenizer.from_hf_clip(hf, context_length=12)
    texts = ["a red circle", "A Red star!", "big blue star on the left of the red circle"]
    with pytest.warns(UserWarning, match="truncated"):
        ours = tok(texts)
    ref = hf(texts, padding="max_length", max_length=12, truncation=True)["input_ids"]
    assert ours.tolist() == ref  # same ids, same eos-kept truncation, pad == eos as in OpenAI CLIP
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 1)
    assert tok.tokens("red star") == ["red</w>", "star</w>"]
    assert tok.decode(ours[0]) == "a red circle"
    again = Tokenizer.load(tok.save(tmp_path / "clip_tok.json"))
    with pytest.warns(UserWarning):
        assert torch.equal(again(texts), ours)
