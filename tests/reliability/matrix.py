"""The reliability matrix's bookkeeping: each scenario run is counted as *exact* or *failed*.

A test wraps each scenario run in ``with MATRIX.run("crash: duckdb", "window.written:11"):``. The block
counts as **exact** when every assertion in it passed (for a scenario that must stop, that includes the
clear error, the checkpoint check and the recovery rerun reaching the exact truth), **failed** when any
assertion or error escaped it. A skip counts as neither. ``tests/reliability/conftest.py`` prints the table
at the end of the session and, when ``RELIABILITY_MATRIX_JSON`` names a file, writes the rows there
(``scripts/reliability_matrix.py`` reads it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: The order of the table (scenario prefixes); anything else goes last in the order first seen.
ORDER = ("crash", "api", "sink", "elasticsearch", "revisions", "overlap", "bad input", "canary")

JSON_ENV = "RELIABILITY_MATRIX_JSON"


@dataclass
class Row:
    scenario: str
    runs: int = 0
    exact: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class Matrix:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    @contextmanager
    def run(self, scenario: str, detail: str = "") -> Iterator[None]:
        """Count one run of ``scenario``; ``detail`` names it in the list of failures."""
        import pytest

        row = self.rows.setdefault(scenario, Row(scenario))
        t0 = time.monotonic()
        try:
            yield
        except (pytest.skip.Exception, pytest.xfail.Exception):
            raise
        except BaseException:
            row.runs += 1
            row.failed += 1
            row.failures.append(detail or "?")
            raise
        else:
            row.runs += 1
            row.exact += 1
        finally:
            row.seconds += time.monotonic() - t0

    def sorted_rows(self) -> list[Row]:
        def key(item: tuple[int, Row]) -> tuple[int, int]:
            i, row = item
            prefix = next((n for n, p in enumerate(ORDER) if row.scenario.startswith(p)), len(ORDER))
            return prefix, i

        return [r for _, r in sorted(enumerate(self.rows.values()), key=key)]

    def table(self) -> str:
        """A Markdown table: scenario, runs, exact, failed."""
        lines = ["| scenario | runs | exact | failed |", "|---|---:|---:|---:|"]
        for r in self.sorted_rows():
            failed = f"{r.failed} ({', '.join(r.failures)})" if r.failed else "0"
            lines.append(f"| {r.scenario} | {r.runs} | {r.exact} | {failed} |")
        total = self.sorted_rows()
        lines.append(
            f"| **total** | **{sum(r.runs for r in total)}** | **{sum(r.exact for r in total)}** | "
            f"**{sum(r.failed for r in total)}** |"
        )
        return "\n".join(lines)

    def dump(self) -> None:
        path = os.environ.get(JSON_ENV)
        if path:
            Path(path).write_text(json.dumps([asdict(r) for r in self.sorted_rows()], indent=1))


MATRIX = Matrix()
