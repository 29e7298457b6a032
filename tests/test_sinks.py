"""What only the DuckDB or the NDJSON sink does: appends, crash repair, transactions, views, dead lease holders.

The contract every sink keeps is tested in ``test_sink_contract.py``.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.helpers import T0, cp, current, docs
from usage_collector.errors import LeaseHeldError, SinkError
from usage_collector.sinks.duckdb import _SCHEMA, DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink


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


def test_duckdb_writes_values_that_hold_a_newline_as_they_are(tmp_path):
    # the INSERT passes each text column as its values joined by newlines; a column whose values hold one goes as a
    # list instead, so every value is stored whole and in its row
    s = DuckDBSink(tmp_path / "u.duckdb")
    written = docs((10, 20, 30))
    written[0].id = "first\nline"
    written[1].hash = "a\nb"
    written[2].source["organization"] = {"id": "org", "name": "two\nlines"}
    s.write_window(written, cp(T0))
    rows = s.query("SELECT _id, hash, source FROM documents ORDER BY _id")
    assert [(r[0], r[1]) for r in rows] == sorted((d.id, d.hash) for d in written)
    assert [orjson.loads(r[2]) for r in rows] == [d.source for d in sorted(written, key=lambda d: d.id)]


def _source_compression(path: Path) -> set[str]:
    """The compression methods of the stored ``documents.source`` segments (after the close's checkpoint)."""
    sink = DuckDBSink(path, read_only=True)
    try:
        rows = sink.query("SELECT compression FROM pragma_storage_info('documents') WHERE column_name = 'source'")
    finally:
        sink.close()
    return {r[0] for r in rows} - {"Constant"}


def test_duckdb_compresses_the_sources_with_zstd(tmp_path):
    s = DuckDBSink(tmp_path / "u.duckdb")
    s.write_window(docs(tuple(range(1, 2001))), cp(T0))
    s.close()
    assert _source_compression(tmp_path / "u.duckdb") == {"ZSTD"}
    assert len(current(DuckDBSink(tmp_path / "u.duckdb", read_only=True))) == 2000


def test_duckdb_file_of_a_storage_version_without_zstd_keeps_duckdbs_compression(tmp_path):
    import duckdb

    con = duckdb.connect()
    con.execute(f"ATTACH '{tmp_path / 'old.duckdb'}' AS old (STORAGE_VERSION 'v1.0.0')")
    con.close()
    s = DuckDBSink(tmp_path / "old.duckdb")
    s.write_window(docs(tuple(range(1, 2001))), cp(T0))
    s.close()
    used = _source_compression(tmp_path / "old.duckdb")
    assert used and not used & {"ZSTD", "Uncompressed"}  # what a forced ZSTD would have left: uncompressed text


def test_duckdb_views_give_typed_columns(tmp_path):
    s = DuckDBSink(tmp_path / "u.duckdb")
    s.write_window(docs(), cp(T0))
    assert s.query("SELECT sum(input_tokens), count(*) FROM embeddings") == [(60, 3)]


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


def test_duckdb_creates_its_schema_once_and_upgrades_an_unversioned_file(tmp_path):
    """A file at the current schema version is opened without DDL (P3); one from before versions gets the views
    and the version, and keeps its documents."""
    import duckdb

    from usage_collector.sinks.duckdb import SCHEMA_VERSION

    path = tmp_path / "u.duckdb"
    s = DuckDBSink(path)
    s.write_window(docs(), cp(T0))
    s.close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE schema_version")
    con.execute("DROP VIEW embeddings")
    con.close()
    s = DuckDBSink(path)
    assert s.query("SELECT sum(input_tokens) FROM embeddings") == [(60,)]  # the view is back
    assert s.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    s.close()
    s = DuckDBSink(path)
    s._db().execute("DROP VIEW embeddings")  # a versioned file: no view is re-created at open
    s.close()
    s = DuckDBSink(path)
    with pytest.raises(duckdb.CatalogException):
        s.query("SELECT 1 FROM embeddings")
    assert len(current(s)) == 3


def test_duckdb_reads_a_store_larger_than_its_memory_limit_in_order(tmp_path):
    """``iter_documents`` sorts one day at a time: a store whose sources are several times ``memory_limit`` is read
    whole, ordered by time and ``_id`` (sorting the whole table at once runs out of memory)."""
    import duckdb

    s = DuckDBSink(tmp_path / "u.duckdb", memory_limit="16MB")
    pad = "x" * 4000
    written = []
    for day in range(20):  # ~48 MB of sources, a day's 120 documents a window
        window = [d for h in range(24) for d in docs((1, 2, 3, 4, 5), start=T0 + day * 86400 + h * 3600)]
        for d in window:
            d.source["openai"]["embeddings"]["pad"] = pad
        s.write_window(window, None)
        written += window
    got = [(d["_source"]["@timestamp"], d["_id"]) for d in s.iter_documents("embeddings")]
    assert got == sorted((d.source["@timestamp"], d.id) for d in written)
    with pytest.raises(duckdb.OutOfMemoryException):
        s.query("SELECT _id, source FROM documents ORDER BY ts, _id")


def test_ndjson_an_append_whose_cut_back_failed_is_not_glued_to(tmp_path, monkeypatch):
    """A write that lands part of a line and fails, then cannot be cut back (EIO): the next window first cuts the
    partial line, so no line of the file is two lines glued together and the documents are exact."""
    import errno
    import pathlib

    import orjson

    from usage_collector.sinks import ndjson

    path = tmp_path / "o.ndjson"
    s = NdjsonSink(path)
    s.write_window(docs(), cp(T0))
    real_open = pathlib.Path.open

    class HalfWrite:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def open_(p, mode="r", *args, **kwargs):
        fh = real_open(p, mode, *args, **kwargs)
        return HalfWrite(fh) if p == path and mode == "ab" else fh

    def no_truncate(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(pathlib.Path, "open", open_)
    monkeypatch.setattr(ndjson.os, "truncate", no_truncate)
    with pytest.raises(SinkError, match="No space left on device"):
        s.write_window(docs((1, 2, 3), start=T0 + 3600), cp(T0 + 3600))
    monkeypatch.undo()
    assert not path.read_bytes().endswith(b"\n")  # the cut line is there
    s.write_window(docs((4, 5, 6), start=T0 + 7200), cp(T0 + 7200))
    assert all(orjson.loads(line) for line in path.read_bytes().splitlines())
    assert sorted(current(s).values()) == [4, 5, 6, 10, 20, 30]
    assert sorted(current(NdjsonSink(path)).values()) == [4, 5, 6, 10, 20, 30]  # the file read as it is


def test_duckdb_source_is_text_and_a_json_column_of_an_older_file_reads_alike(tmp_path):
    """A new file stores ``source`` as VARCHAR (no JSON validation at INSERT); a file made when the column was JSON
    is written and read the same, views and ``->>`` included."""
    import duckdb

    new, old = tmp_path / "new.duckdb", tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute(_SCHEMA.replace("source VARCHAR NOT NULL", "source JSON NOT NULL"))
    con.close()
    seen = []
    for path, kind in ((new, "VARCHAR"), (old, "JSON")):
        s = DuckDBSink(path)
        s.write_window(docs(), cp(T0))
        assert s.query(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'documents' AND column_name = 'source'"
        ) == [(kind,)]
        seen.append(
            (
                s.query("SELECT sum(input_tokens) FROM embeddings"),
                s.query("SELECT source->>'$.organization.id', source FROM documents ORDER BY _id"),
                current(s),
            )
        )
        s.close()
    assert seen[0] == seen[1]
    assert seen[0][0] == [(60,)]
