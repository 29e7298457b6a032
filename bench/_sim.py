"""The simulated organization in its own process, for the benchmarks (see ``_common.sim_process``).

Prints the base URL on the first line, serves until its stdin closes, then prints the request counters as
one JSON line. ``--days D`` of usage ending today (UTC) by default, on the real clock, so a collector child
process with its own system clock sees consistent final buckets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from usage_collector.simulator import FaultPlan, Organization, SimulatedAPI, serve


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start", help="first day with usage, YYYY-MM-DD (default: so that the last day is today)")
    p.add_argument("--now", type=float, default=None, help="fixed 'now' (unix seconds); default: the real clock")
    p.add_argument("--latency", type=float, default=0.0, help="probability of a delayed response")
    p.add_argument("--latency-seconds", type=float, default=0.0)
    a = p.parse_args()
    first = a.start or (datetime.now(UTC).date() - timedelta(days=a.days - 1)).isoformat()
    org = Organization(seed=a.seed, start=first, days=a.days)
    faults = FaultPlan(latency=a.latency, latency_seconds=a.latency_seconds) if a.latency else None
    fixed = a.now
    clock = (lambda: fixed) if fixed is not None else time.time
    api = SimulatedAPI(org, clock=clock, faults=faults)  # default sleep: time.sleep
    with serve(api) as base_url:
        print(base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        snap = api.counters.snapshot()
    print(json.dumps(snap), flush=True)


if __name__ == "__main__":
    main()
