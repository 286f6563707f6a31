"""Keep every chapter's Colab badge and install cell in step with the one repository URL in pyproject.toml.

    python tests/sync_colab.py           # report notebooks that disagree (exit 1 if any)
    python tests/sync_colab.py --write   # rewrite them
    python tests/sync_colab.py --write chapters/03_text_transformer.ipynb   # only the notebooks named

`tests/test_chapters.py` runs the check, so a notebook with a stale or missing URL fails the test command.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
COLAB_TEST = '"google.colab" in sys.modules'   # every version of the install cell asks this
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_MARK = 'if "google.colab" in sys.modules or os.environ.get("MINIMAL_COLAB") == "1":'


def repo_url() -> str:
    """The repository URL from pyproject.toml [project.urls] Repository."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def badge(url: str, notebook: Path) -> str:
    github_path = url.removeprefix("https://github.com/")
    where = "chapters/ko" if notebook.parent.name == "ko" else "chapters"     # the Korean edition lives in chapters/ko
    target = f"https://colab.research.google.com/github/{github_path}/blob/main/{where}/{notebook.name}"
    return f"[![Open In Colab]({BADGE_IMG})]({target})"


def install_cell(url: str) -> str:
    """The first code cell of every chapter. On Colab it clones the course (code, trained checkpoints, data), installs
    it editable with its dependencies (pyproject.toml) and a Hangul font, and makes it importable in the running
    kernel; elsewhere it does nothing. MINIMAL_COLAB=1 forces the Colab branch (tests/test_colab_install.py does),
    MINIMAL_COLAB_DIR picks where the course is cloned. A placeholder URL is refused: nobody should install code from
    whoever registers a placeholder name."""
    return INSTALL_CELL.replace("{url}", url)


INSTALL_CELL = f"""\
# On Colab: fetch the course (code, trained checkpoints, data), install it with its dependencies and a Hangul
# font. Elsewhere this cell does nothing (MINIMAL_COLAB=1 forces it; MINIMAL_COLAB_DIR picks the folder).
import os
import sys

COURSE_URL = "{{url}}"  # from pyproject.toml [project.urls]
{INSTALL_MARK}
    import importlib
    import site
    import subprocess
    import sysconfig

    if "PLACEHOLDER" in COURSE_URL.upper():
        raise RuntimeError(f"{{COURSE_URL}} is a placeholder, not the course's published address: refusing to "
                           "install from it. Clone the course yourself and open this notebook from the clone.")
    course = os.environ.get("MINIMAL_COLAB_DIR", "/content/minimal-mllm")
    if not os.path.isdir(course):
        subprocess.run(["git", "clone", "-q", "--depth", "1", COURSE_URL, course], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", course], check=True)
    if "google.colab" in sys.modules:   # NanumGothic for Korean text in figures
        subprocess.run("apt-get -qq install -y fonts-nanum > /dev/null", shell=True, check=True)
    site.addsitedir(sysconfig.get_paths()["purelib"])   # the new install, importable without a restart
    importlib.invalidate_caches()"""


def problems(notebook: Path, url: str, write: bool = False) -> list[str]:
    """What is out of step in one notebook (and fix it when `write`)."""
    nb = json.loads(notebook.read_text())
    cells = nb["cells"]
    found = []
    markdown = next((c for c in cells if c["cell_type"] == "markdown"), None)
    code = next((c for c in cells if c["cell_type"] == "code"), None)
    want_badge, want_install = badge(url, notebook), install_cell(url)
    if markdown is None or code is None:
        return [f"{notebook.name}: needs a markdown cell (title + badge) and a code cell (Colab install)"]
    text = "".join(markdown["source"])
    if want_badge not in text:
        found.append(f"{notebook.name}: Colab badge missing or not pointing at {url}")
        if write:
            text = re.sub(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n?", "", text)
            markdown["source"] = (want_badge + "\n\n" + text.lstrip()).splitlines(keepends=True)
    if "".join(code["source"]).strip() != want_install:
        found.append(f"{notebook.name}: first code cell is not the Colab install cell for {url}")
        if write:
            if COLAB_TEST in "".join(code["source"]):   # an install cell, maybe an older one: replace it
                code["source"] = want_install.splitlines(keepends=True)
            else:
                cells.insert(cells.index(code), {"cell_type": "code", "execution_count": None, "metadata": {},
                                                 "outputs": [], "source": want_install.splitlines(keepends=True)})
    if write and found:
        notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return found


def main(argv: list[str]) -> int:
    write = "--write" in argv
    url = repo_url()
    named = [Path(a).resolve() for a in argv if a != "--write"]
    notebooks = named or sorted(CHAPTERS.glob("*.ipynb")) + sorted(CHAPTERS.glob("ko/*.ipynb"))
    found = [p for nb in notebooks for p in problems(nb, url, write)]
    print("\n".join(found) or "all chapters agree with pyproject.toml")
    return 1 if found and not write else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
