"""Crash: ``kill -9`` a backfill of every stream at 20 points, rerun, and the sink equals the truth.

The collector runs as a subprocess (``usage-collector backfill``) against the simulator over real HTTP in
this process. 8 simulated days, so each hourly stream has two windows (168 buckets each): 20 windows and 20
pages in all (9 hourly streams x 2, ``vector_stores`` and ``costs`` x 1), and a crash can land between two
windows of one stream, which exercises the backfill's resume position and not only a restart from scratch.

Each point: the run dies by SIGKILL (exit -9) at a failpoint (``USAGE_COLLECTOR_FAILPOINTS=name:N``), while a
request is in flight (the simulator kills it), or on a timer; the state it leaves never has a checkpoint past
unwritten data; a rerun without the failpoint exits 0 and leaves the sink equal to the truth, every ``_id``
once (DuckDB: one row per ``_id``; NDJSON: the last line per ``_id`` equals the truth and a further rerun
appends nothing); no output or file carries the Admin key.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CANARY_KEY
from tests.reliability.helpers import (
    ALL,
    HookedAPI,
    assert_checkpoints_never_pass_unwritten_data,
    assert_exact,
    assert_no_canary,
    backfill_args,
    cli,
    cli_env,
    describe,
    finish,
    killed_by_sigkill,
    open_sink,
    outputs,
    past_org,
    serve,
    spawn,
)
from tests.reliability.matrix import MATRIX
from usage_collector.catalogue import STREAMS
from usage_collector.planning import Window, split
from usage_collector.simulator import FaultPlan
from usage_collector.sinks.base import Checkpoint

#: Admin list requests made before the first usage page when names are enriched (projects, users, and
#: api_keys + service_accounts of each of the 5 projects).
NAME_REQUESTS = 12
USAGE_PATHS = ("/v1/organization/usage/", "/v1/organization/costs")


@dataclass(frozen=True)
class Crash:
    kind: str  # duckdb | ndjson
    how: str  # "<failpoint>:<N>" | "in-flight:<request number>" | "timer:<seed>"
    concurrency: int = 1

    def __str__(self) -> str:
        return f"{self.kind}-{self.how}-c{self.concurrency}"


# Windows in order at concurrency 1: completions 1-2, embeddings 3-4, moderations 5-6, images 7-8,
# audio_speeches 9-10, audio_transcriptions 11-12, vector_stores 13, code_interpreter_sessions 14-15,
# file_search_calls 16-17, web_search_calls 18-19, costs 20.
POINTS = [
    # DuckDB (documents and checkpoint in one transaction)
    Crash("duckdb", "lease.acquired:1", 4),
    Crash("duckdb", "page.parsed:1"),
    Crash("duckdb", "window.shaped:2"),  # completions' first window landed, the second not
    Crash("duckdb", "window.shaped:5"),
    Crash("duckdb", "window.shaped:13"),  # vector_stores shaped, nothing written
    Crash("duckdb", "window.written:11"),
    Crash("duckdb", "window.written:20"),  # the last window, before the run cursor moves
    Crash("duckdb", "page.parsed:9", 4),
    Crash("duckdb", f"in-flight:{NAME_REQUESTS + 6}", 4),
    Crash("duckdb", "timer:1"),
    # NDJSON (lines appended and fsynced, then the state file)
    Crash("ndjson", "lease.acquired:1"),
    Crash("ndjson", "page.parsed:3"),
    Crash("ndjson", "window.shaped:9", 4),
    Crash("ndjson", "window.shaped:1"),
    Crash("ndjson", "window.shaped:14", 4),
    Crash("ndjson", "window.written:2"),
    Crash("ndjson", "window.written:19"),
    Crash("ndjson", "window.written:7"),
    Crash("ndjson", f"in-flight:{NAME_REQUESTS + 15}"),
    Crash("ndjson", "timer:2"),
]


@pytest.fixture(scope="module")
def org():
    return past_org(seed=101, days=8)


@pytest.fixture(scope="module")
def api(org):
    # default revision horizons: the range ended 32 days ago, so every value is final
    return HookedAPI(org, admin_key=CANARY_KEY)


@pytest.fixture(scope="module")
def url(api):
    with serve(api) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def slow_api(org):
    """Every usage/costs response takes 100 ms, so a run at concurrency 1 lasts long enough (20 pages, 2 s)
    for a timer to land inside it."""
    return HookedAPI(
        org, admin_key=CANARY_KEY, faults=FaultPlan(latency=1.0, latency_seconds=0.1, path_prefixes=USAGE_PATHS)
    )


@pytest.fixture(scope="module")
def slow_url(slow_api):
    with serve(slow_api) as base_url:
        yield base_url


class _StateView:
    """The crash state read without repairing it (the rerun's own open must do that)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path

    def __enter__(self) -> Any:
        if self.kind == "duckdb":
            from usage_collector.sinks.duckdb import DuckDBSink

            self.sink: Any = DuckDBSink(self.path, read_only=True) if self.path.exists() else None
            return self.sink or _Empty()
        return _NdjsonView(self.path)

    def __exit__(self, *exc: object) -> None:
        if self.kind == "duckdb" and self.sink is not None:
            self.sink.close()


class _Empty:
    def iter_documents(self, stream: str | None = None) -> Any:
        return iter(())

    def load_checkpoint(self, *a: Any) -> None:
        return None


class _NdjsonView:
    def __init__(self, path: Path) -> None:
        from usage_collector.sinks.ndjson import NdjsonSink

        self._sink = NdjsonSink(path)  # iter_documents reads complete lines and never repairs
        state = path.with_name(path.name + ".state.json")
        self._cps = json.loads(state.read_text())["checkpoints"] if state.exists() else {}

    def iter_documents(self, stream: str | None = None) -> Any:
        return self._sink.iter_documents(stream)

    def load_checkpoint(self, org_id: str, stream: str, width: str, scope: str = "run") -> Checkpoint | None:
        from usage_collector.sinks.base import checkpoint_key

        raw = self._cps.get(checkpoint_key(org_id, stream, width, scope))
        return Checkpoint.from_dict(raw) if raw else None


def _windows(org) -> list[tuple[str, int]]:
    """(stream, window end) in the order a concurrency-1 backfill writes them."""
    return [
        (s, w.end)
        for s in ALL
        for w in split(
            Window(org.start, org.end), STREAMS[s].default_width, STREAMS[s].limit_max(STREAMS[s].default_width)
        )
    ]


def _expected_positions(point: Crash, org) -> dict[str, int] | None:
    """Checkpoint positions a concurrency-1 failpoint crash must leave, or None when the order is not fixed."""
    name, _, n = point.how.partition(":")
    if point.concurrency != 1 or name in ("in-flight", "timer"):
        return None
    done = {"window.written": int(n), "lease.acquired": 0}.get(name, int(n) - 1)
    positions = dict.fromkeys(ALL, org.start)
    for stream, end in _windows(org)[:done]:
        positions[stream] = end
    return positions


def _crash_run(point: Crash, org, args, env, api, url, slow_api, slow_url) -> Any:
    how, _, arg = point.how.partition(":")
    if how == "in-flight":
        box: dict[str, Any] = {}

        def kill_at(n: int, path: str) -> None:
            if n == int(arg):
                box["proc"].kill()  # SIGKILL while this request is being answered
                box["proc"].wait()

        api.hook = kill_at
        env = {**env, "OPENAI_BASE_URL": url}
        try:
            box["proc"] = proc = spawn(args, env)
            return finish(proc)
        finally:
            api.hook = None
    if how == "timer":
        started = threading.Event()
        slow_api.hook = lambda n, path: started.set() if path.startswith(USAGE_PATHS) else None
        env = {**env, "OPENAI_BASE_URL": slow_url}
        try:
            proc = spawn(args, env)
            assert started.wait(30), "the collector never reached a usage request"
            delay = random.Random(int(arg)).uniform(0.15, 0.9)  # well below the 2 s of pages still to come
            threading.Event().wait(delay)
            proc.kill()
            return finish(proc)
        finally:
            slow_api.hook = None
    return finish(spawn(args, {**env, "USAGE_COLLECTOR_FAILPOINTS": point.how}))


@pytest.mark.parametrize("point", POINTS, ids=str)
def test_kill_9_then_rerun_equals_the_truth(point, org, api, url, slow_api, slow_url, tmp_path):
    path = tmp_path / f"u.{point.kind}"
    args = backfill_args(org, f"{point.kind}:{path}", log_format="json" if point.concurrency > 1 else "text")
    env = cli_env(url, concurrency=point.concurrency)
    with MATRIX.run(f"crash: kill -9, {point.kind}", point.how):
        crashed = _crash_run(point, org, args, env, api, url, slow_api, slow_url)
        assert killed_by_sigkill(crashed), describe(crashed)
        with _StateView(point.kind, path) as state:
            positions = assert_checkpoints_never_pass_unwritten_data(state, org)
        expected = _expected_positions(point, org)
        if expected is not None:  # deterministic order: the crash landed exactly where it was aimed
            assert positions == expected, f"crash state {positions} != expected {expected}"

        rerun = cli(args, env)
        assert rerun.returncode == 0, describe(rerun)
        assert "skipped" not in rerun.stdout, "the dead run's lease blocked the rerun"
        with open_sink(point.kind, path) as sink:
            assert_exact(sink, org)
            for stream in ALL:
                width = STREAMS[stream].default_width
                cp = sink.load_checkpoint("default", stream, width, "backfill")
                assert cp is not None and cp.complete and cp.position == org.end, (stream, cp)
                run_cp = sink.load_checkpoint("default", stream, width, "run")
                assert run_cp is not None and run_cp.position == org.end, (stream, run_cp)
        results = [crashed, rerun]
        if point.kind == "ndjson":  # nothing twice: a rerun after completion appends nothing
            size = path.stat().st_size
            again = cli(args, env)
            assert again.returncode == 0, describe(again)
            assert path.stat().st_size == size, "a rerun after completion appended lines"
            results.append(again)
    assert_no_canary(f"crash {point}", outputs(*results), [tmp_path])
