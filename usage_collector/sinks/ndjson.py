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
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ..documents import Document, dumps
from ..errors import SinkError
from .base import BucketSet, Checkpoint, WriteStats
from .filelease import FileLease, FileLeaseMixin

MAX_RUNS = 1000


def _bucket_key(source: dict[str, Any]) -> tuple[str, str, str, int] | None:
    """``(org, stream, width, bucket start)`` of a usage document; ``None`` for other documents (limits)."""
    base = source.get("openai", {}).get("base")
    if not base or "bucket_width" not in base:
        return None
    start = int(datetime.fromisoformat(source["@timestamp"].replace("Z", "+00:00")).timestamp())
    return source["organization"]["id"], source["event"]["dataset"][7:], base["bucket_width"], start


class NdjsonSink(FileLeaseMixin):
    """Append-only NDJSON file plus a JSON state file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + ".state.json")
        self.description = f"ndjson:{self.path}"
        self._lease = FileLease(self.path.with_name(self.path.name + ".lease"))
        self._hashes: dict[str, str] | None = None
        #: (org, stream, width, bucket start) -> the _ids stored for that bucket
        self._buckets: dict[tuple[str, str, str, int], set[str]] = {}
        self._state: dict[str, Any] = {"checkpoints": {}, "runs": []}
        self._lock = threading.RLock()

    # --- lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            if self._hashes is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._hashes = {}
            self._buckets = {}
            if self.path.exists():
                self._repair_tail()
                with self.path.open("rb") as fh:
                    for line in fh:
                        obj = orjson.loads(line)
                        if obj.get("_op_type") == "delete":
                            self._hashes.pop(obj["_id"], None)
                            continue
                        src = obj["_source"]
                        self._hashes[obj["_id"]] = src["event"]["hash"]
                        key = _bucket_key(src)
                        if key is not None:
                            self._buckets.setdefault(key, set()).add(obj["_id"])
            if self.state_path.exists():
                try:
                    self._state = json.loads(self.state_path.read_text())
                except ValueError as exc:
                    raise SinkError(f"{self.state_path}: state file is not valid JSON ({exc})") from None
                self._state.setdefault("checkpoints", {})
                self._state.setdefault("runs", [])

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
            self._hashes = None

    # --- documents --------------------------------------------------------------------------------
    def write_window(
        self, docs: Sequence[Document], checkpoint: Checkpoint | None, replaces: BucketSet | None = None
    ) -> WriteStats:
        with self._lock:
            self.open()
            assert self._hashes is not None
            stats = WriteStats()
            out: list[bytes] = []
            gone: list[str] = []
            if replaces is not None:
                keep = {d.id for d in docs}
                for start in replaces.starts:
                    key = (replaces.org_id, replaces.stream, replaces.bucket_width, start)
                    gone += [i for i in self._buckets.get(key, ()) if i not in keep and i in self._hashes]
                for doc_id in sorted(gone):
                    out.append(dumps({"_op_type": "delete", "_id": doc_id, "_index": replaces.index}) + b"\n")
                stats.deleted = len(gone)
            for doc in docs:
                prev = self._hashes.get(doc.id)
                if prev == doc.hash:
                    stats.unchanged += 1
                    continue
                if prev is None:
                    stats.created += 1
                else:
                    stats.updated += 1
                out.append(doc.action_json() + b"\n")
            if out:
                size = self.path.stat().st_size if self.path.exists() else 0
                try:
                    with self.path.open("ab") as fh:
                        fh.write(b"".join(out))
                        fh.flush()
                        os.fsync(fh.fileno())
                except OSError as exc:
                    # Cut the partial append back off, or the next append would be glued to a cut line.
                    try:
                        os.truncate(self.path, size)
                    except OSError:
                        self._hashes = None  # the next open() repairs the tail
                    raise SinkError(f"{self.path}: cannot append {len(out)} document(s): {exc.strerror}") from None
                for doc_id in gone:
                    del self._hashes[doc_id]
                for doc in docs:
                    self._hashes[doc.id] = doc.hash
                    width = doc.source["openai"].get("base", {}).get("bucket_width")
                    if width is not None:
                        key = (doc.source["organization"]["id"], doc.stream, width, doc.timestamp)
                        self._buckets.setdefault(key, set()).add(doc.id)
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            return stats

    def iter_documents(self, stream: str | None = None) -> Iterator[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return iter(())
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                obj = orjson.loads(line)
                if obj.get("_op_type") == "delete":
                    latest.pop(obj["_id"], None)
                elif stream is None or obj["_source"]["event"]["dataset"] == f"openai.{stream}":
                    latest[obj["_id"]] = obj
        return iter(latest.values())

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
            from .base import checkpoint_key

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
