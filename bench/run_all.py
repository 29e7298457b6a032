"""Run every benchmark (``bench/p*_*.py``) one after the other and print one summary.

Each benchmark runs as its own process (never two at once: they would compete for the CPU) with its own
output shown as it goes; each appends its goal figures to a JSON file named by ``BENCH_JSON``, which this
script reads back for the summary. Exit status 0 whether goals are met or not (this reports, it does not
gate); 1 if a benchmark itself failed.

    python bench/run_all.py [p1 p3 ...]     # a subset by prefix
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    wanted = sys.argv[1:]
    scripts = sorted(p for p in BENCH.glob("p[0-9]*_*.py") if not wanted or p.name.split("_")[0] in wanted)
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        durations = {}
        for script in scripts:
            print(f"\n===== {script.name} =====", flush=True)
            t = time.perf_counter()
            rc = subprocess.call(
                [sys.executable, str(script)], env={**os.environ, "BENCH_JSON": str(out)}, cwd=BENCH.parent
            )
            durations[script.name] = time.perf_counter() - t
            if rc != 0:
                failed.append(f"{script.name} (exit {rc})")
        results = [r for line in out.read_text().splitlines() for r in json.loads(line)] if out.exists() else []
    print("\n===== summary =====")
    for r in results:
        label = "  info   " if r.get("goal") is None else "  met    " if r["met"] else "  MISSED "
        print(label + r["line"])  # info: a figure without a goal (P8)
    print("  durations: " + ", ".join(f"{k} {v:.0f}s" for k, v in durations.items()))
    if failed:
        print("  benchmarks that failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
