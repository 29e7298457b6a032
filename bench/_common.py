"""Shared helpers for the benchmarks in ``bench/`` (not a test module, not part of the package).

* :class:`NullSink`: a sink that acknowledges everything and keeps only counts, so a benchmark measures
  the collector and the simulator, not a database.
* :func:`sim_process`: the simulator in a separate process (``bench/_sim.py``), for benchmarks whose
  collector runs in another process or must not share the GIL with the server.
* :func:`median`, :func:`table`, :func:`verdict`: small reporting helpers.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from usage_collector.simulator import DEFAULT_ADMIN_KEY  # noqa: E402

ADMIN_KEY = DEFAULT_ADMIN_KEY
SEED = 7
DAY = 86400


class NullSink:
    """Acknowledges every window, stores checkpoints in memory, counts documents."""

    description = "null:"

    def __init__(self) -> None:
        self.docs = 0
        self.windows = 0
        self._cps: dict[str, Any] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write_window(self, docs: Sequence[Any], checkpoint: Any, replaces: Any = None) -> Any:
        from usage_collector.sinks.base import WriteStats

        with self._lock:
            self.docs += len(docs)
            self.windows += 1
            if checkpoint is not None:
                self._cps[checkpoint.key] = checkpoint
        return WriteStats(created=len(docs))

    def load_checkpoint(self, org_id: str, stream: str, bucket_width: str, scope: str = "run") -> Any:
        from usage_collector.sinks.base import checkpoint_key

        return self._cps.get(checkpoint_key(org_id, stream, bucket_width, scope))

    def save_checkpoint(self, checkpoint: Any) -> None:
        self._cps[checkpoint.key] = checkpoint

    def list_checkpoints(self) -> list[Any]:
        return list(self._cps.values())

    def acquire_lease(self, org_id: str, holder: str, ttl: float, now: float) -> Any:
        from usage_collector.sinks.base import Lease

        return Lease(org_id, holder, now + ttl)

    def release_lease(self, org_id: str, holder: str) -> None:
        pass

    def record_run(self, run: dict[str, Any]) -> None:
        pass

    def list_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        return []

    def iter_documents(
        self, stream: str | None = None, *, start: int | None = None, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        return iter(())


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run ``bench/_sim.py ARGS`` in a child process; yields ``(base_url, counters)``.

    ``counters`` is filled with the simulator's request counters when the block exits (the child prints
    them when its stdin closes).
    """
    proc = subprocess.Popen(
        [PY, str(BENCH / "_sim.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    counters: dict[str, Any] = {}
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http"):
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield line, counters
        proc.stdin.close()
        tail = proc.stdout.read().strip().splitlines()
        if tail:
            counters.update(json.loads(tail[-1]))
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


def cli_env(base_url: str, **extra: str) -> dict[str, str]:
    """Environment for a ``usage-collector`` child: only our variables, pointing at the simulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "USAGE_COLLECTOR_", "ELASTICSEARCH_"))}
    env.update(
        {
            "OPENAI_BASE_URL": base_url,
            "OPENAI_ADMIN_KEY": ADMIN_KEY,
            "USAGE_COLLECTOR_LOG_FORMAT": "json",
            "USAGE_COLLECTOR_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.3f}" if abs(c) < 100 else f"{c:,.0f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def verdict(name: str, value: float, goal: float, *, at_most: bool, unit: str = "") -> dict[str, Any]:
    """One summary line (printed) and a JSON-able result (``run_all.py`` collects them)."""
    met = value <= goal if at_most else value >= goal
    rel = "<=" if at_most else ">="
    line = f"{name}: {value:.4g}{unit} (goal {rel} {goal:.4g}{unit}) -> {'MET' if met else 'MISSED'}"
    print(line)
    return {"name": name, "value": value, "goal": goal, "at_most": at_most, "met": met, "line": line}


def emit(results: list[dict[str, Any]]) -> None:
    """For ``run_all.py``: the results as one JSON line, when ``BENCH_JSON`` names a file."""
    path = os.environ.get("BENCH_JSON")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(results) + "\n")
