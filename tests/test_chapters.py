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


def test_objectives_time_table_and_exercises_with_solutions(notebook):
    path, nb = notebook
    md = text_of(nb, "markdown").lower()
    assert "objective" in md, f"{path.name}: state the learning objectives"
    assert re.search(r"\|\s*2-core cpu", md), f"{path.name}: needs a time table with a 2-core CPU row/column"
    n_exercises = len(re.findall(r"^#+ .*exercise \d", md, re.M))
    n_solutions = len(re.findall(r"solution", md))
    assert n_exercises >= 2, f"{path.name}: needs at least two exercises ('### Exercise 1', ...)"
    assert n_solutions >= n_exercises, f"{path.name}: every exercise needs a worked solution"


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
