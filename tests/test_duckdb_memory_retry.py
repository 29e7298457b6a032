"""A window that needs more than the DuckDB sink's pool is written again, once, with a larger one
(``DuckDBSink.write_window``, ``RETRY_MEMORY_LIMIT``), and the pool is set back afterwards; a day of
``iter_documents`` that runs out of it is read again, once, under the sink's lock. A fatal DuckDB error (the
automatic checkpoint out of the pool) fails neither a window that was committed nor the windows after it: the file is
opened again and its WAL checkpointed with the larger pool."""

from __future__ import annotations

from typing import Any

import pytest

from usage_collector.documents import Document
from usage_collector.errors import SinkError
from usage_collector.sinks.duckdb import DuckDBSink, engine

T0 = 1_730_419_200  # 2024-11-01T00:00Z


def _docs(n: int) -> list[Document]:
    return [
        Document(
            id=f"id{i:05d}",
            index="metrics-openai.completions-default",
            stream="completions",
            timestamp=T0 + 3600 * (i % 24),
            hash=f"h{i}",
            source={"@timestamp": "2024-11-01T00:00:00Z", "event": {"hash": f"h{i}"}, "pad": f"{i}" * 2000},
        )
        for i in range(n)
    ]


def _limit(sink: DuckDBSink) -> str:
    return str(sink.query("SELECT current_setting('memory_limit')")[0][0])


def test_a_window_larger_than_the_pool_is_written_with_a_larger_one_then_the_pool_is_set_back(tmp_path):
    sink = DuckDBSink(tmp_path / "m.duckdb", memory_limit="1MB")
    try:
        before = _limit(sink)
        stats = sink.write_window(_docs(1000), None)
        assert stats.created == 1000
        assert sink.query("SELECT count(*) FROM documents") == [(1000,)]
        assert _limit(sink) == before
    finally:
        sink.close()


class _Full:
    """A cursor whose first ``times`` reads of the documents run out of memory (as beside a window being written)."""

    def __init__(self, cur: Any, sink: DuckDBSink, calls: list[bool], times: int) -> None:
        self._cur, self._sink, self._calls, self._times = cur, sink, calls, times

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql.startswith("SELECT _id"):
            self._calls.append(self._sink._lock._is_owned())  # type: ignore[attr-defined]
            if len(self._calls) <= self._times:
                raise engine().OutOfMemoryException("Out of Memory Error: failed to pin block")
        return self._cur.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def _full_reads(sink: DuckDBSink, monkeypatch: Any, times: int) -> list[bool]:
    """The sink's cursors made :class:`_Full` ones; returns, per read of the documents, whether it held the lock."""
    con = sink._db()
    calls: list[bool] = []

    class _Con:
        def cursor(self) -> _Full:
            return _Full(con.cursor(), sink, calls, times)

    monkeypatch.setattr(sink, "_db", lambda: _Con())
    return calls


def test_a_day_read_that_runs_out_of_memory_is_read_again_under_the_lock(tmp_path, monkeypatch):
    sink = DuckDBSink(tmp_path / "r.duckdb")
    try:
        sink.write_window(_docs(30), None)
        calls = _full_reads(sink, monkeypatch, times=1)
        got = [d["_id"] for d in sink.iter_documents(None, start=T0, end=T0 + 86400)]
        assert sorted(got) == [f"id{i:05d}" for i in range(30)]
        assert calls == [False, True]  # the second read holds the lock
    finally:
        monkeypatch.undo()
        sink.close()


def test_a_day_that_cannot_be_read_is_a_sink_error_naming_the_file(tmp_path, monkeypatch):
    sink = DuckDBSink(tmp_path / "e.duckdb")
    try:
        sink.write_window(_docs(30), None)
        calls = _full_reads(sink, monkeypatch, times=2)
        with pytest.raises(SinkError, match=r"e\.duckdb: documents not read: OutOfMemoryException: Out of Memory"):
            list(sink.iter_documents(None, start=T0, end=T0 + 86400))
        assert calls == [False, True]
    finally:
        monkeypatch.undo()
        sink.close()


# --- fatal errors and failed commits (DuckDB 2.0) ---------------------------------------------------------------------
#
# DuckDB runs its automatic checkpoint inside COMMIT; when that checkpoint runs out of the pool the COMMIT is durable
# but the database instance is invalidated (``src/transaction/duck_transaction_manager.cpp``,
# ``BuildAutocheckpointError``: "Transaction COMMIT succeeded and is durable, but the autocheckpoint failed. Reopen the
# database instance to recover."), and every later statement says "database has been invalidated". A COMMIT that runs
# out of the pool before that is a TransactionException ("Failed to commit: failed to pin block", seen with a 2 MB
# pool). Seen for real in a 365-day backfill with an 8 MB pool; injected here, at the statement, so each path runs.

_DURABLE_FATAL = (
    "FATAL Error: Transaction COMMIT succeeded and is durable, but the autocheckpoint failed. Reopen the database "
    "instance to recover. Failed to create checkpoint because of error: failed to pin block of size 256.0 KiB"
)
_INVALIDATED = "FATAL Error: Failed: database has been invalidated because of a previous fatal error."


class _Faults:
    """What the next statements of the sink's connections do, and every statement each connection saw."""

    def __init__(self) -> None:
        self.plan: list[tuple[str, str]] = []  # (statement prefix, fault), used once each, in order
        self.seen: list[tuple[int, str]] = []  # (connection number, statement)
        self.connections = 0


class _Con:
    """A real DuckDB connection whose statements fail as ``faults`` says (then it is dead after a fatal one)."""

    def __init__(self, real: Any, faults: _Faults) -> None:
        self._real, self._faults, self._dead = real, faults, False
        faults.connections += 1
        self.number = faults.connections

    def execute(self, sql: str, params: Any = None) -> Any:
        duckdb = engine()
        self._faults.seen.append((self.number, sql))
        if self._dead:
            raise duckdb.FatalException(_INVALIDATED)
        plan = self._faults.plan
        if plan and sql.startswith(plan[0][0]):
            _, fault = plan.pop(0)
            if fault == "durable":
                self._real.execute(sql)  # committed, then the checkpoint fails
                self._dead = True
                raise duckdb.FatalException(_DURABLE_FATAL)
            if fault == "fatal":
                self._dead = True
                raise duckdb.FatalException("FATAL Error: Failed to create checkpoint because of error: failed to pin")
            if fault == "commit":
                raise duckdb.TransactionException("TransactionContext Error: Failed to commit: failed to pin block")
            if fault == "oom":
                raise duckdb.OutOfMemoryException("Out of Memory Error: could not free up enough memory")
        return self._real.execute(sql) if params is None else self._real.execute(sql, params)

    def close(self) -> None:
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """A DuckDB sink (16 MB pool) whose connections are :class:`_Con` s, and their :class:`_Faults`."""
    import usage_collector.sinks.duckdb as module

    real = engine()
    faults = _Faults()

    class _Engine:
        def connect(self, *args: Any, **kwargs: Any) -> _Con:
            return _Con(real.connect(*args, **kwargs), faults)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(module, "engine", _Engine)
    sink = DuckDBSink(tmp_path / "f.duckdb", memory_limit="16MB")
    sink.write_window(_docs(1), None)  # the file and its schema, before any fault
    yield sink, faults
    sink.close()


def _ids(sink: DuckDBSink) -> list[str]:
    return [r[0] for r in sink.query("SELECT _id FROM documents ORDER BY _id")]


def test_a_window_committed_before_a_fatal_checkpoint_is_written_and_the_file_opened_again(faulty):
    sink, faults = faulty
    sink.record_run({"@timestamp": "2026-01-01T00:00:00Z", "run": 1})
    faults.plan = [("COMMIT", "durable")]
    stats = sink.write_window(_docs(30), None)
    assert stats.created == 29  # id00000 was there already: the window counts as written, not failed
    assert faults.connections == 1
    stats = sink.write_window(_docs(40), None)  # the next use opens the file again
    assert stats.created == 10
    assert faults.connections == 2
    second = [sql for n, sql in faults.seen if n == 2]
    # the WAL checkpointed with the larger pool before anything else, then the pool set back
    assert second[:3] == ["SET memory_limit = '128MB'", "CHECKPOINT", "SET memory_limit = '16MB'"]
    assert _ids(sink) == [f"id{i:05d}" for i in range(40)]
    assert [r["run"] for r in sink.list_runs()] == [1]  # committed with the window: not put back, not twice
    assert _limit(sink) == "15.2 MiB"


def test_a_window_whose_commit_failed_fatally_is_written_again_on_a_new_instance(faulty):
    sink, faults = faulty
    sink.record_run({"@timestamp": "2026-01-01T00:00:00Z", "run": 1})
    faults.plan = [("COMMIT", "fatal")]
    stats = sink.write_window(_docs(30), None)
    assert stats.created == 29
    assert faults.connections == 2
    assert _ids(sink) == [f"id{i:05d}" for i in range(30)]
    assert [r["run"] for r in sink.list_runs()] == [1]
    assert _limit(sink) == "15.2 MiB"


def test_a_commit_that_ran_out_of_the_pool_is_written_again_with_a_larger_one(faulty):
    sink, faults = faulty
    faults.plan = [("COMMIT", "commit")]
    stats = sink.write_window(_docs(30), None)
    assert stats.created == 29
    retried = [sql for _, sql in faults.seen if sql.startswith("SET memory_limit")]
    assert retried == ["SET memory_limit = '128MB'", "SET memory_limit = '16MB'"]
    assert _ids(sink) == [f"id{i:05d}" for i in range(30)]
    assert _limit(sink) == "15.2 MiB"


def test_a_pool_that_cannot_be_set_back_yet_does_not_fail_the_window(faulty):
    sink, faults = faulty
    # the window runs out of the pool, is written with the larger one, which DuckDB then refuses to shrink
    faults.plan = [("COMMIT", "commit"), ("SET memory_limit = '16MB'", "oom")]
    assert sink.write_window(_docs(30), None).created == 29
    assert _limit(sink) == "122.0 MiB"  # still the larger pool
    assert sink.write_window(_docs(31), None).created == 1  # the next window sets it back first
    assert _limit(sink) == "15.2 MiB"
    assert _ids(sink) == [f"id{i:05d}" for i in range(31)]


def test_a_transaction_that_cannot_be_rolled_back_is_left_with_its_connection(faulty):
    sink, faults = faulty
    # a statement of the window runs out of the pool, and so does the ROLLBACK: that connection is closed (which
    # rolls the transaction back) and the window written again on another, not on one whose transaction is aborted
    faults.plan = [("INSERT INTO documents", "oom"), ("ROLLBACK", "oom")]
    assert sink.write_window(_docs(30), None).created == 29
    assert faults.connections == 2
    assert _ids(sink) == [f"id{i:05d}" for i in range(30)]
