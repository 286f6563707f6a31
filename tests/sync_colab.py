"""Keep every chapter's Colab badge and install cell in step with the one repository URL in pyproject.toml.

    python tests/sync_colab.py           # report notebooks that disagree (exit 1 if any)
    python tests/sync_colab.py --write   # rewrite them

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
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_MARK = 'if "google.colab" in sys.modules:'


def repo_url() -> str:
    """The repository URL from pyproject.toml [project.urls] Repository."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def badge(url: str, notebook: Path) -> str:
    github_path = url.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{github_path}/blob/main/chapters/{notebook.name}"
    return f"[![Open In Colab]({BADGE_IMG})]({target})"


def install_cell(url: str) -> str:
    return ("# On Colab, install the course package (does nothing elsewhere).\n"
            "import sys\n"
            f"{INSTALL_MARK}\n"
            f'    !pip install -q "git+{url}"')


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
            if INSTALL_MARK in "".join(code["source"]):
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
    found = [p for nb in sorted(CHAPTERS.glob("*.ipynb")) for p in problems(nb, url, write)]
    print("\n".join(found) or "all chapters agree with pyproject.toml")
    return 1 if found and not write else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
