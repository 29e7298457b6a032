"""DuckDB sink: the embedded default, a single file.

Tables:

* ``documents(_id, stream, data_stream, ts, hash, source)``: one row per ``_id``, the ``source`` being the
  document's JSON text exactly as it would go to Elasticsearch (``->>`` and DuckDB's JSON functions read it);
* ``checkpoints(key PRIMARY KEY, data JSON)``, written **in the same transaction** as the window's
  documents, so a crash leaves either both or neither;
* ``runs(ts, data JSON)``: one run document per stream per cycle.

One view per stream (``completions``, ``costs``, ...) exposes typed columns for SQL users, e.g.
``SELECT project_id, sum(amount_value) FROM costs GROUP BY ALL``; ``limits`` holds the spend-control snapshots,
``budgets`` one row per budget and UTC day (month to date, forecast, status).
A numeric field OpenAI added after the catalogue has no view column but is in ``source`` (the document as
written): ``SELECT source->>'$.openai.completions.<name>' FROM documents``.

DuckDB lets one process open a file for writing; the lease (``<file>.lease``) is taken before the file
is opened, so a second run learns who holds it instead of failing on the file lock. The connection opens
lazily on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ..catalogue import STREAMS, StreamSpec
from ..documents import Document, dumps
from ..errors import SinkError
from ..limits import LIMITS_STREAM, RATE_LIMIT_FIELDS
from ..reconcile import ALLOCATION_STREAM, RECONCILIATION_STREAM
from .base import BucketSet, Checkpoint, Lease, WriteStats, checkpoint_key
from .filelease import FileLease, FileLeaseMixin

log = logging.getLogger(__name__)

#: Documents per lookup and INSERT (a parameter per column, unnested by DuckDB), rows per fetch of ``iter_documents``:
#: a window of tens of thousands of documents is written a chunk at a time, in one transaction; its chunks are of
#: equal size, about this (:func:`_chunk_size`).
_CHUNK = 1000
#: A window of at most this many documents (the collector's parts, a week of reconciliation) is serialized before the
#: sink's lock is taken, so the lock, which every stream's writes share, is held for DuckDB's statements and not also
#: for serializing (``bench/p6``, 12 streams: the lock was held ~2.5 s of a ~4 s run, its holder using ~1.1 s of CPU
#: there; ~0.15 s less with this); its unchanged documents are serialized for nothing. A larger window is serialized
#: a chunk at a time under the lock, so what it holds at once stays one chunk's JSON.
_SERIALIZE_FIRST = 2 * _CHUNK
#: DuckDB's buffer pool limit, unless the caller sets one: what the sink needs whatever the history held. Its working
#: sets do not grow with history (a transaction writes :data:`_CHUNK` documents at a time, ``iter_documents`` sorts one
#: UTC day at a time), but DuckDB keeps the blocks it read or wrote in its pool until the pool is full, so a long
#: backfill's peak RSS is the 1-day one plus about this limit (365-day 1h backfill as ``bench/p4_memory.py`` runs it,
#: in one process with an RSS sampler, peak RSS: ~185 MB at 48 MB, 156 at 24, 146 at 16; the 1-day one ~116 at any).
#: Below 48 MB the superseded documents' search ran out of memory while it read ``source->>`` in SQL
#: (``tests/test_api_changes.py``); :meth:`DuckDBSink._superseded` reads the sources as text now. A window that
#: still needs more is written again with :data:`RETRY_MEMORY_LIMIT`.
MEMORY_LIMIT = "16MB"
#: The pool a window that ran out of :data:`MEMORY_LIMIT` is written again with (once; the limit is then set back),
#: and the one the write-ahead log is checkpointed with when the file is opened again after a fatal error
#: (:meth:`DuckDBSink._db`).
RETRY_MEMORY_LIMIT = "128MB"
#: What DuckDB says when a COMMIT was written to the WAL and the automatic checkpoint after it failed (DuckDB 2.0,
#: ``src/transaction/duck_transaction_manager.cpp`` ``BuildAutocheckpointError``): the transaction is durable, the
#: database instance invalidated ("Reopen the database instance to recover"). A checkpoint that runs out of the pool
#: fails this way (``src/storage/storage_manager.cpp``: "Failed to create checkpoint because of error", a
#: ``FatalException``); seen here with an 8 MB pool in a 365-day backfill, ``tests/test_duckdb_memory_retry.py``.
_DURABLE = "COMMIT succeeded and is durable"
#: A COMMIT that ran out of the pool: DuckDB's buffer manager refused a block
#: (``src/storage/standard_buffer_manager.cpp`` ``EvictBlocksOrThrow``: "failed to pin block of size", "could not
#: allocate block of size", "failed to allocate data of size"), which the COMMIT reports as a ``TransactionException``
#: ("TransactionContext Error: Failed to commit: failed to pin block ...", seen with DuckDB 2.0.1). Any other failed
#: COMMIT (a write the kernel refused: "Could not write file ... File too large") fails the window, as before
#: (``tests/reliability/test_sink_faults.py``).
_OUT_OF_POOL = re.compile(r"failed to pin block|could not allocate block|failed to allocate data")
#: The writing connection's other settings (``bench/p4_memory.py``, 365-day 1h backfill): one thread (the sink's
#: statements are small and run under its lock; each DuckDB thread keeps its own buffers) and the allocator's caches
#: flushed after a task that allocated 8 MB (DuckDB's default: 128 MB, kept by the process). Checkpoints every 4 MB
#: of WAL (instead of 16) lowered the peak a little more but ran out of memory at a 16 MB limit
#: (``tests/test_sinks.py``, a store larger than its limit): a checkpoint needs memory of its own. Checkpoints every
#: 64 MB of WAL, not DuckDB's 16: each automatic checkpoint compresses again the table's last row group, which the
#: windows since the one before filled further, so at 16 MB the sources were compressed two to three times over
#: (``bench/p8_cpu.py``'s 5-day 1m backfill, 34 MB of sources: the COMMITs 7.1 -> 3.2 us a document, the close's
#: checkpoint 5.6 -> 4.2); the 365-day 1h backfill's peak RSS stayed 146 MB (``bench/p4_memory.py``).
_SETTINGS: dict[str, Any] = {"threads": 1, "allocator_flush_threshold": "8MB", "checkpoint_threshold": "64MB"}
#: The compression of the file's text columns, set where the file's storage version has it (:func:`_zstd_ok`): the
#: sources are ~1.3 kB of JSON each, which DuckDB's own choice (DICT_FSST) compresses about 2.4x at more CPU, ZSTD 7x
#: (``bench/p8_cpu.py``'s 5-day 1m backfill, its 25k documents written again: a 13.9 -> 4.7 MB file, the COMMITs
#: and the last checkpoint 14 -> 9 us a document; reading costs more: a view's sum over them 45 -> 57 ms of CPU,
#: a scan of the sources 39 -> 46 ms).
_COMPRESSION = "zstd"
#: The first storage version with ZSTD for text (DuckDB 1.2). A file of an older one (made by an older DuckDB, or
#: with ``STORAGE_VERSION``) keeps DuckDB's choice: a forced method the file cannot have leaves the text uncompressed.
_ZSTD_STORAGE = (1, 2)
_DAY = 86400
#: ``budgets.BUDGETS_STREAM``, spelled here so that opening the sink does not import the budgets and forecast
#: modules, which a run without ``[[budgets]]`` never uses (P3; tests/test_startup_imports.py holds them equal).
BUDGETS_STREAM = "budgets"
#: Bumped whenever the tables or views below change; a file at this version is opened without any DDL.
SCHEMA_VERSION = 3


def engine() -> Any:
    """DuckDB's compiled engine: what the sink calls (``connect``, a connection's ``execute``, ``fetch*`` and
    ``cursor``, the exception classes).

    That is the extension module ``_duckdb`` when it is importable (DuckDB's package installs it at the top
    level): ``import duckdb`` adds, on top of it, the relational and expression API, the Arrow sources and the
    package version read through ``importlib.metadata``, none of which the sink uses, and took as long again as
    the engine (35-60 ms of a no-op ``run``, P3). Otherwise, the ``duckdb`` package. A module that imports
    ``duckdb`` later gets the same engine (the package re-exports it): connections and exceptions are shared.
    """
    try:
        return importlib.import_module("_duckdb")
    except ImportError:  # pragma: no cover - a DuckDB without the top-level extension module
        return importlib.import_module("duckdb")


def _chunk_size(n: int) -> int:
    """Documents per chunk of a window of ``n``: ``n`` split into the whole number of :data:`_CHUNK` s nearest to it,
    so a chunk holds at most 1.5 times :data:`_CHUNK` (and at least 0.75 times when there are several). A collector
    part (a thousand documents and the rest of their last bucket) is one INSERT, not a thousand documents and then a
    few: an INSERT of 3 documents costs ~0.9 ms of CPU, one of 1,000 ~10-14 ms (P8, the 5-day 1m backfill: 16 of
    its 44 INSERTs held 1 to 4 documents)."""
    return max(1, -(-n // max(1, round(n / _CHUNK))))


def _zstd_ok(con: Any) -> bool:
    """Whether the file ``con`` opened has a storage version with ZSTD for text (its ``storage_version`` tag,
    ``v2.0.0+`` for instance, at least :data:`_ZSTD_STORAGE`)."""
    row = con.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+\+?", str(row[0])) if row and row[0] is not None else None
    return match is not None and (int(match[1]), int(match[2])) >= _ZSTD_STORAGE


# No PRIMARY KEY on documents._id: DuckDB keeps a key's ART index pinned in memory, so it grew with every year
# of history (and a small memory_limit then failed with OutOfMemory). The sink looks ``_id`` s up within the
# window's stream and time range instead (the ``ts`` zone maps skip the rest) and writes each ``_id`` once
# per transaction, under the lease: the uniqueness the key checked holds by construction.
# ``source`` is VARCHAR, not JSON: a JSON column parses every value again at INSERT to validate it (1.1 kB
# documents, 20 INSERTs of 1,000: 8.5-11 against 5.8-6.3 us a document), and every source is orjson's output,
# valid by construction. ``->``, ``->>`` and the other JSON functions take VARCHAR as they take JSON (DuckDB's
# extension/json/json_functions/json_extract.cpp registers each for both types), so the views and a user's
# queries read both alike; a file made before keeps its JSON column.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    _id VARCHAR NOT NULL,
    stream VARCHAR NOT NULL,
    data_stream VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    hash VARCHAR NOT NULL,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (key VARCHAR PRIMARY KEY, data JSON NOT NULL);
CREATE TABLE IF NOT EXISTS runs (ts TIMESTAMPTZ NOT NULL, data JSON NOT NULL);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
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
    for extra, ident in (
        ("project_name", "project_id"),
        ("api_key_name", "api_key_id"),
        ("user_email", "user_id"),
        ("service_account_name", "user_id"),
    ):
        if ident in spec.group_by:
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


def _budgets_view_sql() -> str:
    b = f"$.openai.{BUDGETS_STREAM}"
    money = ("amount", "billed", "today_estimate", "month_to_date")
    cols = [
        "ts AS as_of",
        "source->>'$.organization.id' AS org_id",
        "source->>'$.openai.base.project_id' AS project_id",
        "source->>'$.openai.base.project_name' AS project_name",
        *(f"source->>'{b}.{c}' AS {c}" for c in ("name", "scope", "month", "day", "status")),
        f"CAST(source->>'{b}.day' AS DATE) AS day_date",
        *(f"CAST(source->>'{b}.{c}' AS DECIMAL(38,9)) AS {c}" for c in money),
        f"CAST(source->>'{b}.spend_percent' AS DOUBLE) AS spend_percent",
        *(f"CAST(source->>'{b}.forecast.{c}' AS DECIMAL(38,9)) AS forecast_{c}" for c in ("point", "lower", "upper")),
        f"CAST(source->>'{b}.forecast.percent' AS DOUBLE) AS forecast_percent",
        f"source->>'{b}.forecast.method' AS forecast_method",
        f"CAST(source->'{b}.alert_at' AS INTEGER[]) AS alert_at",
        f"CAST(source->'{b}.crossed' AS INTEGER[]) AS crossed",
        f"CAST(source->>'{b}.openai_limits.spend_limit' AS DECIMAL(38,9)) AS openai_spend_limit",
    ]
    return (
        f"CREATE OR REPLACE VIEW {BUDGETS_STREAM} AS SELECT _id, {', '.join(cols)} FROM documents "
        f"WHERE stream = '{BUDGETS_STREAM}'"
    )


def _derived_view_sql(stream: str) -> str:
    """The ``reconciliation`` and ``allocation`` views (:mod:`usage_collector.reconcile`): money as DECIMAL."""
    own = f"$.openai.{stream}"
    cols = [
        "CAST(ts AS DATE) AS day",
        "source->>'$.organization.id' AS org_id",
        "source->>'$.openai.base.project_id' AS project_id",
        "source->>'$.openai.base.project_name' AS project_name",
        "source->>'$.openai.base.model' AS model",
    ]
    if stream == RECONCILIATION_STREAM:
        cols += [
            f"source->>'{own}.item' AS item",
            f"CAST(source->>'{own}.estimated_cost' AS DECIMAL(38,12)) AS estimated_cost",
            f"CAST(source->>'{own}.billed_cost' AS DECIMAL(38,9)) AS billed_cost",
            f"CAST(source->>'{own}.difference' AS DECIMAL(38,12)) AS difference",
            f"CAST(source->>'{own}.share_explained' AS DOUBLE) AS share_explained",
            f"CAST(source->>'{own}.unpriced_documents' AS BIGINT) AS unpriced_documents",
            f"CAST(source->>'{own}.usage_documents' AS BIGINT) AS usage_documents",
            f"source->'{own}.line_items' AS line_items",
        ]
    else:
        cols += [
            "source->>'$.openai.base.api_key_id' AS api_key_id",
            "source->>'$.openai.base.user_id' AS user_id",
            "source->>'$.openai.base.user_email' AS user_email",
            *(f"source->>'{own}.{c}' AS {c}" for c in ("line_item", "unit", "tier", "api_source", "method")),
            f"CAST(source->>'{own}.amount' AS DECIMAL(38,9)) AS amount",
            f"CAST(source->>'{own}.billed_amount' AS DECIMAL(38,9)) AS billed_amount",
            f"CAST(source->>'{own}.weight' AS DOUBLE) AS weight",
        ]
    cols.append(f"source->>'{own}.currency' AS currency")
    return f"CREATE OR REPLACE VIEW {stream} AS SELECT _id, {', '.join(cols)} FROM documents WHERE stream = '{stream}'"


#: Streams whose ``_id`` holds the day (and content), not the time: looked up by stream only.
_UNTIMED = frozenset({LIMITS_STREAM, BUDGETS_STREAM})


@dataclass(frozen=True)
class _Scope:
    """The streams and time range a window's documents (and the buckets it replaces) lie in: every ``_id``
    lookup and delete is bounded by them, so DuckDB reads only the row groups of that range. A usage ``_id``
    holds its bucket start, so the same ``_id`` always has the same ``ts``."""

    sql: str
    params: tuple[Any, ...]

    @classmethod
    def of(cls, docs: Sequence[Document], replaces: BucketSet | None) -> _Scope:
        streams = {d.stream for d in docs}
        times = [t for d in docs if type(t := d.timestamp) is int]  # anything else fails the INSERT, as it should
        if replaces is not None and replaces.starts:
            streams.add(replaces.stream)
            times += [min(replaces.starts), max(replaces.starts)]
        if not times:
            return cls("false", ())
        if streams & _UNTIMED:
            return cls("stream IN (SELECT unnest(?))", (sorted(streams),))
        return cls(
            "stream IN (SELECT unnest(?)) AND ts BETWEEN to_timestamp(?) AND to_timestamp(?)",
            (sorted(streams), min(times), max(times)),
        )


def _first_line(exc: BaseException) -> str:
    """An error's first line (DuckDB's messages go on with "Possible solutions" and a link)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class DuckDBSink(FileLeaseMixin):
    """Documents, checkpoints and runs in one DuckDB file."""

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, memory_limit: str | None = MEMORY_LIMIT
    ) -> None:
        self.path = Path(path)
        self.description = f"duckdb:{self.path}"
        self.read_only = read_only
        self.memory_limit = memory_limit
        self._lease = FileLease(self.path.with_name(self.path.name + ".lease"))
        self._con: Any = None
        #: the instance was invalidated by a fatal error (:meth:`_invalidate`): the next open recovers it
        self._recover = False
        #: the pool is RETRY_MEMORY_LIMIT and could not be set back yet (:meth:`_lower_pool`)
        self._raised = False
        self._lock = threading.RLock()
        #: the file being opened in the background since the lease was taken (:meth:`acquire_lease`)
        self._opener: threading.Thread | None = None
        #: run documents recorded (:meth:`record_run`) and not yet written: ``(@timestamp, JSON)``, written with
        #: the sink's next commit (a window, a checkpoint, the lease given back, :meth:`close`); under ``_runs_lock``
        #: (not the sink's lock, which a stream would wait on while another writes)
        self._runs: list[tuple[str, str]] = []
        self._runs_lock = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Nothing to do until first use (the file is opened lazily, after the lease)."""

    def acquire_lease(self, org_id: str, holder: str, ttl: float, now: float) -> Lease:
        """The lease (:class:`FileLease`); the first one also starts opening the file in the background.

        Opening the file (``connect``, 20-25 ms on the P3 file, most of it outside the GIL) then overlaps what the
        collector does before its first read (the HTTP client, the threads, the Admin lists' first requests)
        instead of holding up every stream's first checkpoint read. The file is still opened only once the
        lease is held. An error there is left for the first use, which opens the file again and reports it.
        """
        lease = super().acquire_lease(org_id, holder, ttl, now)
        with self._lock:
            if self._con is None and self._opener is None and not self.read_only:
                self._opener = threading.Thread(target=self._open_quietly, name="duckdb-open", daemon=True)
                self._opener.start()
        return lease

    def _open_quietly(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._db()

    def release_lease(self, org_id: str, holder: str) -> None:
        """The run documents recorded are written first (:meth:`record_run`), then the lease is given back."""
        self._flush_runs()
        super().release_lease(org_id, holder)

    def _db(self) -> Any:
        if self._con is None:
            duckdb = engine()

            if self.read_only and not self.path.exists():
                raise SinkError(f"{self.path}: no such DuckDB file (run `usage-collector run` or `demo` first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            config: dict[str, Any] = dict(_SETTINGS) if not self.read_only else {}  # reports keep every thread
            if self.memory_limit:
                # the same configuration every time: DuckDB refuses a connection to a file with another one while
                # a connection of the first is open ("Can't open a connection to same database file with a
                # different configuration"), and a cursor of iter_documents may still be open
                config["memory_limit"] = self.memory_limit
            try:
                con = duckdb.connect(str(self.path), read_only=self.read_only, config=config)
            except duckdb.IOException as exc:
                raise SinkError(f"{self.path}: cannot open the DuckDB file: {exc}") from None
            if self._recover and not self.read_only:
                # after a fatal error (a checkpoint that ran out of the pool): the WAL, replayed by connect, is
                # checkpointed here with the larger pool, so the next COMMIT does not start the same checkpoint in
                # the small one and fail again; then the pool is set back
                try:
                    self._raise_pool(con)
                    con.execute("CHECKPOINT")
                except BaseException:
                    con.close()
                    raise
                self._lower_pool(con)
                log.warning("%s: opened again after a fatal DuckDB error, its write-ahead log checkpointed", self.path)
            self._recover = False
            if not self.read_only and _zstd_ok(con):
                con.execute(f"SET force_compression = '{_COMPRESSION}'")
            if not self.read_only and self._version(con) != SCHEMA_VERSION:
                con.execute("BEGIN TRANSACTION")
                con.execute(_SCHEMA)
                for spec in STREAMS.values():
                    con.execute(_view_sql(spec))
                con.execute(_limits_view_sql())
                con.execute(_budgets_view_sql())
                for derived in (RECONCILIATION_STREAM, ALLOCATION_STREAM):
                    con.execute(_derived_view_sql(derived))
                con.execute("DELETE FROM schema_version")
                con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
                con.execute("COMMIT")
            self._con = con
        return self._con

    @staticmethod
    def _version(con: Any) -> int | None:
        """The file's schema version; ``None`` for a new file or one written before versions were recorded."""
        duckdb = engine()

        try:
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        except duckdb.CatalogException:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        opener, self._opener = self._opener, None
        if opener is not None:
            opener.join()  # so no connection is opened behind this close
        self._flush_runs()
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # --- documents --------------------------------------------------------------------------------
    def write_window(
        self, docs: Sequence[Document], checkpoint: Checkpoint | None, replaces: BucketSet | None = None
    ) -> WriteStats:
        duckdb = engine()

        # what depends on the documents alone is done before the lock is taken (see _SERIALIZE_FIRST)
        scope = _Scope.of(docs, replaces)
        keep = {d.id for d in docs} if replaces is not None else set()
        sources = [dumps(d.source).decode() for d in docs] if len(docs) <= _SERIALIZE_FIRST else None
        state = dumps(checkpoint.to_dict()).decode() if checkpoint is not None else None
        with self._lock:
            try:
                con = self._db()
                self._lower_pool(con)  # a pool left raised by an earlier window
                try:
                    return self._write(con, docs, checkpoint, replaces, scope, keep, sources, state)
                except duckdb.FatalException as exc:  # not committed (_commit_runs keeps a durable one)
                    retry = exc
                except (duckdb.OutOfMemoryException, duckdb.TransactionException) as exc:
                    # a window that needs more than MEMORY_LIMIT (none of the tests' or benchmarks' does), or whose
                    # COMMIT ran out of it (_OUT_OF_POOL)
                    if not self.memory_limit or (
                        isinstance(exc, duckdb.TransactionException) and not _OUT_OF_POOL.search(str(exc))
                    ):
                        raise
                    retry = exc
                # once more, with a larger pool, then the pool is set back (after a fatal error, on a new instance)
                log.warning("%s: window written again with a larger pool: %s", self.path, _first_line(retry))
                con = self._db()
                self._raise_pool(con)
                try:
                    return self._write(con, docs, checkpoint, replaces, scope, keep, sources, state)
                finally:
                    if self._con is con:
                        self._lower_pool(con)
            except duckdb.Error as exc:
                raise SinkError(
                    f"{self.path}: window of {len(docs)} document(s) not written (first _id "
                    f"{docs[0].id if docs else '-'}): {type(exc).__name__}: {exc}"
                ) from None

    def _write(
        self,
        con: Any,
        docs: Sequence[Document],
        checkpoint: Checkpoint | None,
        replaces: BucketSet | None,
        scope: _Scope,
        keep: set[str],
        sources: list[str] | None,
        state: str | None,
    ) -> WriteStats:
        """One transaction (:meth:`_commit_runs`, with the run documents recorded since the last commit): the
        documents, the superseded ones deleted, the checkpoint; rolled back on an error. ``scope``, ``keep``,
        ``sources`` and ``state`` were made before the lock (:meth:`write_window`)."""
        stats = WriteStats()

        def window() -> None:
            stored = self._stored(con, docs, replaces)
            gone = self._superseded(con, replaces, keep, stored) if replaces is not None else []
            if gone:
                self._delete(con, scope, gone)
            stats.deleted = len(gone)
            size = _chunk_size(len(docs))
            for i in range(0, len(docs), size):
                chunk = sources[i : i + size] if sources is not None else None
                self._write_chunk(con, scope, docs[i : i + size], stats, stored, chunk)
            if checkpoint is not None and state is not None:
                self._put_checkpoint(con, checkpoint, state)

        self._commit_runs(con, window)
        return stats

    @staticmethod
    def _stored(con: Any, docs: Sequence[Document], replaces: BucketSet | None) -> dict[str, tuple[str, int]] | None:
        """``_id -> (hash, bucket start)`` of every stored document of a small window's stream and time range, in
        one read that serves both the ``_id`` lookup and the superseded documents' search (a routine window:
        one statement fewer per stream, P3; a part of a large window, :data:`~usage_collector.collector.WRITE_PART`
        documents and the rest of their last bucket: instead of a lookup of a thousand ``_id`` s and the search,
        P8: 5.1 -> 1.1 us a document); ``None``
        for any other window (several streams, more than :data:`_SERIALIZE_FIRST` documents, no buckets replaced),
        which looks up its ``_id`` s a chunk at a time."""
        if replaces is None or not replaces.starts or len(docs) > _SERIALIZE_FIRST or replaces.stream in _UNTIMED:
            return None
        if any(d.stream != replaces.stream or type(d.timestamp) is not int for d in docs):
            return None
        times = [*(d.timestamp for d in docs), min(replaces.starts), max(replaces.starts)]
        rows = con.execute(
            "SELECT _id, hash, epoch(ts)::BIGINT FROM documents WHERE stream = ? "
            "AND ts BETWEEN to_timestamp(?) AND to_timestamp(?)",
            [replaces.stream, min(times), max(times)],
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    @classmethod
    def _write_chunk(
        cls,
        con: Any,
        scope: _Scope,
        docs: Sequence[Document],
        stats: WriteStats,
        stored: dict[str, tuple[str, int]] | None = None,
        sources: list[str] | None = None,
    ) -> None:
        """Create the new documents of ``docs`` and replace the changed ones (one lookup, unless ``stored`` holds
        them, one INSERT); ``sources``: their sources serialized already, in the same order."""
        if stored is not None:
            existing = {d.id: stored[d.id][0] for d in docs if d.id in stored}
        else:
            existing = dict(
                con.execute(
                    "SELECT _id, hash FROM documents WHERE " + scope.sql + " AND _id IN (SELECT unnest(?))",
                    [*scope.params, [d.id for d in docs]],
                ).fetchall()
            )
        fresh: list[int] = []
        changed: list[int] = []
        for i, doc in enumerate(docs):
            prev = existing.get(doc.id)
            if prev is None:
                fresh.append(i)
            elif prev != doc.hash:
                changed.append(i)
            else:
                stats.unchanged += 1
        if changed:
            cls._delete(con, scope, [docs[i].id for i in changed])
        written = [*fresh, *changed]
        cls._insert(con, [docs[i] for i in written], None if sources is None else [sources[i] for i in written])
        stats.created += len(fresh)
        stats.updated += len(changed)
        stats.ids_created += [docs[i].id for i in fresh]  # the days they are in are reconciled again (reconcile.py)
        stats.ids_updated += [docs[i].id for i in changed]

    @staticmethod
    def _delete(con: Any, scope: _Scope, ids: list[str]) -> None:
        con.execute("DELETE FROM documents WHERE " + scope.sql + " AND _id IN (SELECT unnest(?))", [*scope.params, ids])

    @staticmethod
    def _superseded(
        con: Any, replaces: BucketSet, keep: set[str], stored: dict[str, tuple[str, int]] | None = None
    ) -> list[str]:
        """The stored ``_id`` s of ``replaces``' buckets not in ``keep``. The buckets' ``_id`` s are read first (no
        ``source``; from ``stored`` when given, see :meth:`_stored`); only those not kept, usually none, have their
        organization and width read from ``source``."""
        if not replaces.starts:
            return []
        starts = sorted(replaces.starts)
        bucket = (
            "stream = ? AND ts BETWEEN to_timestamp(?) AND to_timestamp(?) AND epoch(ts)::BIGINT IN (SELECT unnest(?))"
        )
        args = [replaces.stream, starts[0], starts[-1], starts]
        if stored is not None:
            others = [i for i, (_h, t) in stored.items() if t in replaces.starts and i not in keep]
        else:
            others = [r[0] for r in con.execute("SELECT _id FROM documents WHERE " + bucket, args).fetchall()]
            others = [i for i in others if i not in keep]
        if not others:
            return []
        # organization and width checked here, not with ``source->>`` in SQL: DuckDB's JSON functions parse a
        # vector's sources into an arena counted in its pool, and that query alone ran out of a 24 MB pool
        # (``tests/test_api_changes.py``, a thousand documents superseded); read as text, a source is a string
        cur = con.execute(
            "SELECT _id, source FROM documents WHERE " + bucket + " AND _id IN (SELECT unnest(?))", [*args, others]
        )
        gone: list[str] = []
        while rows := cur.fetchmany(_CHUNK):
            for _id, source in rows:
                src = orjson.loads(source)
                base = (src.get("openai") or {}).get("base") or {}
                if (src.get("organization") or {}).get("id") == replaces.org_id and (
                    base.get("bucket_width") == replaces.bucket_width
                ):
                    gone.append(_id)
        return gone

    @staticmethod
    def _insert(con: Any, docs: Sequence[Document], sources: list[str] | None = None) -> None:
        # No statement with thousands of parameters to bind and plan: each short text column is ONE parameter, its
        # values joined by newlines and split by DuckDB, the bucket starts one list. The texts are columns of a
        # subquery, so the optimizer does not fold string_split into a constant list of a thousand values, the
        # conversion a list parameter per column (the previous form) cost (P8, the 5-day 1m backfill's windows: the
        # INSERT from 8.8 to 5.5-6.5 us a document). A column of the short ones whose values hold a newline (none of
        # the collector's: base64, hex, catalogue names) goes as a list. The sources go as a list: a ~1 kB text
        # is cheaper to pass one by one than joined, where DuckDB takes a parameter of a thousand of them (~1.3 MB)
        # at ~1.6 ns a byte before any splitting (P8: the INSERT 4.1 -> 3.5 us a document, and no joined copy held).
        # A column of one value throughout (``stream`` and ``data_stream``, in a window of one stream) goes as that
        # value, repeated by DuckDB beside the unnested columns: nothing to join or split. The source is serialized
        # here (or before the lock: ``sources``), not through Document.source_json, so no document keeps its bytes
        # after this.
        if not docs:
            return
        if sources is None:
            sources = [dumps(d.source).decode() for d in docs]
        params: list[Any] = []
        cols: list[str] = []
        for n, values in enumerate(
            ([d.id for d in docs], [d.stream for d in docs], [d.index for d in docs], [d.hash for d in docs])
        ):
            if values.count(values[0]) == len(values):
                params.append(values[0])
                cols.append(f"c{n}")
                continue
            text = "\n".join(values)
            whole = text.count("\n") == len(values) - 1
            params.append(text if whole else values)
            cols.append(f"unnest(string_split(c{n}, chr(10)))" if whole else f"unnest(c{n})")
        con.execute(
            f"INSERT INTO documents (_id, stream, data_stream, hash, source, ts) SELECT {', '.join(cols)}, "
            "unnest(j), to_timestamp(unnest(t)) "
            "FROM (SELECT ? AS c0, ? AS c1, ? AS c2, ? AS c3, ? AS j, ? AS t)",
            [*params, sources, [d.timestamp for d in docs]],
        )

    def iter_documents(
        self, stream: str | None = None, *, start: int | None = None, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every current document, ordered by ``ts`` and ``_id``, read one UTC day at a time (each day sorted on
        its own: a sort of the whole table, sources included, needs more than :data:`MEMORY_LIMIT`), ``_CHUNK``
        rows per fetch, on a cursor of its own. A day that runs out of the pool is read again, once, under the
        sink's lock (after the window being written beside it)."""
        duckdb = engine()
        where, args = ["true"], []
        if stream is not None:
            where.append("stream = ?")
            args.append(stream)
        with self._lock:
            con = self._db()
            cur = con.cursor()
        try:
            if start is not None and end is not None:
                bounds: Any = (start, end - 1)
            else:  # the stored span, within the bound given if any
                given = [(op, v) for op, v in ((">=", start), ("<", end)) if v is not None]
                bounds = cur.execute(
                    "SELECT floor(epoch(min(ts)))::BIGINT, floor(epoch(max(ts)))::BIGINT FROM documents WHERE "
                    + " AND ".join([*where, *(f"ts {op} to_timestamp(?)" for op, _ in given)]),
                    [*args, *(v for _, v in given)],
                ).fetchone()
            if bounds is None or bounds[0] is None or bounds[0] > bounds[1]:
                return
            first, last = bounds
            sql = (
                f"SELECT _id, data_stream, source FROM documents WHERE {' AND '.join(where)} "
                "AND ts >= to_timestamp(?) AND ts < to_timestamp(?) ORDER BY ts, _id"
            )
            for day in range(first - first % _DAY, last + 1, _DAY):
                lo = day if start is None else max(day, start)
                hi = day + _DAY if end is None else min(day + _DAY, end)
                try:
                    cur.execute(sql, [*args, lo, hi])
                except duckdb.OutOfMemoryException:
                    # the pool is held by a window being written beside this read (reconcile.Ahead reads while
                    # the streams write): the day is read again once that write is done, under the lock
                    with self._lock:
                        cur.execute(sql, [*args, lo, hi])
                while rows := cur.fetchmany(_CHUNK):
                    for _id, index, source in rows:
                        yield {"_id": _id, "_index": index, "_source": orjson.loads(source)}
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.FatalException):
                self._invalidate(con)  # the instance is unusable: the next use opens the file again
            # a SinkError, like a failed write: reconciliation then says what failed and tries again later, instead
            # of logging an unexpected exception (seen with an 8 MB pool, a day read beside writing streams)
            raise SinkError(f"{self.path}: documents not read: {_first_line(exc)}") from None
        finally:
            cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query (reports, tests); the run documents recorded are written first."""
        self._flush_runs()
        with self._lock:
            return list(self._db().execute(sql, list(params)).fetchall())

    # --- state --------------------------------------------------------------------------------------
    @staticmethod
    def _put_checkpoint(con: Any, checkpoint: Checkpoint, data: str | None = None) -> None:
        # an UPDATE of the stored checkpoint, the usual case, leaves the key's index alone: a third of the time of
        # INSERT OR REPLACE, which deletes and inserts the key (P3: 0.4 vs 1.1 ms a window on the p3 file).
        # ``data``: the checkpoint serialized already (before the lock)
        key = checkpoint.key
        if data is None:
            data = dumps(checkpoint.to_dict()).decode()
        updated = con.execute("UPDATE checkpoints SET data = ? WHERE key = ?", [data, key]).fetchone()
        if not updated or not updated[0]:
            con.execute("INSERT INTO checkpoints VALUES (?, ?)", [key, data])

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
        data = dumps(checkpoint.to_dict()).decode()  # before the lock, as write_window does
        with self._lock:
            con = self._db()
            self._commit_runs(con, lambda: self._put_checkpoint(con, checkpoint, data))

    def list_checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db().execute("SELECT data FROM checkpoints ORDER BY key").fetchall()
        return [Checkpoint.from_dict(orjson.loads(r[0])) for r in rows]

    def record_run(self, run: dict[str, Any]) -> None:
        """Keep the run document for the sink's next commit: the window a stream writes next, a checkpoint, the
        lease given back at the end of the organization's cycle, or :meth:`close` (a commit per stream fewer: P3,
        ~1.5 ms each, under the lock every stream's writes share). Read back (:meth:`list_runs`, :meth:`query`)
        they are written first. A document whose ``@timestamp`` is not an ISO-8601 instant is written at once,
        on its own, as before (and fails here, not in a window)."""
        data = dumps(run).decode()  # before the lock, as write_window does
        ts = run["@timestamp"]
        try:
            datetime.fromisoformat(ts)
        except (TypeError, ValueError):
            with self._lock:
                self._db().execute("INSERT INTO runs VALUES (CAST(? AS TIMESTAMPTZ), ?)", [ts, data])
            return
        with self._runs_lock:
            self._runs.append((ts, data))

    def _take_runs(self) -> list[tuple[str, str]]:
        with self._runs_lock:
            runs, self._runs = self._runs, []
        return runs

    def _put_back_runs(self, runs: list[tuple[str, str]]) -> None:
        with self._runs_lock:
            self._runs[:0] = runs

    @staticmethod
    def _put_runs(con: Any, runs: list[tuple[str, str]]) -> None:
        if runs:
            con.execute(
                "INSERT INTO runs SELECT CAST(t AS TIMESTAMPTZ), d FROM (SELECT unnest(?) AS t, unnest(?) AS d)",
                [[t for t, _ in runs], [d for _, d in runs]],
            )

    def _commit_runs(self, con: Any, also: Callable[[], None] | None = None) -> None:
        """One transaction: ``also`` (if given) and the run documents recorded; they stay recorded on an error. A
        COMMIT that DuckDB made durable before failing (:data:`_DURABLE`) is a success."""
        duckdb = engine()

        runs = self._take_runs()
        try:
            con.execute("BEGIN TRANSACTION")
            if also is not None:
                also()
            self._put_runs(con, runs)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.FatalException):
                self._invalidate(con)  # the instance is unusable: the next use opens the file again
                if _DURABLE in str(exc):
                    # committed (the window, the checkpoint, the run documents): done; only the checkpoint after it
                    # failed, which the next open does with the larger pool (_db)
                    log.warning("%s: committed, then DuckDB failed: %s", self.path, _first_line(exc))
                    return
            else:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    # a transaction that cannot be rolled back stays open ("Current transaction is aborted"): the
                    # connection is closed (which rolls it back) and the next use opens another
                    self._invalidate(con, recover=False)
            self._put_back_runs(runs)
            raise

    def _raise_pool(self, con: Any) -> None:
        """The pool set to :data:`RETRY_MEMORY_LIMIT` (when the sink has a limit)."""
        if self.memory_limit:
            con.execute(f"SET memory_limit = '{RETRY_MEMORY_LIMIT}'")
            self._raised = True

    def _lower_pool(self, con: Any) -> None:
        """The pool set back to :attr:`memory_limit`; never raises. DuckDB refuses while more than that is in use
        ("Failed to change memory limit ... could not free up enough memory": a read beside holds blocks): the pool
        then stays larger until a later window sets it back, and the window just written stays written."""
        if not self._raised or not self.memory_limit:
            return
        try:
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
        except engine().Error as exc:
            log.debug("%s: pool not set back yet: %s", self.path, _first_line(exc))
        else:
            self._raised = False

    def _invalidate(self, con: Any, *, recover: bool = True) -> None:
        """Close ``con`` if it is still the sink's connection, so that the next use opens the file again;
        ``recover``: after a fatal error, that open checkpoints the WAL with the larger pool (:meth:`_db`)."""
        with self._lock:
            if self._con is not con:
                return  # already replaced
            self._con = None
            self._recover = self._recover or recover
        with contextlib.suppress(Exception):
            con.close()

    def _flush_runs(self) -> None:
        """Write the run documents recorded, in one transaction; a failure is logged (as the collector logs a run
        document it could not record) and they are dropped."""
        with self._lock:
            if not self._runs:
                return
            try:
                self._commit_runs(self._db())
            except Exception as exc:
                dropped = self._take_runs()
                log.warning("%s: %d run document(s) not recorded: %s", self.path, len(dropped), exc)

    def list_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        self._flush_runs()
        with self._lock:
            rows = self._db().execute("SELECT data FROM runs ORDER BY ts DESC LIMIT ?", [limit]).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def retention(self) -> str | None:
        return None  # a file keeps everything until it is deleted
