"""P5 freshness: in ``serve``, how long after a 1-minute bucket closes its documents are in the sink.

The simulator (``bench/_sim.py``, real clock, usage up to now) runs in its own process; ``usage-collector
serve`` runs as a child with the completions stream at 1m, ``finalization_grace`` ``--grace`` seconds (default
30) and ``--interval`` seconds between cycles (default 20), into an NDJSON file. This script tails the file
every 0.2 s and notes when the first document of each bucket appears. A bucket that closed at ``end`` is due
``grace + interval`` later at the latest (it becomes final ``grace`` after it closed; the next cycle at most
``interval`` after that collects it); the goal allows 10 s more for the cycle itself.

Measured: every bucket that closed after the first cycle started and was written before the end of the
observation (``--seconds``, default 180); the figure is the worst lag after the bucket's final edge
(``end + grace``), against ``interval + 10`` s.

    python bench/p5_freshness.py [--seconds 180] [--grace 30] [--interval 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import PY, cli_env, emit, median, sim_process, table, verdict

SLACK = 10.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=20.0)
    args = ap.parse_args()
    uc = str(Path(PY).parent / "usage-collector")
    seen: dict[int, float] = {}  # bucket start -> first seen (unix seconds)
    with tempfile.TemporaryDirectory() as tmp, sim_process("--days", "2") as (base_url, counters):
        out = Path(tmp) / "p5.ndjson"
        env = cli_env(
            base_url,
            USAGE_COLLECTOR_STREAMS="completions",
            USAGE_COLLECTOR_BUCKET_WIDTH='{"completions": "1m"}',
            USAGE_COLLECTOR_FINALIZATION_GRACE=str(args.grace),
            USAGE_COLLECTOR_ENRICH_NAMES="false",
            USAGE_COLLECTOR_SPEND_CONTROLS="false",
        )
        started = time.time()
        proc = subprocess.Popen(
            [uc, "serve", "--sink", f"ndjson:{out}", "--interval", f"{args.interval:g}s", "--jitter", "0s"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        pos = 0
        buf = b""
        try:
            while time.time() - started < args.seconds:
                time.sleep(0.2)
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited {proc.returncode}: {proc.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
                if not out.exists():
                    continue
                with out.open("rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                now = time.time()
                pos += len(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    obj = orjson.loads(line)
                    if obj.get("_op_type") == "delete":
                        continue
                    ts = obj["_source"]["@timestamp"]
                    start = int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
                    seen.setdefault(start, now)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    # buckets that closed (end = start + 60) after serve started: the first cycle's backlog is not freshness
    lags = sorted((t - (s + 60 + args.grace), s) for s, t in seen.items() if s + 60 + args.grace > started)
    if not lags:
        raise SystemExit("no bucket became final during the observation: raise --seconds")
    worst = max(lag for lag, _ in lags)
    print(
        f"P5: serve, completions at 1m, grace {args.grace:g} s, interval {args.interval:g} s, observed "
        f"{args.seconds:g} s; {len(lags)} buckets became final and were written (simulator requests "
        f"{counters.get('total', '?')})"
    )
    print(
        table(
            ["", "seconds"],
            [
                ["lag after the final edge (end + grace), median", median([lag for lag, _ in lags])],
                ["lag after the final edge, worst", worst],
                ["closed -> visible, worst (lag + grace)", worst + args.grace],
                ["allowed: grace + interval + 10", args.grace + args.interval + SLACK],
            ],
        )
    )
    emit(
        [
            verdict(
                "P5 freshness, 1m bucket closed -> visible in serve (worst s, vs grace + interval + 10)",
                worst + args.grace,
                args.grace + args.interval + SLACK,
                at_most=True,
                unit=" s",
            )
        ]
    )


if __name__ == "__main__":
    main()
