"""A scheduled cycle reconciles only the closed days whose documents it changed (P3, issue 18).

Each write names the documents it created or replaced (``WriteStats.ids_created``/``ids_updated``); the collector
turns them into UTC days (:func:`usage_collector.collector.days_written`), and ``reconcile.after_cycle`` rebuilds
those days of the costs restatement window only. A sink that does not name its documents leaves the days unknown:
then every closed day of the window is rebuilt, as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import usage_collector.reconcile as reconcile_mod
from tests.helpers import make_settings
from usage_collector.collector import StreamResult, days_written
from usage_collector.documents import Document
from usage_collector.errors import CollectorError
from usage_collector.planning import Window
from usage_collector.sinks.base import BucketSet, WriteStats
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

DAY = 86400
D0 = 1_790_000_000 // DAY * DAY  # a UTC midnight


def doc(i: str, ts: int, h: str = "h") -> Document:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = {"@timestamp": stamp, "event": {"hash": h, "dataset": "openai.costs"}}
    return Document(i, "metrics-openai.costs-default", "costs", ts, h, source)


BUCKETS = BucketSet("default", "costs", "1d", "metrics-openai.costs-default", frozenset({D0, D0 + DAY}))
DOCS = [doc("a", D0 + 3600), doc("b", D0 + DAY), doc("c", D0 + 2 * DAY)]


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (WriteStats(unchanged=3), set()),  # nothing changed: no day
        (WriteStats(created=1, unchanged=2, ids_created=["a"]), {D0}),  # the day of its bucket start
        (WriteStats(updated=2, unchanged=1, ids_updated=["b", "c"]), {D0 + DAY, D0 + 2 * DAY}),
        (WriteStats(updated=1, unchanged=2), None),  # counted but not named: unknown
        (WriteStats(unchanged=3, deleted=1), {D0, D0 + DAY}),  # superseded documents: every re-read bucket's day
    ],
    ids=["unchanged", "created", "updated", "unnamed", "deleted"],
)
def test_the_days_a_write_changed(stats: WriteStats, expected: set[int] | None) -> None:
    assert days_written(DOCS, stats, BUCKETS) == expected


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_the_file_sinks_name_what_they_wrote(tmp_path: Path, kind: str) -> None:
    sink = DuckDBSink(tmp_path / "s.duckdb") if kind == "duckdb" else NdjsonSink(tmp_path / "s.ndjson")
    try:
        first = sink.write_window(DOCS[:2], None, None)
        again = sink.write_window([doc("a", D0 + 3600, "changed"), DOCS[1], DOCS[2]], None, None)
    finally:
        sink.close()
    assert (first.ids_created, first.ids_updated) == (["a", "b"], [])
    assert (again.ids_created, again.ids_updated, again.unchanged) == (["c"], ["a"], 1)
    assert days_written(DOCS, again, None) == {D0, D0 + 2 * DAY}


def result(days: set[int] | None) -> StreamResult:
    r = StreamResult("default", "costs", "1d", "run", Window(0, 0), stats=WriteStats(updated=1))
    r.days_written = days
    return r


class Reconciler:
    """``after_cycle`` of one scheduled cycle on a DuckDB sink seen through a spy: which days it read, and a switch
    that makes the sink's reads fail."""

    def __init__(self, path: Path) -> None:
        self.sink = DuckDBSink(path)
        self.settings = make_settings()
        self.org = self.settings.orgs()[0]
        self.now = D0 + 10 * DAY + 12 * 3600
        self.failing = False
        self._reads: list[int | None] = []

    def __getattr__(self, name: str) -> object:  # the sink's other methods, as they are
        return getattr(self.sink, name)

    def iter_documents(self, stream=None, *, start=None, end=None):  # type: ignore[no-untyped-def]
        self._reads.append(start)
        if self.failing:
            raise CollectorError("sink unavailable")
        return self.sink.iter_documents(stream, start=start, end=end)

    def days_read(self, days: set[int] | None) -> list[int | None]:
        """The days one cycle that changed ``days`` reconciled (read)."""
        self._reads.clear()
        reconcile_mod.after_cycle(self, self.settings, self.org, [result(days)], None, self.now)  # type: ignore[arg-type]
        return sorted(r for r in self._reads if r is not None)

    def pending(self) -> str | None:
        cp = self.sink.load_checkpoint(self.org.id, reconcile_mod.PENDING_STREAM, reconcile_mod.PENDING_WIDTH)
        return None if cp is None else cp.last_error


def test_a_scheduled_cycle_reconciles_only_the_days_it_changed(tmp_path: Path) -> None:
    r = Reconciler(tmp_path / "r.duckdb")
    try:
        every = r.days_read(None)  # unknown: every closed day of the costs restatement window
        assert len(every) >= 2
        assert r.days_read({every[-1]}) == [every[-1]]
        assert r.days_read({every[0], every[-1] + DAY}) == [every[0]]  # today (not closed yet) is never reconciled
        assert r.days_read(set()) == []
    finally:
        r.sink.close()


def test_after_a_failed_reconciliation_every_closed_day_is_rebuilt_until_one_succeeds(tmp_path: Path) -> None:
    """A day whose reconciliation failed is not left stale until one of its documents changes: the failure is a
    checkpoint (``status`` shows its error), and while it stands a scheduled cycle rebuilds every closed day of the
    window; the next success clears it."""
    r = Reconciler(tmp_path / "p.duckdb")
    try:
        every = r.days_read(None)
        assert len(every) >= 2 and r.pending() is None  # no failure yet: no checkpoint either
        r.failing = True
        assert r.days_read({every[0]}) == [every[0]]  # fails at its first read
        assert r.pending() == "CollectorError: sink unavailable"
        r.failing = False
        assert r.days_read({every[-1]}) == every  # the failed day is rebuilt with the others
        assert r.pending() is None
        assert r.days_read({every[-1]}) == [every[-1]]  # cleared: only the changed days again
    finally:
        r.sink.close()
