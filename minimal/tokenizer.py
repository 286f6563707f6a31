"""Tokenising captions: text -> a fixed-length row of token ids (chapter 03, book §14.2.2).

A BPE tokenizer (byte-pair encoding, 바이트 쌍 인코딩) starts from single characters and repeatedly merges the most
frequent adjacent pair into a new token, so frequent words become one token and rare words fall back to pieces.
We train one with Hugging Face `tokenizers` on the Shapes world's English and Korean captions.

Korean: Hangul is written in syllable blocks (음절), one Unicode character each ("빨", "간"), so BPE starts from
syllables and merges them into words; a word form seen rarely stays split into stem and particle (조사), e.g.
"십자는" -> "▁십자" + "는". A character never seen in training is not lost as <unk>: *byte fallback* writes it as its
UTF-8 bytes (<0xEB><0xB9><0xA8>, from 256 byte tokens in the vocabulary) — the trick Llama's tokenizer uses.

Every caption becomes ``[<bos>, tokens..., <eos>, <pad>, <pad>, ...]`` of length `context_length`; the text tower
reads its summary at <eos>. **Too-long captions are truncated, keeping <eos> last, with a warning** (the model
itself refuses over-long input). Empty captions are a ValueError; so is anything that is not text (None, bytes, a
set, a nested list) and, in `decode`, an id outside the vocabulary — each error names the argument.

`Tokenizer.from_hf_clip(hf_tokenizer)` wraps OpenAI CLIP's tokenizer behind the same interface for real weights.
"""

from __future__ import annotations

import json
import numbers
import os
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence, Set
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from .shapes import captions, sample_scene
from .shapes.common_words import EN_WORDS, KO_WORDS
from .shapes.grammar import free_caption
from .weights import atomic_path

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
# Ids 0..3 in this order. <eos> is deliberately *not* 2: Hugging Face treats a CLIP config with eos_token_id == 2 as
# "pool at the largest id" (the legacy rule), so eos = 3 keeps an exported model unambiguous.
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # byte fallback: any character as its UTF-8 bytes
_ASCII = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-:;()")
FORMAT = "minimal-tokenizer/1"


class Tokenizer:
    """Text <-> ids with bos/eos/pad and a fixed context length. Build with `train`, `load` or `from_hf_clip`."""

    def __init__(self, backend, bos: str, eos: str, pad: str, context_length: int = 32, kind: str = "bpe"):
        """`backend` is a `tokenizers.Tokenizer`; bos/eos/pad name its special tokens."""
        # Our own copy, with padding and truncation off: we add bos/eos/pad ourselves (HF tokenizers switch these
        # on in their backend when called with padding=..., which would otherwise leak into our calls).
        backend = type(backend).from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
        self.backend, self.kind = backend, kind
        self.bos_token, self.eos_token, self.pad_token = bos, eos, pad
        ids = [backend.token_to_id(t) for t in (bos, eos, pad)]
        if None in ids:
            raise ValueError(f"special tokens {bos!r}, {eos!r}, {pad!r} must all be in the vocabulary")
        self.bos_token_id, self.eos_token_id, self.pad_token_id = ids
        if not isinstance(context_length, int) or context_length < 3:
            raise ValueError(f"context_length must be an int >= 3 (bos, one token, eos), got {context_length!r}")
        self.context_length = context_length

    # -- building -------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1000, context_length: int = 32,
              min_frequency: int = 2) -> Tokenizer:
        """Train a BPE tokenizer on `texts` (e.g. English + Korean captions): a list (or any ordered iterable) of
        str; a single str counts as one text, not as a list of characters.

        The vocabulary holds the 4 special tokens, the starting alphabet (ASCII letters, digits, punctuation and
        every character seen), the learned merges, and 256 byte-fallback tokens — `vocab_size` entries in all, or
        fewer when the corpus runs out of pairs seen at least `min_frequency` times.
        """
        texts = _as_texts(texts, "texts", "Tokenizer.train")
        if not texts:
            raise ValueError("Tokenizer.train needs at least one text")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str: {t!r}")
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__} {vocab_size!r}")
        if not isinstance(min_frequency, int) or isinstance(min_frequency, bool) or min_frequency < 0:
            raise ValueError(f"min_frequency must be a non-negative int, got {min_frequency!r}")
        if vocab_size < len(SPECIAL_TOKENS) + len(_ASCII) + 1 + len(BYTE_TOKENS):
            raise ValueError(f"vocab_size={vocab_size} is too small: specials, the ASCII alphabet and 256 byte "
                             f"tokens alone need {len(SPECIAL_TOKENS) + len(_ASCII) + 1 + len(BYTE_TOKENS)}")
        tok = HFTokenizer(models.BPE(unk_token=UNK))
        # NFKC folds look-alike characters (full-width letters, ...) and keeps Hangul syllables composed.
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip(),
                                               normalizers.Replace(Regex(r"\s+"), " ")])
        # Split on whitespace (marking word starts with ▁, as SentencePiece does) and around punctuation.
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(BYTE_TOKENS), min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, initial_alphabet=_ASCII + ["▁"],
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        # Append the byte tokens after training (the trainer only knows characters) and switch byte fallback on.
        trained = json.loads(tok.to_str())["model"]
        vocab = dict(trained["vocab"])
        for b in BYTE_TOKENS:
            vocab[b] = len(vocab)
        merges: list[tuple[str, str]] = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)  # type: ignore[misc]
                                         for m in trained["merges"]]
        tok.model = models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        return cls(tok, BOS, EOS, PAD, context_length, kind="bpe")

    @classmethod
    def from_hf_clip(cls, hf_tokenizer, context_length: int = 77) -> Tokenizer:
        """Wrap a HF `CLIPTokenizer` (OpenAI's BPE, 49,408 tokens) behind the same interface.

        Its pad token is its end-of-text token, which is why the text tower pools at the *first* eos.
        """
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{type(hf_tokenizer).__name__} has no `backend_tokenizer` (need a fast tokenizer)")
        backend = type(backend).from_str(backend.to_str())
        # CLIP marks word ends with "</w>" on top of byte-level characters: turn the mark into a (byte-level)
        # space, map bytes back to text, drop the trailing space — the same text HF's decode gives.
        backend.decoder = decoders.Sequence([decoders.Replace("</w>", "Ġ"), decoders.ByteLevel(),
                                             decoders.Strip(" ", 0, 1)])
        return cls(backend, hf_tokenizer.bos_token, hf_tokenizer.eos_token, hf_tokenizer.pad_token or
                   hf_tokenizer.eos_token, context_length, kind="hf_clip")

    # -- using ----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """One caption -> its token ids, without bos/eos/padding."""
        _check_text(text)
        return self.backend.encode(text, add_special_tokens=False).ids

    def tokens(self, text: str) -> list[str]:
        """The pieces a caption is cut into: "a red circle" -> ['▁a', '▁red', '▁circle']."""
        _check_text(text)
        return self.backend.encode(text, add_special_tokens=False).tokens

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Captions -> LongTensor (B, context_length): ``[bos, ..., eos, pad, ...]``; a single str gives B = 1.

        Over-long captions are truncated to ``context_length - 2`` tokens with eos kept last, and a warning names
        them. Empty (or whitespace-only) captions and non-string captions are a ValueError; `texts` that is neither
        a str nor an ordered collection of them (None, bytes, a set, a dict) is a TypeError.
        """
        texts = _as_texts(texts, "texts", "the tokenizer")
        L = self.context_length if context_length is None else context_length
        if not isinstance(L, int) or L < 3:
            raise ValueError(f"context_length must be an int >= 3, got {L!r}")
        if not texts:
            raise ValueError("no captions given (an empty list): texts must hold at least one caption")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"caption {i} is a {type(t).__name__}, not a str: {t!r} (texts must be a str or "
                                 f"a list of str)")
            if not t.strip():
                raise ValueError(f"caption {i} is empty: {t!r}")
        encoded = [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        out = torch.full((len(texts), L), self.pad_token_id, dtype=torch.long)
        too_long = []
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"caption {i} has no tokens after normalisation: {texts[i]!r}")
            if len(ids) > L - 2:
                too_long.append(i)
                ids = ids[: L - 2]
            row = [self.bos_token_id, *ids, self.eos_token_id]
            out[i, : len(row)] = torch.tensor(row)
        if too_long:
            first = texts[too_long[0]]
            warnings.warn(f"{len(too_long)} caption(s) longer than context_length={L} were truncated, keeping "
                          f"<eos> last (first: caption {too_long[0]}, {first[:60]!r})", stacklevel=2)
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str | list[str]:
        """Ids (a list of ints, a (T,) or (B, T) integer tensor or array, or a list of lists) -> text (or a list of
        texts); stops at the first eos. An id outside the vocabulary is a ValueError (not silently dropped)."""
        if isinstance(ids, torch.Tensor | np.ndarray):
            if ids.ndim not in (1, 2):
                raise ValueError(f"ids must be (T,) for one text or (B, T) for several, got shape {tuple(ids.shape)}")
            integer = (not ids.is_floating_point() and not ids.is_complex() and ids.dtype != torch.bool
                       if isinstance(ids, torch.Tensor) else ids.dtype.kind in "iu")
            if not integer:
                raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
            ids = ids.tolist()
        if not isinstance(ids, list | tuple):
            raise TypeError(f"ids must be a list of int token ids, a list of such lists, or a (T,) / (B, T) "
                            f"tensor, got {type(ids).__name__}")
        if ids and isinstance(ids[0], list | tuple):
            return [str(self.decode(row, skip_special_tokens)) for row in ids]
        V = self.vocab_size
        for i in ids:
            if not isinstance(i, numbers.Integral) or isinstance(i, bool) or not 0 <= int(i) < V:
                raise ValueError(f"ids must be ints in [0, {V}) (the vocabulary), got {i!r}")
        ids = [int(i) for i in ids]
        if skip_special_tokens:  # stop at the first eos: what follows is padding
            specials = {self.bos_token_id, self.pad_token_id}
            ids = [i for i in ids[: ids.index(self.eos_token_id) if self.eos_token_id in ids else None]
                   if i not in specials]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, context_length={self.context_length}, "
                f"bos={self.bos_token_id}, eos={self.eos_token_id}, pad={self.pad_token_id})")

    # -- saving ---------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write one JSON file: our settings plus the `tokenizers` model (works for both kinds)."""
        path = Path(path)
        if path.suffix != ".json":
            raise ValueError(f"tokenizer path must end in .json, got {str(path)!r}")
        doc = {"format": FORMAT, "kind": self.kind, "context_length": self.context_length,
               "bos": self.bos_token, "eos": self.eos_token, "pad": self.pad_token,
               "tokenizer": json.loads(self.backend.to_str())}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no tokenizer file at {str(path)!r}")
        try:
            doc = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a tokenizer JSON file: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a minimal tokenizer file (format {FORMAT!r} expected)")
        missing = [k for k in ("kind", "context_length", "bos", "eos", "pad", "tokenizer") if k not in doc]
        if missing:
            raise ValueError(f"{path} is a damaged tokenizer file: no {', '.join(missing)}")
        try:
            backend = HFTokenizer.from_str(json.dumps(doc["tokenizer"]))
        except Exception as e:  # tokenizers raises a bare Exception for a model it cannot parse
            raise ValueError(f"{path} is a damaged tokenizer file: its \"tokenizer\" entry does not load ({e})") from e
        return cls(backend, doc["bos"], doc["eos"], doc["pad"], doc["context_length"], kind=doc["kind"])


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        hint = "; for several captions call the tokenizer on the list" if isinstance(text, list | tuple) else ""
        raise TypeError(f"text must be a str (one caption), got {type(text).__name__}{hint}")


def _as_texts(texts: object, name: str, who: str) -> list:
    """`texts` as a list: a str becomes [str]; None, bytes, unordered collections and non-iterables are refused."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes | bytearray):
        raise TypeError(f"{name} must be a str or a list of str, got {type(texts).__name__}: decode it first "
                        f"(data.decode('utf-8'))")
    if isinstance(texts, Set | Mapping):
        raise TypeError(f"{name} must be ordered (a list or tuple of str), got a {type(texts).__name__}: "
                        f"{who} would follow its arbitrary order")
    if not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a str or a list of str, got {type(texts).__name__}")
    return list(texts)


def shapes_tokenizer(n_scenes: int = 2000, seed: int = 0, vocab_size: int = 1000,
                     context_length: int = 32, free_wording: bool = False) -> Tokenizer:
    """The course tokenizer: BPE trained on every English and Korean caption template of `n_scenes` training scenes
    of the Shapes world (deterministic given `seed`; a couple of seconds on a CPU).

    The world's small language runs out of pairs seen twice at about 600 entries (256 of them byte tokens), below
    the default `vocab_size`: every English word and most Korean word forms become one token, while rarer
    particle combinations are split into stem + particle ("십자는" -> "▁십자" + "는"). Smaller vocabularies split
    more (chapter 03, exercise 2). `free_wording`: also learn from two free wordings per scene (`shapes.grammar`:
    synonyms, "a picture of …", other word orders) and ~290 ordinary English and Korean words (`shapes.common_words`),
    so the vocabulary covers what a CLIP trained on them reads (1,298 entries)."""
    if not isinstance(n_scenes, int) or isinstance(n_scenes, bool) or n_scenes < 1:
        raise ValueError(f"n_scenes must be a positive int, got {n_scenes!r}")
    rng = random.Random(seed)
    texts = []
    for _ in range(n_scenes):
        scene = sample_scene(rng, split="train")
        texts += captions(scene, "en") + captions(scene, "ko")
    if free_wording:   # a second generator, so the default corpus stays exactly what it was
        free = random.Random(f"free/{seed}")
        texts += [free_caption(sample_scene(free, split="train"), free, lang) for _ in range(n_scenes)
                  for lang in ("en", "ko")]
        texts += [" ".join(EN_WORDS + KO_WORDS)] * 8     # ordinary words: a few pieces each, not a byte each
    return Tokenizer.train(texts, vocab_size=vocab_size, context_length=context_length)
