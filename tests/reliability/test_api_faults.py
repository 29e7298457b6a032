"""API faults: each one either recovers to the exact truth, or stops with a clear error and a checkpoint that
never passes unwritten data, and a rerun once the fault is gone reaches the exact truth.

In process (``Collector`` + ``FakeClock``, so a ``Retry-After: 7`` costs no real time) for the retried faults
and the stopping ones; as a subprocess where the exit status and the stderr lines matter.

Request numbering is deterministic: concurrency 1, no name enrichment, one request per window, windows in
this order (8 days): completions 1-2, embeddings 3-4, moderations 5-6, images 7-8, audio_speeches 9-10,
audio_transcriptions 11-12, vector_stores 13, code_interpreter_sessions 14-15, file_search_calls 16-17,
web_search_calls 18-19, costs 20, decisions 21-22. A retry takes the next number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers import CANARY_KEY, make_settings
from tests.reliability.helpers import (
    ALL,
    DAY,
    assert_checkpoints_never_pass_unwritten_data,
    assert_exact,
    assert_no_canary,
    backfill_args,
    cli,
    cli_env,
    describe,
    open_sink,
    outputs,
    past_org,
    plain_lines,
    serve,
)
from tests.reliability.matrix import MATRIX
from usage_collector.catalogue import STREAMS
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.simulator import FaultKind, FaultPlan, SimulatedAPI
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

K = FaultKind


@pytest.fixture(scope="module")
def org():
    return past_org(seed=202, days=8)


def _sim(org, clock, faults=None, **kw):
    sleep = kw.pop("sleep", lambda s: None)
    return SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, faults=faults, sleep=sleep, **kw)


def _backfill(org, sink, clock, faults=None, sim_kw=None, **settings_kw):
    with serve(_sim(org, clock, faults, **(sim_kw or {}))) as url:
        settings = make_settings(openai_base_url=url, **settings_kw)
        return Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))


def _sink(kind, tmp_path):
    return DuckDBSink(tmp_path / "u.duckdb") if kind == "duckdb" else NdjsonSink(tmp_path / "u.ndjson")


# --- faults that are retried: the sink equals the truth ----------------------------------------------------
@dataclass
class Recovering:
    name: str
    faults: FaultPlan
    settings: dict[str, Any] = field(default_factory=dict)
    #: what the client must have waited (FakeClock.slept): (value, tolerance, at least how many times)
    waited: tuple[float, float, int] | None = None
    real_sleep: bool = False


def _burst(first: int, last: int, kind: FaultKind | None = None) -> dict[int, FaultKind]:
    cycle = (K.SERVER_ERROR, K.BAD_GATEWAY, K.UNAVAILABLE)
    return {n: kind or cycle[n % 3] for n in range(first, last + 1)}


RECOVERING = [
    # a storm: completions' second window is refused 6 times in a row, then 20% of everything else
    Recovering(
        "429 storm, Retry-After seconds",
        FaultPlan(seed=1, rate_limit=0.2, retry_after=7, schedule=_burst(2, 7, K.RATE_LIMIT)),
        waited=(7.0, 0.0, 6),
    ),
    Recovering(
        "429 storm, Retry-After HTTP date",
        FaultPlan(
            seed=2, rate_limit=0.2, retry_after=9, retry_after_format="http-date", schedule=_burst(2, 7, K.RATE_LIMIT)
        ),
        waited=(8.5, 0.5, 6),
    ),  # an HTTP date has whole seconds: 8 < wait <= 9
    Recovering(
        "429 storm, retry-after-ms",
        FaultPlan(seed=3, rate_limit=0.25, retry_after=0.25, retry_after_ms=True, schedule=_burst(5, 10, K.RATE_LIMIT)),
        waited=(0.25, 0.0, 6),
    ),
    Recovering(
        "5xx burst (500/502/503, HTML 502)", FaultPlan(seed=4, server_error=0.1, non_json=0.05, schedule=_burst(3, 9))
    ),
    Recovering(
        "timeouts (latency > request timeout)",
        FaultPlan(seed=5, latency_seconds=0.6, schedule={2: K.LATENCY, 6: K.LATENCY, 7: K.LATENCY, 15: K.LATENCY}),
        settings={"request_timeout": 0.15},
        real_sleep=True,
    ),
    Recovering(
        "truncated JSON bodies",
        FaultPlan(seed=6, truncated=0.15, schedule={1: K.TRUNCATED, 2: K.TRUNCATED, 3: K.TRUNCATED}),
    ),
]


@pytest.mark.parametrize("case", RECOVERING, ids=lambda c: c.name)
def test_retried_faults_recover_to_the_exact_truth(case, org, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    sink = _sink("duckdb", tmp_path)
    with MATRIX.run(f"api: {case.name}", "recovers"):
        sim_kw = {"sleep": time.sleep} if case.real_sleep else {}
        result = _backfill(org, sink, clock, case.faults, sim_kw, **case.settings)
        assert not result.failed, [r.error for r in result.failed]
        assert sum(r.requests.retries for r in result.streams) >= 3, "the fault plan injected (almost) nothing"
        if case.waited:
            value, tol, times = case.waited
            honoured = [s for s in clock.slept if abs(s - value) <= tol]
            assert len(honoured) >= times, f"Retry-After {value}s not honoured: slept {clock.slept}"
        assert_exact(sink, org)
    errors = [r.error or "" for r in result.streams]
    assert_no_canary(f"api {case.name}", errors, [tmp_path])
    sink.close()


# --- faults that stop a stream: clear error, checkpoint behind it, rerun reaches the truth -------------------
@dataclass
class Stopping:
    name: str
    faults: FaultPlan
    failed: set[str]  # streams that must fail
    message: str  # in each failed stream's error
    settings: dict[str, Any] = field(default_factory=dict)


STOPPING = [
    Stopping(
        "has_more without next_page",
        FaultPlan(schedule={2: K.HAS_MORE_NO_CURSOR}),
        {"completions"},
        "has_more is true but next_page is missing",
    ),
    # the reason given is checked by test_a_repeated_cursor_is_named_as_such
    Stopping("repeating cursor", FaultPlan(schedule={4: K.REPEAT_CURSOR}), {"embeddings"}, "embeddings"),
    # the key is revoked at request 9 (audio_speeches' first window): every later stream fails
    Stopping(
        "401 in the middle (key revoked)",
        FaultPlan(unauthorized_from=9),
        {
            "audio_speeches",
            "audio_transcriptions",
            "vector_stores",
            "code_interpreter_sessions",
            "file_search_calls",
            "web_search_calls",
            "costs",
            "decisions",
        },
        "Admin key",
    ),
    Stopping(
        "5xx beyond the retry budget",
        FaultPlan(schedule=_burst(5, 7, K.UNAVAILABLE)),
        {"moderations"},
        "gave up after 3 attempt(s): HTTP 503",
        {"max_attempts": 3},
    ),
    Stopping(
        "429 with Retry-After above the cap",
        FaultPlan(retry_after=600, schedule={11: K.RATE_LIMIT}),
        {"audio_transcriptions"},
        "above retry_after_cap",
    ),
]


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
@pytest.mark.parametrize("case", STOPPING, ids=lambda c: c.name)
def test_fatal_faults_stop_the_stream_with_a_clear_error_and_a_safe_checkpoint(case, kind, org, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    sink = _sink(kind, tmp_path)
    with MATRIX.run(f"api: {case.name}", kind):
        result = _backfill(org, sink, clock, case.faults, **case.settings)
        failed = {r.stream: r.error or "" for r in result.failed}
        assert set(failed) == case.failed, failed
        for stream, error in failed.items():
            assert case.message in error, (stream, error)
        assert not any(s >= 600 for s in clock.slept), f"waited out a Retry-After above the cap: {clock.slept}"
        positions = assert_checkpoints_never_pass_unwritten_data(sink, org)
        for stream in ALL:
            if stream not in case.failed:
                assert positions[stream] == org.end, f"{stream} did not finish although it had no fault"
        assert any(positions[s] < org.end for s in case.failed)
        for stream in case.failed:  # the error is on the stream's checkpoint, for `status`
            cp = sink.load_checkpoint("default", stream, STREAMS[stream].default_width, "backfill")
            assert cp is not None and case.message in (cp.last_error or ""), (stream, cp)

        rerun = _backfill(org, sink, clock)  # the fault is gone
        assert not rerun.failed, [r.error for r in rerun.failed]
        assert_exact(sink, org)
        if kind == "ndjson":
            size = (tmp_path / "u.ndjson").stat().st_size
            assert sum(r.stats.written for r in _backfill(org, sink, clock).streams) == 0
            assert (tmp_path / "u.ndjson").stat().st_size == size
    assert_no_canary(f"api {case.name} {kind}", list(failed.values()), [tmp_path])
    sink.close()


def test_a_repeated_cursor_is_named_as_such(org, tmp_path):
    """Regression (found by this matrix, fixed in 3d5c20f): a page whose ``next_page`` repeats the cursor that
    produced it was yielded before the cursor was checked, so the collector stopped with "two results for
    the same group in bucket ... refusing to keep only one" (blaming the data) instead of naming the loop."""
    clock = FakeClock(org.end + 3 * DAY)
    sink = _sink("duckdb", tmp_path)
    result = _backfill(org, sink, clock, FaultPlan(schedule={2: K.REPEAT_CURSOR}), streams=["embeddings"])
    (failed,) = result.failed
    assert "cursor repeated" in (failed.error or ""), failed.error
    sink.close()


# --- as a subprocess: exit status 1, one stderr line per failed stream naming it and the reason ------------------
SUBPROCESS = [
    ("401 in the middle (key revoked)", FaultPlan(unauthorized_from=9), 8, "Admin key"),
    (
        "has_more without next_page",
        FaultPlan(schedule={2: K.HAS_MORE_NO_CURSOR}),
        1,
        "has_more is true but next_page is missing",
    ),
    (
        "429 with Retry-After above the cap",
        FaultPlan(retry_after=600, schedule={20: K.RATE_LIMIT}),
        1,
        "above retry_after_cap",
    ),
]


@pytest.mark.parametrize("name,faults,n_failed,message", SUBPROCESS, ids=[c[0] for c in SUBPROCESS])
def test_the_cli_exits_1_naming_each_failed_stream_and_the_rerun_completes(
    name, faults, n_failed, message, org, tmp_path
):
    path = tmp_path / "u.ndjson"
    args = backfill_args(org, f"ndjson:{path}", log_format="json")
    with MATRIX.run(f"api: {name}", "subprocess, exit status"):
        with serve(SimulatedAPI(org, admin_key=CANARY_KEY, faults=faults)) as url:
            env = cli_env(url, concurrency=1, enrich_names="false")
            first = cli(args, env)
        assert first.returncode == 1, describe(first)
        lines = plain_lines(first.stderr)
        assert lines[0] == f"{n_failed} stream(s) failed:", describe(first)
        # streams failing for one cause (a revoked key stops every stream left) share one line naming them all
        assert len(lines) == 1 + (1 if message == "Admin key" else n_failed), describe(first)
        for line in lines[1:]:
            assert line.startswith("  default/") and message in line, line
        if message == "Admin key":
            assert lines[1].startswith(f"  default/{n_failed} streams ("), lines[1]
        with open_sink("ndjson", path) as sink:
            assert_checkpoints_never_pass_unwritten_data(sink, org)
        with serve(SimulatedAPI(org, admin_key=CANARY_KEY)) as url:
            rerun = cli(args, cli_env(url))
        assert rerun.returncode == 0, describe(rerun)
        with open_sink("ndjson", path) as sink:
            assert_exact(sink, org)
    assert_no_canary(f"api {name} subprocess", outputs(first, rerun), [tmp_path])
