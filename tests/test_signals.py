"""SIGTERM to `run`/`backfill` (CronJob deadline, systemd stop): the window being written lands with its
checkpoint, the lease is released, the process exits 0, and the next run resumes to the exact truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers import CANARY_KEY
from tests.truth import assert_sink_equals_truth
from usage_collector.simulator import FaultPlan, Organization, SimulatedAPI, serve
from usage_collector.sinks.ndjson import NdjsonSink


def test_sigterm_finishes_the_window_releases_the_lease_and_the_rerun_completes(tmp_path):
    org = Organization(seed=41, start=int(time.time()) // 86400 * 86400 - 60 * 86400, days=20)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, faults=FaultPlan(latency=1.0, latency_seconds=0.05))
    path = tmp_path / "o.ndjson"
    streams = ["embeddings", "moderations"]
    env = {
        **os.environ,
        "OPENAI_ADMIN_KEY": CANARY_KEY,
        "USAGE_COLLECTOR_RATE_LIMIT": "1000",
        "USAGE_COLLECTOR_ENRICH_NAMES": "false",
        "USAGE_COLLECTOR_CONCURRENCY": "1",
    }
    args = [
        sys.executable,
        "-m",
        "usage_collector.cli",
        "backfill",
        "--start",
        str(org.start),
        "--end",
        str(org.end),
        "--sink",
        f"ndjson:{path}",
        "--bucket-width",
        "1h",
        *[a for s in streams for a in ("--stream", s)],
    ]
    args[args.index("--start") + 1] = time.strftime("%Y-%m-%d", time.gmtime(org.start))
    args[args.index("--end") + 1] = time.strftime("%Y-%m-%d", time.gmtime(org.end))
    with serve(api) as url:
        env["OPENAI_BASE_URL"] = url
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while api.counters.snapshot()["total"] < 2 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped by a signal" in out
        sink = NdjsonSink(path)
        cp = sink.load_checkpoint("default", "embeddings", "1h", "backfill")
        assert cp is not None and not cp.complete  # stopped part-way, with a checkpoint
        lease = (tmp_path / "o.ndjson.lease").read_text()
        assert "default" not in lease  # released
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
    assert_sink_equals_truth(NdjsonSink(path), org, streams, org.start, org.end)
    assert CANARY_KEY not in out + err + rerun.stdout + rerun.stderr


def test_sigterm_during_slow_first_requests_stops_within_one_request(tmp_path):
    """1.5 s per response, names on, 12 streams: SIGTERM mid-request ends the run after the requests in flight (no
    new request starts), within the request timeout."""
    org = Organization(seed=41, start=int(time.time()) // 86400 * 86400 - 10 * 86400, days=5)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, faults=FaultPlan(latency=1.0, latency_seconds=1.5))
    env = {**os.environ, "OPENAI_ADMIN_KEY": CANARY_KEY, "USAGE_COLLECTOR_RATE_LIMIT": "1000"}
    args = [sys.executable, "-m", "usage_collector.cli", "--log-format", "text", "run"]
    args += ["--sink", f"ndjson:{tmp_path / 'o.ndjson'}"]
    with serve(api) as url:
        env["OPENAI_BASE_URL"] = url
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while api.counters.snapshot().get("total", 0) < 1 and time.time() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        requests = api.counters.snapshot()["total"]
    assert proc.returncode == 0, err
    # no new request starts after SIGTERM: the ones in flight end the run; at most one per stream worker
    # (concurrency 4) and the names' first two lists (projects, users), read beside the streams' first requests;
    # the per-project lists would start only after the projects list answered, 1.5 s later
    assert requests <= 4 + 2, f"{requests} requests in all; stopping took {took:.1f}s"
    assert "stopped by a signal" in out
