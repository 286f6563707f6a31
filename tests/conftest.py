"""Unit tests never share training runs: each test trains what it says it trains.

`make test` sets MINIMAL_SHARE_DIR for its whole pytest run so that a chapter's Korean edition can take the
training runs of its English edition (minimal/shared_runs.py); the unit tests run in the same processes, so the
variable is removed around each of them (tests/test_shared_runs.py sets its own).
"""

from __future__ import annotations

import pytest

from minimal.shared_runs import SHARE_ENV_VAR


@pytest.fixture(autouse=True)
def _no_shared_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARE_ENV_VAR, raising=False)
