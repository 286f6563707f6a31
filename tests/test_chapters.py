"""What every chapter notebook must have, beyond running (nbval executes them: see the README's test command).

A new notebook in chapters/ is picked up by both this file and nbval without editing any list.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# tests/sync_colab.py is a script as well as a module; load it by path (tests/ is not a package)
_spec = importlib.util.spec_from_file_location("sync_colab", ROOT / "tests" / "sync_colab.py")
sync_colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_colab)
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def text_of(nb: dict, kind: str) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind)


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param, json.loads(request.param.read_text())


def test_there_are_chapters():
    assert NOTEBOOKS, "chapters/ has no notebooks"


def test_names_follow_nn_topic():
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name


def test_colab_badge_and_install_cell_use_the_pyproject_url(notebook):
    path, _ = notebook
    assert sync_colab.problems(path, sync_colab.repo_url()) == [], "run `make sync-urls`"


def test_title_names_the_book_section(notebook):
    path, nb = notebook
    first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"])
    assert re.search(r"^# .+", first, re.M), f"{path.name}: first markdown cell needs a '# title'"
    assert re.search(r"§\s?14\.\d", first), f"{path.name}: the title cell should name the book section (§14.x)"


SUMMARY = "## Summary — what you built, what to remember"
NUMBERED = re.compile(r"^## \d+\.")                       # a numbered section: "## 3. The temperature"
EXERCISE = re.compile(r"^### Exercise (\d+) — \S")
SOLUTION = re.compile(r"^### Solution (\d+)\s*$")


def headings(nb: dict) -> list[tuple[int, str]]:
    """(cell index, line) for every markdown heading line, in order; lines inside ``` fences are code, not headings."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        fenced = False
        for line in "".join(cell["source"]).splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced and line.startswith("#"):
                out.append((i, line.rstrip()))
    return out


def first_numbered_section(nb: dict) -> int:
    return next((i for i, line in headings(nb) if NUMBERED.match(line)), len(nb["cells"]))


def test_objectives_and_time_table_come_before_the_sections(notebook):
    path, nb = notebook
    objectives = [i for i, line in headings(nb) if line == "## Objectives"]
    assert len(objectives) == 1, f"{path.name}: needs exactly one '## Objectives' heading, found {len(objectives)}"
    install = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    start = first_numbered_section(nb)
    assert install < objectives[0] < start, \
        f"{path.name}: '## Objectives' belongs after the Colab install cell and before section 1"
    before = "\n".join("".join(c["source"]) for c in nb["cells"][objectives[0]:start] if c["cell_type"] == "markdown")
    assert re.search(r"^\s*[-*] |^\s*\d+\. ", before, re.M), f"{path.name}: list the objectives as bullets"
    assert re.search(r"^\|\s*machine\s*\|", before, re.M | re.I), f"{path.name}: needs the time table (| machine | ...)"
    assert re.search(r"^\|\s*2-core CPU", before, re.M), f"{path.name}: the time table needs a '2-core CPU' row"


def test_summary_comes_after_the_sections_and_before_the_exercises(notebook):
    path, nb = notebook
    heads = headings(nb)
    summaries = [i for i, line in heads if line == SUMMARY]
    exercises = [i for i, line in heads if line == "## Exercises"]
    assert len(summaries) == 1, f"{path.name}: needs exactly one '{SUMMARY}', found {len(summaries)}"
    assert len(exercises) == 1, f"{path.name}: needs exactly one '## Exercises', found {len(exercises)}"
    others = [line for _, line in heads if line != SUMMARY
              and re.match(r"#+ (\d+\.\s*)?(summary|what to keep|what to take away)", line, re.I)]
    assert not others, f"{path.name}: one summary, under the exact heading '{SUMMARY}': {others}"
    order = [line for _, line in heads if line in (SUMMARY, "## Exercises") or NUMBERED.match(line)]
    assert order[-2:] == [SUMMARY, "## Exercises"], \
        f"{path.name}: the summary follows the last numbered section and precedes '## Exercises': {order}"


def test_each_exercise_is_followed_by_its_worked_solution(notebook):
    path, nb = notebook
    heads = headings(nb)
    start = next((i for i, line in heads if line == "## Exercises"), None)
    assert start is not None, f"{path.name}: needs '## Exercises'"
    loose = [line for _, line in heads if re.search(r"exercise|solution", line, re.I) and line != "## Exercises"
             and not EXERCISE.match(line) and not SOLUTION.match(line)]
    loose += re.findall(r"^\*\*Solutions?\b.*", text_of(nb, "markdown"), re.M)
    assert not loose, f"{path.name}: use '### Exercise N — title' and '### Solution N' headings: {loose}"
    found = [(i, int(EXERCISE.match(line)[1])) for i, line in heads if EXERCISE.match(line)]
    numbers = [n for _, n in found]
    assert len(numbers) >= 2, f"{path.name}: needs at least two exercises ('### Exercise 1 — ...')"
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: exercises numbered {numbers}, want 1..N"
    assert all(i >= start for i, _ in found), f"{path.name}: every exercise belongs under '## Exercises'"
    cells = nb["cells"]
    ends = [i for i, _ in found[1:]] + [len(cells)]
    for (first, n), end in zip(found, ends, strict=True):
        # the statement first, then a markdown cell that starts with the solution's heading, then the solution
        starts = [i for i in range(first + 1, end) if cells[i]["cell_type"] == "markdown"
                  and SOLUTION.match("".join(cells[i]["source"]).split("\n", 1)[0])]
        assert len(starts) == 1, f"{path.name}: exercise {n} needs one markdown cell starting '### Solution {n}'"
        head, *rest = "".join(cells[starts[0]]["source"]).split("\n", 1)
        assert SOLUTION.match(head)[1] == str(n), f"{path.name}: exercise {n} is followed by '{head}'"
        worked = "".join(rest).strip() or any(c["cell_type"] == "code" or "".join(c["source"]).strip()
                                              for c in cells[starts[0] + 1:end])
        assert worked, f"{path.name}: '### Solution {n}' has no worked solution after it"


def test_last_code_cell_prints_the_wall_time(notebook):
    path, nb = notebook
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    assert "ch.elapsed()" in "".join(last["source"]), f"{path.name}: the last code cell prints the chapter's wall time"


def test_committed_with_executed_outputs(notebook):
    path, nb = notebook
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    executed = [c for c in code if c.get("outputs")]
    assert executed, f"{path.name}: commit it executed in full mode so readers see the results"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed outputs contain an error: {errors[0].get('ename')}"


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.fail("ruff is not installed in this environment: run `make setup`")
    result = subprocess.run([str(ruff), "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
