"""The glossary (chapters/GLOSSARY.md) agrees with the list of the book's terms and with the chapters.

- every term in the table of the book's terms is in chapters/book_terms.txt, and every term of that list is in the
  table, once;
- every book section named is one of the book's headings;
- every course reference `NN §N` points to a chapter chapters/NN_*.ipynb that has a section headed `## N.`;
- the course's additions are not terms of the book.

book_terms.txt holds only terms that occur verbatim in the book's chapter. Where the book's text is at hand as a
plain-text file, set MINIMAL_BOOK_TEXT to its path and `test_every_book_term_is_in_its_book_section` checks that
too; without it that one test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "chapters" / "GLOSSARY.md"
BOOK_TERMS = ROOT / "chapters" / "book_terms.txt"

# The headings of the book's chapter, in its order (the chapter has no section numbers).
BOOK_SECTIONS = (
    "멀티 모달 LLM",
    "멀티 모달 LLM이란",
    "멀티 모달 LLM의 구성요소",
    "멀티 모달 LLM 학습 과정",
    "이미지와 텍스트를 연결하는 모델: CLIP",
    "CLIP 모델이란",
    "CLIP 모델의 학습 방법",
    "CLIP 모델의 활용과 뛰어난 성능",
)
BOOK_TABLE = "책의 용어 — the book's terms"
ADDITIONS_TABLE = "이 과정이 더한 용어 — the course's additions"
REFERENCE = re.compile(r"^(\d{2}) §(\d+)$")
NUMBERED_SECTION = re.compile(r"^## (\d+)\.", re.M)


# ------------------------------------------------------------------------------------------------------- reading
def read_tables(markdown: str) -> dict[str, list[list[str]]]:
    """The rows (lists of cells) of every table, keyed by the `## ` heading it stands under."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue   # the separator row
            tables.setdefault(heading, []).append(cells)
    return {h: rows[1:] for h, rows in tables.items()}   # drop the header row


def read_book_terms(text: str) -> list[str]:
    """The terms of book_terms.txt: one a line, `#` lines are comments."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def chapter_sections(chapters: Path) -> dict[str, set[int]]:
    """Chapter number ("05") → the numbers N of its markdown headings `## N.`."""
    found: dict[str, set[int]] = {}
    for path in sorted(chapters.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        found[path.name[:2]] = {int(n) for n in NUMBERED_SECTION.findall(text)}
    return found


# ------------------------------------------------------------------------------------------------------ checking
def problems(tables: dict[str, list[list[str]]], book_terms: list[str], chapters: dict[str, set[int]]) -> list[str]:
    """Everything wrong with a glossary's tables, given the book's term list and the chapters' sections."""
    found = []
    book_rows, additions = tables.get(BOOK_TABLE, []), tables.get(ADDITIONS_TABLE, [])
    if not book_rows:
        found.append(f"no table under '## {BOOK_TABLE}'")
    if not additions:
        found.append(f"no table under '## {ADDITIONS_TABLE}'")
    if len(set(book_terms)) != len(book_terms):
        found.append(f"book_terms.txt repeats {sorted({t for t in book_terms if book_terms.count(t) > 1})}")

    def references(term: str, cell: str) -> None:
        refs = [r.strip() for r in cell.split(",")]
        for ref in refs:
            m = REFERENCE.match(ref)
            if not m:
                found.append(f"{term}: {ref!r} is not a course reference like '05 §2'")
            elif m.group(1) not in chapters:
                found.append(f"{term}: {ref} — there is no chapter {m.group(1)}")
            elif int(m.group(2)) not in chapters[m.group(1)]:
                found.append(f"{term}: {ref} — chapter {m.group(1)} has no section '## {m.group(2)}.'")

    glossary_terms = []
    for row in book_rows:
        if len(row) != 4:
            found.append(f"book-term row {row}: want 4 cells (term, English, book section, course)")
            continue
        term, english, section, course = row
        glossary_terms.append(term)
        if term not in book_terms:
            found.append(f"{term}: marked as the book's term but not in book_terms.txt")
        if not english:
            found.append(f"{term}: no English term")
        if section not in BOOK_SECTIONS:
            found.append(f"{term}: {section!r} is not a heading of the book's chapter")
        references(term, course)
    for term in sorted(set(book_terms) - set(glossary_terms)):
        found.append(f"{term}: in book_terms.txt but not in the glossary's table of the book's terms")
    for term in sorted({t for t in glossary_terms if glossary_terms.count(t) > 1}):
        found.append(f"{term}: listed more than once among the book's terms")

    added = []
    for row in additions:
        if len(row) != 4:
            found.append(f"addition row {row}: want 4 cells (term, English, the book's term, course)")
            continue
        term, english, _, course = row
        added.append(term)
        if term in book_terms:
            found.append(f"{term}: listed as the course's addition but it is a term of the book")
        if not english:
            found.append(f"{term}: no English term")
        references(term, course)
    for term in sorted({t for t in added if added.count(t) > 1}):
        found.append(f"{term}: listed more than once among the additions")
    return found


# --------------------------------------------------------------------------------------------------------- tests
def test_the_glossary_agrees_with_the_book_terms_and_the_chapters():
    tables = read_tables(GLOSSARY.read_text(encoding="utf-8"))
    found = problems(tables, read_book_terms(BOOK_TERMS.read_text(encoding="utf-8")),
                     chapter_sections(ROOT / "chapters"))
    assert not found, "chapters/GLOSSARY.md:\n" + "\n".join(found)


def test_the_check_catches_wrong_entries():
    chapters = {"01": {1, 2}, "05": {1, 2, 3}}
    good = f"""
## {BOOK_TABLE}

| 책의 용어 | English | 책의 절 | 이 과정 |
|---|---|---|---|
| 모달리티 인코더 | modality encoder | 멀티 모달 LLM의 구성요소 | 01 §2 |
| 제로샷 추론 | zero-shot prediction | CLIP 모델의 활용과 뛰어난 성능 | 05 §1, 05 §3 |

## {ADDITIONS_TABLE}

| 이 과정의 용어 | English | 책의 표현 | 이 과정 |
|---|---|---|---|
| 온도 | temperature | — | 05 §2 |
"""
    terms = ["모달리티 인코더", "제로샷 추론"]
    assert problems(read_tables(good), terms, chapters) == []

    wrong = good.replace("| 제로샷 추론 |", "| 제로샷 분류 |")                   # not the book's word
    wrong = wrong.replace("| 01 §2 |", "| 01 §7 |")                              # no such section
    wrong = wrong.replace("05 §1, 05 §3", "06 §1, 05 §3")                        # no such chapter
    wrong = wrong.replace("CLIP 모델의 활용과 뛰어난 성능", "14.2.3")              # not a heading of the book
    wrong = wrong.replace("| 온도 | temperature | — | 05 §2 |",
                          "| 온도 | temperature | — | 05 2 |\n| 모달리티 인코더 | modality encoder | — | 01 §1 |")
    found = "\n".join(problems(read_tables(wrong), terms, chapters))
    for expected in ["제로샷 분류: marked as the book's term but not in book_terms.txt",
                     "제로샷 추론: in book_terms.txt but not in the glossary",
                     "01 §7 — chapter 01 has no section '## 7.'",
                     "06 §1 — there is no chapter 06",
                     "'14.2.3' is not a heading of the book's chapter",
                     "'05 2' is not a course reference",
                     "모달리티 인코더: listed as the course's addition but it is a term of the book"]:
        assert expected in found, f"not caught: {expected}\n{found}"
    assert "no table under" in "\n".join(problems(read_tables("# nothing here"), terms, chapters))


def test_the_book_terms_file_is_one_term_a_line_with_a_comment_on_top():
    lines = BOOK_TERMS.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# "), "book_terms.txt starts with a comment saying what it is"
    terms = read_book_terms("\n".join(lines))
    assert len(terms) >= 50, f"only {len(terms)} terms"
    assert all(t == t.strip() and "|" not in t for t in terms)


def test_the_glossary_and_the_term_list_hold_no_words_from_the_making_of_the_course():
    spec = importlib.util.spec_from_file_location("course_text", ROOT / "tests" / "test_course_text.py")
    course_text = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course_text)
    for path in (GLOSSARY, BOOK_TERMS, ROOT / "README.ko.md"):
        hits = [m.group(0) for m in course_text.WORKSHOP.finditer(path.read_text(encoding="utf-8"))]
        assert not hits, f"{path.name}: {hits}"


def book_sections(text: str) -> dict[str, str]:
    """The book's text split at its headings (a line holding just a heading, with any `#` or `*` around it)."""
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        bare = line.strip().strip("#* ").strip()
        if bare in BOOK_SECTIONS:
            current = bare
        if current is not None:
            sections[current] = sections.get(current, "") + line + "\n"
    return sections


@pytest.mark.skipif(not os.environ.get("MINIMAL_BOOK_TEXT"), reason="MINIMAL_BOOK_TEXT (the book's text) not set")
def test_every_book_term_is_in_its_book_section():
    text = Path(os.environ["MINIMAL_BOOK_TEXT"]).read_text(encoding="utf-8")
    sections = book_sections(text)
    assert list(sections) == list(BOOK_SECTIONS), f"headings found: {list(sections)}"
    rows = read_tables(GLOSSARY.read_text(encoding="utf-8"))
    missing = [t for t in read_book_terms(BOOK_TERMS.read_text(encoding="utf-8")) if t not in text]
    misplaced = [f"{term} (not under {section})" for term, _, section, _ in rows[BOOK_TABLE]
                 if term not in sections.get(section, "")]
    in_book = [term for term, *_ in rows[ADDITIONS_TABLE] if term in text]
    assert not missing and not misplaced and not in_book, (missing, misplaced, in_book)
