"""A window that needs more than the DuckDB sink's pool is written again, once, with a larger one
(``DuckDBSink.write_window``, ``RETRY_MEMORY_LIMIT``), and the pool is set back afterwards; a day of
``iter_documents`` that runs out of it is read again, once, under the sink's lock."""

from __future__ import annotations

from typing import Any

from usage_collector.documents import Document
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


class _FullOnce:
    """A cursor whose first read of the documents runs out of memory (as beside a window being written)."""

    def __init__(self, cur: Any, sink: DuckDBSink, calls: list[bool]) -> None:
        self._cur, self._sink, self._calls = cur, sink, calls

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql.startswith("SELECT _id"):
            self._calls.append(self._sink._lock._is_owned())  # type: ignore[attr-defined]
            if len(self._calls) == 1:
                raise engine().OutOfMemoryException("Out of Memory Error: failed to pin block")
        return self._cur.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def test_a_day_read_that_runs_out_of_memory_is_read_again_under_the_lock(tmp_path, monkeypatch):
    sink = DuckDBSink(tmp_path / "r.duckdb")
    try:
        sink.write_window(_docs(30), None)
        con = sink._db()
        calls: list[bool] = []

        class _Con:
            def cursor(self) -> _FullOnce:
                return _FullOnce(con.cursor(), sink, calls)

        monkeypatch.setattr(sink, "_db", lambda: _Con())
        got = [d["_id"] for d in sink.iter_documents(None, start=T0, end=T0 + 86400)]
        assert sorted(got) == [f"id{i:05d}" for i in range(30)]
        assert calls == [False, True]  # the second read holds the lock
    finally:
        monkeypatch.undo()
        sink.close()
