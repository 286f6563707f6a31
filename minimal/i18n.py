"""The course in two languages: English, and Korean for the book's readers.

Every chapter exists twice, `chapters/NN_*.ipynb` and `chapters/ko/NN_*.ipynb`, with the same code cells. The one
line that differs is `LANG = "en"` / `LANG = "ko"` in the setup cell; `notebook.setup(lang=LANG)` passes it here,
and `tr` turns a message meant for the reader (a printed sentence, a figure title, an axis label) into the
chapter's language:

    print(tr("accuracy on unseen pairs: {acc:.3f}", acc=acc))

The English text is the key. The Korean text lives in `minimal/locale/ko/*.json`, one file per chapter plus
`common.json` for the library's own figure labels. A message with no Korean entry raises a KeyError that names it,
so a Korean chapter never slips back into English unnoticed; `tests/test_i18n.py` checks that every `tr("...")`
literal in the chapters and the library has its entry, with the same `{placeholders}`.
"""

from __future__ import annotations

import json
import string
from functools import cache
from pathlib import Path

LANGUAGES = ("en", "ko")
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_current = "en"


def set_language(lang: str) -> None:
    """Make `tr` answer in `lang` ("en" or "ko") from now on."""
    global _current
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    _current = lang


def language() -> str:
    """The language `tr` answers in: "en" (the default) or "ko"."""
    return _current


def placeholders(text: str) -> set[str]:
    """The names of the `{fields}` in a message template, e.g. {"acc"} for "accuracy {acc:.3f}"."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@cache
def catalog(lang: str) -> dict[str, str]:
    """English message → its translation, merged from every `locale/<lang>/*.json` file.

    The same English message may appear in several files only with the same translation (one definition)."""
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    merged: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in sorted((LOCALE_DIR / lang).glob("*.json")):
        for english, translated in json.loads(path.read_text(encoding="utf-8")).items():
            if english in merged and merged[english] != translated:
                raise ValueError(f"{english!r} is translated two ways: in {where[english]} and in {path.name}")
            merged[english], where[english] = translated, path.name
    return merged


def tr(text: str, /, **values: object) -> str:
    """`text` (an English message, possibly with `{fields}`) in the current language, `values` filled in.

    tr("trained {n} steps", n=300) → "trained 300 steps" in English, "300 스텝 학습" in Korean."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if _current != "en":
        table = catalog(_current)
        if text not in table:
            raise KeyError(f"no {_current} translation for {text!r}: add it to minimal/locale/{_current}/")
        text = table[text]
    return text.format(**values) if values else text
