"""DuckDB sink: the embedded default, a single file.

Tables:

* ``documents(_id PRIMARY KEY, stream, data_stream, ts, hash, source JSON)``: one row per ``_id``, the
  ``source`` being the document exactly as it would go to Elasticsearch;
* ``checkpoints(key PRIMARY KEY, data JSON)``, written **in the same transaction** as the window's
  documents, so a crash leaves either both or neither;
* ``runs(ts, data JSON)``: one run document per stream per cycle.

One view per stream (``completions``, ``costs``, ...) exposes typed columns for SQL users, e.g.
``SELECT project_id, sum(amount_value) FROM costs GROUP BY ALL``; ``limits`` holds the spend-control snapshots.
A numeric field OpenAI added after the catalogue has no view column but is in ``source`` (the document as
written): ``SELECT source->>'$.openai.completions.<name>' FROM documents``.

DuckDB lets one process open a file for writing; the lease (``<file>.lease``) is taken before the file
is opened, so a second run learns who holds it instead of failing on the file lock. The connection opens
lazily on first use.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..catalogue import STREAMS, StreamSpec
from ..documents import Document, dumps
from ..errors import SinkError
from ..limits import LIMITS_STREAM, RATE_LIMIT_FIELDS
from .base import BucketSet, Checkpoint, WriteStats, checkpoint_key
from .filelease import FileLease, FileLeaseMixin

_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    _id VARCHAR PRIMARY KEY,
    stream VARCHAR NOT NULL,
    data_stream VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    hash VARCHAR NOT NULL,
    source JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (key VARCHAR PRIMARY KEY, data JSON NOT NULL);
CREATE TABLE IF NOT EXISTS runs (ts TIMESTAMPTZ NOT NULL, data JSON NOT NULL);
"""


def _view_sql(spec: StreamSpec) -> str:
    cols = [
        "ts AS bucket_start",
        "CAST(source->>'$.openai.base.end_time' AS TIMESTAMPTZ) AS bucket_end",
        "source->>'$.openai.base.bucket_width' AS bucket_width",
        "source->>'$.organization.id' AS org_id",
    ]
    for dim in spec.dimensions:
        path = spec.field_name(dim.name)
        sql_type = "BOOLEAN" if dim.type == "boolean" else "VARCHAR"
        cols.append(f"CAST(source->>'$.{path}' AS {sql_type}) AS {dim.name}")
    for extra in ("project_name", "api_key_name", "user_email"):
        if ("project_id" if extra == "project_name" else "api_key_id" if extra == "api_key_name" else "user_id") in (
            spec.group_by
        ):
            cols.append(f"source->>'$.openai.base.{extra}' AS {extra}")
    for m in spec.measures:
        path = spec.field_name(m.name)
        sql_type = "DECIMAL(38,9)" if m.value_type == "decimal" else "BIGINT"
        cols.append(f"CAST(source->>'$.{path}' AS {sql_type}) AS {m.name.replace('.', '_')}")
    for attr in spec.attributes:
        cols.append(f"source->>'$.{spec.field_name(attr)}' AS {attr.replace('.', '_')}")
    return (
        f"CREATE OR REPLACE VIEW {spec.name} AS SELECT _id, {', '.join(cols)} FROM documents "
        f"WHERE stream = '{spec.name}'"
    )


def _limits_view_sql() -> str:
    lim = f"$.openai.{LIMITS_STREAM}"
    cols = [
        "ts AS observed_at",
        "source->>'$.organization.id' AS org_id",
        "source->>'$.openai.base.project_id' AS project_id",
        *(
            f"source->>'{lim}.{c}' AS {c}"
            for c in ("object", "kind", "scope", "id", "currency", "interval", "model", "enforcement_status")
        ),
        f"CAST(source->>'{lim}.threshold_amount' AS DECIMAL(38,9)) AS threshold_amount",
        f"source->'{lim}.notification_channel.recipients' AS recipients",
        *(f"CAST(source->>'{lim}.{c}' AS BIGINT) AS {c}" for c in RATE_LIMIT_FIELDS),
    ]
    return (
        f"CREATE OR REPLACE VIEW {LIMITS_STREAM} AS SELECT _id, {', '.join(cols)} FROM documents "
        f"WHERE stream = '{LIMITS_STREAM}'"
    )


class DuckDBSink(FileLeaseMixin):
    """Documents, checkpoints and runs in one DuckDB file."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.description = f"duckdb:{self.path}"
        self.read_only = read_only
        self._lease = FileLease(self.path.with_name(self.path.name + ".lease"))
        self._con: Any = None
        self._lock = threading.RLock()

    # --- lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Nothing to do until first use (the file is opened lazily, after the lease)."""

    def _db(self) -> Any:
        if self._con is None:
            import duckdb

            if self.read_only and not self.path.exists():
                raise SinkError(f"{self.path}: no such DuckDB file (run `usage-collector run` or `demo` first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                con = duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                raise SinkError(f"{self.path}: cannot open the DuckDB file: {exc}") from None
            if not self.read_only:
                con.execute(_SCHEMA)
                for spec in STREAMS.values():
                    con.execute(_view_sql(spec))
                con.execute(_limits_view_sql())
            self._con = con
        return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # --- documents --------------------------------------------------------------------------------
    def write_window(
        self, docs: Sequence[Document], checkpoint: Checkpoint | None, replaces: BucketSet | None = None
    ) -> WriteStats:
        import duckdb

        with self._lock:
            con = self._db()
            stats = WriteStats()
            try:
                con.execute("BEGIN TRANSACTION")
                existing: dict[str, str] = {}
                ids = [d.id for d in docs]
                for i in range(0, len(ids), 10_000):
                    existing.update(
                        con.execute(
                            "SELECT _id, hash FROM documents WHERE _id IN (SELECT unnest(?))", [ids[i : i + 10_000]]
                        ).fetchall()
                    )
                fresh: list[Document] = []
                changed: list[Document] = []
                for doc in docs:
                    prev = existing.get(doc.id)
                    if prev is None:
                        fresh.append(doc)
                    elif prev != doc.hash:
                        changed.append(doc)
                    else:
                        stats.unchanged += 1
                gone = [d for d in self._superseded(con, replaces, ids)] if replaces is not None else []
                if changed or gone:
                    con.execute(
                        "DELETE FROM documents WHERE _id IN (SELECT unnest(?))", [[d.id for d in changed] + gone]
                    )
                stats.deleted = len(gone)
                self._insert(con, [*fresh, *changed])
                stats.created = len(fresh)
                stats.updated = len(changed)
                if checkpoint is not None:
                    self._put_checkpoint(con, checkpoint)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise SinkError(
                    f"{self.path}: window of {len(docs)} document(s) not written (first _id "
                    f"{docs[0].id if docs else '-'}): {type(exc).__name__}: {exc}"
                ) from None
            return stats

    @staticmethod
    def _superseded(con: Any, replaces: BucketSet, ids: list[str]) -> list[str]:
        if not replaces.starts:
            return []
        rows = con.execute(
            "SELECT _id FROM documents WHERE stream = ? AND epoch(ts)::BIGINT IN (SELECT unnest(?)) "
            "AND source->>'$.organization.id' = ? AND source->>'$.openai.base.bucket_width' = ?",
            [replaces.stream, sorted(replaces.starts), replaces.org_id, replaces.bucket_width],
        ).fetchall()
        keep = set(ids)
        return [r[0] for r in rows if r[0] not in keep]

    @staticmethod
    def _insert(con: Any, docs: Sequence[Document]) -> None:
        for i in range(0, len(docs), _CHUNK):
            part = docs[i : i + _CHUNK]
            sql = "INSERT INTO documents VALUES " + ",".join(["(?,?,?,to_timestamp(?),?,?)"] * len(part))
            params: list[Any] = []
            for d in part:
                params += [d.id, d.stream, d.index, d.timestamp, d.hash, d.source_json.decode()]
            con.execute(sql, params)

    def iter_documents(self, stream: str | None = None) -> Iterator[dict[str, Any]]:
        with self._lock:
            con = self._db()
            sql = "SELECT _id, data_stream, source FROM documents"
            args: list[Any] = []
            if stream is not None:
                sql += " WHERE stream = ?"
                args.append(stream)
            rows = con.execute(sql + " ORDER BY ts, _id", args).fetchall()
        for _id, index, source in rows:
            yield {"_id": _id, "_index": index, "_source": orjson.loads(source)}

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query (reports, tests)."""
        with self._lock:
            return list(self._db().execute(sql, list(params)).fetchall())

    # --- state --------------------------------------------------------------------------------------
    @staticmethod
    def _put_checkpoint(con: Any, checkpoint: Checkpoint) -> None:
        con.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", [checkpoint.key, dumps(checkpoint.to_dict()).decode()]
        )

    def load_checkpoint(self, org_id: str, stream: str, bucket_width: str, scope: str = "run") -> Checkpoint | None:
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT data FROM checkpoints WHERE key = ?", [checkpoint_key(org_id, stream, bucket_width, scope)]
                )
                .fetchone()
            )
        return Checkpoint.from_dict(orjson.loads(row[0])) if row else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._put_checkpoint(self._db(), checkpoint)

    def list_checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db().execute("SELECT data FROM checkpoints ORDER BY key").fetchall()
        return [Checkpoint.from_dict(orjson.loads(r[0])) for r in rows]

    def record_run(self, run: dict[str, Any]) -> None:
        with self._lock:
            self._db().execute(
                "INSERT INTO runs VALUES (CAST(? AS TIMESTAMPTZ), ?)", [run["@timestamp"], dumps(run).decode()]
            )

    def list_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db().execute("SELECT data FROM runs ORDER BY ts DESC LIMIT ?", [limit]).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def retention(self) -> str | None:
        return None  # a file keeps everything until it is deleted
