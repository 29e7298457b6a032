"""The pipeline with a small scripted API (httpx.MockTransport): no sockets, no sleeping.

End-to-end tests against the simulator over real HTTP live in ``test_e2e.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.helpers import CANARY_KEY, T0, bucket, make_settings, page
from usage_collector.catalogue import STREAMS, WIDTH_SECONDS
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.sinks.ndjson import NdjsonSink

H = 3600


class ScriptedAPI:
    """Serves ``value(stream, bucket_start)`` tokens for one group per bucket, paginating by ``limit``."""

    def __init__(self, clock: FakeClock, value: Callable[[str, int], int | None]) -> None:
        self.clock = clock
        self.value = value
        self.requests: list[httpx.Request] = []
        self.fail: dict[str, int] = {}  # stream -> status to answer with

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["authorization"] == f"Bearer {CANARY_KEY}"
        stream = request.url.path.rsplit("/", 1)[-1]
        if stream in self.fail:
            return httpx.Response(self.fail[stream], json={"error": {"message": "boom"}})
        q = request.url.params
        width = q["bucket_width"]
        step = WIDTH_SECONDS[width]
        start, end = int(q["start_time"]), int(q["end_time"])
        end = min(end, int(self.clock.now()))
        offset = int(q.get("page", "0"))
        limit = int(q["limit"])
        starts = list(range(start + offset * step, end, step))
        chunk, more = starts[:limit], len(starts) > limit
        data = []
        for s in chunk:
            v = self.value(stream, s)
            results = [] if v is None else [self._result(stream, v)]
            data.append(bucket(s, min(s + step, end), results))
        return httpx.Response(200, json=page(data, more, str(offset + len(chunk)) if more else None))

    @staticmethod
    def _result(stream: str, v: int) -> dict[str, Any]:
        spec = STREAMS[stream]
        row: dict[str, Any] = {"object": spec.object_type, "project_id": "proj_1"}
        for m in spec.measures:
            if m.required and "." not in m.name:
                row[m.name] = v
        if spec.is_costs:
            row["amount"] = {"value": f"{v}.125000", "currency": "usd"}
        return row


def collect(sink, clock, api, **settings) -> Any:
    s = make_settings(**settings)
    return Collector(s, sink, clock=clock, transport=httpx.MockTransport(api))


def stored(sink, stream: str) -> dict[str, int]:
    spec = STREAMS[stream]
    out = {}
    for d in sink.iter_documents(stream):
        src = d["_source"]
        field = next(m.name for m in spec.measures if m.required)
        node = src["openai"]["base"] if field == "num_model_requests" else src["openai"][stream]
        for part in field.split("."):
            node = node[part]
        out[src["@timestamp"]] = node
    return out


def test_run_writes_final_buckets_only_and_checkpoints(sink):
    clock = FakeClock(T0 + 10 * H + 10 * 60)  # 10:10Z; grace 15 min -> last final bucket ends 09:00
    api = ScriptedAPI(clock, lambda s, t: 5)
    result = collect(sink, clock, api, streams=["embeddings"], initial_lookback="10h").run_cycle()
    assert not result.failed
    got = stored(sink, "embeddings")
    assert len(got) == 9 and max(got) == "2025-10-15T08:00:00Z"
    cp = sink.load_checkpoint("default", "embeddings", "1h")
    assert cp.position == T0 + 9 * H and cp.last_error is None


def test_second_run_writes_nothing_and_a_revision_is_replaced(sink):
    clock = FakeClock(T0 + 10 * H + 20 * 60)
    values = {"embeddings": 5}
    api = ScriptedAPI(clock, lambda s, t: values[s] + (1 if t == T0 + 9 * H and values[s] > 5 else 0))
    c = collect(sink, clock, api, streams=["embeddings"], initial_lookback="10h", restatement={"embeddings": "10h"})
    first = c.run_cycle().streams[0].stats
    assert first.created == 10
    again = c.run_cycle().streams[0].stats
    assert (again.created, again.updated) == (0, 0) and again.unchanged > 0
    values["embeddings"] = 6  # OpenAI revises the restatement window
    third = c.run_cycle().streams[0].stats
    assert third.updated == 10 and third.created == 0
    assert set(stored(sink, "embeddings").values()) == {6, 7}


def test_a_failing_stream_does_not_stop_the_others_and_is_recorded(sink):
    clock = FakeClock(T0 + 10 * H + 20 * 60)
    api = ScriptedAPI(clock, lambda s, t: 1)
    api.fail["images"] = 400  # a failure of this endpoint only (a refused key stops every stream: below)
    result = collect(sink, clock, api, streams=["images", "embeddings", "costs"], initial_lookback="2d").run_cycle()
    assert [r.stream for r in result.failed] == ["images"]
    assert "boom" in result.failed[0].error
    assert stored(sink, "embeddings") and stored(sink, "costs")
    cp = sink.load_checkpoint("default", "images", "1h")
    assert cp.position is None and "400" in cp.last_error
    runs = {r["usage_collector"]["stream"]: r for r in sink.list_runs()}
    assert runs["images"]["event"]["outcome"] == "failure"
    assert runs["embeddings"]["usage_collector"]["documents"]["created"] > 0


def test_costs_are_read_only_for_closed_days_with_exact_amounts(sink):
    clock = FakeClock(T0 + 5 * 86400 + 3 * H)
    api = ScriptedAPI(clock, lambda s, t: 10)
    collect(sink, clock, api, streams=["costs"], initial_lookback="3d").run_cycle()
    got = stored(sink, "costs")
    assert max(got) == "2025-10-19T00:00:00Z"  # day 5 is still open
    assert all(str(v) == "10.125" for v in got.values())


def test_interrupted_backfill_resumes_and_gives_the_same_result(tmp_path):
    clock = FakeClock(T0 + 40 * 86400)
    api = ScriptedAPI(clock, lambda s, t: (t // H) % 7 or None)
    stop_after = {"n": 0}

    def progress(org, stream, window, stats):
        stop_after["n"] += 1
        if stop_after["n"] == 2:
            c.stop.set()  # like SIGTERM in the middle of a backfill

    sink = NdjsonSink(tmp_path / "b.ndjson")
    c = collect(sink, clock, api, streams=["embeddings"])
    c.progress = progress
    c.backfill(BackfillRange(T0, T0 + 30 * 86400))
    partial = sink.load_checkpoint("default", "embeddings", "1h", "backfill")
    assert partial.position == T0 + 14 * 86400 and not partial.complete
    n_before = len(api.requests)
    c2 = collect(sink, clock, api, streams=["embeddings"])
    c2.backfill(BackfillRange(T0, T0 + 30 * 86400))
    assert len(api.requests) - n_before == 3  # resumed: 16 days left = 3 windows of 7 days
    done = sink.load_checkpoint("default", "embeddings", "1h", "backfill")
    assert done.complete and done.position == T0 + 30 * 86400

    ref = NdjsonSink(tmp_path / "ref.ndjson")
    collect(ref, clock, api, streams=["embeddings"]).backfill(BackfillRange(T0, T0 + 30 * 86400))
    assert stored(sink, "embeddings") == stored(ref, "embeddings")
    assert sink.load_checkpoint("default", "embeddings", "1h", "run").position == T0 + 30 * 86400


def test_second_collector_while_lease_held_skips_the_org(sink):
    clock = FakeClock(T0 + 10 * H)
    api = ScriptedAPI(clock, lambda s, t: 1)
    sink.acquire_lease("default", "other-host:42", 600, clock.now())
    result = collect(sink, clock, api, streams=["embeddings"]).run_cycle()
    assert result.streams == [] and "other-host:42" in result.skipped[0]
    assert api.requests == []


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_every_stream_of_the_organization_after_one_request(sink, status):
    clock = FakeClock(T0 + 10 * H + 20 * 60)
    api = ScriptedAPI(clock, lambda s, t: 1)
    for stream in ("images", "embeddings", "costs"):
        api.fail[stream] = status
    result = collect(sink, clock, api, streams=["images", "embeddings", "costs"], initial_lookback="2d").run_cycle()
    assert len(api.requests) == 1  # the first stream met the refusal; the others were not tried
    assert [r.stream for r in result.failed] == ["images", "embeddings", "costs"]
    assert len({r.error for r in result.failed}) == 1 and "Admin key" in result.failed[0].error
    assert not stored(sink, "embeddings")


def test_the_run_deadline_lands_what_was_written_and_names_what_is_left(sink):
    clock = FakeClock(T0 + 10 * H + 20 * 60)

    def slow(stream, t):  # every bucket served takes 100 s of the fake clock
        clock.advance(100)
        return 1

    api = ScriptedAPI(clock, slow)
    c = collect(sink, clock, api, streams=["images", "embeddings", "costs"], initial_lookback="2d", run_deadline=150)
    result = c.run_cycle()
    assert result.deadline == 150 and result.failed == []
    assert [r.stream for r in result.unfinished] == ["embeddings", "costs"]
    assert stored(sink, "images") and not stored(sink, "embeddings")
    assert sink.load_checkpoint("default", "images", "1h").position is not None
    again = collect(sink, clock, api, streams=["images", "embeddings", "costs"], run_deadline=0).run_cycle()
    assert again.deadline is None and again.unfinished == [] and stored(sink, "costs")


def test_names_are_read_while_the_streams_fetch_and_land_on_the_documents(sink):
    """The Admin lists are read beside the streams' first requests, not before them: the projects list here
    answers only once a usage request has arrived (it would wait 5 s, then fail the test, if names came first);
    the documents still carry the project's name."""
    import threading

    clock = FakeClock(T0 + 10 * H + 20 * 60)
    api = ScriptedAPI(clock, lambda s, t: 2)
    usage_seen = threading.Event()
    overlapped: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/organization/usage/" not in path and not path.endswith("/organization/costs"):
            if path.endswith("/organization/projects"):
                overlapped.append(usage_seen.wait(5))
                return httpx.Response(200, json={"object": "list", "data": [{"id": "proj_1", "name": "Support"}]})
            return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        usage_seen.set()
        return api(request)

    s = make_settings(streams=["embeddings", "images"], initial_lookback="1d", enrich_names=True, concurrency=1)
    result = Collector(s, sink, clock=clock, transport=httpx.MockTransport(handler)).run_cycle()
    assert not result.failed, [r.error for r in result.failed]
    assert overlapped == [True]
    docs = list(sink.iter_documents("embeddings"))
    assert docs and all(d["_source"]["openai"]["base"]["project_name"] == "Support" for d in docs)
