"""The command line: exit codes, one-line errors, the lease message, and no secret in any output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import CANARY_KEY
from usage_collector.cli import app, main  # noqa: F401  (main registers `simulate`)
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.simulator.cli import register

register(app)
runner = CliRunner()
README = (Path(__file__).parent.parent / "README.md").read_text()


def invoke(*args, env=None):
    return runner.invoke(app, list(args), env=env or {}, catch_exceptions=False)


@pytest.mark.parametrize(
    "args,message",
    [
        (["backfill", "--start", "2026-13-01"], "--start: '2026-13-01' is not a date"),
        (["backfill", "--start", "2026-10-05", "--end", "2026-10-01"], "--end (2026-10-01) must be after --start"),
        (["backfill", "--start", "2026-10-01", "--bucket-width", "5m"], "--bucket-width: '5m' is not allowed"),
        (["run", "--stream", "nope"], "unknown stream 'nope'"),
        (["run", "--sink", "mysql:x"], "--sink: unknown sink 'mysql:x'"),
    ],
    ids=["bad-date", "end-before-start", "bad-width", "unknown-stream", "unknown-sink"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a sink file


def test_missing_key_exits_2_and_nothing_is_written(tmp_path):
    result = invoke("run", "--sink", f"ndjson:{tmp_path}/o.ndjson", "--stream", "costs")
    assert result.exit_code == 2
    assert "OPENAI_ADMIN_KEY or OPENAI_ADMIN_KEY_FILE" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def simulator():
    org = Organization(seed=3, start="2026-09-01", days=3)
    with serve(SimulatedAPI(org, admin_key=CANARY_KEY)) as url:
        yield org, url


def test_backfill_then_status_and_report_with_the_key_in_no_output(simulator, tmp_path):
    _, url = simulator
    env = {"OPENAI_ADMIN_KEY": CANARY_KEY, "OPENAI_BASE_URL": url, "USAGE_COLLECTOR_RATE_LIMIT": "500"}
    sink = f"duckdb:{tmp_path}/u.duckdb"
    out = invoke(
        "--log-level", "DEBUG", "backfill", "--start", "2026-09-01", "--end", "2026-09-04", "--sink", sink, env=env
    )
    assert out.exit_code == 0, out.output
    assert re.search(r"costs\s+1d\s+1\s+\d+", out.output)
    status = invoke("status", "--sink", sink, env=env)
    assert status.exit_code == 0 and "completions" in status.output and "2026-09-04" in status.output
    report = invoke("report", "--sink", sink, "--html", str(tmp_path / "r.html"), env=env)
    assert report.exit_code == 0 and "Billed cost" in report.output
    for text in (out.output, status.output, report.output, (tmp_path / "r.html").read_text()):
        assert CANARY_KEY not in text
    for f in tmp_path.iterdir():
        assert CANARY_KEY.encode() not in f.read_bytes(), f


def test_wrong_key_says_an_admin_key_is_required(simulator, tmp_path):
    _, url = simulator
    env = {"OPENAI_ADMIN_KEY": "sk-proj-not-an-admin-key", "OPENAI_BASE_URL": url}
    out = invoke("run", "--stream", "completions", "--sink", f"ndjson:{tmp_path}/o.ndjson", env=env)
    assert out.exit_code == 1
    assert "completions" in out.output and "Admin key" in out.output
    assert not (tmp_path / "o.ndjson").exists() or (tmp_path / "o.ndjson").read_bytes() == b""


def test_second_run_while_the_lease_is_held_exits_0_naming_the_holder(simulator, tmp_path):
    from usage_collector.sinks.ndjson import NdjsonSink

    _, url = simulator
    path = tmp_path / "o.ndjson"
    NdjsonSink(path).acquire_lease("default", "host-a:123:abcd", 3600, now=4_000_000_000)
    env = {"OPENAI_ADMIN_KEY": CANARY_KEY, "OPENAI_BASE_URL": url}
    out = invoke("run", "--sink", f"ndjson:{path}", env=env)
    assert out.exit_code == 0
    assert "host-a:123:abcd" in out.output and "lease until" in out.output


@pytest.mark.parametrize("name", sorted(c.name or c.callback.__name__ for c in app.registered_commands))
def test_every_command_has_help_with_an_example_and_is_in_the_readme(name):
    command = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == name)
    doc = command.callback.__doc__ or ""
    assert doc.strip() and "Example:" in doc, f"{name} lacks help or an example"
    assert f"`{name}" in README, f"{name} is not documented in README.md"
