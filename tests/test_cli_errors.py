"""A newcomer's mistakes, each run as a newcomer would (``python -m usage_collector.cli`` in a fresh directory):
every one ends within seconds in one ``error:`` line naming the input, with exit 2 for input and configuration
and 1 for the environment, no traceback, and no file left behind.

The cases run concurrently (one process each), once per module; each test checks one of them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY = {"OPENAI_ADMIN_KEY": "sk-admin-" + "x" * 24, "OPENAI_BASE_URL": "http://127.0.0.1:9"}
ES_DOWN = {"ELASTICSEARCH_URL": "http://127.0.0.1:9", **KEY}


@dataclass
class Case:
    args: list[str]
    code: int  # 2 input or configuration, 1 environment
    names: str  # the input the error line must name
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written into the directory before the run


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


BUSY, BUSY_PORT = _busy_port()

CASES: dict[str, Case] = {
    "bad-date": Case(["backfill", "--start", "2026-13-01"], 2, "--start: '2026-13-01'"),
    "bad-end": Case(["backfill", "--start", "2026-10-05", "--end", "yesterday"], 2, "--end: 'yesterday'"),
    "end-before-start": Case(["backfill", "--start", "2026-10-05", "--end", "2026-10-01"], 2, "--end (2026-10-01)"),
    "start-in-the-future": Case(
        ["backfill", "--start", "2999-01-01", "--sink", "duckdb:x.duckdb"], 2, "2999-01-01", KEY
    ),
    "unknown-stream": Case(["run", "--stream", "nope"], 2, "--stream: unknown stream 'nope'"),
    "bad-width": Case(["backfill", "--start", "2026-10-01", "--bucket-width", "5m"], 2, "--bucket-width: '5m'"),
    "bad-toml": Case(["--config", "bad.toml", "run"], 2, "bad.toml", files={"bad.toml": "streams = [completions\n"}),
    "missing-toml": Case(["run", "--config", "nope.toml"], 2, "nope.toml"),
    "unknown-setting": Case(["run", "-c", "c.toml"], 2, "colour", files={"c.toml": 'colour = "red"\n'}),
    "bad-env-setting": Case(["run"], 2, "USAGE_COLLECTOR_CONCURRENCY", {"USAGE_COLLECTOR_CONCURRENCY": "zero"}),
    "unknown-sink": Case(["run", "--sink", "mysql:x"], 2, "mysql:x"),
    "missing-key": Case(["run", "--sink", "duckdb:x.duckdb"], 2, "OPENAI_ADMIN_KEY"),
    "unknown-option": Case(["run", "--nope"], 2, "--nope"),
    "bad-log-format-after-command": Case(["run", "--log-format", "xml"], 2, "--log-format"),
    "duckdb-in-missing-directory": Case(
        ["backfill", "--start", "2026-10-01", "--sink", "duckdb:/proc/nope/x.duckdb"], 2, "/proc/nope", KEY
    ),
    "read-only-sink-directory": Case(["run", "--sink", "duckdb:/sys/x.duckdb"], 2, "/sys", KEY),
    "ndjson-sink-is-a-directory": Case(["run", "--sink", "ndjson:/tmp"], 2, "ndjson:/tmp", KEY),
    "html-in-missing-directory": Case(
        ["report", "--sink", "ndjson:u.ndjson", "--html", "/proc/nope/r.html"],
        2,
        "/proc/nope/r.html",
        files={"u.ndjson": ""},
    ),
    "serve-interval-0": Case(["serve", "--interval", "0s", "--sink", "duckdb:x.duckdb"], 2, "--interval", KEY),
    "simulate-busy-port": Case(["simulate", "--port", str(BUSY_PORT)], 1, f"--port {BUSY_PORT}"),
    "status-of-a-missing-sink": Case(["status"], 2, "usage.duckdb"),
    "report-of-a-missing-sink": Case(["report", "--sink", "duckdb:doesnotexist.duckdb"], 2, "doesnotexist.duckdb"),
    "status-of-a-missing-ndjson": Case(["status", "--sink", "ndjson:nope.ndjson"], 2, "nope.ndjson"),
    "elasticsearch-unreachable-run": Case(["run"], 1, "http://127.0.0.1:9", ES_DOWN),
    "elasticsearch-unreachable-status": Case(["status"], 1, "http://127.0.0.1:9", ES_DOWN),
    "elasticsearch-unreachable-report": Case(["report"], 1, "http://127.0.0.1:9", ES_DOWN),
    "elasticsearch-unreachable-setup": Case(["setup", "--dry-run"], 1, "http://127.0.0.1:9", ES_DOWN),
}
if not Path("/sys").is_dir():  # pragma: no cover - not Linux
    del CASES["read-only-sink-directory"]


@dataclass
class Outcome:
    code: int
    lines: list[str]
    seconds: float
    left: list[str]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ELASTICSEARCH_", "USAGE_COLLECTOR_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    running = {}
    for name, case in CASES.items():
        cwd = tmp_path_factory.mktemp(name)
        for fname, text in case.files.items():
            (cwd / fname).write_text(text)
        proc = subprocess.Popen(
            [sys.executable, "-m", "usage_collector.cli", *case.args],
            cwd=cwd,
            env={**base, **case.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        running[name] = (proc, cwd, time.monotonic())
    results = {}
    for name, (proc, cwd, t0) in running.items():
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        left = sorted(p.name for p in cwd.iterdir() if p.name not in CASES[name].files)
        results[name] = Outcome(proc.returncode, out.strip().splitlines(), time.monotonic() - t0, left)
    yield results
    BUSY.close()


@pytest.mark.parametrize("name", list(CASES))
def test_a_mistake_ends_in_one_line_naming_the_input(outcomes: dict[str, Outcome], name: str) -> None:
    case, got = CASES[name], outcomes[name]
    text = "\n".join(got.lines)
    assert got.code == case.code, text
    assert "Traceback" not in text
    assert 1 <= len(got.lines) <= 3, text
    assert got.lines[-1].startswith("error: "), text
    assert case.names in got.lines[-1], text
    assert got.left == [], f"left behind: {got.left}"
    assert got.seconds < 30, got.seconds


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (RuntimeError("boom"), 1, "error: unexpected RuntimeError: boom (a bug: run again with --debug"),
        (PermissionError(13, "Permission denied", "/srv/u.ndjson"), 2, "error: /srv/u.ndjson: Permission denied"),
        (OSError(28, "No space left on device", "/srv/u.ndjson"), 1, "error: /srv/u.ndjson: No space left on device"),
    ],
    ids=["a-bug", "path-refused", "disk-full"],
)
def test_an_error_escaping_a_command_is_one_line_and_its_traceback_only_with_debug(
    tmp_path, monkeypatch, capsys, raised, code, line
):
    from usage_collector import cli, report

    def build_report(sink, **_):
        raise raised

    monkeypatch.chdir(tmp_path)
    (tmp_path / "u.ndjson").write_text("")
    monkeypatch.setattr(report, "build_report", build_report)
    assert cli.run_cli(["report", "--sink", "ndjson:u.ndjson"]) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(line), err
    assert cli.run_cli(["report", "--sink", "ndjson:u.ndjson", "-v"]) == code
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(line), err
