"""A window of more than ``collector.WRITE_PART`` documents is written in parts of whole buckets, the checkpoint
with the last part, so what a stream holds does not grow with its window (a 60-day costs window is ~4,000
documents in the simulator; a 180-day one, as the API allows, ~13,000); and the HTTP client lets go of each
response as soon as its body is parsed.

Exact against the simulator's truth, with the real file sinks.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import httpx
import pytest

import usage_collector.collector as collector_mod
from tests.helpers import CANARY_KEY, make_settings
from tests.truth import assert_sink_equals_truth
from usage_collector.client import OpenAIClient, RequestStats
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.errors import SinkError
from usage_collector.planning import BackfillRange
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

STREAMS = ["completions", "costs"]
PART = 40


@pytest.fixture(scope="module")
def org():
    return Organization(seed=11, start="2026-10-01", days=4)


class Spy:
    """A sink that records each ``write_window`` (and can fail one) and passes everything to the real one."""

    def __init__(self, sink: Any, fail_at: tuple[str, int] | None = None) -> None:
        self.sink = sink
        self.writes: list[tuple[str, list[Any], Any, Any]] = []
        self.fail_at = fail_at  # (stream, n-th write of that stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def write_window(self, docs, checkpoint, replaces=None):
        stream = replaces.stream if replaces is not None else (docs[0].stream if docs else "-")
        self.writes.append((stream, [(d.id, d.timestamp) for d in docs], checkpoint, replaces))
        if self.fail_at == (stream, sum(1 for w in self.writes if w[0] == stream)):
            raise SinkError("disk on fire (test)")
        return self.sink.write_window(docs, checkpoint, replaces)


def backfill(org, sink, clock) -> Any:
    with serve(SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)) as url:
        settings = make_settings(openai_base_url=url, streams=STREAMS)
        return Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))


def windows(writes: list[tuple[str, list[Any], Any, Any]], stream: str) -> list[list[tuple[list[Any], Any, Any]]]:
    """The writes of ``stream`` grouped by window: parts without a checkpoint, then the one with it."""
    out: list[list[tuple[list[Any], Any, Any]]] = [[]]
    for s, docs, checkpoint, replaces in writes:
        if s != stream:
            continue
        out[-1].append((docs, checkpoint, replaces))
        if checkpoint is not None:
            out.append([])
    return [w for w in out if w]


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_a_large_window_is_written_in_parts_of_whole_buckets_the_checkpoint_with_the_last(
    org, tmp_path, monkeypatch, kind
):
    monkeypatch.setattr(collector_mod, "WRITE_PART", PART)
    clock = FakeClock(org.end + 3 * 86400)
    real = DuckDBSink(tmp_path / "u.duckdb") if kind == "duckdb" else NdjsonSink(tmp_path / "u.ndjson")
    sink = Spy(real)
    result = backfill(org, sink, clock)
    assert not result.failed, [r.error for r in result.failed]
    assert_sink_equals_truth(real, org, STREAMS, org.start, org.end)
    split = 0
    for stream in STREAMS:
        for window in windows(sink.writes, stream):
            *parts, last = window
            assert last[1] is not None and all(checkpoint is None for _, checkpoint, _ in parts)
            split += bool(parts)
            seen: set[int] = set()
            for docs, _, replaces in window:
                assert {t for _, t in docs} <= replaces.starts  # whole buckets: each part replaces its own
                assert not seen & replaces.starts
                seen |= replaces.starts
            assert all(len(docs) >= PART for docs, _, _ in parts)
            if parts:  # the window's last bucket is written with the checkpoint, never in a part before it
                assert max(t for _, t in last[0]) == max(seen), (stream, len(parts))
    assert split >= 2, "no window was large enough to be split"
    again = backfill(org, Spy(real), clock)
    assert sum(r.stats.written + r.stats.deleted for r in again.streams) == 0


def test_a_failed_part_leaves_the_checkpoint_and_the_rerun_is_exact(org, tmp_path, monkeypatch):
    monkeypatch.setattr(collector_mod, "WRITE_PART", PART)
    clock = FakeClock(org.end + 3 * 86400)
    real = NdjsonSink(tmp_path / "u.ndjson")
    failing = Spy(real, fail_at=("costs", 2))  # the costs window's second part
    result = backfill(org, failing, clock)
    assert [r.stream for r in result.failed] == ["costs"]
    assert "disk on fire" in (result.failed[0].error or "")
    cp = real.load_checkpoint("default", "costs", "1d", "backfill")
    assert cp is None or cp.position is None or cp.position == org.start  # nothing of the window checkpointed
    first_part = {i for i, _ in failing.writes[[w[0] for w in failing.writes].index("costs")][1]}
    assert first_part <= {d["_id"] for d in real.iter_documents("costs")}  # the part written stays

    rerun = backfill(org, Spy(real), clock)
    assert not rerun.failed
    assert_sink_equals_truth(real, org, STREAMS, org.start, org.end)
    costs = next(r for r in rerun.streams if r.stream == "costs")
    assert costs.stats.unchanged >= len(first_part) and costs.stats.updated == 0


def test_a_response_is_freed_once_parsed_without_the_cyclic_gc():
    """httpx binds a response's stream back to the response (a reference cycle); the client unbinds it, so a page's
    body does not wait for the cyclic collector (which documents.paused_gc holds off during a backfill)."""
    clock = FakeClock(1_760_000_000)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"data": [], "has_more": False}))
    client = OpenAIClient("http://testserver/v1", CANARY_KEY, clock=clock, transport=transport, rate_limit=1000.0)
    was = gc.isenabled()
    gc.disable()
    try:
        response = client.call("organization/usage/completions", [], RequestStats())
        ref = weakref.ref(response)
        assert response.json() == {"data": [], "has_more": False}
        del response
        assert ref() is None
    finally:
        if was:
            gc.enable()
        client.close()
