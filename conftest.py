"""The order `make test` runs things in, for two processes on two cores (pytest-xdist, `--dist loadscope`).

A notebook is one unit of work (its cells share one kernel), a unit-test file another, and each process takes the
next unit when it is free. So the longest notebooks go first (chapters 08, 09 and 04 take most of the time:
≈ 240, 120 and 90 s in fast mode on the 2-core CPU), the English edition of every chapter before any Korean one —
a Korean chapter then finds the English chapter's training runs done and takes them (minimal/shared_runs.py) —
and the many short unit-test files last, where they fill the gaps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LONGEST_FIRST = ("08", "09", "04")


def _rank(item: pytest.Item) -> tuple[int, int, str]:
    path = Path(str(item.fspath))
    if path.suffix != ".ipynb":
        return (2, 0, str(path))
    korean = path.parent.name == "ko"
    number = path.name[:2]
    first = LONGEST_FIRST.index(number) if number in LONGEST_FIRST else len(LONGEST_FIRST)
    return (int(korean), first, path.name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable sort: the cells of a notebook (and the tests of a file) keep their order."""
    items.sort(key=_rank)
