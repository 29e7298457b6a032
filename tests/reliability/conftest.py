"""The reliability matrix: prints one table (scenario, runs, exact, failed) at the end of the session.

Every test of this directory is marked ``slow`` (``python -m pytest -m "not slow"`` leaves the matrix out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.matrix import MATRIX, Matrix

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the matrix ``slow`` (the hook sees the whole session's items: only this directory's are marked)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def matrix() -> Matrix:
    return MATRIX


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX.rows:
        return
    terminalreporter.section("reliability matrix")
    for line in MATRIX.table().splitlines():
        terminalreporter.write_line(line)
    MATRIX.dump()


@pytest.fixture(scope="module")
def url(org):
    """The module's simulated organization (its ``org`` fixture) served over HTTP with the canary key."""
    from tests.helpers import CANARY_KEY
    from tests.reliability.helpers import serve
    from usage_collector.simulator import SimulatedAPI

    with serve(SimulatedAPI(org, admin_key=CANARY_KEY)) as base_url:
        yield base_url
