"""The NDJSON sink's index (``<file>.index``): derived from the file, checked against it, rebuilt when it is not
the file's. Every test compares what the sink reads with the documents the history wrote (the file is the truth).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import T0, cp, current, docs, image_doc
from usage_collector.documents import Document
from usage_collector.errors import SinkError
from usage_collector.sinks.base import BucketSet
from usage_collector.sinks.ndjson import NdjsonSink

INDEX_FILES = ("", "-wal", "-shm")


def replaces(start: int = T0) -> BucketSet:
    return BucketSet("org", "embeddings", "1h", docs()[0].index, frozenset({start}))


#: (documents, checkpoint position, replaced bucket): creates, a revision, a superseded group, another hour,
#: another stream
HISTORY: list[tuple[list[Document], int, int | None]] = [
    (docs((10, 20, 30)), T0 + 3600, T0),
    (docs((11, 20)), T0 + 3600, T0),  # p0 revised, p2 vanished from the re-read bucket
    (docs((5, 6, 7), start=T0 + 3600), T0 + 7200, T0 + 3600),
    ([image_doc()], T0 + 7200, None),
]
#: what the history leaves: embeddings ``_id`` -> input tokens
TRUTH = {
    **dict(zip([d.id for d in docs((0, 0))], [11, 20], strict=True)),
    **{d.id: t for d, t in zip(docs(start=T0 + 3600), (5, 6, 7), strict=True)},
}


def write(sink: NdjsonSink, steps: list[tuple[list[Document], int, int | None]]) -> None:
    for window, position, bucket in steps:
        sink.write_window(window, cp(position), replaces(bucket) if bucket is not None else None)


def opened(path: Path) -> NdjsonSink:
    """A sink opened on ``path`` (one never opened reads the file, not the index)."""
    sink = NdjsonSink(path)
    sink.open()
    return sink


def rows(path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path.with_name(path.name + ".index"))
    try:
        return db.execute("SELECT * FROM docs ORDER BY off").fetchall()
    finally:
        db.close()


def copy_index(path: Path, to: Path) -> None:
    for suffix in INDEX_FILES:
        src = Path(f"{path}.index{suffix}")
        if src.exists():
            shutil.copy(src, f"{to}{suffix}")


def restore_index(path: Path, saved: Path) -> None:
    for suffix in INDEX_FILES:
        Path(f"{path}.index{suffix}").unlink(missing_ok=True)
        if Path(f"{saved}{suffix}").exists():
            shutil.copy(f"{saved}{suffix}", f"{path}.index{suffix}")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "u.ndjson"


def test_the_history_reads_back_exactly_and_a_rerun_appends_nothing(path):
    sink = NdjsonSink(path)
    write(sink, HISTORY)
    assert current(sink) == TRUTH
    assert [d["_id"] for d in sink.iter_documents("images")] == [image_doc().id]
    size = path.stat().st_size
    for window, position, bucket in HISTORY[1:]:
        stats = sink.write_window(window, cp(position), replaces(bucket) if bucket is not None else None)
        assert (stats.created, stats.updated, stats.deleted, stats.unchanged) == (0, 0, 0, len(window))
    assert path.stat().st_size == size


def test_the_index_kept_while_writing_equals_one_built_from_the_file(path):
    sink = NdjsonSink(path)
    write(sink, HISTORY)
    kept = rows(path)
    sink.close()
    for suffix in INDEX_FILES:
        Path(f"{path}.index{suffix}").unlink(missing_ok=True)
    again = opened(path)
    assert rows(path) == kept
    assert current(again) == TRUTH
    assert len(kept) == len(TRUTH) + 1  # one row per current document: the superseded one has none


def test_an_index_that_lost_its_last_windows_catches_up_with_the_file(path, tmp_path):
    sink = NdjsonSink(path)
    write(sink, HISTORY[:1])
    sink.close()
    copy_index(path, tmp_path / "saved")
    sink = NdjsonSink(path)
    write(sink, HISTORY[1:])
    sink.close()
    restore_index(path, tmp_path / "saved")  # as if the index's last commits never reached the disk

    again = opened(path)
    assert current(again) == TRUTH
    size = path.stat().st_size
    write(again, HISTORY[1:])  # the re-read windows are unchanged: nothing appended, nothing deleted twice
    assert path.stat().st_size == size and current(again) == TRUTH


def test_a_window_whose_index_commit_fails_is_in_the_file_and_is_not_written_twice(path, monkeypatch):
    sink = NdjsonSink(path)
    write(sink, HISTORY[:1])

    def lost(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sink, "_set_meta", lost)  # the last statement of a window's index transaction
    with pytest.raises(SinkError, match=r"cannot update its index u\.ndjson\.index: disk I/O error"):
        write(sink, HISTORY[1:2])
    monkeypatch.undo()
    assert sink.load_checkpoint("org", "embeddings", "1h") == cp(T0 + 3600)  # only the first window's
    size = path.stat().st_size

    for reader in (sink, opened(path)):  # this process, and the next run
        assert {i: t for i, t in current(reader).items() if i in TRUTH} == dict(list(TRUTH.items())[:2])
        assert len(current(reader)) == 2  # p2's delete line is in the file: superseded
    write(sink, HISTORY[1:])
    assert current(sink) == TRUTH
    assert path.stat().st_size > size
    size = path.stat().st_size
    write(opened(path), HISTORY[1:])
    assert path.stat().st_size == size


def test_a_torn_last_line_is_cut_and_the_index_covers_whole_lines(path):
    sink = NdjsonSink(path)
    write(sink, HISTORY[:2])
    sink.close()
    with path.open("ab") as fh:
        fh.write(b'{"_id":"half-writ')
    again = opened(path)
    write(again, HISTORY[2:])
    assert current(again) == TRUTH
    assert path.read_bytes().count(b"half-writ") == 0


def test_a_file_cut_under_its_index_is_indexed_again(path):
    sink = NdjsonSink(path)
    write(sink, HISTORY)
    sink.close()
    first_two = b"".join(path.read_bytes().splitlines(keepends=True)[:2])
    path.write_bytes(first_two)  # shorter than what the index covers
    again = opened(path)
    assert current(again) == dict(zip([d.id for d in docs()[:2]], [10, 20], strict=True))


def test_a_file_replaced_under_its_index_is_indexed_again(path, tmp_path):
    sink = NdjsonSink(path)
    write(sink, HISTORY[:1])
    sink.close()
    other = NdjsonSink(tmp_path / "other.ndjson")  # a longer file whose lines differ
    write(other, [(docs((1, 2, 3, 4), start=T0 + 7200), T0 + 10800, None)])
    other.close()
    shutil.copy(tmp_path / "other.ndjson", path)
    again = opened(path)
    assert current(again) == {d.id: t for d, t in zip(docs((1, 2, 3, 4), start=T0 + 7200), (1, 2, 3, 4), strict=True)}


@pytest.mark.parametrize("damage", ["garbage", "another version"])
def test_an_index_that_is_not_usable_is_built_again(path, damage):
    sink = NdjsonSink(path)
    write(sink, HISTORY)
    sink.close()
    index = path.with_name(path.name + ".index")
    if damage == "garbage":
        for suffix in INDEX_FILES:
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        index.write_bytes(b"not a database" * 1000)
    else:
        db = sqlite3.connect(index)
        db.execute("UPDATE meta SET value = 0 WHERE key = 'version'")
        db.commit()
        db.close()
    again = opened(path)
    assert current(again) == TRUTH
    assert len(rows(path)) == len(TRUTH) + 1


def test_a_sink_never_opened_reads_the_file_as_it_is(path, tmp_path):
    sink = NdjsonSink(path)
    write(sink, HISTORY)
    sink.close()
    with path.open("ab") as fh:
        fh.write(b'{"_id":"half-writ')  # another process is writing
    before = path.read_bytes()
    shutil.copy(path, tmp_path / "copy.ndjson")
    view = NdjsonSink(path)
    assert current(view) == TRUTH == current(opened(tmp_path / "copy.ndjson"))
    ranged = sorted(d["_id"] for d in view.iter_documents("embeddings", start=T0 + 3600, end=T0 + 7200))
    assert ranged == sorted(d.id for d in docs(start=T0 + 3600))
    assert path.read_bytes() == before
    assert not Path(f"{path}.index").exists() or rows(path) == rows(tmp_path / "copy.ndjson")


def test_a_window_larger_than_a_chunk_is_written_and_indexed_in_chunks(path, monkeypatch):
    from usage_collector.sinks import ndjson

    monkeypatch.setattr(ndjson, "_CHUNK", 2)
    sink = NdjsonSink(path)
    write(sink, HISTORY)
    assert current(sink) == TRUTH
    kept = rows(path)
    sink.close()
    for suffix in INDEX_FILES:
        Path(f"{path}.index{suffix}").unlink(missing_ok=True)
    opened(path)
    assert rows(path) == kept


def test_the_superseded_documents_of_many_buckets_are_found_in_one_statement(path):
    # a statement per bucket was ~7,800 of them in bench/p8_cpu.py's 5-day 1m backfill; one over the buckets' span,
    # its rows kept when their bucket is one of those replaced, finds the same documents
    hours = [T0 + h * 3600 for h in range(6)]
    sink = NdjsonSink(path)
    for h in hours:
        sink.write_window(docs((1, 2, 3), start=h), cp(h + 3600), replaces(h))
    other = docs((9,), start=hours[2])[0]  # another organization's document in a replaced bucket: kept
    other.source["organization"]["id"] = "other-org"
    other.id = "other-org-doc"
    sink.write_window([other], None, None)
    statements: list[str] = []
    sink._index().set_trace_callback(statements.append)
    # hours 1, 3 and 4 re-read: p1 and p2 vanished; hours 2 and 5 not replaced: kept whole
    window = [d for h in (hours[1], hours[3], hours[4]) for d in docs((1,), start=h)]
    bucket = BucketSet("org", "embeddings", "1h", window[0].index, frozenset({hours[1], hours[3], hours[4]}))
    stats = sink.write_window(window, cp(hours[5]), bucket)
    sink._index().set_trace_callback(None)
    assert stats.deleted == 6
    assert len([s for s in statements if s.startswith("SELECT id, ts FROM docs")]) == 1
    left = {d["_id"] for d in sink.iter_documents()}
    gone = {d.id for h in (hours[1], hours[3], hours[4]) for d in docs((1, 2, 3), start=h)[1:]}
    every = {d.id for h in hours for d in docs((1, 2, 3), start=h)} | {other.id}
    assert left == every - gone
    assert left == {d["_id"] for d in opened(path).iter_documents()}  # the file says the same


@pytest.mark.parametrize("stamp", ["2025-10-15T00:00:00Z", "2025-10-15T02:00:00+02:00", "2025-10-15T00:00:00.500Z"])
def test_the_index_row_reads_the_timestamp_as_before(stamp):
    from datetime import datetime

    from usage_collector.sinks.ndjson import _row

    src = {"@timestamp": stamp, "event": {"dataset": "openai.embeddings", "hash": "h"}, "organization": {"id": "o"}}
    line = b"{}\n"
    want = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    for _ in range(2):  # the second time from the cache
        assert _row(0, line, {"_id": "i", "_source": src})[7] == want
