"""The data path: catalogue -> plan windows -> fetch pages -> parse -> shape -> write -> checkpoint.

:class:`Collector` runs one cycle (``run``) or a backfill for every configured organization and stream.
I/O comes in from outside: the sink, the clock, and an HTTP transport (tests pass the simulator or an
``httpx.MockTransport``), so this module never sleeps or opens a socket on its own.

Guarantees:

* only final buckets are written (:mod:`.planning`);
* a window's checkpoint is stored only after the sink acknowledged every document of it;
* a stream that fails does not stop the others; its error is recorded on its checkpoint and in its run
  document, and the result says which streams failed and why;
* every bucket the API returned is written in full: stored documents of that bucket the answer no longer holds
  (a group that vanished, or the bucket read before with another ``group_by`` set) are deleted in the same write,
  so a re-read never leaves a document counted twice (``docs/architecture.md``, "Superseded documents").

What the API adds is not lost (``openai-usage-api-2026-11.md``, "What this means for a collector"):

* an unknown numeric result field is kept (:class:`.documents.Shaper`), logged once per field per run at
  WARNING and counted in the run document (``usage_collector.new_fields``);
* an optional dimension the API refuses (HTTP 400 naming it) is dropped for that stream with one warning, kept
  on the checkpoint (``dropped_group_by``) and tried again a day later;
* an endpoint that answers 404 makes its stream *unavailable*: skipped, not failed, tried again once a day.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import httpx

from . import estimate
from .catalogue import STREAMS, StreamSpec
from .client import NameCache, OpenAIClient, RequestStats, fetch_names
from .clock import Clock, SystemClock, iso
from .config import OrgConfig, Settings
from .documents import (
    Document,
    Names,
    NamesSource,
    Pricer,
    Shaper,
    Target,
    _add_names,
    paused_gc,
    run_document,
)
from .errors import AuthError, CollectorError, FatalApiError, LeaseHeldError, StoppedError, UnreachableError
from .failpoints import failpoint
from .limits import LIMITS_STREAM, fetch_limits
from .memory import trim_malloc, tune_malloc
from .models import Page
from .planning import BackfillRange, Scope, StreamPlan, Window, final_edge, plan_stream, stream_width
from .reconcile import Ahead, after_cycle
from .sinks.base import BucketSet, Checkpoint, Sink, WriteStats

log = logging.getLogger(__name__)

#: An unavailable endpoint (404) or a refused dimension (400) is tried again after this many seconds.
RECHECK_AFTER = 86400.0

#: A window of more documents is written in parts of about this many (whole buckets), the checkpoint with the
#: last part, so what a stream holds does not grow with its window (a 60-day costs window is ~4,000 documents in
#: ``bench/p4_memory.py``, more for an organization with many projects and line items).
WRITE_PART = 1000

#: called after each window: (org, stream, window, stats of that window)
ProgressFn = Callable[[str, str, Window, WriteStats], None]


@dataclass
class StreamResult:
    """What one stream did in one cycle or backfill (``mode`` is the plan's scope: ``run`` or ``backfill``)."""

    org_id: str
    stream: str
    bucket_width: str
    mode: Scope
    window: Window
    windows_done: int = 0
    stats: WriteStats = field(default_factory=WriteStats)
    requests: RequestStats = field(default_factory=RequestStats)
    position: int | None = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    #: the ``group_by`` sent (after dropping refused dimensions), the dimensions dropped, unknown fields kept
    group_by: tuple[str, ...] = ()
    dropped: list[str] = field(default_factory=list)
    new_fields: list[str] = field(default_factory=list)
    #: why the endpoint is unavailable to the organization (404), when it is; not a failure
    unavailable: str | None = None
    #: left before its last window by a stop (SIGTERM) or the run's deadline; resumes from its checkpoint
    stopped: bool = False
    #: usage documents written without an estimated cost (:mod:`.estimate`: no price in force)
    unpriced: int = 0
    #: UTC days (start, epoch seconds) of the buckets whose documents this stream created, replaced or deleted;
    #: ``None`` when the sink did not name the documents it wrote (then every day may have changed).
    #: :func:`~usage_collector.reconcile.after_cycle` rebuilds only these days.
    days_written: set[int] | None = field(default_factory=set)

    def note_written(self, docs: Sequence[Document], stats: WriteStats, replaces: BucketSet) -> None:
        """Add the days one write changed to :attr:`days_written` (see :func:`days_written`)."""
        days = days_written(docs, stats, replaces)
        if days is None or self.days_written is None:
            self.days_written = None
        else:
            self.days_written |= days

    @property
    def ok(self) -> bool:
        return self.error is None


_DAY = 86400


def days_written(docs: Sequence[Document], stats: WriteStats, replaces: BucketSet | None) -> set[int] | None:
    """The UTC days (start, epoch seconds) whose stored documents one ``write_window(docs, _, replaces)`` changed:
    the days of the documents it created or replaced (``stats.ids_created``, ``stats.ids_updated``), and every day
    of ``replaces`` when it deleted superseded documents. ``None`` when the sink did not name the documents it
    wrote (fewer ids than it counted)."""
    if not stats.written and not stats.deleted:
        return set()
    if len(stats.ids_created) != stats.created or len(stats.ids_updated) != stats.updated:
        return None
    ids = {*stats.ids_created, *stats.ids_updated}
    days = {d.timestamp - d.timestamp % _DAY for d in docs if d.id in ids}
    if stats.deleted:
        if replaces is None:
            return None
        days |= {t - t % _DAY for t in replaces.starts}
    return days


@dataclass
class CycleResult:
    """Every stream of every organization; ``skipped`` lists organizations whose lease was held."""

    streams: list[StreamResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    stopped: bool = False
    #: the run's deadline in seconds, when it passed before every stream finished
    deadline: float | None = None

    @property
    def unfinished(self) -> list[StreamResult]:
        """Streams left by a stop or the deadline (not failed: they resume from their checkpoints)."""
        return [r for r in self.streams if r.stopped and r.ok]

    @property
    def failed(self) -> list[StreamResult]:
        return [r for r in self.streams if not r.ok]


@dataclass(frozen=True)
class PlannedStream:
    """One line of :meth:`Collector.plan`: what a stream of an organization will read."""

    org_id: str
    stream: str
    bucket_width: str
    window: Window
    windows: int


#: Bytes the first pages fetched ahead (:class:`_FetchAhead`) of an organization's streams may hold at once. A
#: stream asks for its next window's first page only while the one it just read (the size expected) fits in what
#: is left, so the pages held ahead stay within this whatever a page's size: a 7-day 1h page is 0.1-2 MB, a
#: 60-day costs page ~1.4 MB (``bench/p4_memory.py``).
AHEAD_BYTES = 3 << 20


class _PagesAhead:
    """The pool that first pages are fetched ahead on and the bytes they may hold (:data:`AHEAD_BYTES`), shared
    by the streams of an organization."""

    def __init__(self, pool: ThreadPoolExecutor, limit: int) -> None:
        self.pool = pool
        self._left = limit
        self._lock = threading.Lock()
        #: one stream at a time shapes and writes a window, from its first page in to its write (:class:`_Turn`)
        self.turn = threading.Lock()

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes if they are left."""
        with self._lock:
            if size > self._left:
                return False
            self._left -= size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._left += size


class _Turn:
    """A stream's turn to shape and write a window, taken when the window's first page is in and given back after
    its write (or on an error); the other streams fetch meanwhile. Shaping holds the GIL anyway, and every stream
    shaping at once held every stream's page and documents at once: the 365-day NDJSON backfill's peak RSS (four
    streams' pages and parts alive) went from 72 to 63 MB, in the same wall time (bench/p4_memory.py)."""

    def __init__(self, lock: threading.Lock | None) -> None:
        self._lock = lock
        self._held = False

    def take(self) -> None:
        if self._lock is not None and not self._held:
            self._lock.acquire()
            self._held = True

    def give(self) -> None:
        if self._held:
            self._held = False
            assert self._lock is not None
            self._lock.release()


class _FetchAhead:
    """The first page of a stream's next window, asked for on ``pages``' pool while the current window is fetched,
    shaped and written (:meth:`Collector._collect_windows`); nothing when ``pages`` is ``None`` (concurrency 1).

    At most one page ahead, and only within ``pages``' bytes: the next page is expected to be the size of the
    current window's first page (``RequestStats.body_bytes``), which is reserved until the page is taken or
    dropped; when it does not fit, the next window's first page is asked for when that window is read. Its
    requests are counted apart (another thread makes them) and added to the stream's (``stats``) when it is taken
    or dropped. A page asked for with another ``group_by`` than the window is read with (a dimension refused
    meanwhile) is dropped; so is one left by a stream that stops or fails.
    """

    def __init__(
        self,
        pages: _PagesAhead | None,
        client: OpenAIClient,
        plan: StreamPlan,
        windows: list[Window],
        stats: RequestStats,
    ) -> None:
        self._pages, self._client, self._plan, self._windows, self._stats = pages, client, plan, windows, stats
        self._pending: tuple[Window, tuple[str, ...], Future[Page], RequestStats, int] | None = None
        self._counted: list[RequestStats] = []
        #: the requests of the first page :meth:`take` returned (read on another thread, so not in ``stats``)
        self._taken: RequestStats | None = None

    def next_after(self, i: int, group_by: tuple[str, ...]) -> Callable[[], None] | None:
        """What asks for window ``i + 1``'s first page (called once window ``i``'s first page is in)."""
        if self._pages is None or i + 1 >= len(self._windows):
            return None
        pages, win = self._pages, self._windows[i + 1]

        def start() -> None:
            self._drop()
            size = (self._taken or self._stats).body_bytes  # window i's first page, just read
            if not pages.reserve(size):
                return
            stats = RequestStats()
            page = pages.pool.submit(self._client.first_page, self._plan.spec, win, self._plan.width, group_by, stats)
            self._pending = (win, group_by, page, stats, size)

        return start

    def take(self, win: Window, group_by: tuple[str, ...]) -> Future[Page] | None:
        """The first page of ``win`` if it was asked for with ``group_by``."""
        pending, self._pending = self._pending, None
        self._taken = None
        if pending is None:
            return None
        self._release(pending)
        if (pending[0], pending[1]) == (win, group_by):
            self._taken = pending[3]
            return pending[2]
        pending[2].cancel()
        return None

    def _release(self, pending: tuple[Window, tuple[str, ...], Future[Page], RequestStats, int]) -> None:
        assert self._pages is not None
        self._pages.release(pending[4])
        self._counted.append(pending[3])

    def _drop(self) -> None:
        if self._pending is not None:
            self._pending[2].cancel()
            self._release(self._pending)
            self._pending = None

    def close(self, into: RequestStats) -> None:
        """Drop what is still ahead; add the requests made ahead to ``into`` (those of a page still in flight
        when its stream stopped or failed are not known yet and are left out)."""
        self._drop()
        for stats in self._counted:
            into.requests += stats.requests
            into.retries += stats.retries
        self._counted.clear()


class _NamesLater:
    """A stream's display names, added to its documents just before they are written (:meth:`add`), not while they
    are shaped: the names are read beside the streams' first requests (:func:`~usage_collector.client.fetch_names`
    on a thread of its own), and a stream whose first page is in shapes it without waiting for them.

    Names are in neither the ``_id`` nor ``event.hash``, and a :class:`~usage_collector.documents.Shaper` given
    names adds them last to ``openai.base`` (``documents._add_names``, the same function), so a document named here
    is the one such a shaper builds, key order included (``tests/test_names_later.py``). The names are waited for
    at the first write that has documents (their errors are raised there, in the stream that needed them); a
    stream that writes none never waits.
    """

    def __init__(self, names: NamesSource) -> None:
        self._source = names if callable(names) else None
        self._names: Names | None = None if callable(names) else names

    def add(self, docs: Sequence[Document]) -> None:
        """Add the names to ``docs`` (shaped without names, not yet serialized), waiting for them the first time."""
        if not docs:
            return
        if self._source is not None:
            self._names = self._source()
            self._source = None
        names = self._names
        if names is None:
            return
        for doc in docs:
            _add_names(doc.source["openai"]["base"], names)


def holder_id() -> str:
    """Who holds a lease: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Collector:
    """Runs the data path for the configured organizations and streams.

    Args:
        settings: the configuration.
        sink: where documents, checkpoints, leases and runs go.
        clock: time source (a fake clock in tests).
        transport: optional ``httpx`` transport for the OpenAI client (tests).
        progress: optional callback after each window.
        stop: when set, streams stop between windows (graceful shutdown of ``serve``).
        names_cache: display names kept across cycles (``serve``); ``None`` reads them every cycle.
    """

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
        names_cache: NameCache | None = None,
    ) -> None:
        self.settings = settings
        self.names_cache = names_cache
        self.sink = sink
        self.clock = clock or SystemClock()
        self.transport = transport
        self.progress = progress
        self.stop = stop or threading.Event()
        self.holder = holder_id()
        self._renewed: dict[str, float] = {}
        self._renew_lock = threading.Lock()
        self._fields_logged: set[tuple[str, str]] = set()  # (stream, field) warned about in this run
        #: when set (a scheduled cycle with ``run_deadline``), no request starts after it
        self._deadline: float | None = None
        #: organizations whose key was refused or whose API host is unreachable: the same for every stream,
        #: so the first stream to meet it stops the others (org id -> the error)
        self._aborted: dict[str, str] = {}
        self._aborted_lock = threading.Lock()
        tune_malloc()  # before the streams' threads: bench/p4_memory.py

    # --- public entry points --------------------------------------------------------------------
    def run_cycle(self, streams: Sequence[str] | None = None) -> CycleResult:
        """One scheduled cycle: new final buckets plus the restatement window, for every org and stream.

        With ``run_deadline`` set, no request starts after it: the windows written so far keep their checkpoints,
        and the result names the streams left (:attr:`CycleResult.unfinished`).
        """
        limit = self.settings.run_deadline
        self._deadline = self.clock.now() + limit if limit else None
        try:
            result = self._each_org(streams, None)
        finally:
            self._deadline = None
        if limit and result.unfinished and not self.stop.is_set():
            result.deadline = limit
        return result

    def backfill(self, span: BackfillRange, streams: Sequence[str] | None = None) -> CycleResult:
        """Collect ``span`` (resumable: an interrupted backfill of the same range resumes)."""
        return self._each_org(streams, span)

    def plan(self, streams: Sequence[str] | None = None, backfill: BackfillRange | None = None) -> list[PlannedStream]:
        """What every stream of every organization would read now, without fetching (for progress bars)."""
        now = self.clock.now()
        out = []
        for org in self.settings.orgs():
            for name in streams or self.settings.streams:
                spec = STREAMS[name]
                plan = self._plan(org, spec, self._width(spec, backfill), backfill, now)
                out.append(PlannedStream(org.id, name, plan.width, plan.window, plan.count()))
        return out

    # --- organizations ----------------------------------------------------------------------------
    def _each_org(self, streams: Sequence[str] | None, backfill: BackfillRange | None) -> CycleResult:
        result = CycleResult()
        scope: Scope = "run" if backfill is None else "backfill"
        self._fields_logged.clear()
        self._aborted.clear()
        for org in self.settings.orgs():
            if self.stop.is_set():
                break
            try:
                self.sink.acquire_lease(org.id, self.holder, self.settings.lease_ttl, self.clock.now())
                self._renewed[org.id] = self.clock.now()
                failpoint("lease.acquired")
            except LeaseHeldError as exc:
                log.warning("%s", exc)
                result.skipped.append(str(exc))
                continue
            names = list(streams or self.settings.streams)
            # a backfill with more than one worker: the days every stream has acknowledged are reconciled while
            # the others still collect (reconcile.Ahead), and at the end only the last days are left. A scheduled
            # cycle's few days (the restatement window) are one group that is ready only when the last stream
            # finishes: after_cycle does them, and only those the cycle changed
            overlap = backfill is not None and min(self.settings.concurrency, len(names)) > 1
            try:
                with ThreadPoolExecutor(1, thread_name_prefix="reconcile") as pool:
                    ahead = (
                        Ahead(self.sink, self.settings, org, names, backfill, self.clock.now(), pool.submit)
                        if overlap
                        else None
                    )
                    try:
                        result.streams += self._collect_org(org, names, backfill, ahead)
                    finally:
                        if ahead is not None:
                            ahead.wait()
                after_cycle(self.sink, self.settings, org, result.streams, backfill, self.clock.now(), ahead)
            except CollectorError as exc:  # e.g. the key file vanished: every stream of this org failed
                log.error("%s: %s", org.id, exc)
                now = self.clock.now()
                for name in names:
                    r = StreamResult(
                        org.id,
                        name,
                        self.settings.width_for(name),
                        scope,
                        Window(0, 0),
                        started_at=now,
                        finished_at=now,
                    )
                    r.error = f"{type(exc).__name__}: {exc}"
                    result.streams.append(r)
            finally:
                try:
                    self.sink.release_lease(org.id, self.holder)
                except CollectorError as exc:  # the sink may be what failed; the lease then expires by its TTL
                    log.warning("%s: could not release the lease (it expires by itself): %s", org.id, exc)
        result.stopped = self.stop.is_set()
        return result

    def _client(self, org: OrgConfig) -> OpenAIClient:
        s = self.settings
        return OpenAIClient(
            org.base_url or s.openai_base_url,
            org.resolve_key(),
            clock=self.clock,
            transport=self.transport,
            rate_limit=s.rate_limit,
            rate_limit_burst=s.rate_limit_burst,
            timeout=s.request_timeout,
            max_attempts=s.max_attempts,
            max_retry_time=s.max_retry_time,
            retry_after_cap=s.retry_after_cap,
            initial_backoff=s.initial_backoff,
            max_backoff=s.max_backoff,
            stop=self.stop,
            deadline=self._deadline,
        )

    def _collect_org(
        self, org: OrgConfig, streams: list[str], backfill: BackfillRange | None, ahead: Ahead | None = None
    ) -> list[StreamResult]:
        target = Target(org.id, org.name, self.settings.namespace, self.settings.data_stream_type)
        jobs = [STREAMS[s] for s in streams]
        workers = max(1, min(self.settings.concurrency, len(jobs)))
        with (
            self._client(org) as client,
            # with more than one worker, each stream has its next window's first page in flight while it shapes and
            # writes the current one (_collect_windows); concurrency 1 stays one request at a time, in order
            ThreadPoolExecutor(workers, thread_name_prefix="fetch-ahead") as fetch_pool,
            ThreadPoolExecutor(1, thread_name_prefix="names") as names_pool,
        ):
            # Names are read while the streams' first pages are fetched and shaped (a stream waits for them at its
            # first write, _NamesLater): at 200 ms a request, reading them first cost every stream 0.4-0.6 s, and
            # waiting for them at the first row kept the first pages unshaped for 0.1-0.2 s (bench/p6).
            # A refused key or an unreachable host then stops the organization from whichever request meets it
            # first (_check_org), the Admin lists' included.
            pending = names_pool.submit(fetch_names, client, self.names_cache) if self.settings.enrich_names else None
            names = pending.result if pending is not None else None
            if workers == 1:
                results = [self._collect_stream(client, org, target, names, spec, backfill) for spec in jobs]
            else:
                pages = _PagesAhead(fetch_pool, AHEAD_BYTES)
                with ThreadPoolExecutor(workers, thread_name_prefix="collect") as pool:
                    futures = [
                        pool.submit(self._collect_stream, client, org, target, names, spec, backfill, ahead, pages)
                        for spec in jobs
                    ]
                    results = [f.result() for f in futures]
            if (
                backfill is None
                and self.settings.spend_controls
                and not self.stop.is_set()
                and org.id not in self._aborted
            ):
                try:
                    known = pending.result() if pending is not None else None
                except CollectorError:
                    known = None  # the streams met and recorded the same error
                self._collect_limits(client, target, known)
            return results

    def _collect_limits(self, client: OpenAIClient, target: Target, names: Names | None) -> None:
        """Snapshot spend limits, spend alerts and rate limits (only ever costs those documents), at most once
        per ``spend_controls_every``: when they were last read is a checkpoint (stream ``limits``, width
        ``snapshot``), stored with the documents."""
        now = self.clock.now()
        cp = self.sink.load_checkpoint(target.org_id, LIMITS_STREAM, "snapshot") or Checkpoint(
            target.org_id, LIMITS_STREAM, "snapshot"
        )
        if cp.last_success_at is not None and 0 <= now - cp.last_success_at < self.settings.spend_controls_every:
            return
        got = fetch_limits(client, target, now, names)
        done = replace(cp, updated_at=now, last_success_at=now, last_error=None)
        try:
            stats = self.sink.write_window(got.documents, done)
        except CollectorError as exc:
            log.warning("%s: spend controls not written: %s", target.org_id, exc)
            return
        if not got.documents:
            return
        log.info(
            "%s limits: %d docs (created %d, unchanged %d)",
            target.org_id,
            len(got.documents),
            stats.created,
            stats.unchanged,
        )

    # --- one stream -------------------------------------------------------------------------------
    def _width(self, spec: StreamSpec, backfill: BackfillRange | None) -> str:
        return stream_width(spec, self.settings.width_for(spec.name), backfill.bucket_width if backfill else None)

    def _plan(
        self, org: OrgConfig, spec: StreamSpec, width: str, backfill: BackfillRange | None, now: float
    ) -> StreamPlan:
        s = self.settings
        scope: Scope = "run" if backfill is None else "backfill"
        return plan_stream(
            spec,
            org_id=org.id,
            width=width,
            now=now,
            grace=s.grace_for(spec.name),
            restatement=s.restatement_for(spec.name),
            initial_lookback=s.initial_lookback,
            stored=self.sink.load_checkpoint(org.id, spec.name, width, scope),
            backfill=backfill,
        )

    def _collect_stream(
        self,
        client: OpenAIClient,
        org: OrgConfig,
        target: Target,
        names: NamesSource,
        spec: StreamSpec,
        backfill: BackfillRange | None,
        ahead: Ahead | None = None,
        pages: _PagesAhead | None = None,
    ) -> StreamResult:
        """plan -> (fetch -> shape -> write with its checkpoint) per window -> follow-up checkpoint; ``ahead`` hears
        of each acknowledged window and of the end; with ``pages``, windows are fetched ahead."""
        started = self.clock.now()
        t0 = time.monotonic()
        scope: Scope = "run" if backfill is None else "backfill"
        width = self._width(spec, backfill)
        res = StreamResult(org.id, spec.name, width, scope, Window(0, 0), started_at=started)
        plan: StreamPlan | None = None
        try:
            self._check_org(org.id)
            plan = self._plan(org, spec, width, backfill, started)
            res.window = plan.window
            cp = plan.checkpoint
            res.position = cp.position
            if cp.unavailable and started - (cp.unavailable_checked_at or 0) < RECHECK_AFTER:
                res.unavailable = cp.unavailable  # tried less than a day ago: skipped, not failed
                res.dropped = list(cp.dropped_group_by or [])
            else:
                cp = self._collect_windows(client, org, target, names, plan, cp, res, ahead, pages)
                run_cp = plan.follow_up(cp, self._stored_run_checkpoint(plan, cp), self.clock.now())
                if run_cp is not None:
                    self.sink.save_checkpoint(run_cp)
        except StoppedError as exc:
            reason = self._aborted.get(org.id)
            if reason is None:  # SIGTERM or the deadline: what was written is checkpointed; resumes next time
                res.stopped = True
                log.info("%s %s: %s", org.id, spec.name, exc)
            else:  # another stream met a refused key or an unreachable host: not tried, same cause
                res.error = reason
                self._record_error(org, spec.name, width, scope, reason)  # on its checkpoint too, for `status`
        except CollectorError as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, AuthError | UnreachableError):
                with self._aborted_lock:
                    first = org.id not in self._aborted
                    self._aborted.setdefault(org.id, res.error)
                if first:
                    log.error("%s: %s; stopping every stream of this organization", org.id, res.error)
            else:
                log.error("%s %s failed: %s", org.id, spec.name, res.error)
            self._record_error(org, spec.name, width, scope, res.error)
        except Exception as exc:  # a bug must not hide the other streams' results
            res.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("%s %s failed unexpectedly", org.id, spec.name)
            self._record_error(org, spec.name, width, scope, res.error)
        if ahead is not None:
            ahead.finished(spec.name)
        res.finished_at = self.clock.now()
        # the plan's edge; the same rule when planning itself failed (the sink could not load the checkpoint)
        edge = plan.edge if plan is not None else final_edge(started, width, self.settings.grace_for(spec.name))
        self._record_run(res, time.monotonic() - t0, edge)
        return res

    def _collect_windows(
        self,
        client: OpenAIClient,
        org: OrgConfig,
        target: Target,
        names: NamesSource,
        plan: StreamPlan,
        cp: Checkpoint,
        res: StreamResult,
        ahead: Ahead | None = None,
        pages: _PagesAhead | None = None,
    ) -> Checkpoint:
        """fetch -> shape -> write with its checkpoint, per window; returns the last checkpoint stored.

        With ``pages``, the next window's first page is asked for (on its pool) as soon as the current window's
        first page is in, so its latency passes while this one is fetched, shaped and written; one page ahead at
        most, and only within the bytes ``pages`` has left (:class:`_FetchAhead`). Windows are still written, and
        their checkpoints stored, one after another in order. A page fetched ahead with a ``group_by`` since changed
        is dropped and asked for again."""
        spec = plan.spec
        now = self.clock.now()
        wanted = self.settings.group_by_for(spec.name)
        # refused dimensions are remembered on the scheduled (run) checkpoint, also by a backfill
        known = cp if plan.scope == "run" else self.sink.load_checkpoint(org.id, spec.name, plan.width, "run")
        dropped = list(known.dropped_group_by or []) if known else []
        if dropped and known and now - (known.dropped_at or 0) >= RECHECK_AFTER:
            log.info("%s %s: asking for %s again (refused a day ago)", org.id, spec.name, ", ".join(dropped))
            dropped = []
        group_by = tuple(g for g in wanted if g not in dropped)
        # openai.<stream>.estimated_cost from the price table, set while shaping (estimate.PriceBook.pricer)
        price = estimate.shared_book().pricer(spec.name, plan.width)
        # shaped without names, which are added before each write (_NamesLater): the first page need not wait for them
        named = _NamesLater(names)
        shaper = Shaper(spec, target, plan.width, group_by, None, price)
        cp = replace(cp, unavailable=None, unavailable_since=None, unavailable_checked_at=None)
        first = True
        windows = list(plan.windows())
        fetched = _FetchAhead(pages, client, plan, windows, res.requests)
        turn = _Turn(pages.turn if pages is not None else None)
        try:
            for i, win in enumerate(windows):
                window_stats = WriteStats()

                def write_part(
                    part: list[Document],
                    part_starts: list[int],
                    into: WriteStats = window_stats,
                    index: str = shaper.index,
                ) -> None:
                    # a part of a large window, whole buckets, without the checkpoint: a crash before the window's end
                    # reads the window again, and what this wrote is then unchanged
                    replaces = BucketSet(org.id, spec.name, plan.width, index, frozenset(part_starts))
                    named.add(part)
                    with paused_gc:  # see documents.paused_gc
                        stats = self.sink.write_window(part, None, replaces)
                    into.add(stats)
                    res.stats.add(stats)
                    res.note_written(part, stats, replaces)

                self._check_org(org.id)  # raises StoppedError on SIGTERM, the deadline, or the organization failing
                while True:
                    try:
                        unpriced = shaper.unpriced
                        docs, starts = self._fetch_window(
                            client,
                            plan,
                            shaper,
                            win,
                            res.requests,
                            group_by,
                            write_part,
                            first=fetched.take(win, group_by),
                            started=fetched.next_after(i, group_by),
                            turn=turn,
                        )
                        res.unpriced += shaper.unpriced - unpriced
                        break
                    except FatalApiError as exc:
                        refused = self._refused_dimension(spec, group_by, exc)
                        if refused is not None:
                            if refused not in ((known.dropped_group_by if known else None) or []):
                                log.warning(
                                    "%s %s: the API refused group_by %s (%s); collecting without it",
                                    org.id,
                                    spec.name,
                                    refused,
                                    exc,
                                )
                            dropped.append(refused)
                            group_by = tuple(g for g in group_by if g != refused)
                            shaper = self._reshape(shaper, spec, target, plan.width, group_by, price)
                            cp = replace(cp, dropped_group_by=sorted(set(dropped)), dropped_at=self.clock.now())
                            continue
                        if first and exc.status_code == 404:
                            return self._mark_unavailable(org, spec, cp, res, exc)
                        raise
                first = False
                if not dropped and cp.dropped_group_by:
                    cp = replace(cp, dropped_group_by=None, dropped_at=None)  # accepted again
                self._note_new_fields(org, spec.name, shaper, res)
                cp = plan.advance(cp, win, self.clock.now())
                named.add(docs)
                failpoint("window.shaped")
                replaces = BucketSet(org.id, spec.name, plan.width, shaper.index, frozenset(starts))
                with paused_gc:  # see documents.paused_gc; not across the fetch
                    stats = self.sink.write_window(docs, cp, replaces)
                turn.give()
                failpoint("window.written")
                res.stats.add(stats)
                res.note_written(docs, stats, replaces)
                window_stats.add(stats)
                res.windows_done += 1
                res.position = cp.position
                if ahead is not None:
                    ahead.acknowledged(spec.name, win.end, bool(window_stats.written or window_stats.deleted))
                self._renew_lease(org.id)
                log.info(
                    "%s %s %s: %d docs (created %d, updated %d, unchanged %d, superseded %d)",
                    org.id,
                    spec.name,
                    win,
                    window_stats.created + window_stats.updated + window_stats.unchanged,
                    window_stats.created,
                    window_stats.updated,
                    window_stats.unchanged,
                    window_stats.deleted,
                )
                del docs  # keep one window in memory at a time
                trim_malloc()  # what the window freed goes back to the system (bench/p4_memory.py)
                if self.progress:
                    self.progress(org.id, spec.name, win, window_stats)
        finally:
            turn.give()
            fetched.close(res.requests)
        res.group_by = group_by
        res.dropped = sorted(set(dropped))
        before = sorted((known.dropped_group_by if known else None) or [])
        if res.dropped != before and (plan.scope == "backfill" or res.windows_done == 0):
            run_cp = known or Checkpoint(org.id, spec.name, plan.width, "run")
            at = self.clock.now() if res.dropped else None
            self.sink.save_checkpoint(replace(run_cp, dropped_group_by=res.dropped or None, dropped_at=at))
        return cp

    @staticmethod
    def _reshape(
        old: Shaper,
        spec: StreamSpec,
        target: Target,
        width: str,
        group_by: tuple[str, ...],
        price: Pricer | None,
    ) -> Shaper:
        shaper = Shaper(spec, target, width, group_by, None, price)  # named before writing (_NamesLater)
        shaper.new_fields |= old.new_fields
        shaper.skipped_fields |= old.skipped_fields
        return shaper

    @staticmethod
    def _refused_dimension(spec: StreamSpec, group_by: tuple[str, ...], exc: FatalApiError) -> str | None:
        """The optional dimension a 400 refuses: named in its message and droppable; the last such one."""
        if exc.status_code != 400:
            return None
        message = str(exc)
        named = [g for g in group_by if spec.optional(g) and re.search(rf"\b{re.escape(g)}\b", message)]
        if not named:
            return None
        order = spec.optional_dims
        return max(named, key=order.index)  # costs: user_id before api_source (the newest first)

    def _mark_unavailable(
        self, org: OrgConfig, spec: StreamSpec, cp: Checkpoint, res: StreamResult, exc: FatalApiError
    ) -> Checkpoint:
        now = self.clock.now()
        reason = str(exc)[:500]
        prev = self.sink.load_checkpoint(cp.org_id, cp.stream, cp.bucket_width, cp.scope)
        since = prev.unavailable_since if prev is not None and prev.unavailable_since else now
        if prev is None or not prev.unavailable:
            log.warning(
                "%s %s: endpoint unavailable for this organization (%s); trying again in a day",
                org.id,
                spec.name,
                reason,
            )
        cp = replace(cp, unavailable=reason, unavailable_since=since, unavailable_checked_at=now, updated_at=now)
        self.sink.save_checkpoint(cp)
        res.unavailable = reason
        return cp

    def _note_new_fields(self, org: OrgConfig, stream: str, shaper: Shaper, res: StreamResult) -> None:
        """Log each unknown field once per run (WARNING) and list the kept ones on the stream result."""
        for name in sorted(shaper.new_fields | shaper.skipped_fields):
            key = (stream, name)
            with self._renew_lock:
                if key in self._fields_logged:
                    continue
                self._fields_logged.add(key)
            if name in shaper.new_fields:
                log.warning("%s %s: new field %s kept as openai.%s.%s", org.id, stream, name, stream, name)
            else:
                log.warning("%s %s: new field %r not kept (not a usable field name)", org.id, stream, name)
        res.new_fields = sorted(shaper.new_fields)

    def _check_org(self, org_id: str) -> None:
        """Between windows: stop on a stop request, the run's deadline, or another stream's refused key or
        unreachable host (:class:`StoppedError`; the windows written so far keep their checkpoints)."""
        if org_id in self._aborted:
            raise StoppedError(f"not collected: {self._aborted[org_id]}")
        if self.stop.is_set():
            raise StoppedError("stop requested; leaving before the next window")
        if self._deadline is not None and self.clock.now() >= self._deadline:
            raise StoppedError(f"the run's deadline ({self.settings.run_deadline:.0f}s) passed; leaving")

    def _stored_run_checkpoint(self, plan: StreamPlan, cp: Checkpoint) -> Checkpoint | None:
        """The scheduled cursor, read only when a finished backfill may move it."""
        if plan.scope != "backfill" or not cp.complete:
            return None
        return self.sink.load_checkpoint(cp.org_id, cp.stream, cp.bucket_width, "run")

    def _fetch_window(
        self,
        client: OpenAIClient,
        plan: StreamPlan,
        shaper: Shaper,
        win: Window,
        stats: RequestStats,
        group_by: tuple[str, ...],
        write_part: Callable[[list[Document], list[int]], None] | None = None,
        *,
        first: Future[Page] | None = None,
        started: Callable[[], None] | None = None,
        turn: _Turn | None = None,
    ) -> tuple[list[Document], list[int]]:
        """The documents of ``win``'s final buckets and the start of every such bucket the API returned; two
        results for the same group in a bucket are an error. With ``write_part``, every :data:`WRITE_PART`
        documents or so (whole buckets) are handed to it with their buckets' starts and let go; the rest is
        returned. ``first``: the first page, fetched ahead; ``started`` is called once the first page is in; ``turn`` is
        taken before a page is shaped (and kept: the caller gives it back after the window's write)."""
        spec = plan.spec
        docs: dict[str, Document] = {}
        starts: list[int] = []
        written: set[str] = set()  # _ids of the parts written: a repeated group is still refused
        for page in client.iter_pages(spec, win, plan.width, group_by, stats, first):
            if started is not None:
                started()
                started = None
            if turn is not None:
                turn.take()
            with paused_gc:  # one page's documents: see documents.paused_gc
                # the window's last bucket goes with the window's own write (its checkpoint), never alone in a part
                # followed by a write of nothing but the checkpoint
                # (by position: a lazily decoded page makes a new dict at each access, so no identity test)
                data = page["data"]
                last = -1 if page["has_more"] else len(data) - 1
                for k, bucket in enumerate(data):
                    start, end = bucket["start_time"], bucket["end_time"]
                    if end > plan.edge or start < win.start or end > win.end:
                        continue  # not final or outside what we asked for: never written
                    starts.append(start)
                    for doc in shaper.bucket(start, end, bucket["results"]):
                        if doc.id in docs or doc.id in written:
                            raise FatalApiError(
                                f"{spec.name}: two results for the same group in bucket {iso(start)} "
                                f"(_id {doc.id}); refusing to keep only one"
                            )
                        docs[doc.id] = doc
                    if write_part is not None and len(docs) >= WRITE_PART and k != last:
                        write_part(list(docs.values()), starts)
                        written.update(docs)
                        docs, starts = {}, []
        return list(docs.values()), starts

    def _renew_lease(self, org_id: str) -> None:
        """Extend the lease while working, so a short TTL only matters when a run died."""
        now = self.clock.now()
        with self._renew_lock:
            if now - self._renewed.get(org_id, now) < self.settings.lease_ttl / 3:
                return
            self._renewed[org_id] = now
        self.sink.acquire_lease(org_id, self.holder, self.settings.lease_ttl, now)

    def _record_error(self, org: OrgConfig, stream: str, width: str, scope: Scope, error: str) -> None:
        try:
            cp = self.sink.load_checkpoint(org.id, stream, width, scope) or Checkpoint(org.id, stream, width, scope)
            cp.last_error = error[:2000]
            cp.last_error_at = cp.updated_at = self.clock.now()
            self.sink.save_checkpoint(cp)
        except Exception as exc:  # the sink itself may be what failed
            log.warning("could not record the error of %s on its checkpoint: %s", stream, exc)

    def _record_run(self, res: StreamResult, duration: float, edge: int) -> None:
        run = run_document(
            run_id=self.holder,
            org_id=res.org_id,
            stream=res.stream,
            bucket_width=res.bucket_width,
            mode=res.mode,
            window=(res.window.start, res.window.end),
            windows=res.windows_done,
            requests=res.requests.requests,
            retries=res.requests.retries,
            created=res.stats.created,
            updated=res.stats.updated,
            unchanged=res.stats.unchanged,
            position=res.position,
            started_at=res.started_at,
            finished_at=res.finished_at,
            duration=duration,
            final_edge=edge,
            error=res.error,
            deleted=res.stats.deleted,
            new_fields=res.new_fields,
            dropped_dimensions=res.dropped,
            group_by=res.group_by if res.windows_done else None,
            unavailable=res.unavailable,
            unpriced=res.unpriced if not STREAMS[res.stream].is_costs else None,
        )
        try:
            self.sink.record_run(run)
        except Exception as exc:
            log.warning("could not record the run document of %s: %s", res.stream, exc)
