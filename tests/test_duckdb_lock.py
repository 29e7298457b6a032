"""DuckDB: a window of at most ``_SERIALIZE_FIRST`` documents is serialized before the sink's lock is taken (the
lock every stream shares is held for DuckDB's statements only, bench/p6); a larger one a chunk at a time under it.
Either way the stored sources are the documents' JSON, and the statistics are those of the window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_duckdb_window_read import DS, T0, H, doc
from usage_collector.documents import dumps
from usage_collector.sinks import duckdb as duckdb_module
from usage_collector.sinks.base import BucketSet, Checkpoint
from usage_collector.sinks.duckdb import _CHUNK, _SERIALIZE_FIRST, DuckDBSink


def _window(n: int, h: str = "h") -> list[Any]:
    return [doc(f"d{i:05d}", T0 + (i % 48) * H, h) for i in range(n)]


@pytest.mark.parametrize(
    ("size", "under_lock"),
    [(10, False), (_SERIALIZE_FIRST, False), (_SERIALIZE_FIRST + 1, True)],
    ids=["small", "at-the-limit", "larger"],
)
def test_a_window_is_serialized_before_the_lock_unless_it_is_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, under_lock: bool
) -> None:
    sink = DuckDBSink(tmp_path / "u.duckdb")
    calls: list[bool] = []  # for each dumps call: was the sink's lock held?

    def spy(obj: Any) -> bytes:
        calls.append(sink._lock._is_owned())  # type: ignore[attr-defined]
        return dumps(obj)

    monkeypatch.setattr(duckdb_module, "dumps", spy)
    docs = _window(size)
    replaces = BucketSet("o1", "completions", "1h", DS, frozenset(d.timestamp for d in docs))
    try:
        cp = Checkpoint("o1", "completions", "1h", position=T0)
        stats = sink.write_window(docs, cp, replaces)
        assert (stats.created, stats.unchanged) == (size, 0)
        # each document and the checkpoint once; a larger window's documents under the lock, the checkpoint before
        assert calls.count(True) == (size if under_lock else 0)
        assert calls.count(False) == (1 if under_lock else size + 1)
        rows = dict(sink.query("SELECT _id, source FROM documents"))
        assert rows == {d.id: dumps(d.source).decode() for d in docs}
        assert sink.load_checkpoint("o1", "completions", "1h") == cp
        calls.clear()
        # again, one changed: only that one is written (all are serialized first, the unchanged ones for nothing)
        again = _window(size)
        again[3] = doc(again[3].id, again[3].timestamp, "changed")
        stats = sink.write_window(again, None, replaces)
        assert (stats.created, stats.updated, stats.unchanged, stats.deleted) == (0, 1, size - 1, 0)
        assert stats.ids_updated == [again[3].id]
        assert dict(sink.query("SELECT _id, hash FROM documents WHERE hash = 'changed'")) == {again[3].id: "changed"}
    finally:
        sink.close()


def test_save_checkpoint_and_record_run_serialize_before_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = DuckDBSink(tmp_path / "u.duckdb")
    calls: list[bool] = []

    def spy(obj: Any) -> bytes:
        calls.append(sink._lock._is_owned())  # type: ignore[attr-defined]
        return dumps(obj)

    monkeypatch.setattr(duckdb_module, "dumps", spy)
    try:
        cp = Checkpoint("o1", "costs", "1d", position=T0)
        sink.save_checkpoint(cp)
        sink.record_run({"@timestamp": "2026-01-01T00:00:00Z", "x": 1})
        assert calls == [False, False]
        assert sink.load_checkpoint("o1", "costs", "1d") == cp
        assert sink.list_runs()[0]["x"] == 1
    finally:
        sink.close()


def test_the_chunk_is_smaller_than_the_limit() -> None:
    assert _CHUNK < _SERIALIZE_FIRST  # a collector part (about _CHUNK documents) is serialized before the lock


@pytest.mark.parametrize(
    ("n", "inserts"),
    [(3, [3]), (_CHUNK + 3, [_CHUNK + 3]), (3 * _CHUNK // 2, [3 * _CHUNK // 4] * 2), (5 * _CHUNK // 2 + 1, None)],
)
def test_a_window_is_inserted_in_chunks_of_about_chunk_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, inserts: list[int] | None
) -> None:
    # a collector part (a thousand documents and the rest of their last bucket) is one INSERT, not two
    sizes: list[int] = []
    insert = DuckDBSink._insert

    def spy(con: Any, docs: Any, sources: Any = None) -> None:
        sizes.append(len(docs))
        insert(con, docs, sources)

    monkeypatch.setattr(DuckDBSink, "_insert", staticmethod(spy))
    sink = DuckDBSink(tmp_path / "c.duckdb")
    try:
        stats = sink.write_window(_window(n), None, None)
        assert sink.query("SELECT count(*) FROM documents") == [(n,)]
    finally:
        sink.close()
    assert stats.created == n and sum(sizes) == n
    assert sizes == inserts if inserts is not None else max(sizes) - min(sizes) <= 1 and max(sizes) <= 3 * _CHUNK // 2


class _Spy:
    """A connection that records the parameters of every statement it runs."""

    def __init__(self, con: Any, seen: list[tuple[str, list[Any]]]) -> None:
        self._con, self._seen = con, seen

    def execute(self, sql: str, params: Any = None) -> Any:
        self._seen.append((sql, list(params or [])))
        return self._con.execute(sql, params) if params is not None else self._con.execute(sql)


def _spied(path: Path, windows: list[list[Any]], sql: str) -> tuple[list[tuple[str, list[Any]]], list[Any]]:
    """Write ``windows`` into a new DuckDB sink with its statements recorded; returns them and ``query(sql)``."""
    seen: list[tuple[str, list[Any]]] = []
    sink = DuckDBSink(path)
    try:
        con = sink._db()
        sink._con = _Spy(con, seen)
        for window in windows:
            sink.write_window(window, None, None)
        sink._con = con
        return seen, list(sink.query(sql))
    finally:
        sink.close()


def test_the_sources_go_to_the_insert_as_a_list_and_are_stored_as_serialized(tmp_path: Path) -> None:
    # a thousand ~1 kB sources joined into one parameter cost DuckDB ~1.6 ns a byte to take (bench/p8_cpu.py); a
    # list of them less, and no joined copy is held. What is stored is still each document's JSON, byte for byte
    window = _window(40)
    seen, rows = _spied(tmp_path / "s.duckdb", [window], "SELECT _id, source FROM documents")
    stored = dict(rows)
    inserts = [params for sql, params in seen if sql.startswith("INSERT INTO documents")]
    assert len(inserts) == 1
    expected = [dumps(d.source).decode() for d in window]
    assert expected in inserts[0]  # the sources: one list parameter, in the documents' order
    assert stored == {d.id: dumps(d.source).decode() for d in window}


def test_a_column_of_one_value_goes_as_that_value_and_a_mixed_one_row_by_row(tmp_path: Path) -> None:
    # stream and data_stream are one value throughout a window of one stream: passed once, repeated by DuckDB
    # beside the unnested columns; a window of two streams still stores each document's own
    from usage_collector.documents import Document

    one = _window(6)
    other = [
        Document(f"e{i}", "metrics-openai.embeddings-default", "embeddings", T0, "h", dict(d.source))
        for i, d in enumerate(one[:2])
    ]
    # the second window: new documents of two streams
    seen, rows = _spied(
        tmp_path / "v.duckdb", [one, [*_window(9)[6:], *other]], "SELECT _id, stream, data_stream FROM documents"
    )
    stored = sorted(rows)
    inserts = [params for sql, params in seen if sql.startswith("INSERT INTO documents")]
    assert inserts[0][1:3] == ["completions", DS]  # the window of one stream: each a single value
    assert "embeddings" in inserts[1][1] and "completions" in inserts[1][1]  # two streams: row by row
    assert stored == sorted(
        [(d.id, "completions", DS) for d in _window(9)] + [(d.id, "embeddings", d.index) for d in other]
    )
