"""NDJSON sink (debug/export): one ``{"_id", "_index", "_source"}`` object per line, appended.

* A new document is appended; a replaced document is appended again with the same ``_id`` (the last
  line wins); an unchanged one writes nothing. A superseded document (its bucket was re-read and no longer
  holds it) is removed by a line ``{"_op_type": "delete", "_id", "_index"}``: the file stays a valid list of
  bulk actions.
* Checkpoints and run records live in ``<file>.state.json`` beside it, rewritten atomically (write to a
  temporary file, fsync, rename) after the window's lines are flushed and fsynced.
* A crash can leave a partial last line; it is cut off when the sink opens. A crash between the lines
  and the checkpoint leaves lines whose window is re-read next time: identical content, so the
  documents (last line per ``_id``) still equal the source exactly.

**The index** (``<file>.index``, SQLite) keeps, per current ``_id``, the offset and length of its last line,
its ``event.hash`` and its bucket (organization, stream, width, ``@timestamp``), so the sink holds nothing per
document in memory whatever the file's history: a window looks its ``_id`` s and buckets up there, and
:meth:`NdjsonSink.iter_documents` reads only the lines it needs. The file stays the truth; the index is derived
from it and checked against it:

* it records how many bytes of the file it covers (``size``) and the offset and hash of the last line it read;
* a window's lines are appended and fsynced, then the index is updated in one SQLite transaction (so it may lag
  the file after a crash or a failed commit, never run ahead of it);
* on open and before each window the index reads whatever lines the file has past ``size``, and is rebuilt from
  the whole file when ``size`` is past the end or the recorded last line is not there any more (the file was
  cut, replaced or edited). A missing or unreadable index is rebuilt the same way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..documents import Document, dumps
from ..errors import SinkError
from .base import BucketSet, Checkpoint, WriteStats, checkpoint_key
from .filelease import FileLease, FileLeaseMixin

MAX_RUNS = 1000
#: Documents serialized, appended and indexed at a time (a window can hold tens of thousands).
_CHUNK = 1000
#: Bumped whenever the index's tables change: an index of another version is rebuilt from the file.
INDEX_VERSION = 1

_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    off INTEGER PRIMARY KEY,  -- byte offset of the _id's last line
    len INTEGER NOT NULL,     -- its length, newline included
    id TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    stream TEXT NOT NULL,     -- event.dataset without "openai."
    org TEXT,
    width TEXT,               -- openai.base.bucket_width; NULL for documents that are not buckets (limits)
    ts INTEGER NOT NULL       -- @timestamp, Unix seconds
);
CREATE INDEX IF NOT EXISTS docs_ts ON docs (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


def _row(off: int, line: bytes, obj: dict[str, Any]) -> tuple[Any, ...]:
    """The index row of a document line (the same for a line just written and one read back)."""
    src = obj["_source"]
    base = src.get("openai", {}).get("base") or {}
    ts = _epoch(src["@timestamp"])
    stream = str(src["event"]["dataset"]).removeprefix("openai.")
    org = (src.get("organization") or {}).get("id")
    return (off, len(line), obj["_id"], src["event"]["hash"], stream, org, base.get("bucket_width"), ts)


@functools.lru_cache(maxsize=64)
def _epoch(timestamp: str) -> int:
    """``@timestamp`` as Unix seconds; the documents of a bucket share it (a few a bucket at 1m, P8)."""
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def _digest(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


class NdjsonSink(FileLeaseMixin):
    """Append-only NDJSON file, its index, and a JSON state file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + ".state.json")
        self.index_path = self.path.with_name(self.path.name + ".index")
        self.description = f"ndjson:{self.path}"
        self._lease = FileLease(self.path.with_name(self.path.name + ".lease"))
        self._db: sqlite3.Connection | None = None
        self._opened = False
        self._state: dict[str, Any] = {"checkpoints": {}, "runs": []}
        self._lock = threading.RLock()

    # --- lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Cut a torn last line, catch the index up with the file, read the state. Writes nothing while there is
        no file: the index is created with the first document."""
        with self._lock:
            if self._opened:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._repair_tail()
            if self.path.exists() or self.index_path.exists():
                self._index()
            if self.state_path.exists():
                try:
                    self._state = json.loads(self.state_path.read_text())
                except ValueError as exc:
                    raise SinkError(f"{self.state_path}: state file is not valid JSON ({exc})") from None
                self._state.setdefault("checkpoints", {})
                self._state.setdefault("runs", [])
            self._opened = True

    def _index(self) -> sqlite3.Connection:
        """The index, opened (or created) and caught up with the file on first use."""
        if self._db is None:
            db = self._db = self._open_index()
            try:
                with self._transaction():
                    self._catch_up()
            except BaseException:
                db.close()
                self._db = None
                raise
        return self._db

    def _open_index(self) -> sqlite3.Connection:
        """The index database; one that is not a usable index (damaged, or of another version) is replaced by an
        empty one, which :meth:`_catch_up` fills from the file."""
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, no permission: not the index's fault
                raise self._index_failed("cannot open", exc) from None
            self._drop_index()
        try:
            return self._connect()
        except sqlite3.Error as exc:
            raise self._index_failed("cannot open", exc) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, isolation_level=None, check_same_thread=False)
        try:
            # WAL + NORMAL: a crash or a power loss can lose the last transactions, never consistency; what is lost
            # is read again from the file.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=256")
            # SQLite's page cache fills to its 2 MB default as the index grows with history; a window's lookups
            # touch a few pages of its B-tree, and the OS caches the file (bench/p4_memory.py)
            db.execute("PRAGMA cache_size=-512")
            db.executescript(_INDEX_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('version', ?)", (INDEX_VERSION,))
            elif row[0] != INDEX_VERSION:
                raise sqlite3.DatabaseError(f"index version {row[0]}, not {INDEX_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _drop_index(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)

    def _index_failed(self, what: str, exc: sqlite3.Error) -> SinkError:
        """The error to raise; a damaged index is dropped first (the next :meth:`open` builds it again)."""
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            self._drop_index()
        return SinkError(f"{self.path}: {what} its index {self.index_path.name}: {exc}")

    def _repair_tail(self) -> None:
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb+") as fh:
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # A crash cut the last line: drop it (its window was never checkpointed).
            chunk = 1 << 16
            pos = size
            while pos > 0:
                start = max(0, pos - chunk)
                fh.seek(start)
                buf = fh.read(pos - start)
                nl = buf.rfind(b"\n")
                if nl >= 0:
                    fh.truncate(start + nl + 1)
                    return
                pos = start
            fh.truncate(0)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._opened = False

    # --- the index ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception): while one process writes the index
        no other can, so two processes catching up with the file never interleave."""
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _meta(self) -> dict[str, Any]:
        assert self._db is not None
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, size: int, tail_off: int, tail: str) -> None:
        assert self._db is not None
        self._db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [("size", size), ("tail_off", tail_off), ("tail", tail)]
        )

    def _catch_up(self) -> None:
        """Inside a transaction: make the index cover every complete line of the file (see the module docstring)."""
        assert self._db is not None
        meta = self._meta()
        size = self.path.stat().st_size if self.path.exists() else 0
        start = int(meta.get("size", 0))
        if start and not self._tail_matches(start, int(meta.get("tail_off", 0)), str(meta.get("tail", ""))):
            start = 0  # the file is not the one indexed: index it again
        if start == 0:
            self._db.execute("DELETE FROM docs")
            self._set_meta(0, 0, "")
        if start >= size:
            return
        with self.path.open("rb") as fh:
            fh.seek(start)
            self._index_lines(fh, start)

    def _tail_matches(self, size: int, tail_off: int, tail: str) -> bool:
        try:
            with self.path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size < size:
                    return False
                fh.seek(tail_off)
                return _digest(fh.read(size - tail_off)) == tail
        except FileNotFoundError:
            return False

    def _index_lines(self, fh: BinaryIO, off: int) -> None:
        """Index the complete lines of ``fh`` from ``off`` (its position) on; a partial last line is left."""
        assert self._db is not None
        rows: list[tuple[Any, ...]] = []
        deletes: list[tuple[str]] = []
        last: tuple[int, bytes] | None = None
        for line in fh:
            if not line.endswith(b"\n"):
                break
            obj = orjson.loads(line)
            if obj.get("_op_type") == "delete":
                self._flush_rows(rows)
                deletes.append((obj["_id"],))
            else:
                self._flush_deletes(deletes)
                rows.append(_row(off, line, obj))
            last = (off, line)
            off += len(line)
            if len(rows) >= _CHUNK:
                self._flush_rows(rows)
        self._flush_rows(rows)
        self._flush_deletes(deletes)
        if last is not None:
            self._set_meta(off, last[0], _digest(last[1]))

    def _flush_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (replacing the older line of the same ``_id``), then empty the list."""
        assert self._db is not None
        if rows:
            self._db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            rows.clear()

    def _flush_deletes(self, ids: list[tuple[str]]) -> None:
        assert self._db is not None
        if ids:
            self._db.executemany("DELETE FROM docs WHERE id = ?", ids)
            ids.clear()

    def _hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """``_id`` -> hash of those of ``ids`` the index holds; one statement whatever the count (the ``_id`` s are
        one JSON array parameter: a statement per count of ``?`` would fill SQLite's statement cache)."""
        assert self._db is not None
        sql = "SELECT id, hash FROM docs WHERE id IN (SELECT value FROM json_each(?))"
        return dict(self._db.execute(sql, (dumps(list(ids)).decode(),)).fetchall())

    def _superseded(self, replaces: BucketSet, keep: set[str]) -> list[str]:
        """The ``_id`` s indexed in ``replaces``' buckets and not in ``keep``, sorted. One statement over the buckets'
        span (``docs_ts``), its rows kept when their ``ts`` is one of the buckets': a statement per bucket was ~7,800
        of them in the 5-day 1m backfill of ``bench/p8_cpu.py``, ~3.6 documents a bucket."""
        assert self._db is not None
        if not replaces.starts:
            return []
        starts = replaces.starts
        rows = self._db.execute(
            "SELECT id, ts FROM docs WHERE ts BETWEEN ? AND ? AND stream = ? AND org = ? AND width = ?",
            (min(starts), max(starts), replaces.stream, replaces.org_id, replaces.bucket_width),
        )
        return sorted(i for i, ts in rows if ts in starts and i not in keep)

    # --- documents --------------------------------------------------------------------------------
    def write_window(
        self, docs: Sequence[Document], checkpoint: Checkpoint | None, replaces: BucketSet | None = None
    ) -> WriteStats:
        with self._lock:
            self.open()
            stats = WriteStats()
            try:
                self._index()
                with self._transaction():
                    self._catch_up()
                    gone = self._superseded(replaces, {d.id for d in docs}) if replaces is not None else []
                    stats.deleted = len(gone)
                    index = "" if replaces is None else replaces.index
                    deletes = (dumps({"_op_type": "delete", "_id": i, "_index": index}) + b"\n" for i in gone)
                    if docs or gone:
                        self._append(self._lines(docs, stats), deletes, gone)
            except sqlite3.Error as exc:
                raise self._index_failed("cannot update", exc) from None
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            return stats

    def _lines(self, docs: Sequence[Document], stats: WriteStats) -> Iterator[list[tuple[bytes, dict[str, Any]]]]:
        """The lines to append, ``_CHUNK`` documents at a time: new and changed documents (counted in
        ``stats``), each as ``(line, action)``. Serialized here, not through :attr:`Document.source_json`, so no
        document keeps its bytes after its chunk is written."""
        for i in range(0, len(docs), _CHUNK):
            part = docs[i : i + _CHUNK]
            prev = self._hashes([d.id for d in part])
            out = []
            for doc in part:
                old = prev.get(doc.id)
                if old == doc.hash:
                    stats.unchanged += 1
                    continue
                if old is None:
                    stats.created += 1
                    stats.ids_created.append(doc.id)  # its day is reconciled again (reconcile.after_cycle)
                else:
                    stats.updated += 1
                    stats.ids_updated.append(doc.id)
                action = doc.action()
                out.append((dumps(action) + b"\n", action))
            yield out

    def _append(
        self, chunks: Iterable[list[tuple[bytes, dict[str, Any]]]], deletes: Iterable[bytes], gone: list[str]
    ) -> None:
        """Inside the index transaction: append the delete lines then the documents' lines, fsync, and index them.
        On an error the file is cut back to where it was (the transaction is rolled back by the caller)."""
        assert self._db is not None
        if self.path.exists():
            self._repair_tail()  # a cut line left by an append whose cut-back failed: never glued to
        size = self.path.stat().st_size if self.path.exists() else 0
        off = size
        last: bytes | None = None
        count = 0
        try:
            with self.path.open("ab") as fh:
                for line in deletes:
                    fh.write(line)
                    off, last, count = off + len(line), line, count + 1
                self._flush_deletes([(i,) for i in gone])
                for chunk in chunks:
                    rows = []
                    for line, action in chunk:
                        fh.write(line)
                        rows.append(_row(off, line, action))
                        off, last, count = off + len(line), line, count + 1
                    self._flush_rows(rows)
                if last is None:
                    return
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException as exc:
            # Cut the partial append back off (the caller rolls the index back): a failed write leaves no line. If even
            # that fails, the next append first cuts the partial last line, and the index reads the whole lines left.
            with contextlib.suppress(OSError):
                if self.path.stat().st_size != size:
                    os.truncate(self.path, size)
            if isinstance(exc, OSError):
                raise SinkError(f"{self.path}: cannot append {count} document(s): {exc.strerror}") from None
            raise
        self._set_meta(off, off - len(last), _digest(last))

    def iter_documents(
        self, stream: str | None = None, *, start: int | None = None, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every current document (its last line), optionally of one stream and with ``start <= @timestamp <
        end``. An open sink reads the lines its index names; one never opened reads the file through and
        changes nothing (a view of a file another process may be writing)."""
        if not self._opened:
            return self._scan(stream, start, end)
        return self._indexed(stream, start, end)

    def _scan(self, stream: str | None, start: int | None, end: int | None) -> Iterator[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return iter(())
        with self.path.open("rb") as fh:
            off = 0
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                obj = orjson.loads(line)
                if obj.get("_op_type") == "delete":
                    latest.pop(obj["_id"], None)
                else:
                    row = _row(off, line, obj)
                    if (stream is None or row[4] == stream) and _within(row[7], start, end):
                        latest[obj["_id"]] = obj
                    else:
                        latest.pop(obj["_id"], None)
                off += len(line)
        return iter(latest.values())

    def _indexed(self, stream: str | None, start: int | None, end: int | None) -> Iterator[dict[str, Any]]:
        where, params = ["1"], []
        for cond, value in (("stream = ?", stream), ("ts >= ?", start), ("ts < ?", end)):
            if value is not None:
                where.append(cond)
                params.append(value)
        offsets, lengths = array("q"), array("q")  # 16 bytes a document, however many match
        with self._lock:
            self.open()
            if not self.path.exists():
                return
            try:
                db = self._index()
                with self._transaction():
                    self._catch_up()
                rows = db.execute(f"SELECT off, len FROM docs WHERE {' AND '.join(where)} ORDER BY off", params)
                for off, length in rows:
                    offsets.append(off)
                    lengths.append(length)
            except sqlite3.Error as exc:
                raise self._index_failed("cannot read", exc) from None
        if not offsets:
            return
        with self.path.open("rb") as fh:
            for off, length in zip(offsets, lengths, strict=True):
                fh.seek(off)
                yield orjson.loads(fh.read(length))

    # --- state --------------------------------------------------------------------------------------
    def _flush_state(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            with tmp.open("w") as fh:
                json.dump(self._state, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
        except OSError as exc:
            raise SinkError(f"{self.state_path}: cannot write state: {exc.strerror}") from None

    def load_checkpoint(self, org_id: str, stream: str, bucket_width: str, scope: str = "run") -> Checkpoint | None:
        with self._lock:
            self.open()
            raw = self._state["checkpoints"].get(checkpoint_key(org_id, stream, bucket_width, scope))
            return Checkpoint.from_dict(raw) if raw else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self.open()
            self._state["checkpoints"][checkpoint.key] = checkpoint.to_dict()
            self._flush_state()

    def list_checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            self.open()
            return [Checkpoint.from_dict(v) for v in self._state["checkpoints"].values()]

    def record_run(self, run: dict[str, Any]) -> None:
        with self._lock:
            self.open()
            runs = self._state["runs"]
            runs.append(json.loads(dumps(run)))
            del runs[:-MAX_RUNS]
            self._flush_state()

    def list_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            self.open()
            return list(reversed(self._state["runs"]))[:limit]

    def retention(self) -> str | None:
        return None  # a file keeps everything until it is deleted


def _within(ts: int, start: int | None, end: int | None) -> bool:
    return (start is None or ts >= start) and (end is None or ts < end)
