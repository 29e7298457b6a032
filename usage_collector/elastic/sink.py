"""Elasticsearch sink: documents in data streams, checkpoints and leases in a state index.

**Writes are idempotent across rollover.** A data stream accepts only ``create``, and a duplicate ``_id`` is
refused only within one backing index (``delivery-semantics.md`` §2, elastic/elasticsearch#44794). So each
window first looks up which ``_id`` s already exist anywhere in its data stream (a search with an ``ids``
query, ``seq_no_primary_term``, ``_source`` limited to ``event.hash``), then in one ``streaming_bulk``:

* a new ``_id`` is ``create`` d on the data stream;
* a known ``_id`` whose ``event.hash`` differs is overwritten **in its backing index** with ``index`` and
  ``if_seq_no``/``if_primary_term`` (the only overwrite a backing index allows);
* a known ``_id`` with the same hash is skipped;
* copies of one ``_id`` in several backing indices (another tool, an old rollover) are reduced to one:
  the copy with the current hash, else the newest, is kept and the others are deleted (``if_seq_no`` too);
* with ``replaces`` (the buckets the window re-read), every stored document of those buckets that the window
  does not hold is deleted (found with a scroll over organization, dataset, width and ``@timestamp``).

Item 429s are resent by the bulk helper with exponential backoff. A 409 (someone wrote between lookup and
write) is resolved by reading that document in real time and planning again, at most ``conflict_passes``
times. Any other item error fails the window with a :class:`SinkError` naming the ``_id``, the field (when
Elasticsearch says which) and the reason; the checkpoint is stored only after every item was acknowledged.

**Visibility.** Search is near-real-time, and the lookup must see everything written before it. Every bulk
and state write is sent with ``refresh=true``: an acknowledged write is searchable when the call returns,
whoever looks next (the next window, the next run seconds later, ``status``). It costs one refresh per bulk
request, small at our volumes (a window is at most a few thousand documents), and needs no privilege beyond
writing (``POST _refresh`` would need ``maintenance``). Checkpoints and leases are read by ``_id`` (a real-time
GET), so they never depend on a refresh.

Connecting, the compatibility header and error messages are :mod:`usage_collector.elastic.connection`;
``elasticsearch`` is imported only when this sink is used.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson

from .. import secrets
from ..catalogue import STREAMS
from ..clock import iso
from ..documents import Document, dumps
from ..errors import LeaseHeldError, SinkError
from ..limits import LIMITS_STREAM
from ..reconcile import DERIVED_STREAMS
from ..sinks.base import BucketSet, Checkpoint, Lease, WriteStats, checkpoint_key
from .connection import ServerInfo, _reason, connect, describe, field_of, guard, sink_error
from .objects import MANAGED_BY, data_stream_name, index_patterns, runs_data_stream, state_index
from .setup import setup

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from ..config import Settings

log = logging.getLogger(__name__)

#: ``_id`` s per lookup search, and the hits it may return (duplicates across backing indices included).
LOOKUP_CHUNK = 1000
LOOKUP_SIZE = 10000
#: Hits per page of :meth:`ElasticsearchSink.iter_documents`.
READ_PAGE = 1000
_BACKING_GEN = re.compile(r"-(\d+)$")
#: Every stream whose documents the sink holds, in the order :meth:`ElasticsearchSink.iter_documents` reads them.
_ALL_STREAMS: tuple[str, ...] = (*STREAMS, LIMITS_STREAM, *DERIVED_STREAMS)


@dataclass(frozen=True)
class _Hit:
    index: str
    seq_no: int
    primary_term: int
    hash: str | None


def _generation(index: str) -> int:
    m = _BACKING_GEN.search(index)
    return int(m.group(1)) if m else -1


def _data_stream_of(index: str, source: Mapping[str, Any]) -> str:
    ds = source.get("data_stream")
    if isinstance(ds, Mapping) and all(ds.get(k) for k in ("type", "dataset", "namespace")):
        return f"{ds['type']}-{ds['dataset']}-{ds['namespace']}"
    m = re.fullmatch(r"\.ds-(.+)-\d{4}\.\d{2}\.\d{2}-\d{6}", index)
    return m.group(1) if m else index


class _Line(bytes):
    """One bulk action line, serialized once with orjson.

    It is ``bytes``, so the client's serializers send it unchanged (``JsonSerializer.dumps`` and
    ``NdjsonSerializer.dumps`` pass bytes through, in elastic-transport 8 and 9), and the headers of the request
    stay those of the transport (``compatible-with``, :mod:`.connection`). ``copy()`` gives back the
    ``{op: meta}`` dict: ``streaming_bulk`` reads the action that way only when a whole chunk failed
    (``_process_bulk_chunk_error``).
    """

    def copy(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(bytes(self))  # orjson < 3.9 refuses a subclass of bytes
        return out


def bulk_lines(action: Mapping[str, Any]) -> tuple[_Line, bytes | None]:
    """``streaming_bulk``'s ``expand_action_callback``: the action line and the source line of one action of
    :meth:`ElasticsearchSink._plan`, as bytes. The source is the :class:`Document` itself, serialized here, as
    ``streaming_bulk`` builds each chunk (not through :attr:`Document.source_json`, which would keep the bytes of
    every document of the window until the window ends).

    Replaces ``elasticsearch.helpers.expand_action`` (which copies every action) and the client's stdlib JSON
    serializer; the lines are the same JSON: ``{"create":{"_index":..,"_id":..}}`` then the ``_source``.
    """
    doc = action.get("_source")
    if isinstance(doc, Document):
        if action["_op_type"] == "create" and tuple(action) == _CREATE:  # most: the same bytes as below, spelled out
            index = action["_index"]
            head = _CREATE_HEADS.get(index)
            if head is None:
                if len(_CREATE_HEADS) >= 256:
                    _CREATE_HEADS.clear()
                head = _CREATE_HEADS[index] = b'{"create":{"_index":' + _json_str(index) + b',"_id":'
            return _Line(head + _json_str(action["_id"]) + b"}}"), dumps(doc.source)
        source: bytes | None = dumps(doc.source)
    else:
        source = doc
    meta = {k: v for k, v in action.items() if k != "_op_type" and k != "_source"}
    return _Line(orjson.dumps({action["_op_type"]: meta})), source


#: The keys of a ``create`` action of :meth:`ElasticsearchSink._plan`, in its order.
_CREATE = ("_op_type", "_index", "_id", "_source")
#: A ``create`` action line up to its ``_id`` value, per data stream (a few).
_CREATE_HEADS: dict[str, bytes] = {}
_json_str = orjson.dumps


# --- the sink ---------------------------------------------------------------------------------------
class ElasticsearchSink:
    """Documents in data streams, checkpoints and leases in a state index, runs in a data stream.

    Args:
        settings: connection, namespace, data stream type and the streams in use.
        client: an already connected client (tests, ``setup``); built from ``settings`` when ``None``.
        chunk_size: bulk actions per request (``streaming_bulk``).
        max_retries: times a bulk item rejected with 429 is resent.
        initial_backoff: seconds before the first resend, doubled each time (``0`` in tests).
        max_backoff: cap of one backoff.
        conflict_passes: times a window is planned again after 409s.
        auto_setup: on :meth:`open`, run :func:`usage_collector.elastic.setup.setup` if the data streams or the
            state index are missing (needs the setup privileges; otherwise the error says to run ``setup``).
        request_timeout: seconds per request.
        transport_retries: retries of a whole request after a connection error, 429 or 502/503/504.
        transport_backoff: base of their exponential backoff (``0`` in tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: Elasticsearch | None = None,
        chunk_size: int = 500,
        max_retries: int = 5,
        initial_backoff: float = 2.0,
        max_backoff: float = 60.0,
        conflict_passes: int = 3,
        auto_setup: bool = True,
        request_timeout: float = 30.0,
        transport_retries: int = 3,
        transport_backoff: float = 0.5,
    ) -> None:
        self.settings = settings
        self.description = (
            describe(settings)
            if settings.elasticsearch_url or settings.elasticsearch_cloud_id
            else "elasticsearch:client"
        )
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.conflict_passes = conflict_passes
        self.auto_setup = auto_setup
        self.request_timeout = request_timeout
        self.transport_retries = transport_retries
        self.transport_backoff = transport_backoff
        self.state_index = state_index(settings)
        self.runs_stream = runs_data_stream(settings)
        self.server: ServerInfo | None = None
        self._es = client
        self._owned = client is None
        self._ready = False
        secrets.register(settings)  # also when built directly, not through the CLI
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ElasticsearchSink:
        """The sink for ``settings`` (``make_sink("elasticsearch", settings)``); ``kwargs`` as in the class."""
        return cls(settings, **kwargs)

    def __repr__(self) -> str:
        return f"ElasticsearchSink({self.description!r})"

    # --- lifecycle ------------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect, pick the compatibility header, and check (or create) the data streams and state index."""
        with self._lock:
            if self._ready:
                return
            if self._es is None:
                self._es, self.server = connect(
                    self.settings,
                    request_timeout=self.request_timeout,
                    max_retries=self.transport_retries,
                    retry_backoff=self.transport_backoff,
                )
            missing = self._missing_objects(self._es)
            if missing:
                self._set_up(self._es, missing)
            self._ready = True

    def close(self) -> None:
        with self._lock:
            if self._es is not None and self._owned:
                self._es.close()
                self._es = None
            self._ready = False

    def _client(self) -> Elasticsearch:
        if not self._ready:
            self.open()
        assert self._es is not None
        return self._es

    def _call(self, fn: Callable[[], Any], what: str, *, allow_404: bool = False) -> Any:
        return guard(fn, f"{self.description}: {what}", allow_404=allow_404)

    def _missing_objects(self, es: Elasticsearch) -> list[str]:
        wanted = [data_stream_name(self.settings, s) for s in self.settings.streams] + [self.runs_stream]
        pattern = index_patterns(self.settings)["usage"]
        body = self._call(
            lambda: es.indices.get_data_stream(name=[pattern, self.runs_stream + "*"]), "list data streams"
        )
        have = {d["name"] for d in body.get("data_streams", [])}
        missing = [d for d in wanted if d not in have]
        state = self._call(
            lambda: es.indices.get_mapping(index=self.state_index), f"read index {self.state_index}", allow_404=True
        )
        if state is None:
            missing.append(self.state_index)
        else:
            self._verify_state_index(state)
        return missing

    def _verify_state_index(self, body: Mapping[str, Any]) -> None:
        """The state index must carry our mapping: Elasticsearch re-creates a deleted index on the next write
        with dynamic mappings (``action.auto_create_index`` defaults to true; ``AutoCreateIndex``), where
        positions could be mapped as anything and ``type`` as text, so checkpoints would not be found."""
        index: Any = next(iter(body.values()), {})
        mappings = index.get("mappings") or {}
        if (mappings.get("_meta") or {}).get("managed_by") != MANAGED_BY:
            raise SinkError(
                f"{self.description}: index {self.state_index} exists but was not created by usage-collector (no "
                "_meta.managed_by in its mapping; Elasticsearch re-creates a deleted index with dynamic mappings on "
                "the next write). Reindex its checkpoints elsewhere or delete it, then run `usage-collector setup`"
            )

    def _set_up(self, es: Elasticsearch, missing: list[str]) -> None:
        what = ", ".join(missing)
        if not self.auto_setup:
            raise SinkError(f"{self.description}: missing {what}; run `usage-collector setup` first")
        log.info("%s: missing %s; running setup", self.description, what)
        try:
            setup(self.settings, client=es, out=log.info)
        except SinkError as exc:
            raise SinkError(
                f"{self.description}: missing {what}, and creating them failed ({exc}); run "
                "`usage-collector setup` with the setup role (docs/elasticsearch.md)"
            ) from None

    # --- documents ------------------------------------------------------------------------------------
    def write_window(
        self, docs: Sequence[Document], checkpoint: Checkpoint | None, replaces: BucketSet | None = None
    ) -> WriteStats:
        """Write one window idempotently, then store ``checkpoint``; with ``replaces``, delete what those buckets
        no longer hold.

        Raises:
            SinkError: some document was not acknowledged; ``errors`` has one entry per document
                (``_id``, ``_index``, ``op``, ``status``, ``type``, ``reason``, ``field``). The checkpoint
                was not stored.
        """
        es = self._client()
        by_id = {d.id: d for d in docs}
        outcome: dict[str, str] = {}
        failures: list[dict[str, Any]] = []
        transport: Any = es.transport
        rejected_before = transport.rejected_items() if hasattr(transport, "rejected_items") else 0
        replanned = 0
        pending: dict[str, str | None] = dict.fromkeys(by_id)  # _id -> backing index known to hold it
        deletes = self._superseded(es, replaces, by_id) if replaces is not None else []
        for attempt in range(self.conflict_passes + 1):
            if not pending and not deletes:
                break
            if attempt:
                replanned += len(pending)
            batch = [by_id[i] for i in pending]
            existing = self._lookup(es, batch, {i: ix for i, ix in pending.items() if ix}) if batch else {}
            pending = self._bulk(es, [*deletes, *self._plan(batch, existing, outcome)], outcome, failures)
            deletes = []
        for doc_id, index in pending.items():
            failures.append(
                {
                    "_id": doc_id,
                    "_index": index or by_id[doc_id].index,
                    "op": "write",
                    "status": 409,
                    "type": "version_conflict_engine_exception",
                    "field": None,
                    "reason": f"still conflicting after {self.conflict_passes} passes",
                }
            )
        if failures:
            raise SinkError(self._failure_message(failures, len(by_id)), failures)
        if checkpoint is not None:
            self.save_checkpoint(checkpoint)
        stats = WriteStats(retried=replanned, deleted=sum(1 for r in outcome.values() if r == "deleted"))
        if hasattr(transport, "rejected_items"):
            stats.retried += transport.rejected_items() - rejected_before
        for doc_id, result in outcome.items():
            if result == "created":
                stats.created += 1
                stats.ids_created.append(doc_id)
            elif result == "updated":
                stats.updated += 1
                stats.ids_updated.append(doc_id)
            elif result != "deleted":
                stats.unchanged += 1
        return stats

    def _lookup(self, es: Elasticsearch, docs: Sequence[Document], known: Mapping[str, str]) -> dict[str, list[_Hit]]:
        """Every stored copy of each document, across all backing indices of its data stream."""
        by_target: dict[str, list[str]] = {}
        for d in docs:
            by_target.setdefault(d.index, []).append(d.id)
        found: dict[str, list[_Hit]] = {}
        for target, ids in by_target.items():
            for start in range(0, len(ids), LOOKUP_CHUNK):
                chunk = ids[start : start + LOOKUP_CHUNK]
                body = self._call(
                    functools.partial(
                        es.search,
                        index=target,
                        query={"ids": {"values": chunk}},
                        size=LOOKUP_SIZE,
                        seq_no_primary_term=True,
                        source_includes=["event.hash"],
                        track_total_hits=True,
                        ignore_unavailable=True,
                        allow_no_indices=True,
                    ),
                    f"look up {len(chunk)} ids in {target}",
                )
                hits = body["hits"]["hits"]
                if body["hits"]["total"]["value"] > len(hits):
                    raise SinkError(
                        f"{self.description}: {target} holds more than {LOOKUP_SIZE} copies of "
                        f"{len(chunk)} ids; remove the duplicates before collecting again"
                    )
                for h in hits:
                    found.setdefault(h["_id"], []).append(self._hit(h))
        # A 409 names the backing index holding the _id; read it there in real time (a search may not see it).
        missing = [{"_index": ix, "_id": i} for i, ix in known.items() if all(h.index != ix for h in found.get(i, []))]
        if missing:
            body = self._call(lambda: es.mget(docs=missing), f"read {len(missing)} conflicting documents")
            for d in body.get("docs", []):
                if d.get("found"):
                    found.setdefault(d["_id"], []).append(self._hit(d))
        return found

    def _superseded(self, es: Elasticsearch, replaces: BucketSet, keep: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Delete actions for the stored documents of ``replaces`` whose ``_id`` is not in ``keep``."""
        from elasticsearch import ApiError, TransportError
        from elasticsearch.helpers import ScanError

        if not replaces.starts:
            return []
        query = {
            "bool": {
                "filter": [
                    {"term": {"organization.id": replaces.org_id}},
                    {"term": {"event.dataset": f"openai.{replaces.stream}"}},
                    {"term": {"openai.base.bucket_width": replaces.bucket_width}},
                    {"terms": {"@timestamp": [iso(t) for t in sorted(replaces.starts)]}},
                ]
            }
        }
        actions: list[dict[str, Any]] = []
        try:
            for h in self._hits(
                es,
                replaces.index,
                query,
                source=False,
                seq_no_primary_term=True,
                ignore_unavailable=True,
                allow_no_indices=True,
            ):
                if h["_id"] not in keep:
                    actions.append(
                        {
                            "_op_type": "delete",
                            "_index": h["_index"],
                            "_id": h["_id"],
                            "if_seq_no": h["_seq_no"],
                            "if_primary_term": h["_primary_term"],
                        }
                    )
        except (ApiError, TransportError, ScanError) as exc:
            raise sink_error(exc, f"{self.description}: look up superseded documents of {replaces.index}") from None
        return actions

    @staticmethod
    def _hit(h: Mapping[str, Any]) -> _Hit:
        event = (h.get("_source") or {}).get("event") or {}
        return _Hit(h["_index"], int(h["_seq_no"]), int(h["_primary_term"]), event.get("hash"))

    @staticmethod
    def _plan(
        docs: Sequence[Document], existing: Mapping[str, list[_Hit]], outcome: dict[str, str]
    ) -> list[dict[str, Any]]:
        if not existing:  # none of the window's _ids is stored: every document is created
            return [{"_op_type": "create", "_index": doc.index, "_id": doc.id, "_source": doc} for doc in docs]
        actions: list[dict[str, Any]] = []
        for doc in docs:
            hits = existing.get(doc.id)
            if not hits:
                actions.append({"_op_type": "create", "_index": doc.index, "_id": doc.id, "_source": doc})
                continue
            same = [h for h in hits if h.hash == doc.hash]
            keep = max(same or hits, key=lambda h: (_generation(h.index), h.index))
            actions += [
                {
                    "_op_type": "delete",
                    "_index": h.index,
                    "_id": doc.id,
                    "if_seq_no": h.seq_no,
                    "if_primary_term": h.primary_term,
                }
                for h in hits
                if h is not keep
            ]
            if keep.hash == doc.hash:
                outcome.setdefault(doc.id, "unchanged")
            else:
                actions.append(
                    {
                        "_op_type": "index",
                        "_index": keep.index,
                        "_id": doc.id,
                        "if_seq_no": keep.seq_no,
                        "if_primary_term": keep.primary_term,
                        "_source": doc,
                    }
                )
        return actions

    def _bulk(
        self, es: Elasticsearch, actions: list[dict[str, Any]], outcome: dict[str, str], failures: list[dict[str, Any]]
    ) -> dict[str, str | None]:
        """Send ``actions``; returns the ``_id`` s that met a 409, with the backing index that holds them."""
        from elasticsearch import TransportError
        from elasticsearch.helpers import streaming_bulk

        conflicts: dict[str, str | None] = {}
        if not actions:
            return conflicts
        results = streaming_bulk(
            es,
            actions,
            chunk_size=self.chunk_size,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=self.max_retries,
            initial_backoff=self.initial_backoff,
            max_backoff=self.max_backoff,
            refresh=True,
            expand_action_callback=cast(Any, bulk_lines),  # typed for dict headers; bytes pass too (_Line)
        )
        try:
            for ok, item in results:
                op, info = next(iter(item.items()))
                doc_id, status = str(info.get("_id")), int(info.get("status", 500))
                if op == "delete" and (ok or status in (404, 409)):
                    if ok and doc_id not in outcome:
                        outcome[doc_id] = "deleted"  # a superseded document (a duplicate copy keeps its outcome)
                    continue
                if ok and info.get("failure_store") == "used":
                    # Acknowledged, but into the data stream's failure store (8.19/9.1+, when enabled): the
                    # document is not in the data stream, so the window failed (IndexDocFailureStoreStatus.USED).
                    failures.append(
                        {
                            "_id": doc_id,
                            "_index": info.get("_index"),
                            "op": op,
                            "status": status,
                            "type": "failure_store",
                            "reason": "Elasticsearch stored the document in the data stream's failure store, not "
                            "in the data stream (it did not fit the mappings); read <data stream>::failures",
                            "field": None,
                        }
                    )
                elif ok:
                    outcome[doc_id] = "created" if op == "create" else "updated"
                elif status == 409:
                    backing = info.get("_index")
                    conflicts[doc_id] = backing if isinstance(backing, str) and backing.startswith(".ds-") else None
                else:
                    kind, reason = _reason(info.get("error"))
                    failures.append(
                        {
                            "_id": doc_id,
                            "_index": info.get("_index"),
                            "op": op,
                            "status": status,
                            "type": kind,
                            "reason": secrets.redact(reason),
                            "field": field_of(reason),
                        }
                    )
        except TransportError as exc:
            raise SinkError(
                secrets.redact(
                    f"{self.description}: Elasticsearch unreachable during a bulk write ({type(exc).__name__}: "
                    f"{exc.message}); the checkpoint was not moved, the window will be written again"
                )
            ) from None
        return conflicts

    def _failure_message(self, failures: list[dict[str, Any]], total: int) -> str:
        def one(f: Mapping[str, Any]) -> str:
            where = f" field {f['field']}:" if f.get("field") else ""
            return f"_id {f['_id']} ({f['_index']}):{where} {f['type'] or 'error'} {f['status']}: {f['reason']}"

        shown = "; ".join(one(f) for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        return (
            f"{self.description}: {len(failures)} of {total} documents were not written, checkpoint not "
            f"moved: {shown}{more}"
        )

    def iter_documents(
        self, stream: str | None = None, *, start: int | None = None, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every current document as ``{"_id", "_index" (data stream), "_source"}``; one per ``_id``; with
        ``start``/``end``, those whose ``@timestamp`` lies in ``[start, end)`` (a ``range`` query).

        Backing indices are read newest first, so if an ``_id`` is stored twice the newest copy wins. Each is read
        a page of :data:`READ_PAGE` hits at a time (one search when they fit); what a caller holds is what it keeps.
        """
        from elasticsearch import ApiError, TransportError
        from elasticsearch.helpers import ScanError

        es = self._client()
        names = [data_stream_name(self.settings, s) for s in ([stream] if stream is not None else _ALL_STREAMS)]
        query: dict[str, Any] = {"match_all": {}}
        if start is not None or end is not None:
            bounds = {k: iso(v) for k, v in (("gte", start), ("lt", end)) if v is not None}
            query = {"range": {"@timestamp": bounds}}
        for name in names:
            body = self._call(
                functools.partial(es.indices.get_data_stream, name=name), f"read data stream {name}", allow_404=True
            )
            seen: set[str] = set()
            for entry in (body or {}).get("data_streams", []):
                for backing in reversed([i["index_name"] for i in entry.get("indices", [])]):
                    try:
                        for hit in self._hits(es, backing, query):
                            if hit["_id"] not in seen:
                                seen.add(hit["_id"])
                                yield {
                                    "_id": hit["_id"],
                                    "_index": _data_stream_of(backing, hit["_source"]),
                                    "_source": hit["_source"],
                                }
                    except (ApiError, TransportError, ScanError) as exc:
                        raise sink_error(exc, f"{self.description}: read {backing}") from None

    def _hits(
        self, es: Elasticsearch, index: str, query: Mapping[str, Any], *, source: bool = True, **params: Any
    ) -> Iterator[Mapping[str, Any]]:
        """Every hit of ``query`` in ``index`` (``params``: the search's other parameters): one search when the hits
        fit in a page of :data:`READ_PAGE` (a day of a stream, usually; the superseded documents of a window, usually
        none) and every shard answered, else a scroll of pages that size (``scan``, which fails on a shard that did
        not answer; a scroll is two requests even when empty: the search, then clearing the scroll)."""
        from elasticsearch.helpers import scan

        body = es.search(index=index, query=query, source=source, size=READ_PAGE, track_total_hits=True, **params)
        hits = body["hits"]["hits"]
        shards = body.get("_shards") or {}
        answered = shards.get("successful", 0) + shards.get("skipped", 0) >= shards.get("total", 0)
        if answered and body["hits"]["total"]["value"] <= len(hits):
            yield from hits
            return
        del body, hits
        yield from scan(es, index=index, query={"query": query, "_source": source}, size=READ_PAGE, **params)

    def retention(self) -> str | None:
        """How the usage data streams expire data, from ``GET _data_stream``: the ILM policy that manages them,
        or their data stream lifecycle (``data_retention``), or ``unmanaged``."""
        es = self._client()
        pattern = index_patterns(self.settings)["usage"]
        body = self._call(lambda: es.indices.get_data_stream(name=pattern), "read data streams", allow_404=True)
        kinds: set[str] = set()
        found: Any = body or {}
        streams: list[dict[str, Any]] = found.get("data_streams", [])
        for ds in streams:
            lifecycle = ds.get("lifecycle")
            if ds.get("ilm_policy") and not (lifecycle and ds.get("prefer_ilm") is False):
                kinds.add(f"ILM policy {ds['ilm_policy']}")
            elif lifecycle and lifecycle.get("enabled", True):
                retention = lifecycle.get("data_retention")
                kinds.add(f"data stream lifecycle, {f'data_retention {retention}' if retention else 'kept forever'}")
            else:
                kinds.add("unmanaged (kept forever)")
        return "; ".join(sorted(kinds)) or None

    # --- checkpoints ------------------------------------------------------------------------------------
    def load_checkpoint(self, org_id: str, stream: str, bucket_width: str, scope: str = "run") -> Checkpoint | None:
        es = self._client()
        key = checkpoint_key(org_id, stream, bucket_width, scope)
        body = self._call(lambda: es.get(index=self.state_index, id=key), f"read checkpoint {key}", allow_404=True)
        return Checkpoint.from_dict(body["_source"]) if body and body.get("found") else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        es = self._client()
        doc = {**checkpoint.to_dict(), "type": "checkpoint"}
        self._call(
            lambda: es.index(index=self.state_index, id=checkpoint.key, document=doc, refresh=True),
            f"store checkpoint {checkpoint.key}",
        )

    def list_checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, read with a scroll: a search returns at most ``index.max_result_window`` (10,000)
        hits, and one organization with many streams, widths and backfills can hold more."""
        from elasticsearch import ApiError, TransportError
        from elasticsearch.helpers import ScanError, scan

        es = self._client()
        try:
            hits = scan(es, index=self.state_index, query={"query": {"term": {"type": "checkpoint"}}}, size=1000)
            cps = [Checkpoint.from_dict(h["_source"]) for h in hits]
        except (ApiError, TransportError, ScanError) as exc:
            raise sink_error(exc, f"{self.description}: list checkpoints") from None
        return sorted(cps, key=lambda c: c.key)

    # --- lease ------------------------------------------------------------------------------------------
    def acquire_lease(self, org_id: str, holder: str, ttl: float, now: float) -> Lease:
        """Take or renew the organization's lease with optimistic concurrency.

        Raises:
            LeaseHeldError: another holder's lease has not expired (names the holder and the expiry).
            SinkError: Elasticsearch refused or is unreachable.
        """
        from elasticsearch import ConflictError

        es = self._client()
        lease_id = f"lease/{org_id}"
        doc = {"type": "lease", "org_id": org_id, "holder": holder, "expires_at": now + ttl, "acquired_at": now}
        for _ in range(3):
            cur = self._call(lambda: es.get(index=self.state_index, id=lease_id), f"read {lease_id}", allow_404=True)
            if cur and cur.get("found"):
                src = cur["_source"]
                expires = float(src.get("expires_at") or 0)
                if src.get("holder") != holder and expires > now:
                    raise LeaseHeldError(
                        f"organization {org_id!r} is being collected by {src.get('holder')} "
                        f"(lease until {iso(expires)})",
                        holder=str(src.get("holder")),
                        expires_at=expires,
                    )
                write: Callable[[], Any] = functools.partial(
                    es.index,
                    index=self.state_index,
                    id=lease_id,
                    document=doc,
                    if_seq_no=cur["_seq_no"],
                    if_primary_term=cur["_primary_term"],
                    refresh=True,
                )
            else:
                write = functools.partial(es.create, index=self.state_index, id=lease_id, document=doc, refresh=True)
            try:
                guard(write, f"{self.description}: write {lease_id}", reraise=(ConflictError,))
                return Lease(org_id, holder, now + ttl)
            except ConflictError:
                continue  # someone else wrote it between our read and write: read again
        raise SinkError(f"{self.description}: the lease of {org_id!r} kept changing under us; try again")

    def release_lease(self, org_id: str, holder: str) -> None:
        """Give the lease back (mark it expired) if ``holder`` still has it."""
        from elasticsearch import ConflictError

        es = self._client()
        lease_id = f"lease/{org_id}"
        cur = self._call(lambda: es.get(index=self.state_index, id=lease_id), f"read {lease_id}", allow_404=True)
        if not cur or not cur.get("found") or cur["_source"].get("holder") != holder:
            return
        doc = {**cur["_source"], "expires_at": 0}
        try:
            guard(
                lambda: es.index(
                    index=self.state_index,
                    id=lease_id,
                    document=doc,
                    if_seq_no=cur["_seq_no"],
                    if_primary_term=cur["_primary_term"],
                    refresh=True,
                ),
                f"{self.description}: release {lease_id}",
                reraise=(ConflictError,),
            )
        except ConflictError:
            log.info("lease of %s changed hands before it was released", org_id)

    # --- runs -------------------------------------------------------------------------------------------
    def record_run(self, run: dict[str, Any]) -> None:
        """Append a run document to ``logs-usage_collector.runs-<namespace>`` (adds ``@timestamp`` if absent)."""
        es = self._client()
        doc = run if "@timestamp" in run else {"@timestamp": _now_iso(), **run}
        self._call(
            lambda: es.index(index=self.runs_stream, document=doc, op_type="create", refresh=True), "record a run"
        )

    def list_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        es = self._client()
        body = self._call(
            lambda: es.search(
                index=self.runs_stream,
                size=limit,
                sort=[{"@timestamp": "desc"}],
                ignore_unavailable=True,
                allow_no_indices=True,
            ),
            "list runs",
        )
        return [h["_source"] for h in body["hits"]["hits"]]


def _now_iso() -> str:
    return iso(time.time())
