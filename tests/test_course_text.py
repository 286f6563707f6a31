"""What a learner reads holds no words from the making of the course, no tracebacks and no `nan` results.

Scanned: every chapter notebook (markdown, code and committed outputs), README.md and ARCHITECTURE.md. The word
lists below are phrases, not single words, where a single word would also be ordinary course language ("seed" is a
random seed; "design" and "budget" are fine; "the seed's figure" or a `seed/` path are not).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("**/*.ipynb"))
DOCUMENTS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md"]

# Words from how the course was made, which mean nothing to a learner. Case-insensitive regular expressions.
WORKSHOP_WORDS = [
    r"\bseed's\b", r"\bthe seed (?:text|chapter|file|figure|book)", r"\bseed file", r"\bseed/", r"shared/seed",
    r"\bissue #?\d", r"\b(?:this|the|an|that|open|closed) issue\b", r"\bissues? (?:tracker|thread|title)",
    r"\bsessions?\b", r"\bdevice tool\b", r"\bdevice time\b", r"\bcpu lock\b", r"\bthe lock\b", r"\bflock\b",
    r"minimal-cpu\.lock", r"\bDESIGN\s*§", r"\bDESIGN\.md\b", r"\bacceptance\b", r"\bworkshop\b", r"/work/",
    r"\bmachine (?:was )?lent\b", r"\blent (?:for|to) (?:the|this)\b", r"\bthe brief\b", r"\bhelper session",
]
WORKSHOP = re.compile("|".join(f"(?:{w})" for w in WORKSHOP_WORDS), re.I)
# A chapter may print the clear message a bad input gets (it catches it to show it); a traceback means a crash.
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
# a printed nan (torch and numpy print `nan`, pandas `NaN`), not the word in prose ("NaN features are refused")
NAN = re.compile(r"(?<![\w.'\"])(?:nan|NaN(?! [A-Za-z]))(?![\w'\"(])")


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _output_text(output: dict) -> str:
    parts = [output.get("text", "")]
    for mime in ("text/plain", "text/markdown", "text/html", "text/latex"):
        parts.append(output.get("data", {}).get(mime, ""))
    if output.get("output_type") == "error":
        parts += [output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])]
    return _strip_ansi("".join("".join(p) if isinstance(p, list) else p for p in parts))


def _pieces(path: Path):
    """(where, kind, text) for every markdown cell, code cell and output of a notebook, or for a document."""
    if path.suffix != ".ipynb":
        yield path.name, "markdown", path.read_text()
        return
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        heading = next((line for line in "".join(cell["source"]).splitlines() if line.startswith("#")), "")
        where = f"{path.name} cell {i} {heading[:50]!r}"
        yield where, cell["cell_type"], "".join(cell["source"])
        for output in cell.get("outputs", []):
            yield where, "output", _output_text(output)
            if output.get("output_type") == "error":
                yield where, "error", f"an error output: {output.get('ename')}"


def _hits(pattern: re.Pattern, path: Path, kinds: tuple[str, ...]) -> list[str]:
    return [f"{where} [{kind}]: …{text[max(0, m.start() - 50):m.end() + 30]!r}…"
            for where, kind, text in _pieces(path) if kind in kinds for m in pattern.finditer(text)]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", NOTEBOOKS + DOCUMENTS, ids=_name)
def test_no_words_from_the_making_of_the_course(path):
    hits = _hits(WORKSHOP, path, ("markdown", "code", "output", "raw"))
    assert not hits, "words a learner should not meet:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_no_tracebacks_or_errors_in_outputs(path):
    hits = _hits(TRACEBACK, path, ("output",)) + [w for w, kind, _ in _pieces(path) if kind == "error"]
    assert not hits, "committed outputs show an error:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_no_nan_in_outputs(path):
    hits = _hits(NAN, path, ("output",))
    assert not hits, "committed outputs show nan:\n" + "\n".join(hits)


def test_the_scan_catches_what_it_should_and_spares_ordinary_words():
    caught = ["as the seed's central figure shows", "see DESIGN §5", "read DESIGN.md", "the device tool gave us",
              "under the CPU lock", "this session", "the acceptance bar", "a workshop note", "in /work/shared/seed/x",
              "fixed in issue #12", "the machine lent for it"]
    spared = ["with the seed 0", "seed everything", "world seed 20261128", "our design", "the CPU budget",
              "NaN features are errors", "prompt engineering", "lock-step updates", "no memory issues"]
    assert all(WORKSHOP.search(s) for s in caught), [s for s in caught if not WORKSHOP.search(s)]
    assert not any(WORKSHOP.search(s) for s in spared), [s for s in spared if WORKSHOP.search(s)]
    assert NAN.search("loss nan at step 3") and NAN.search("tensor([nan, 1.0])") and NAN.search("| NaN |")
    assert not NAN.search('float("nan")') and not NAN.search("NaN features are refused")
    assert TRACEBACK.search("Traceback (most recent call last):\n  File") and not TRACEBACK.search("ValueError: bad")
