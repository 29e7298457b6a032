"""What runs beside what (bench/p6): windows fetched ahead, days reconciled while the streams still collect, names
kept across ``serve`` cycles. Every test checks that the overlap changes nothing that is stored."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

import usage_collector.collector as collector_mod
import usage_collector.reconcile as reconcile_mod
from tests.helpers import CANARY_KEY, make_settings
from usage_collector.catalogue import STREAM_NAMES
from usage_collector.client import NameCache
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.reconcile import Ahead
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.sinks.base import WriteStats
from usage_collector.sinks.duckdb import DuckDBSink

DAY = 86400
DAYS = 10  # two 1h windows per usage stream (168 buckets each)


@pytest.fixture(scope="module")
def org():
    return Organization(seed=5, start="2026-10-01", days=DAYS)


def _stored(sink: Any, stream: str) -> dict[str, str]:
    return {d["_id"]: d["_source"]["event"]["hash"] for d in sink.iter_documents(stream)}


def _backfill(org, tmp_path, name: str, concurrency: int, transport_hook=None) -> tuple[DuckDBSink, Any]:
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp_path / f"{name}.duckdb")
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    with serve(api) as url:
        settings = make_settings(openai_base_url=url, enrich_names=True, concurrency=concurrency)
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not result.failed, [r.error for r in result.failed]
    return sink, result


def test_days_reconciled_while_the_streams_collect_equal_those_reconciled_at_the_end(org, tmp_path, monkeypatch):
    """At concurrency 4 the days every stream has acknowledged are reconciled on the ``reconcile`` thread while
    the streams' last windows are still collected; each day is read once; what is stored (documents and the
    reconciliation and allocation built from them) is what the concurrency-1 run, which reconciles at the end,
    stores."""
    monkeypatch.setattr(reconcile_mod, "DAYS_PER_WRITE", 2)
    calls: list[tuple[str, list[date]]] = []
    real = reconcile_mod.reconcile_days

    def spy(sink, target, days, **kw):
        calls.append((threading.current_thread().name, list(days)))
        return real(sink, target, days, **kw)

    monkeypatch.setattr(reconcile_mod, "reconcile_days", spy)
    serial, r1 = _backfill(org, tmp_path, "serial", 1)
    assert all(not name.startswith("reconcile") for name, _ in calls)  # concurrency 1: at the end, in order
    calls.clear()
    overlapped, r4 = _backfill(org, tmp_path, "overlapped", 4)
    try:
        days = [datetime.fromtimestamp(org.start + i * DAY, UTC).date() for i in range(DAYS)]
        assert sorted(d for _, group in calls for d in group) == days  # every day once
        early = [group for name, group in calls if name.startswith("reconcile")]
        assert early and early[0][0] == days[0]  # the first week's days before the end of the backfill
        for stream in (*STREAM_NAMES, "reconciliation", "allocation"):
            assert _stored(overlapped, stream) == _stored(serial, stream), stream
        assert sum(r.requests.requests for r in r4.streams) == sum(r.requests.requests for r in r1.streams)
    finally:
        serial.close()
        overlapped.close()


def test_ahead_starts_a_group_only_once_every_stream_acknowledged_it_and_something_was_written(monkeypatch):
    started: list[list[date]] = []

    def fake(sink, target, days, **kw):
        started.append(list(days))
        return reconcile_mod.Outcome(list(days), WriteStats(created=1), WriteStats(created=2))

    monkeypatch.setattr(reconcile_mod, "reconcile_days", fake)
    monkeypatch.setattr(reconcile_mod, "DAYS_PER_WRITE", 2)
    settings = make_settings(streams=["embeddings", "costs"])
    first = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
    span = BackfillRange(first, first + 4 * DAY)

    def now_run(fn):  # the pool's submit, run at once
        from concurrent.futures import Future

        f: Future[None] = Future()
        fn()
        f.set_result(None)
        return f

    ahead = Ahead(None, settings, settings.orgs()[0], ["embeddings", "costs"], span, first + 10 * DAY, now_run)  # type: ignore[arg-type]
    ahead.acknowledged("embeddings", first + 3 * DAY, changed=False)
    ahead.acknowledged("costs", first + 3 * DAY, changed=False)
    assert started == []  # nothing written yet: nothing can have changed
    ahead.acknowledged("embeddings", first + 4 * DAY, changed=True)
    assert [d.day for d in started[0]] == [1, 2] and len(started) == 1  # costs is at day 3: the second week waits
    ahead.finished("costs")  # however it ended, costs writes nothing more
    assert [[d.day for d in g] for g in started] == [[1, 2], [3, 4]]
    ahead.wait()
    assert ahead.done == {date(2026, 10, d) for d in (1, 2, 3, 4)}
    assert ahead.reconciliation.created == 2 and ahead.allocation.created == 4


def test_windows_are_fetched_ahead_only_with_more_than_one_worker(org, tmp_path):
    """Concurrency 2: a stream's second window is asked for before its first window is written; concurrency 1:
    one request at a time, each window written before the next is asked for. The stored documents are the same."""
    events: dict[int, list[tuple[str, str]]] = {}

    def run(concurrency: int) -> dict[str, dict[str, str]]:
        log: list[tuple[str, str]] = []
        lock = threading.Lock()
        clock = FakeClock(org.end + 3 * DAY)
        api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)

        # with fetch-ahead, a stream's second request is made on another thread while the first window is shaped:
        # a write waits (up to 10 s) until it has been made, so the order checked below does not depend on which
        # thread the scheduler runs first; without fetch-ahead the wait times out and the order check fails
        asked_second = {s: threading.Event() for s in ("embeddings", "images")}
        second_start = str(org.start + 7 * DAY)

        def handler(request: httpx.Request) -> httpx.Response:
            stream = request.url.path.rsplit("/", 1)[-1]
            with lock:
                log.append(("get", f"{stream}@{request.url.params.get('start_time')}"))
            if request.url.params.get("start_time") == second_start and stream in asked_second:
                asked_second[stream].set()
            status, headers, body = api.handle("GET", request.url.raw_path.decode(), headers=dict(request.headers))
            return httpx.Response(status, headers=headers, content=body)

        sink = DuckDBSink(tmp_path / f"c{concurrency}.duckdb")
        real_write = sink.write_window

        def write_window(docs, checkpoint, replaces=None):
            if checkpoint is not None:
                if concurrency > 1:
                    asked_second[checkpoint.stream].wait(10)
                with lock:
                    log.append(("write", f"{checkpoint.stream}@{checkpoint.position}"))
            return real_write(docs, checkpoint, replaces)

        sink.write_window = write_window  # type: ignore[method-assign]
        settings = make_settings(streams=["embeddings", "images"], concurrency=concurrency)
        try:
            result = Collector(settings, sink, clock=clock, transport=httpx.MockTransport(handler)).backfill(
                BackfillRange(org.start, org.end)
            )
            assert not result.failed, [r.error for r in result.failed]
            assert all(r.requests.requests == 2 for r in result.streams)
            events[concurrency] = log
            return {s: _stored(sink, s) for s in ("embeddings", "images")}
        finally:
            sink.close()

    assert run(1) == run(2)
    second = str(org.start + 7 * DAY)
    for concurrency, log in events.items():
        for stream in ("embeddings", "images"):
            asked = log.index(("get", f"{stream}@{second}"))
            written = next(i for i, (kind, what) in enumerate(log) if kind == "write" and what.startswith(stream))
            assert (asked < written) == (concurrency > 1), (concurrency, stream, log)


def test_names_are_read_once_per_ttl_across_serve_cycles(org, tmp_path):
    """``serve`` keeps one :class:`NameCache`: cycles within its TTL send no Admin list request, the first cycle
    after it reads the lists again (beside the streams), and the documents carry the names throughout."""
    clock = FakeClock(org.end + 3 * DAY)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    cache = NameCache(ttl=600)

    def lists() -> int:
        by_path = api.counters.snapshot()["by_path"]
        return sum(n for path, n in by_path.items() if "/usage/" not in path and not path.endswith("/costs"))

    sink = DuckDBSink(tmp_path / "serve.duckdb")
    counts = []
    try:
        with serve(api) as url:
            settings = make_settings(openai_base_url=url, enrich_names=True, streams=["completions"], concurrency=2)
            for _ in range(4):  # every 5 minutes, as `serve --interval 5m`
                result = Collector(settings, sink, clock=clock, names_cache=cache).run_cycle()
                assert not result.failed, [r.error for r in result.failed]
                counts.append(lists())
                clock.advance(300)
        per_read = counts[0]
        assert per_read > 2  # projects, users, and each project's keys and service accounts
        assert counts == [per_read, per_read, 2 * per_read, 2 * per_read]  # read at 0 and 10 min, not at 5 or 15
        docs = list(sink.iter_documents("completions"))
        assert docs and all("project_name" in d["_source"]["openai"]["base"] for d in docs)
    finally:
        sink.close()


def test_a_first_page_is_fetched_ahead_only_within_the_bytes_left(org, tmp_path, monkeypatch):
    """The pages fetched ahead hold at most ``AHEAD_BYTES``: with less than a first page's size, concurrency 2 asks
    for each stream's second window only when it reads it, after the first window is written (bench/p4_memory.py);
    what is stored is what concurrency 1 stores, and every request is counted."""
    monkeypatch.setattr(collector_mod, "AHEAD_BYTES", 1000)
    second = str(org.start + 7 * DAY)
    stored = {}
    for concurrency in (1, 2):
        log: list[tuple[str, str]] = []
        lock = threading.Lock()
        clock = FakeClock(org.end + 3 * DAY)
        api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)

        def handler(request: httpx.Request, log=log, lock=lock, api=api) -> httpx.Response:
            with lock:
                log.append(("get", f"{request.url.path.rsplit('/', 1)[-1]}@{request.url.params.get('start_time')}"))
            status, headers, body = api.handle("GET", request.url.raw_path.decode(), headers=dict(request.headers))
            assert len(body) > 1000
            return httpx.Response(status, headers=headers, content=body)

        sink = DuckDBSink(tmp_path / f"b{concurrency}.duckdb")
        real_write = sink.write_window

        def write_window(docs, checkpoint, replaces=None, log=log, lock=lock, real_write=real_write):
            if checkpoint is not None:
                with lock:
                    log.append(("write", f"{checkpoint.stream}@{checkpoint.position}"))
            return real_write(docs, checkpoint, replaces)

        sink.write_window = write_window  # type: ignore[method-assign]
        settings = make_settings(streams=["embeddings", "images"], concurrency=concurrency)
        try:
            result = Collector(settings, sink, clock=clock, transport=httpx.MockTransport(handler)).backfill(
                BackfillRange(org.start, org.end)
            )
            assert not result.failed, [r.error for r in result.failed]
            assert all(r.requests.requests == 2 for r in result.streams)
            stored[concurrency] = {s: _stored(sink, s) for s in ("embeddings", "images")}
        finally:
            sink.close()
        for stream in ("embeddings", "images"):
            asked = log.index(("get", f"{stream}@{second}"))
            written = next(i for i, (kind, what) in enumerate(log) if kind == "write" and what.startswith(stream))
            assert written < asked, (concurrency, stream, log)
    assert stored[1] == stored[2]


def test_one_stream_at_a_time_shapes_and_writes_a_window(org, tmp_path, monkeypatch):
    """Concurrency 4: the streams fetch at once, but a window is shaped and written by one stream at a time, from its
    first page in to its write (``collector._Turn``): every stream shaping at once held every stream's page and
    documents at once (bench/p4_memory.py). A write lasts 20 ms here, so without the turn another stream's page is
    shaped during it. The stored documents equal a serial run's."""
    from usage_collector.documents import Shaper

    streams = ["completions", "embeddings", "images", "moderations"]
    lock = threading.Lock()
    active: set[int] = set()
    overlaps: list[set[int]] = []
    real_bucket = Shaper.bucket

    def bucket(self, *args, **kwargs):
        with lock:
            active.add(threading.get_ident())
            if len(active) > 1:
                overlaps.append(set(active))
        return real_bucket(self, *args, **kwargs)

    def run(concurrency: int) -> dict[str, dict[str, str]]:
        clock = FakeClock(org.end + 3 * DAY)
        api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
        sink = DuckDBSink(tmp_path / f"t{concurrency}.duckdb")
        real_write = sink.write_window

        def write_window(docs, checkpoint, replaces=None):
            threading.Event().wait(0.02)
            stats = real_write(docs, checkpoint, replaces)
            if checkpoint is not None:  # the window's own write: its turn ends here
                with lock:
                    active.discard(threading.get_ident())
            return stats

        sink.write_window = write_window  # type: ignore[method-assign]
        try:
            with serve(api) as url:
                settings = make_settings(openai_base_url=url, streams=streams, concurrency=concurrency)
                result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
            assert not result.failed, [r.error for r in result.failed]
            return {s: _stored(sink, s) for s in streams}
        finally:
            sink.close()

    monkeypatch.setattr(Shaper, "bucket", bucket)
    serial = run(1)
    concurrent = run(4)
    assert overlaps == []
    assert concurrent == serial and all(serial.values())
