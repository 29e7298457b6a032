"""The ``simulate`` command: registration, help, durations, and a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest
import typer
from typer.testing import CliRunner

from usage_collector.simulator.cli import parse_duration, register


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    register(app)
    return app


def test_register_adds_simulate_with_help():
    app = _app()
    result = CliRunner().invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    assert "Serve a simulated OpenAI organization" in result.output
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    flags = {opt for param in command.params for opt in param.opts}
    for flag in (
        "--port",
        "--seed",
        "--start",
        "--days",
        "--admin-key",
        "--revision-horizon",
        "--fault-429",
        "--fault-at",
        "--fault-401-from",
        "--retry-after-format",
        "--fault-repeat-cursor",
    ):
        assert flag in flags


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("2d", 172800), ("0", 0), ("1.5h", 5400)],
    ids=["bare", "seconds", "minutes", "hours", "days", "zero", "fraction"],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage():
    with pytest.raises(typer.BadParameter):
        parse_duration("soon")


def test_simulate_serves_until_sigterm():
    script = textwrap.dedent(
        """
        import typer
        from usage_collector.simulator.cli import register
        app = typer.Typer()
        @app.callback()
        def main() -> None:
            pass
        register(app)
        app()
        """
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            "simulate",
            "--port",
            "0",
            "--seed",
            "3",
            "--days",
            "5",
            "--admin-key",
            "sk-admin-cli",
            "--fault-at",
            "2:429",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        found = re.search(r"base URL:\s+(\S+)", "".join(lines))
        assert found is not None
        base_url = found.group(1)
        assert "sk-admin-cli" in "".join(lines)
        headers = {"Authorization": "Bearer sk-admin-cli"}
        assert httpx.get(f"{base_url}/organization/projects", headers=headers).status_code == 200
        assert httpx.get(f"{base_url}/organization/projects", headers=headers).status_code == 429
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "served 2 requests" in out
