"""What a command imports (P3, issue 18): nothing it does not use.

Each case runs the console-script entry point (:func:`usage_collector.cli.main`) in a fresh interpreter and
checks the modules it left in ``sys.modules`` by name, not by time (times are for ``bench/p3_startup.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.simulator.api import DEFAULT_ADMIN_KEY

ROOT = Path(__file__).resolve().parents[1]

#: Runs ``main(argv)`` and prints the names of the modules it imported, as the last line of stdout.
PROBE = """
import json, sys
from usage_collector.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(name for name, mod in sys.modules.items() if mod is not None)))
"""

#: Never imported by a command that does not talk to Elasticsearch, schedule, or render a report.
NOT_FOR_RUN = (
    "elasticsearch",
    "elastic_transport",
    "usage_collector.elastic",
    "apscheduler",
    "usage_collector.schedule",
    "usage_collector.report",
    "usage_collector.focus",
    "trio",  # httpcore's async backend; every client here is synchronous
    "httpx._main",  # httpx's own command-line client ...
    "rich",  # ... and what it imports (a run prints a plain table when stdout is not a terminal)
    "pygments",
    "click",
)
#: ``--help`` needs typer only: no HTTP client, no sink, no configuration model.
NOT_FOR_HELP = (*NOT_FOR_RUN, "httpx", "httpcore", "duckdb", "pydantic", "pydantic_settings", "usage_collector.config")


def imported(args: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip(), proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def offending(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "USAGE_COLLECTOR_", "ELASTICSEARCH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_help_imports_neither_a_client_nor_a_sink(tmp_path: Path) -> None:
    modules = imported(["--help"], base_env(), tmp_path)
    assert "usage_collector.cli" in modules
    assert offending(modules, NOT_FOR_HELP) == []


@pytest.mark.parametrize(
    ("sink", "unused"),
    [("duckdb:u.duckdb", ("usage_collector.budgets",)), ("ndjson:u.ndjson", ("duckdb", "_duckdb"))],
    ids=["duckdb", "ndjson"],
)
def test_run_imports_only_what_it_uses(tmp_path: Path, sink: str, unused: tuple[str, ...]) -> None:
    today = datetime.now(UTC).date()
    org = Organization(seed=3, start=(today - timedelta(days=1)).isoformat(), days=2)
    with serve(SimulatedAPI(org, clock=time.time)) as url:
        env = {**base_env(), "OPENAI_BASE_URL": url, "OPENAI_ADMIN_KEY": DEFAULT_ADMIN_KEY}
        modules = imported(["run", "--sink", sink, "-s", "completions", "-s", "costs"], env, tmp_path)
    assert "usage_collector.collector" in modules, "the run did not get as far as collecting"
    assert offending(modules, (*NOT_FOR_RUN, *unused)) == []


def test_the_duckdb_sink_spells_the_budgets_stream_as_budgets_does() -> None:
    """The sink names the budgets stream itself so that a run without budgets does not import them."""
    from usage_collector import budgets
    from usage_collector.sinks import duckdb

    assert duckdb.BUDGETS_STREAM == budgets.BUDGETS_STREAM


GC_PROBE = """
import gc, json
from usage_collector import cli
before = gc.get_threshold()
cli.settle()  # not started by main(): leaves the collector alone
untouched = (gc.get_threshold(), gc.get_freeze_count())
cli.start_quietly()
quiet = gc.get_threshold()
cli.settle()
print(json.dumps({"before": before, "untouched": untouched, "quiet": quiet, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count()}))
"""


def test_start_up_collects_rarely_then_settles_at_the_usual_pace() -> None:
    proc = subprocess.run([sys.executable, "-c", GC_PROBE], env=base_env(), capture_output=True, text=True, timeout=60)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["untouched"] == [got["before"], 0]
    assert got["quiet"][0] > got["before"][0]
    assert got["after"] == got["before"]
    assert got["frozen"] > 1000  # the imported modules' objects


def test_command_annotations_are_objects_not_strings() -> None:
    """typer evaluates string annotations of every command at every start (see the cli module docstring)."""
    import inspect

    from usage_collector import cli

    assert not isinstance(inspect.signature(cli.run).parameters["sink"].annotation, str)
