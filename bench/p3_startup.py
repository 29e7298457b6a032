"""P3 start-up: wall time of ``usage-collector --help`` and of a ``run`` with nothing new, vs ``import httpx``.

Every command is a fresh subprocess; the commands are interleaved round by round (the order rotates), and
each figure is the median of ``--runs`` rounds (default 10). The ratios are medians too.

* baseline: ``python -c "import httpx"`` (the same interpreter);
* ``usage-collector --help`` (the console script);
* ``usage-collector run --sink duckdb:PATH`` with **nothing new**: the simulator (``bench/_sim.py``, real clock,
  14 days of usage ending today) serves in a background process, and the DuckDB file was brought up to date
  by one ``run`` before timing. "Nothing new" still re-reads the restatement window (usage 1 day, costs 3
  days: one request per stream) and, with ``enrich_names`` on (the default), the Admin list endpoints;
  every document comes back unchanged, nothing is written but the checkpoints and run records.
  Measured as is (all 11 streams, default ``rate_limit`` 5/s, names on), then with the client-side rate
  limit lifted and names off (``USAGE_COLLECTOR_RATE_LIMIT=1000``, ``USAGE_COLLECTOR_ENRICH_NAMES=false``),
  for all streams and for ``--stream completions``, to separate the limiter's spacing (0.2 s between request
  starts) from the process's own start-up cost.

Goals: ``--help`` at most 2x the baseline; a no-op ``run`` at most 4x.

Before timing, the package the console script imports is byte-compiled (``compileall``), as ``pip install``
does: with ``PYTHONDONTWRITEBYTECODE`` set (as in CI and these machines) a source checkout would otherwise
recompile every module it changed in every timed process, and the figure would depend on which ``.pyc`` files
happened to be left over. The package's path is printed, so a figure names the code it measured.

    python bench/p3_startup.py [--runs 12]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PY, cli_env, emit, median, sim_process, table, verdict

GOAL_HELP, GOAL_RUN = 2.0, 4.0


def exe() -> str:
    # the console script beside this interpreter: a version manager's shim on PATH (pyenv) is a shell script
    # that adds its own start-up to every timed command
    found = str(Path(PY).parent / "usage-collector")
    if not Path(found).exists():
        raise SystemExit("usage-collector console script not found (pip install -e .)")
    return found


def compile_package(env: dict[str, str]) -> str:
    """Byte-compile the ``usage_collector`` the console script will import (with ``env``); returns its path."""
    where = subprocess.run(
        [PY, "-c", "import usage_collector, os; print(os.path.dirname(usage_collector.__file__))"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        # not the caller's directory: ``python -c`` puts it first on sys.path, ahead of PYTHONPATH, while the
        # console script does not (run from a checkout with PYTHONPATH=elsewhere, the checkout was named)
        cwd=Path(__file__).resolve().anchor,
    ).stdout.strip()
    subprocess.run([PY, "-m", "compileall", "-q", where], check=True, stdout=subprocess.DEVNULL)
    return where


def once(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    uc = exe()
    with tempfile.TemporaryDirectory() as tmp, sim_process("--days", "14") as (base_url, counters):
        db = f"duckdb:{tmp}/p3.duckdb"
        env = cli_env(base_url)
        fast_nonames = cli_env(base_url, USAGE_COLLECTOR_RATE_LIMIT="1000", USAGE_COLLECTOR_ENRICH_NAMES="false")
        package = compile_package(env)
        # bring the sink up to date (first run: 7 days of initial lookback), then once more for completions
        subprocess.run([uc, "run", "--sink", db], env=env, check=True, stdout=subprocess.DEVNULL)
        cmds = {
            "python -c 'import httpx'": ([PY, "-c", "import httpx"], env),
            "usage-collector --help": ([uc, "--help"], env),
            "run (nothing new, 11 streams)": ([uc, "run", "--sink", db], env),
            "run, 11 streams, 1000/s, names off": ([uc, "run", "--sink", db], fast_nonames),
            "run --stream completions, 1000/s, names off": (
                [uc, "run", "--sink", db, "--stream", "completions"],
                fast_nonames,
            ),
        }
        for cmd, e in list(cmds.values())[:2]:  # warm the page cache (the runs were warmed by the first run)
            once(cmd, e)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        keys = list(cmds)
        for i in range(args.runs):
            for k in keys[i % len(keys) :] + keys[: i % len(keys)]:
                times[k].append(once(*cmds[k]))
    base = times[keys[0]]
    rows = []
    ratio: dict[str, float] = {}
    for k in keys:
        r = median([t / b for t, b in zip(times[k], base, strict=True)])
        ratio[k] = r
        rows.append([k, round(median(times[k]) * 1000), round(min(times[k]) * 1000), round(max(times[k]) * 1000), r])
    print(
        f"P3: {args.runs} interleaved rounds, wall time per command (ms), ratio = median of per-round ratios "
        f"to the baseline; simulator requests during the timed part: {counters.get('total', '?')}; package: {package}"
    )
    print(table(["command", "median ms", "min ms", "max ms", "x baseline"], rows))
    results = [
        verdict("P3 start-up --help (x import httpx)", ratio[keys[1]], GOAL_HELP, at_most=True),
        verdict("P3 start-up no-op run, 11 streams (x import httpx)", ratio[keys[2]], GOAL_RUN, at_most=True),
    ]
    verdict(
        "P3 start-up no-op run, 11 streams, 1000/s, names off (x import httpx, informative)",
        ratio[keys[3]],
        GOAL_RUN,
        at_most=True,
    )
    verdict(
        "P3 start-up no-op run --stream completions, 1000/s, names off (x import httpx, informative)",
        ratio[keys[4]],
        GOAL_RUN,
        at_most=True,
    )
    emit(results)


if __name__ == "__main__":
    main()
