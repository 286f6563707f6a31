"""The type checker finds nothing in `minimal/` (mypy, configured in pyproject.toml; `make typecheck` runs it alone).

It runs as a test so that `make test` gives it one of the two cores while the notebooks run on the other, rather
than making everything wait for it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_minimal_type_checks() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"mypy found problems:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout, proc.stdout
