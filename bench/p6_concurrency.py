"""P6 concurrency: wall time of a multi-stream backfill with 200 ms latency on every request, concurrent vs serial.

The simulator runs in its own process (``bench/_sim.py --latency 1.0 --latency-seconds 0.2``: every request
gets a ``latency`` fault, which sleeps with the simulator's default ``time.sleep``; the script checks that a
request really takes >= 0.2 s). The collector runs in this process: the real ``Collector.backfill`` on the
system clock (the rate limiter really sleeps), into a fresh DuckDB file per run, all 12 streams, 1h
(costs 1d), from midnight UTC ``--days`` days ago (default 14) to the final edge: two 7-day windows per usage
stream, and a third of today's final hours once there are some (after about 01:00 UTC), so 23 or 34 requests.

Sides, interleaved round by round (the order alternates), medians of ``--rounds`` (default 3), name enrichment
on (the default) unless said:

* **serial**: ``concurrency=1``: one request at a time, windows in order, reconciliation at the end;
* **concurrent**: ``concurrency=12`` (one worker per stream), ``rate_limit=100`` requests/s; with more than one
  worker each stream also has its next window's first page in flight while it writes the current one, and the
  weeks every stream has written are reconciled while the others still collect (``docs/architecture.md``);
* informative: ``concurrency=4`` (the default) at 100/s; ``concurrency=4`` at the default ``rate_limit=5``;
  serial and concurrent with names off (each ratio is against the serial side of the same names setting).

The Admin list requests (names) go out beside the streams' first requests, on both sides. The rate limit of the
goal figure is ``rate_limit=100`` (requests per second, all streams together) on both sides. At the default 5/s
the limiter alone spaces request starts 0.2 s apart, as long as the simulated latency itself, so no concurrency
can beat serial by more than ~2x there.

The ``cpu s`` column is the median CPU time of this process (``time.process_time``, every thread: the collector,
DuckDB, the HTTP client) per run of the side, the figure that depends least on what else the machine runs.

Goal: concurrent at most 1/4 of serial.

    python bench/p6_concurrency.py [--rounds 3] [--days 14]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import ADMIN_KEY, emit, median, sim_process, table, verdict

from usage_collector.catalogue import STREAMS
from usage_collector.collector import Collector
from usage_collector.config import load_settings
from usage_collector.planning import BackfillRange
from usage_collector.sinks.duckdb import DuckDBSink

GOAL = 0.25
LATENCY = 0.2
N = len(STREAMS)
SERIAL, SERIAL_OFF = "serial (concurrency 1, 100/s)", "serial (concurrency 1, 100/s), names off"
SIDES: dict[str, dict[str, Any]] = {
    SERIAL: {"concurrency": 1, "rate_limit": 100.0},
    f"concurrent ({N} workers, 100/s)": {"concurrency": N, "rate_limit": 100.0},
    "concurrency 4, 100/s": {"concurrency": 4, "rate_limit": 100.0},
    "concurrency 4, default 5/s": {"concurrency": 4, "rate_limit": 5.0},
    SERIAL_OFF: {"concurrency": 1, "rate_limit": 100.0, "enrich_names": False},
    f"concurrent ({N} workers, 100/s), names off": {"concurrency": N, "rate_limit": 100.0, "enrich_names": False},
}


def one(base_url: str, tmp: str, tag: str, days: int, **kw: Any) -> tuple[float, int, float]:
    settings = load_settings(None, openai_admin_key=ADMIN_KEY, openai_base_url=base_url, **{"enrich_names": True, **kw})
    sink = DuckDBSink(f"{tmp}/{tag}.duckdb")
    now = time.time()
    start = int(now // 86400 * 86400 - days * 86400)
    t, cpu = time.perf_counter(), time.process_time()
    try:
        result = Collector(settings, sink).backfill(BackfillRange(start, None, bucket_width="1h"))
    finally:
        sink.close()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    if result.failed:
        raise SystemExit(f"backfill failed: {[(r.stream, r.error) for r in result.failed]}")
    return wall, sum(r.requests.requests for r in result.streams), cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in SIDES}
    cpus: dict[str, list[float]] = {k: [] for k in SIDES}
    reqs: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        sim_process("--days", str(args.days + 2), "--latency", "1.0", "--latency-seconds", str(LATENCY)) as (
            base_url,
            counters,
        ),
    ):
        # the simulator really sleeps: time a few cheap requests
        with httpx.Client(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            rtt = []
            for _ in range(3):
                t = time.perf_counter()
                http.get(f"{base_url}/organization/projects").raise_for_status()
                rtt.append(time.perf_counter() - t)
        print(
            f"P6: one request to the simulator takes {median(rtt) * 1000:.0f} ms (median of 3; latency fault "
            f"{LATENCY * 1000:.0f} ms on every request)"
        )
        if median(rtt) < LATENCY:
            raise SystemExit("the simulator does not sleep: latency fault not applied")
        keys = list(SIDES)
        for i in range(args.rounds):
            for k in keys if i % 2 == 0 else list(reversed(keys)):
                wall, n, cpu = one(base_url, tmp, f"r{i}_{keys.index(k)}", args.days, **SIDES[k])
                times[k].append(wall)
                cpus[k].append(cpu)
                reqs[k] = n
    rows = []
    ratio = {}
    for k in keys:
        serial = times[SERIAL_OFF if SIDES[k].get("enrich_names") is False else SERIAL]  # the same names setting
        ratio[k] = median([t / s for t, s in zip(times[k], serial, strict=True)])
        rows.append([k, reqs[k], median(times[k]), min(times[k]), max(times[k]), ratio[k], median(cpus[k])])
    faults = counters.get("by_fault", {})
    print(
        f"{N} streams, 1h (costs 1d), {args.days} days, {args.rounds} interleaved rounds, DuckDB sink; simulator: "
        f"{counters.get('total', '?')} requests, latency faults {faults.get('latency', '?')}"
    )
    print(table(["side", "requests", "median s", "min s", "max s", "x serial", "cpu s"], rows))
    results = [
        verdict(f"P6 concurrency ({N} workers / serial, 100 req/s, names on)", ratio[keys[1]], GOAL, at_most=True)
    ]
    for k in keys[2:]:
        verdict(f"P6 {k} / serial (informative)", ratio[k], GOAL, at_most=True)
    emit(results)


if __name__ == "__main__":
    main()
