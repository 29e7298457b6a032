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

The same pairs are measured with the NDJSON sink and with the Elasticsearch sink, the latter against the
Elasticsearch test server (``tests/es_server.py``, 9.1.0) in its own process (``bench/_es.py``); each
Elasticsearch backfill writes to its own namespace (fresh data streams). The Elasticsearch long range is
``--es-days``, 365 by default like the others (the test server is a Python model of Elasticsearch, slower than one:
that backfill lasts ~5 minutes of wall time here, ~25 s of it the collector's CPU).

Goal, per sink: 365-day peak RSS at most 1.3x the 1-day one.

    python bench/p4_memory.py [--long-runs 1] [--sinks duckdb,ndjson,elasticsearch] [--es-days 120]
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def backfill(uc: str, env: dict[str, str], days: int, sink: str) -> tuple[float, float, float]:
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
    return usage.ru_maxrss / 1024, wall, usage.ru_utime + usage.ru_stime  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long-runs", type=int, default=1)
    ap.add_argument("--sinks", default="duckdb,ndjson,elasticsearch")
    ap.add_argument("--es-days", type=int, default=365)
    args = ap.parse_args()
    uc = str(Path(PY).parent / "usage-collector")  # the console script itself, not a version-manager shim
    rows = []
    ratios = {}
    kinds = args.sinks.split(",")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        base_url, counters = stack.enter_context(sim_process("--days", "367"))
        es_url = None
        if "elasticsearch" in kinds:
            es = subprocess.Popen(
                [PY, str(Path(__file__).resolve().parent / "_es.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            stack.callback(es.wait, 30)
            stack.callback(es.stdin.close)  # type: ignore[union-attr]
            es_url = es.stdout.readline().decode().strip()  # type: ignore[union-attr]
        n = 0
        for kind in kinds:
            long_days = args.es_days if kind == "elasticsearch" else 365

            def run(days: int, kind: str = kind) -> tuple[float, float, float]:
                nonlocal n
                n += 1
                env = cli_env(base_url, USAGE_COLLECTOR_RATE_LIMIT="1000")
                if kind == "elasticsearch":
                    assert es_url is not None
                    env.update(ELASTICSEARCH_URL=es_url, USAGE_COLLECTOR_NAMESPACE=f"p4n{n}")
                    got = backfill(uc, env, days, "elasticsearch")
                else:
                    got = backfill(uc, env, days, f"{kind}:{tmp}/p4_{n}.{kind}")
                print(
                    f"  {kind} {days} d: peak RSS {got[0]:.0f} MB, {got[1]:.1f} s wall, {got[2]:.1f} s CPU", flush=True
                )
                return got

            short = [run(1)]
            long = []
            for _ in range(args.long_runs):
                long.append(run(long_days))
                short.append(run(1))
            short.append(run(1))
            s_rss, l_rss = median([r[0] for r in short]), median([r[0] for r in long])
            ratios[kind] = l_rss / s_rss
            rows.append([kind, "1 d", len(short), round(s_rss), median([r[1] for r in short]), ""])
            rows.append(
                [kind, f"{long_days} d", len(long), round(l_rss), median([r[1] for r in long]), f"{l_rss / s_rss:.2f}x"]
            )
    print(
        f"P4: peak RSS of one backfill child, 1h, {len(STREAM_SET)} streams (all but vector_stores), "
        f"rate limit 1000/s; simulator requests {counters.get('total', '?')}"
    )
    print(table(["sink", "range", "runs", "peak RSS MB (median)", "wall s", "ratio"], rows))
    names = {"duckdb": "DuckDB", "ndjson": "NDJSON", "elasticsearch": "Elasticsearch"}
    results = [
        verdict(
            f"P4 memory, {names[k]} sink ({365 if k != 'elasticsearch' else args.es_days} d / 1 d peak RSS)",
            ratios[k],
            GOAL,
            at_most=True,
        )
        for k in kinds
    ]
    emit(results)


if __name__ == "__main__":
    main()
