"""DuckDB and NDJSON sinks: idempotent upsert, checkpoints with the window, crash repair, leases."""

from __future__ import annotations

import pytest

from tests.conftest import T0
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Target, shape
from usage_collector.errors import LeaseHeldError, SinkError
from usage_collector.sinks.base import Checkpoint
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

SPEC = STREAMS["embeddings"]


def docs(tokens=(10, 20, 30), start=T0):
    out = []
    for i, t in enumerate(tokens):
        row = {"object": SPEC.object_type, "input_tokens": t, "num_model_requests": 1, "project_id": f"p{i}",
               "user_id": None, "api_key_id": None, "model": "text-embedding-3-small"}
        out.append(shape(SPEC, Target("org"), "1h", start, start + 3600, SPEC.group_by, row))
    return out


def cp(pos):
    return Checkpoint("org", "embeddings", "1h", position=pos)


def current(sink):
    return {d["_id"]: d["_source"]["openai"]["embeddings"]["input_tokens"] for d in sink.iter_documents()}


def test_create_then_unchanged_then_update(sink):
    first = sink.write_window(docs(), cp(T0 + 3600))
    assert (first.created, first.updated, first.unchanged) == (3, 0, 0)
    again = sink.write_window(docs(), cp(T0 + 3600))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    revised = sink.write_window(docs((10, 25, 30)), cp(T0 + 3600))
    assert (revised.created, revised.updated, revised.unchanged) == (0, 1, 2)
    assert sorted(current(sink).values()) == [10, 25, 30]
    assert sink.load_checkpoint("org", "embeddings", "1h").position == T0 + 3600


def test_documents_survive_reopen_and_rerun_writes_nothing(sink, tmp_path):
    sink.write_window(docs(), cp(T0 + 3600))
    sink.close()
    sink.open()
    assert sink.write_window(docs(), cp(T0 + 3600)).written == 0
    assert len(current(sink)) == 3


def test_ndjson_appends_a_replaced_document_last_line_wins(tmp_path):
    s = NdjsonSink(tmp_path / "o.ndjson")
    s.write_window(docs(), cp(T0))
    s.write_window(docs((10, 25, 30)), cp(T0))
    lines = (tmp_path / "o.ndjson").read_bytes().splitlines()
    assert len(lines) == 4  # 3 created + 1 replaced, appended
    assert sorted(current(s).values()) == [10, 25, 30]


def test_ndjson_cuts_a_partial_last_line_left_by_a_crash(tmp_path):
    path = tmp_path / "o.ndjson"
    s = NdjsonSink(path)
    s.write_window(docs(), cp(T0))
    with path.open("ab") as fh:
        fh.write(b'{"_id": "half-writ')
    s2 = NdjsonSink(path)
    s2.open()
    assert path.read_bytes().endswith(b"\n")
    assert len(current(s2)) == 3


def test_ndjson_failed_append_stores_no_checkpoint_and_leaves_no_line(tmp_path, monkeypatch):
    from usage_collector.sinks import ndjson

    path = tmp_path / "o.ndjson"
    s = NdjsonSink(path)
    s.write_window(docs(), cp(T0))
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ndjson.os, "fsync", disk_full)
    with pytest.raises(SinkError, match="cannot append 1 document"):
        s.write_window(docs((10, 25, 30)), cp(T0 + 3600))
    monkeypatch.undo()
    assert path.read_bytes() == before  # the partial append was cut back off
    assert s.load_checkpoint("org", "embeddings", "1h").position == T0  # not moved
    assert sorted(current(NdjsonSink(path)).values()) == [10, 20, 30]


def test_duckdb_failed_window_stores_neither_documents_nor_checkpoint(tmp_path):
    s = DuckDBSink(tmp_path / "u.duckdb")
    bad = docs()
    bad[1].timestamp = "not-a-time"  # type: ignore[assignment]  # forces an error mid-insert
    with pytest.raises(SinkError, match="not written"):
        s.write_window(bad, cp(T0 + 3600))
    assert s.load_checkpoint("org", "embeddings", "1h") is None
    assert current(s) == {}


def test_duckdb_views_give_typed_columns(tmp_path):
    s = DuckDBSink(tmp_path / "u.duckdb")
    s.write_window(docs(), cp(T0))
    assert s.query("SELECT sum(input_tokens), count(*) FROM embeddings") == [(60, 3)]


def test_lease_is_exclusive_until_it_expires(sink):
    sink.acquire_lease("org", "a", 60, now=1000)
    with pytest.raises(LeaseHeldError) as info:
        sink.acquire_lease("org", "b", 60, now=1030)
    assert info.value.holder == "a" and info.value.expires_at == 1060
    sink.acquire_lease("org", "b", 60, now=1061)  # expired: taken over
    sink.release_lease("org", "a")  # not the holder any more: no effect
    with pytest.raises(LeaseHeldError):
        sink.acquire_lease("org", "a", 60, now=1062)
    sink.release_lease("org", "b")
    sink.acquire_lease("org", "a", 60, now=1063)


def test_run_documents_round_trip(sink):
    sink.record_run({"@timestamp": "2025-10-15T00:00:00Z", "usage_collector": {"stream": "costs"}})
    sink.record_run({"@timestamp": "2025-10-15T01:00:00Z", "usage_collector": {"stream": "images"}})
    assert [r["usage_collector"]["stream"] for r in sink.list_runs()] == ["images", "costs"]


def test_a_lease_left_by_a_killed_process_on_this_host_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    s = NdjsonSink(tmp_path / "o.ndjson")
    s.acquire_lease("org", f"{socket.gethostname()}:{proc.pid}:dead", 600, now=1000)
    s.acquire_lease("org", "me", 600, now=1001)  # not refused: the holder is gone
    with pytest.raises(LeaseHeldError):
        s.acquire_lease("org", "other-host:1:x", 600, now=1002)
