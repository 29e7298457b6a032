"""The reliability matrix: prints one table (scenario, runs, exact, failed) at the end of the session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability.matrix import MATRIX, Matrix


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
