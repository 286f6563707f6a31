"""The Korean edition stays in step with the English one (minimal/i18n.py explains the scheme).

- every chapter in chapters/ has its Korean twin in chapters/ko/ with the same code cells, the one allowed
  difference being the language line `LANG = "ko"`;
- the twin's markdown has the same structure: numbered sections, objectives, summary, exercises and solutions;
- every message the code passes to `tr("...")` has a Korean entry with the same {placeholders};
- Korean text in figures is drawn with a font that has the glyphs.
"""

import ast
import importlib.util
import json
import re
import warnings
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from minimal import i18n, plots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# tests/sync_colab.py is a script as well as a module; load it by path (tests/ is not a package)
_spec = importlib.util.spec_from_file_location("sync_colab", ROOT / "tests" / "sync_colab.py")
sync_colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_colab)

ENGLISH = sorted((ROOT / "chapters").glob("*.ipynb"))
KOREAN_DIR = ROOT / "chapters" / "ko"
LANG_LINE = re.compile(r'^LANG = "(en|ko)"', re.M)


def _cells(path: Path, kind: str) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


# ---------------------------------------------------------------------------------------------------- tr itself
def test_tr_is_the_identity_in_english_and_translates_in_korean():
    try:
        i18n.set_language("en")
        assert i18n.tr("mode: {mode} | seed {seed} | Korean font for figures: {font}", mode="x", seed=1, font=True) \
            == "mode: x | seed 1 | Korean font for figures: True"
        i18n.set_language("ko")
        assert i18n.tr("full") == "전체 모드"
        with pytest.raises(KeyError, match="no ko translation for 'never written anywhere'"):
            i18n.tr("never written anywhere")
    finally:
        i18n.set_language("en")


def test_bad_language_and_bad_text_are_refused():
    with pytest.raises(ValueError, match="lang must be one of"):
        i18n.set_language("fr")
    with pytest.raises(TypeError, match="text must be a str"):
        i18n.tr(3)  # type: ignore[arg-type]


def test_placeholders():
    assert i18n.placeholders("acc {acc:.3f} on {n:,} images, {{literal}}") == {"acc", "n"}


# ----------------------------------------------------------------------------------- every tr() has its entry
def _tr_literals(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name == "tr" and isinstance(node.args[0].value, str):
                found.append(node.args[0].value)
    return found


def _all_tr_literals() -> dict[str, str]:
    """English message → where it is used, over the library and both editions' code cells."""
    used: dict[str, str] = {}
    for path in sorted((ROOT / "minimal").rglob("*.py")):
        for text in _tr_literals(path.read_text(encoding="utf-8")):
            used.setdefault(text, str(path.relative_to(ROOT)))
    for path in ENGLISH + sorted(KOREAN_DIR.glob("*.ipynb")):
        for i, cell in enumerate(_cells(path, "code")):
            for text in _tr_literals(cell):
                used.setdefault(text, f"{path.relative_to(ROOT)} code cell {i}")
    return used


def test_the_scan_finds_tr_calls():
    assert sorted(_tr_literals('print(tr("a {x}", x=1)); i18n.tr("b"); f("c")')) == ["a {x}", "b"]


def test_every_message_has_a_korean_entry_with_the_same_placeholders():
    table = i18n.catalog("ko")
    used = _all_tr_literals()
    missing = [f"{text!r} ({where})" for text, where in used.items() if text not in table]
    assert not missing, "no Korean entry in minimal/locale/ko/ for:\n" + "\n".join(missing)
    wrong = [text for text in used if i18n.placeholders(text) != i18n.placeholders(table[text])]
    assert not wrong, f"Korean entries whose {{placeholders}} differ from the English: {wrong}"


def test_no_korean_entry_is_left_unused():
    unused = sorted(set(i18n.catalog("ko")) - set(_all_tr_literals()))
    assert not unused, f"entries in minimal/locale/ko/ that no tr() call uses: {unused}"


# -------------------------------------------------------------------------------------------- the Korean twins
KOREAN = sorted(KOREAN_DIR.glob("*.ipynb"))


@pytest.fixture(params=KOREAN, ids=[p.stem for p in KOREAN])
def pair(request) -> tuple[Path, Path]:
    korean = request.param
    english = ROOT / "chapters" / korean.name
    assert english.exists(), f"chapters/ko/{korean.name} has no English chapter at chapters/{korean.name}"
    return english, korean


def test_every_chapter_has_its_korean_edition():
    missing = [p.name for p in ENGLISH if not (KOREAN_DIR / p.name).exists()]
    assert not missing, f"chapters with no Korean edition in chapters/ko/: {missing}"


def test_english_chapters_name_their_language_once():
    for path in ENGLISH:
        assert LANG_LINE.findall("\n".join(_cells(path, "code"))) == ["en"], f"{path.name}: one LANG = \"en\" line"


def test_colab_badge_opens_the_korean_notebook(pair):
    _, korean = pair
    assert sync_colab.problems(korean, sync_colab.repo_url()) == [], "run `make sync-urls`"


def test_code_cells_are_the_english_ones_with_lang_ko(pair):
    english, korean = pair
    en, ko = _cells(english, "code"), _cells(korean, "code")
    assert LANG_LINE.findall("\n".join(ko)) == ["ko"], f"chapters/ko/{korean.name}: one LANG = \"ko\" line"
    ko = [LANG_LINE.sub('LANG = "en"', cell) for cell in ko]
    assert len(en) == len(ko), f"{english.name}: {len(en)} code cells in English, {len(ko)} in Korean"
    for i, (a, b) in enumerate(zip(en, ko, strict=True)):
        assert a == b, f"{english.name}: code cell {i} differs between the editions"


# English heading → its Korean form; numbered sections ("## 3. …") keep their numbers.
SHAPE = [
    (re.compile(r"^## Objectives\s*$"), re.compile(r"^## 목표\s*$"), "objectives"),
    (re.compile(r"^## Summary — what you built, what to remember\s*$"),
     re.compile(r"^## 요약 — 만든 것, 기억할 것\s*$"), "summary"),
    (re.compile(r"^## Exercises\s*$"), re.compile(r"^## 연습 문제\s*$"), "exercises"),
    (re.compile(r"^### Exercise (\d+) — \S"), re.compile(r"^### 연습 (\d+) — \S"), "exercise"),
    (re.compile(r"^### Solution (\d+)\s*$"), re.compile(r"^### 풀이 (\d+)\s*$"), "solution"),
    (re.compile(r"^## (\d+)\. \S"), re.compile(r"^## (\d+)\. \S"), "section"),
]


def structure(path: Path, korean: bool) -> list[str]:
    """The chapter's headings as language-free tokens: 'section 3', 'exercise 2', 'h3', …"""
    tokens = []
    for cell in _cells(path, "markdown"):
        fenced = False
        for line in cell.splitlines():
            if line.startswith("```"):
                fenced = not fenced
            if fenced or not re.match(r"^#{1,6} ", line):
                continue
            for en_pattern, ko_pattern, name in SHAPE:
                match = (ko_pattern if korean else en_pattern).match(line)
                if match:
                    tokens.append(f"{name} {match.group(1)}" if match.groups() else name)
                    break
            else:
                tokens.append(f"h{len(line) - len(line.lstrip('#'))}")
    return tokens


def test_markdown_has_the_same_structure(pair):
    english, korean = pair
    en, ko = structure(english, korean=False), structure(korean, korean=True)
    assert "summary" in en and "exercise 1" in en, f"{english.name}: the English chapter lost its shape"
    assert en == ko, f"{english.name}: headings differ\n  en: {en}\n  ko: {ko}"


def test_korean_markdown_is_korean(pair):
    """Every prose paragraph of the Korean edition holds Hangul (code, tables of numbers and links aside)."""
    _, korean = pair
    english_only = []
    for cell in _cells(korean, "markdown"):
        for paragraph in re.split(r"\n\s*\n", re.sub(r"```.*?```", "", cell, flags=re.S)):
            text = paragraph.strip()
            words = re.findall(r"[A-Za-z]{3,}", re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)|https?://\S+", "", text))
            if len(words) >= 8 and not re.search(r"[가-힣]", text):
                english_only.append(text[:80])
    assert not english_only, f"chapters/ko/{korean.name}: paragraphs with no Korean: {english_only}"


# ------------------------------------------------------------------------------------------ Hangul in figures
def test_a_korean_figure_draws_every_glyph():
    assert plots.use_korean_font(), "koreanize-matplotlib (a dependency) should bring NanumGothic"
    title = "제로샷 추론: 멀티모달 LLM의 입력 프로젝터"
    fig, ax = plt.subplots()
    text = ax.set_title(title)
    ax.set_xlabel("스텝")
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # matplotlib warns "Glyph … missing from font(s)" for a box
        fig.canvas.draw()
    fonts = font_manager.fontManager._find_fonts_by_props(text.get_fontproperties())
    charmaps = [(Path(f).name, FT2Font(f).get_charmap()) for f in fonts]
    for ch in set(title) - {" ", ":"}:
        assert any(ord(ch) in cmap for _, cmap in charmaps), f"no font among {[n for n, _ in charmaps]} has {ch!r}"
    hangul_font = next(name for name, cmap in charmaps if ord("제") in cmap)
    assert "Nanum" in hangul_font, hangul_font
    plt.close(fig)
