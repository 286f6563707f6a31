"""The type checker finds nothing in `minimal/` (pyrefly, configured in pyproject.toml; `make typecheck` runs it
alone). A warning (a missing stub, say) is printed, not failed on; an error fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYREFLY = Path(sys.executable).with_name("pyrefly")   # installed next to this Python by `make setup`


def test_minimal_type_checks() -> None:
    proc = subprocess.run([str(PYREFLY), "check", "--python-interpreter-path", sys.executable,
                           "--output-format", "min-text"], cwd=ROOT, capture_output=True, text=True)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"pyrefly found problems:\n{report}"
    assert " 0 errors" in report, report
