"""DuckDB: a routine window's one read of its stream's stored ids (``DuckDBSink._stored``, P3) writes exactly what
the chunked lookups do: the same statistics and the same stored documents, superseded ones of other organizations
and widths left alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from usage_collector.documents import Document
from usage_collector.sinks.base import BucketSet, WriteStats
from usage_collector.sinks.duckdb import _CHUNK, _SERIALIZE_FIRST, DuckDBSink

H = 3600
T0 = 1_790_000_000 // 86400 * 86400
DS = "metrics-openai.completions-default"


def doc(i: str, ts: int, h: str = "h", org: str = "o1", width: str = "1h") -> Document:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    source: dict[str, Any] = {
        "@timestamp": stamp,
        "event": {"hash": h, "dataset": "openai.completions"},
        "organization": {"id": org},
        "openai": {"base": {"bucket_width": width}},
    }
    return Document(i, DS, "completions", ts, h, source)


STORED = [
    doc("a", T0),
    doc("b", T0 + H),
    doc("gone", T0 + H),  # superseded: its bucket is re-read and the window no longer holds it
    doc("other-org", T0 + H, org="o2"),  # same bucket, another organization: kept
    doc("other-width", T0 + H, width="1d"),  # same bucket start, another width: kept
    doc("outside", T0 + 3 * H),  # a bucket the window does not re-read: kept
]
WINDOW = [doc("a", T0, "changed"), doc("b", T0 + H), doc("new", T0 + 2 * H)]
REPLACES = BucketSet("o1", "completions", "1h", DS, frozenset({T0, T0 + H, T0 + 2 * H}))


def write(
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    one_read: bool,
    stored: list[Document] = STORED,
    window: list[Document] = WINDOW,
    replaces: BucketSet = REPLACES,
) -> tuple[WriteStats, set[Any]]:
    if not one_read:
        monkeypatch.setattr(DuckDBSink, "_stored", staticmethod(lambda con, docs, replaces: None))
    sink = DuckDBSink(tmp_path / f"{name}.duckdb")
    try:
        sink.write_window(stored, None, None)
        stats = sink.write_window(window, None, replaces)
        rows = set(sink.query("SELECT _id, hash, epoch(ts)::BIGINT FROM documents"))
    finally:
        sink.close()
        monkeypatch.undo()
    return stats, rows


def test_one_read_writes_what_the_chunked_lookups_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunked = write(tmp_path, "chunked", monkeypatch, one_read=False)
    one = write(tmp_path, "one", monkeypatch, one_read=True)
    assert one == chunked
    stats, rows = one
    assert (stats.created, stats.updated, stats.unchanged, stats.deleted) == (1, 1, 1, 1)
    assert {r[0] for r in rows} == {"a", "b", "new", "other-org", "other-width", "outside"}
    assert ("a", "changed", T0) in rows


def test_one_read_of_a_window_of_several_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a collector part: a thousand documents and the rest of their last bucket, written in two chunks
    n = _CHUNK + 3
    stored = [*STORED, *(doc(f"s{i}", T0 + i % 3 * H) for i in range(n))]
    window = [*WINDOW, *(doc(f"s{i}", T0 + i % 3 * H, "changed" if i % 7 == 0 else "h") for i in range(n - 3))]
    assert len(window) == n
    assert DuckDBSink._stored(_Con(), window, REPLACES) == {}  # read once
    chunked = write(tmp_path, "chunked", monkeypatch, False, stored, window)
    one = write(tmp_path, "one", monkeypatch, True, stored, window)
    assert one == chunked
    stats, rows = one
    assert stats.created + stats.updated + stats.unchanged == len(window)
    assert stats.deleted == 4  # "gone" and the stored s-documents of the re-read buckets the window no longer holds
    assert ("s7", "changed", T0 + H) in rows and ("outside", "h", T0 + 3 * H) in rows


class _Con:
    def __init__(self) -> None:
        self.calls = 0

    def execute(self, sql: str, params: list[Any]) -> _Con:
        self.calls += 1
        return self

    def fetchall(self) -> list[Any]:
        return []


def test_one_read_is_used_only_for_a_small_window_of_one_stream() -> None:
    con = _Con()
    assert DuckDBSink._stored(con, WINDOW, REPLACES) == {} and con.calls == 1
    assert DuckDBSink._stored(con, WINDOW, None) is None
    assert DuckDBSink._stored(con, [*WINDOW, replace(doc("x", T0), stream="embeddings")], REPLACES) is None
    assert DuckDBSink._stored(con, [doc(str(i), T0) for i in range(_SERIALIZE_FIRST)], REPLACES) == {}
    assert DuckDBSink._stored(con, [doc(str(i), T0) for i in range(_SERIALIZE_FIRST + 1)], REPLACES) is None
    assert con.calls == 2  # none of the others read anything
