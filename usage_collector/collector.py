"""The data path: catalogue -> plan windows -> fetch pages -> parse -> shape -> write -> checkpoint.

:class:`Collector` runs one cycle (``run``) or a backfill for every configured organization and stream.
I/O comes in from outside: the sink, the clock, and an HTTP transport (tests pass the simulator or an
``httpx.MockTransport``), so this module never sleeps or opens a socket on its own.

Guarantees:

* only final buckets are written (:mod:`.planning`);
* a window's checkpoint is stored only after the sink acknowledged every document of it;
* a stream that fails does not stop the others; its error is recorded on its checkpoint and in its run
  document, and the result says which streams failed and why.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from .catalogue import STREAMS, StreamSpec
from .client import OpenAIClient, RequestStats
from .clock import Clock, SystemClock, iso
from .config import OrgConfig, Settings
from .documents import Document, Names, Shaper, Target
from .errors import CollectorError, FatalApiError, LeaseHeldError
from .failpoints import failpoint
from .planning import Window, count_windows, final_edge, plan_run, split
from .sinks.base import Checkpoint, Sink, WriteStats

log = logging.getLogger(__name__)

#: Names are a nicety: a list endpoint that keeps failing must not hold up the usage itself.
NAME_ATTEMPTS = 2

#: called after each window: (org, stream, window, stats of that window)
ProgressFn = Callable[[str, str, Window, WriteStats], None]


@dataclass
class StreamResult:
    """What one stream did in one cycle or backfill."""

    org_id: str
    stream: str
    bucket_width: str
    mode: str
    window: Window
    windows_done: int = 0
    stats: WriteStats = field(default_factory=WriteStats)
    requests: RequestStats = field(default_factory=RequestStats)
    position: int | None = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CycleResult:
    """Every stream of every organization; ``skipped`` lists organizations whose lease was held."""

    streams: list[StreamResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    stopped: bool = False

    @property
    def failed(self) -> list[StreamResult]:
        return [r for r in self.streams if not r.ok]


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
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.clock = clock or SystemClock()
        self.transport = transport
        self.progress = progress
        self.stop = stop or threading.Event()
        self.holder = holder_id()
        self._renewed: dict[str, float] = {}
        self._renew_lock = threading.Lock()

    # --- public entry points --------------------------------------------------------------------
    def run_cycle(self, streams: Sequence[str] | None = None) -> CycleResult:
        """One scheduled cycle: new final buckets plus the restatement window, for every org and stream."""
        return self._each_org(streams, None, mode="run")

    def backfill(
        self,
        start: int,
        end: int | None,
        streams: Sequence[str] | None = None,
        bucket_width: str | None = None,
    ) -> CycleResult:
        """Collect ``[start, end)`` (resumable: an interrupted backfill of the same range resumes)."""
        return self._each_org(streams, (start, end, bucket_width), mode="backfill")

    def plan(self, streams: Sequence[str] | None = None, backfill: tuple[int, int | None, str | None] | None = None,
             ) -> list[tuple[str, str, str, Window, int]]:
        """``(org, stream, width, window, number of windows)`` for progress bars, without fetching."""
        out = []
        now = self.clock.now()
        for org in self.settings.orgs():
            for name in streams or self.settings.streams:
                spec = STREAMS[name]
                width = self._width(spec, backfill[2] if backfill else None)
                window = self._range(org, spec, width, backfill, now)[0]
                out.append((org.id, name, width, window, count_windows(window, width, spec.limit_max(width))))
        return out

    # --- organizations ----------------------------------------------------------------------------
    def _each_org(
        self, streams: Sequence[str] | None, backfill: tuple[int, int | None, str | None] | None, mode: str
    ) -> CycleResult:
        result = CycleResult()
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
            try:
                result.streams += self._collect_org(org, names, backfill, mode)
            except CollectorError as exc:  # e.g. the key file vanished: every stream of this org failed
                log.error("%s: %s", org.id, exc)
                now = self.clock.now()
                for name in names:
                    r = StreamResult(org.id, name, self.settings.width_for(name), mode, Window(0, 0),
                                     started_at=now, finished_at=now)
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
        )

    def _collect_org(
        self, org: OrgConfig, streams: list[str], backfill: tuple[int, int | None, str | None] | None, mode: str
    ) -> list[StreamResult]:
        target = Target(org.id, org.name, self.settings.namespace, self.settings.data_stream_type)
        with self._client(org) as client:
            names = self._names(client) if self.settings.enrich_names else None
            jobs = [STREAMS[s] for s in streams]
            workers = max(1, min(self.settings.concurrency, len(jobs)))
            if workers == 1:
                return [self._collect_stream(client, org, target, names, spec, backfill, mode) for spec in jobs]
            with ThreadPoolExecutor(workers, thread_name_prefix="collect") as pool:
                futures = [
                    pool.submit(self._collect_stream, client, org, target, names, spec, backfill, mode)
                    for spec in jobs
                ]
                return [f.result() for f in futures]

    def _names(self, client: OpenAIClient) -> Names | None:
        """Project, API key and user names from the Admin list endpoints; ``None`` if not allowed."""
        stats = RequestStats()
        try:
            projects: dict[str, str] = {}
            keys: dict[str, str] = {}
            users: dict[str, str] = {}
            for p in client.iter_list("organization/projects", stats, [("include_archived", "true")], NAME_ATTEMPTS):
                projects[p["id"]] = p.get("name") or p["id"]
            for u in client.iter_list("organization/users", stats, None, NAME_ATTEMPTS):
                users[u["id"]] = u.get("email") or u.get("name") or u["id"]
            for pid in projects:
                # owner_project_access=any lists every enabled key, not only those visible by membership
                # (ref §4.17); archived projects answer 400 on some sub-lists, which only costs names.
                try:
                    for k in client.iter_list(f"organization/projects/{pid}/api_keys", stats,
                                              [("owner_project_access", "any")], NAME_ATTEMPTS):
                        keys[k["id"]] = k.get("name") or k.get("redacted_value") or k["id"]
                except FatalApiError as exc:
                    log.debug("no API key names for project %s: %s", pid, exc)
                try:  # usage by service-account keys reports the service account as user_id
                    path = f"organization/projects/{pid}/service_accounts"
                    for sa in client.iter_list(path, stats, None, NAME_ATTEMPTS):
                        users.setdefault(sa["id"], sa.get("name") or sa["id"])
                except FatalApiError as exc:
                    log.debug("no service account names for project %s: %s", pid, exc)
            return Names(projects, keys, users)
        except CollectorError as exc:
            log.warning("names unavailable, documents carry IDs only: %s", exc)
            return None

    # --- one stream -------------------------------------------------------------------------------
    def _width(self, spec: StreamSpec, requested: str | None) -> str:
        if requested is not None:
            return requested if requested in spec.widths else spec.default_width
        return self.settings.width_for(spec.name)

    def _range(
        self,
        org: OrgConfig,
        spec: StreamSpec,
        width: str,
        backfill: tuple[int, int | None, str | None] | None,
        now: float,
    ) -> tuple[Window, Checkpoint | None, int]:
        """(window to read, checkpoint to resume from, final edge)."""
        grace = self.settings.grace_for(spec.name)
        edge = final_edge(now, width, grace)
        if backfill is None:
            cp = self.sink.load_checkpoint(org.id, spec.name, width, "run")
            window = plan_run(
                position=cp.position if cp else None,
                now=now,
                width=width,
                grace=grace,
                restatement=self.settings.restatement_for(spec.name),
                initial_lookback=self.settings.initial_lookback,
            )
            return window, cp, edge
        from .planning import align_down, align_up

        start = align_down(backfill[0], width)
        end = min(align_up(backfill[1], width) if backfill[1] is not None else edge, edge)
        cp = self.sink.load_checkpoint(org.id, spec.name, width, "backfill")
        if cp and cp.range_start == start and cp.range_end == end and not cp.complete and cp.position is not None:
            return Window(min(cp.position, end), end), cp, edge  # resume
        return Window(min(start, end), end), None, edge

    def _collect_stream(
        self,
        client: OpenAIClient,
        org: OrgConfig,
        target: Target,
        names: Names | None,
        spec: StreamSpec,
        backfill: tuple[int, int | None, str | None] | None,
        mode: str,
    ) -> StreamResult:
        width = self._width(spec, backfill[2] if backfill else None)
        started = self.clock.now()
        t0 = time.monotonic()
        scope = "backfill" if backfill else "run"
        res = StreamResult(org.id, spec.name, width, mode, Window(0, 0), started_at=started)
        edge = final_edge(started, width, self.settings.grace_for(spec.name))
        group_by = spec.group_by
        try:
            window, cp, edge = self._range(org, spec, width, backfill, started)
            res.window = window
            if cp is None:
                cp = Checkpoint(org.id, spec.name, width, scope)
                if backfill:
                    cp.range_start, cp.range_end = window.start, window.end
            res.position = cp.position
            for win in split(window, width, spec.limit_max(width)):
                if self.stop.is_set():
                    log.info("%s: stop requested; leaving after %d window(s)", spec.name, res.windows_done)
                    break
                docs = self._fetch_window(client, spec, target, names, width, win, group_by, edge, res.requests)
                now = self.clock.now()
                cp.position = max(cp.position or win.end, win.end) if scope == "run" else win.end
                cp.updated_at = cp.last_success_at = now
                cp.last_error = None
                if scope == "backfill":
                    cp.complete = win.end >= window.end
                failpoint("window.shaped")
                stats = self.sink.write_window(docs, cp)
                failpoint("window.written")
                res.stats.add(stats)
                res.windows_done += 1
                res.position = cp.position
                self._renew_lease(org.id)
                log.info(
                    "%s %s %s: %d docs (created %d, updated %d, unchanged %d)",
                    org.id, spec.name, win, len(docs), stats.created, stats.updated, stats.unchanged,
                )
                del docs  # keep one window in memory at a time
                if self.progress:
                    self.progress(org.id, spec.name, win, stats)
            if backfill and cp.complete:
                self._advance_run_cursor(org, spec.name, width, Window(cp.range_start or window.start, window.end))
        except CollectorError as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            log.error("%s %s failed: %s", org.id, spec.name, res.error)
            self._record_error(org, spec.name, width, scope, res.error)
        except Exception as exc:  # a bug must not hide the other streams' results
            res.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("%s %s failed unexpectedly", org.id, spec.name)
            self._record_error(org, spec.name, width, scope, res.error)
        res.finished_at = self.clock.now()
        self._record_run(res, target, time.monotonic() - t0, edge)
        return res

    def _fetch_window(
        self,
        client: OpenAIClient,
        spec: StreamSpec,
        target: Target,
        names: Names | None,
        width: str,
        win: Window,
        group_by: tuple[str, ...],
        edge: int,
        stats: RequestStats,
    ) -> list[Document]:
        docs: dict[str, Document] = {}
        shaper = Shaper(spec, target, width, group_by, names)
        for page in client.iter_pages(spec, win, width, group_by, stats):
            for bucket in page["data"]:
                start, end = bucket["start_time"], bucket["end_time"]
                if end > edge or start < win.start or end > win.end:
                    continue  # not final or outside what we asked for: never written
                for doc in shaper.bucket(start, end, bucket["results"]):
                    if doc.id in docs:
                        raise FatalApiError(
                            f"{spec.name}: two results for the same group in bucket {iso(start)} "
                            f"(_id {doc.id}); refusing to keep only one"
                        )
                    docs[doc.id] = doc
        return list(docs.values())

    def _renew_lease(self, org_id: str) -> None:
        """Extend the lease while working, so a short TTL only matters when a run died."""
        now = self.clock.now()
        with self._renew_lock:
            if now - self._renewed.get(org_id, now) < self.settings.lease_ttl / 3:
                return
            self._renewed[org_id] = now
        self.sink.acquire_lease(org_id, self.holder, self.settings.lease_ttl, now)

    def _advance_run_cursor(self, org: OrgConfig, stream: str, width: str, window: Window) -> None:
        """After a complete backfill, let the scheduled cursor continue from its end when contiguous."""
        run_cp = self.sink.load_checkpoint(org.id, stream, width, "run")
        if run_cp is None:
            run_cp = Checkpoint(org.id, stream, width, "run")
        if run_cp.position is None or window.start <= run_cp.position < window.end:
            run_cp.position = window.end
            run_cp.updated_at = self.clock.now()
            self.sink.save_checkpoint(run_cp)

    def _record_error(self, org: OrgConfig, stream: str, width: str, scope: str, error: str) -> None:
        try:
            cp = self.sink.load_checkpoint(org.id, stream, width, scope) or Checkpoint(org.id, stream, width, scope)
            cp.last_error = error[:2000]
            cp.last_error_at = cp.updated_at = self.clock.now()
            self.sink.save_checkpoint(cp)
        except Exception as exc:  # the sink itself may be what failed
            log.warning("could not record the error of %s on its checkpoint: %s", stream, exc)

    def _record_run(self, res: StreamResult, target: Target, duration: float, edge: int) -> None:
        run: dict[str, Any] = {
            "@timestamp": iso(res.started_at),
            "event": {
                "kind": "event",
                "dataset": "usage_collector.runs",
                "outcome": "success" if res.ok else "failure",
                "duration": int(duration * 1e9),
            },
            "organization": {"id": res.org_id},
            "usage_collector": {
                "run_id": self.holder,
                "mode": res.mode,
                "stream": res.stream,
                "bucket_width": res.bucket_width,
                "window": {"start": iso(res.window.start), "end": iso(res.window.end)},
                "windows": res.windows_done,
                "requests": res.requests.requests,
                "retries": res.requests.retries,
                "documents": {
                    "created": res.stats.created,
                    "updated": res.stats.updated,
                    "unchanged": res.stats.unchanged,
                },
                "position": iso(res.position) if res.position is not None else None,
                "lag_seconds": int(res.finished_at - res.position) if res.position is not None else None,
                "final_edge": iso(edge),
            },
        }
        if res.error:
            run["error"] = {"message": res.error}
        try:
            self.sink.record_run(run)
        except Exception as exc:
            log.warning("could not record the run document of %s: %s", res.stream, exc)
