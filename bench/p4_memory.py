"""P4 memory: peak RSS of a 365-day 1h backfill against a 1-day one (DuckDB sink, simulator in another process).

Each backfill is a fresh ``usage-collector backfill --start DATE --bucket-width 1h --sink duckdb:NEW_FILE``
child; its peak RSS is the ``ru_maxrss`` of that child alone (``os.wait4``). The simulator (``bench/_sim.py``,
367 days of usage ending today, real clock) runs in its own process.

Deviations, stated in the output:

* streams: every stream **except vector_stores** on both sides: the simulator's vector-store gauge grows
  without bound and from about 190 days on its ``usage_bytes`` exceed 2**64, so the simulator answers
  ``TypeError: Integer exceeds 64-bit range`` (a dropped connection) and the stream fails;
* ``USAGE_COLLECTOR_RATE_LIMIT=1000`` on both sides (the default 5/s would make the 365-day run last ~2
  minutes of limiter sleeps; the rate limit does not change what is held in memory);
* the 1-day backfill is run 3 times (interleaved around the long one) and its median taken; the 365-day one
  once by default (``--long-runs``): peak RSS barely varies between runs.

An NDJSON-sink pair (same streams, same ranges) is measured too, to separate the collector from DuckDB.

Goal: 365-day peak RSS at most 1.3x the 1-day one.

    python bench/p4_memory.py [--long-runs 1] [--no-ndjson]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PY, cli_env, emit, median, sim_process, table, verdict

from usage_collector.catalogue import STREAMS

GOAL = 1.3
STREAM_SET = [s for s in STREAMS if s != "vector_stores"]


def backfill(uc: str, env: dict[str, str], days: int, sink: str) -> tuple[float, float]:
    """``(peak RSS in MB, wall seconds)`` of one backfill child."""
    start = (datetime.now(UTC).date() - timedelta(days=days)).isoformat()
    args = [uc, "backfill", "--start", start, "--bucket-width", "1h", "--sink", sink]
    for s in STREAM_SET:
        args += ["--stream", s]
    t = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # drain while it runs
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"backfill of {days} d exited {proc.returncode}: {err[-2000:].decode(errors='replace')}")
    return usage.ru_maxrss / 1024, wall  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long-runs", type=int, default=1)
    ap.add_argument("--no-ndjson", action="store_true")
    args = ap.parse_args()
    uc = shutil.which("usage-collector") or str(Path(PY).parent / "usage-collector")
    rows = []
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp, sim_process("--days", "367") as (base_url, counters):
        env = cli_env(base_url, USAGE_COLLECTOR_RATE_LIMIT="1000")
        n = 0
        kinds = ["duckdb"] if args.no_ndjson else ["duckdb", "ndjson"]
        for kind in kinds:

            def sink(days: int, kind: str = kind) -> str:
                nonlocal n
                n += 1
                return f"{kind}:{tmp}/p4_{n}.{kind}"

            short: list[tuple[float, float]] = [backfill(uc, env, 1, sink(1))]
            long: list[tuple[float, float]] = []
            for _ in range(args.long_runs):
                long.append(backfill(uc, env, 365, sink(365)))
                short.append(backfill(uc, env, 1, sink(1)))
            short.append(backfill(uc, env, 1, sink(1)))
            s_rss, l_rss = median([r for r, _ in short]), median([r for r, _ in long])
            ratios[kind] = l_rss / s_rss
            rows.append([kind, "1 d", len(short), round(s_rss), round(median([w for _, w in short]), 1), ""])
            rows.append(
                [
                    kind,
                    "365 d",
                    len(long),
                    round(l_rss),
                    round(median([w for _, w in long]), 1),
                    f"{l_rss / s_rss:.2f}x",
                ]
            )
    print(
        f"P4: peak RSS of one backfill child, 1h, {len(STREAM_SET)} streams (all but vector_stores), "
        f"rate limit 1000/s; simulator requests {counters.get('total', '?')}"
    )
    print(table(["sink", "range", "runs", "peak RSS MB (median)", "wall s", "ratio"], rows))
    results = [verdict("P4 memory, DuckDB sink (365 d / 1 d peak RSS)", ratios["duckdb"], GOAL, at_most=True)]
    if "ndjson" in ratios:
        verdict("P4 memory, NDJSON sink (365 d / 1 d peak RSS, informative)", ratios["ndjson"], GOAL, at_most=True)
    emit(results)


if __name__ == "__main__":
    main()
