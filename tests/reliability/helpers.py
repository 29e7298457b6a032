"""Shared pieces of the reliability matrix: the CLI as a subprocess, a simulator over real HTTP with a
request hook, exactness checks (whole range, and "the checkpoint never passes unwritten data"), duplicate
checks per sink, and the canary scan.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.helpers import CANARY_KEY
from tests.truth import assert_sink_equals_truth, diff, sink_table, truth_table
from usage_collector.catalogue import STREAM_NAMES, STREAMS
from usage_collector.simulator import Organization, SimulatedAPI
from usage_collector.simulator.server import SimServer
from usage_collector.simulator.server import serve as sim_serve

DAY = 86400
#: UTC midnight today; every simulated organization here ends well before it (final, past every horizon).
TODAY = int(time.time()) // DAY * DAY
ALL = tuple(STREAM_NAMES)
#: the distinctive part of the canary key (what a partial leak would still show)
CANARY_CORE = CANARY_KEY.removeprefix("sk-admin-")
#: per subprocess; a hung collector fails the test instead of CI
TIMEOUT = 90
_ENV_PREFIXES = ("OPENAI_", "USAGE_COLLECTOR_", "ELASTICSEARCH_", "KIBANA_")


def past_org(seed: int, days: int, ago: int = 40) -> Organization:
    """An organization whose range ended ``ago - days`` days before today: everything final."""
    return Organization(seed=seed, start=TODAY - ago * DAY, days=days)


def day(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


# --- the simulator over real HTTP -----------------------------------------------------------------------
class HookedAPI(SimulatedAPI):
    """The simulated API with an optional ``hook(n, path)`` called before each request is handled."""

    hook: Callable[[int, str], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen = 0
        self._hook_lock = threading.Lock()

    def handle(self, method: str, path: str, query: Any = (), headers: Any = ()) -> Any:
        hook = self.hook
        if hook is not None:
            with self._hook_lock:
                self._seen += 1
                n = self._seen
            hook(n, path)
        return super().handle(method, path, query, headers)


class _QuietServer(SimServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed with SIGKILL mid-request leaves a broken pipe: expected here


@contextlib.contextmanager
def serve(api: SimulatedAPI) -> Iterator[str]:
    """Like :func:`usage_collector.simulator.serve` (127.0.0.1, any port), without tracebacks for clients
    that die mid-request."""
    with sim_serve(api, server_class=_QuietServer) as base_url:
        yield base_url


# --- the CLI as a subprocess ---------------------------------------------------------------------------------
def cli_command() -> list[str]:
    exe = shutil.which("usage-collector")
    return [exe] if exe else [sys.executable, "-m", "usage_collector.cli"]


def cli_env(url: str | None = None, key: str | None = CANARY_KEY, **settings: Any) -> dict[str, str]:
    """A clean environment (no developer/CI configuration) for the collector subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env["USAGE_COLLECTOR_RATE_LIMIT"] = "1000"
    if key is not None:
        env["OPENAI_ADMIN_KEY"] = key
    if url is not None:
        env["OPENAI_BASE_URL"] = url
    for name, value in settings.items():
        if value is not None:
            env[name if name.isupper() and name.startswith(_ENV_PREFIXES) else f"USAGE_COLLECTOR_{name.upper()}"] = str(
                value
            )
    return env


def backfill_args(org: Organization, sink: str, *extra: str, log_format: str = "json") -> list[str]:
    return [
        "--log-format",
        log_format,
        "backfill",
        "--start",
        day(org.start),
        "--end",
        day(org.end),
        "--sink",
        sink,
        *extra,
    ]


def spawn(
    args: list[str], env: dict[str, str], cwd: Path | None = None, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli_command(), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def finish(proc: subprocess.Popen[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"collector still running after {timeout}s:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cli(
    args: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    return finish(spawn(args, env, cwd, preexec_fn), timeout)


def killed_by_sigkill(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == -signal.SIGKILL


def plain_lines(text: str) -> list[str]:
    """The lines of CLI output that are not JSON log records."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("{")]


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-2500:]}\n--- stderr\n{result.stderr[-4000:]}"


# --- sinks ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def open_sink(kind: str, path: Path) -> Iterator[Any]:
    """The sink file as the collector would open it (closed again, so the next subprocess can take it)."""
    if kind == "duckdb":
        from usage_collector.sinks.duckdb import DuckDBSink

        sink: Any = DuckDBSink(path)
    else:
        from usage_collector.sinks.ndjson import NdjsonSink

        sink = NdjsonSink(path)
    try:
        yield sink
    finally:
        sink.close()


def widths(streams: Iterable[str] = ALL) -> dict[str, str]:
    return {s: STREAMS[s].default_width for s in streams}


def assert_exact(
    sink: Any, org: Organization, streams: Iterable[str] = ALL, start: int | None = None, end: int | None = None
) -> int:
    """The sink equals the truth over the range (tests/truth.py), and holds each ``_id`` once."""
    streams = list(streams)
    compared = assert_sink_equals_truth(
        sink, org, streams, org.start if start is None else start, org.end if end is None else end
    )
    assert_one_row_per_id(sink)
    return compared


def assert_one_row_per_id(sink: Any) -> None:
    from usage_collector.sinks.duckdb import DuckDBSink

    if isinstance(sink, DuckDBSink):
        total, distinct = sink.query("SELECT count(*), count(DISTINCT _id) FROM documents")[0]
        assert total == distinct, f"{total - distinct} duplicate row(s) in {sink.path}"


def assert_checkpoints_never_pass_unwritten_data(
    sink: Any,
    org: Organization,
    streams: Iterable[str] = ALL,
    *,
    scope: str = "backfill",
    start: int | None = None,
    end: int | None = None,
    org_id: str = "default",
) -> dict[str, int]:
    """For every stream, every bucket before its checkpoint position is in the sink, exactly.

    Returns the position per stream (``start`` when the stream has no checkpoint yet).
    """
    start = org.start if start is None else start
    end = org.end if end is None else end
    docs = list(sink.iter_documents())
    positions = {}
    for stream in streams:
        width = STREAMS[stream].default_width
        cp = sink.load_checkpoint(org_id, stream, width, scope)
        pos = start if cp is None or cp.position is None else int(cp.position)
        assert start <= pos <= end, f"{stream}: checkpoint {pos} outside [{start}, {end}]"
        if cp is not None and scope == "backfill":
            assert not cp.complete or pos == end, f"{stream}: complete at {pos} != {end}"
        positions[stream] = pos
        if pos == start:
            continue
        expected = truth_table(org, stream, start, pos, width)
        got = {k: v for k, v in sink_table(docs, stream, width).items() if start <= k[0] < pos}
        problems = diff(expected, got)
        assert not problems, f"{stream}: checkpoint at {pos} but the sink differs before it:\n" + "\n".join(problems)
    return positions


def ndjson_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


# --- the canary ------------------------------------------------------------------------------------------------
def canary_hits(texts: Iterable[str] = (), paths: Iterable[Path] = (), secrets: Iterable[str] = ()) -> list[str]:
    """Where the canary Admin key (or its distinctive part, or another canary in ``secrets``) appears: texts
    by index, files by path."""
    needles = [CANARY_KEY, CANARY_CORE, *secrets]
    hits = []
    for i, text in enumerate(texts):
        for needle in needles:
            if needle in text:
                j = text.find(needle)
                hits.append(f"text #{i}: ...{text[max(0, j - 80) : j + 40]}...")
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            data = f.read_bytes()
            if any(n.encode() in data for n in needles):
                hits.append(str(f))
    return hits


def outputs(*results: subprocess.CompletedProcess[str]) -> list[str]:
    return [t for r in results for t in (r.stdout, r.stderr)]


def assert_no_canary(
    label: str, texts: Iterable[str] = (), paths: Iterable[Path] = (), secrets: Iterable[str] = ()
) -> None:
    """Zero hits for the canary key in ``texts`` (logs, outputs, exception text) and the files under
    ``paths`` (sink files, state files, leases, reports); counted in the matrix as one "canary secret" run."""
    from tests.reliability.matrix import MATRIX

    texts, paths = list(texts), list(paths)
    with MATRIX.run("canary secret: logs, errors, state, sink bytes, report", label):
        assert texts or paths
        hits = canary_hits(texts, paths, secrets)
        assert not hits, f"the Admin key leaked ({label}): {hits}"
