"""The order `make test` runs things in, for two processes on two cores (pytest-xdist).

A chapter's two editions, English then Korean, form one unit of work that one process runs from start to end
(the scheduler below; the cells of a notebook must share one kernel anyway), so the Korean edition always finds
the English edition's training runs and answers done and takes them (minimal/shared_runs.py). Each unit-test file
is a unit too. A process takes the next unit when it is free; the units go in this order (`--no-loadscope-reorder`
keeps it): the longest chapters first (08, 09, 04 and 10 take most of the time: ≈ 190, 125, 60 and 45 s for the
English edition in fast mode on the 2-core CPU; 04 before 09, so that on a fresh machine only chapter 08 builds
the frozen LLM's cache from the wheel and 09 starts when it is there), then the other chapters, then the
unit-test files, the longest first (the frozen-LLM, fresh-install and multi-process tests ≈ 15-35 s), the
short ones filling the gaps at the end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

LONGEST_FIRST = ("08", "04", "09", "10")
LONGEST_UNIT_FILES = ("test_mllm.py", "test_colab_install.py", "test_train.py")
CHAPTER = re.compile(r"^chapters/(?:ko/)?(\d\d)_[^/]*\.ipynb::")


def _order(item: pytest.Item) -> tuple[int, int, str, int]:
    path = Path(str(item.fspath))
    if path.suffix != ".ipynb":
        long = LONGEST_UNIT_FILES.index(path.name) if path.name in LONGEST_UNIT_FILES else len(LONGEST_UNIT_FILES)
        return (2, long, str(path), 0)
    number = path.name[:2]
    first = LONGEST_FIRST.index(number) if number in LONGEST_FIRST else len(LONGEST_FIRST)
    return (int(first == len(LONGEST_FIRST)), first, number, int(path.parent.name == "ko"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable sort: the cells of a notebook (and the tests of a file) keep their order."""
    items.sort(key=_order)


class ChapterScheduling(LoadScopeScheduling):
    """pytest-xdist's `--dist loadscope`, with a chapter's English and Korean notebooks in one scope."""

    def _split_scope(self, nodeid: str) -> str:
        chapter = CHAPTER.match(nodeid)
        return f"chapter {chapter.group(1)}" if chapter else super()._split_scope(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadScopeScheduling | None:
    """The scheduler above for `--dist loadscope`; xdist's own otherwise."""
    return ChapterScheduling(config, log) if config.getvalue("dist") == "loadscope" else None
