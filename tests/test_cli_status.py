"""``status`` for operators and the newcomer's path through the CLI: one row per stream, ``--check`` for
monitoring, the demo's next commands, global options after the command, readable help."""

from __future__ import annotations

import re
import time

import pytest
from typer.testing import CliRunner

from usage_collector import cli
from usage_collector.cli import app, hoist_global_options, stream_statuses
from usage_collector.config import load_settings
from usage_collector.documents import run_document
from usage_collector.simulator.cli import register
from usage_collector.sinks.base import Checkpoint
from usage_collector.sinks.ndjson import NdjsonSink

if not any(c.name == "simulate" for c in app.registered_commands):
    register(app)
runner = CliRunner()
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOUR = 3600


def run_doc(stream: str, *, at: float, error: str | None = None, mode: str = "run") -> dict:
    return run_document(
        run_id="h:1:a",
        org_id="default",
        stream=stream,
        bucket_width="1h",
        mode=mode,
        window=(int(at) - HOUR, int(at)),
        windows=1,
        requests=1,
        retries=0,
        created=1,
        updated=0,
        unchanged=0,
        position=None,
        started_at=at,
        finished_at=at,
        duration=1.0,
        final_edge=int(at),
        error=error,
    )


def test_one_row_per_stream_with_the_backfill_as_a_column_and_no_lag_before_a_scheduled_run():
    settings = load_settings(streams="completions")
    edge = int(NOW) // HOUR * HOUR - HOUR  # the last complete bucket ends here (15 min grace)
    cps = [
        # a finished bounded backfill of last year, and the cursor it left behind: no scheduled run yet
        Checkpoint("default", "completions", "1h", "backfill", position=1_700_000_000 // HOUR * HOUR,
                   range_start=1_699_000_000 // HOUR * HOUR, range_end=1_700_000_000 // HOUR * HOUR,
                   complete=True, last_success_at=NOW - 100),
        Checkpoint("default", "completions", "1h", "run", position=1_700_000_000 // HOUR * HOUR),
        # a scheduled stream that is fresh
        Checkpoint("default", "embeddings", "1h", "run", position=edge, last_success_at=NOW - 60),
    ]  # fmt: skip
    rows = {r.stream: r for r in stream_statuses(cps, [], settings, NOW)}
    assert len(rows) == 2
    assert rows["completions"].lag is None and not rows["completions"].stale  # no misleading lag
    assert rows["completions"].backfill.startswith("done 2023-11-")
    assert rows["embeddings"].lag == NOW - edge and not rows["embeddings"].stale and rows["embeddings"].backfill == "-"


def test_stale_and_failed_streams_are_named():
    settings = load_settings(interval="5m", stale_intervals=3)
    edge = int(NOW) // HOUR * HOUR - HOUR
    cps = [
        Checkpoint("default", "completions", "1h", "run", position=edge - 2 * HOUR, last_success_at=NOW - 7200),
        Checkpoint("default", "embeddings", "1h", "run", position=edge, last_success_at=NOW - 600),
        Checkpoint("default", "moderations", "1h", "run", position=edge, last_success_at=NOW - 600,
                   last_error="AuthError: 401", last_error_at=NOW - 60),
    ]  # fmt: skip
    runs = [
        run_doc("embeddings", at=NOW - 60, error="FatalApiError: 400 bad request"),
        run_doc("embeddings", at=NOW - 600),
    ]
    rows = {r.stream: r for r in stream_statuses(cps, runs, settings, NOW)}
    assert rows["completions"].stale and not rows["completions"].failed
    assert rows["embeddings"].failed and rows["embeddings"].last_error == "FatalApiError: 400 bad request"
    assert rows["moderations"].failed and rows["moderations"].last_error == "AuthError: 401"  # no run document
    assert not rows["moderations"].stale


def test_status_check_exits_1_naming_each_problem_and_0_when_all_is_well(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: NOW)
    edge = int(NOW) // HOUR * HOUR - HOUR
    path = tmp_path / "u.ndjson"
    sink = NdjsonSink(path)
    sink.open()
    sink.save_checkpoint(Checkpoint("default", "completions", "1h", "run", position=edge, last_success_at=NOW - 60))
    sink.record_run(run_doc("completions", at=NOW - 60))
    ok = runner.invoke(app, ["status", "--sink", f"ndjson:{path}", "--check"])
    assert ok.exit_code == 0, ok.output
    assert "as of 2027-01-15T08:00:00Z" in ok.output and f"ndjson:{path}" in ok.output
    assert "check: ok" in ok.output
    sink.save_checkpoint(
        Checkpoint("default", "costs", "1d", "run", position=edge // 86400 * 86400 - 86400, last_success_at=NOW)
    )
    sink.record_run(run_doc("completions", at=NOW - 30, error="AuthError: 401 an Admin key is required"))
    bad = runner.invoke(app, ["status", "--sink", f"ndjson:{path}", "--check", "--stale-intervals", "2"])
    assert bad.exit_code == 1, bad.output
    assert "check: default/completions: last run failed: AuthError: 401" in bad.output
    assert re.search(r"check: default/costs: stale: no new complete bucket for 1d00h \(more than 2 x 5m", bad.output)
    assert "completions" in bad.output and bad.output.count("default  completions") == 1  # one row per stream


def test_status_and_report_never_create_a_sink(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.duckdb").write_bytes(b"")  # what `demo` leaves
    out = runner.invoke(app, ["status"])
    assert out.exit_code == 2
    assert "usage.duckdb does not exist" in out.output and "--sink duckdb:demo.duckdb" in out.output
    assert runner.invoke(app, ["report", "--sink", "ndjson:x.ndjson"]).exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.duckdb"]


def test_the_demo_ends_with_the_next_commands_on_its_own_sink():
    text = cli.demo_next_steps("duckdb:demo.duckdb")
    assert "usage-collector report --sink duckdb:demo.duckdb --html report.html" in text
    assert "usage-collector status --sink duckdb:demo.duckdb" in text
    assert "'duckdb:my demo.duckdb'" in cli.demo_next_steps("duckdb:my demo.duckdb")


@pytest.mark.parametrize(
    ("argv", "hoisted"),
    [
        (["run", "--log-format", "text"], ["--log-format", "text", "run"]),
        (["run", "-s", "costs", "--log-level=DEBUG", "-v"], ["--log-level=DEBUG", "-v", "run", "-s", "costs"]),
        (["-c", "a.toml", "backfill", "--config", "b.toml", "--start", "2026-01-01"],
         ["-c", "a.toml", "--config", "b.toml", "backfill", "--start", "2026-01-01"]),
        (["run", "--", "--debug"], ["run", "--", "--debug"]),
        (["--help"], ["--help"]),
    ],
    ids=["after", "mixed", "both-sides", "after-dashdash", "no-command"],
)  # fmt: skip
def test_global_options_after_the_command_move_before_it(argv, hoisted):
    assert hoist_global_options(argv) == hoisted


def test_a_global_option_after_the_command_takes_effect(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.run_cli(["status", "--log-format", "xml"]) == 2
    assert capsys.readouterr().err.startswith("error: --log-format: ")
    assert cli.run_cli(["status", "--sink", "ndjson:x.ndjson", "--log-level", "DEBUG"]) == 2
    assert "x.ndjson does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["", *sorted(c.name or c.callback.__name__ for c in app.registered_commands)])
def test_help_shows_readable_placeholders(name):
    out = runner.invoke(app, [name, "--help"] if name else ["--help"], prog_name="usage-collector")
    assert out.exit_code == 0
    assert not re.search(r"<[a-z\[\] ]+>|TEXT|INTEGER|FLOAT|RANGE", out.output), out.output
    if not name:  # the command list is not cut
        assert "..." not in out.output.split("Commands:")[-1]


def test_demo_and_simulate_share_one_default_seed():
    demo = runner.invoke(app, ["demo", "--help"]).output
    simulate = runner.invoke(app, ["simulate", "--help"]).output
    seed = f"[default: {cli.DEFAULT_SEED}]"
    assert seed in demo.split("--seed N")[1][:200] and seed in simulate.split("--seed N")[1][:200]
