"""Overlap: two ``usage-collector run`` processes at once against the same sink. One writes; the other exits 0
with one line naming the lease holder (the first process: host, its pid, a suffix) and the lease's expiry.
No document is written twice.

The overlap is made certain, not timed: the simulator holds its answer to the first run's first usage request
(the run has taken the lease by then) until the second run has exited, like a very slow response; the first
run then finishes normally.
"""

from __future__ import annotations

import re
import socket
import threading

import pytest

from tests.helpers import CANARY_KEY
from tests.reliability.helpers import (
    ALL,
    DAY,
    TODAY,
    HookedAPI,
    assert_exact,
    assert_no_canary,
    cli,
    cli_env,
    describe,
    finish,
    ndjson_lines,
    open_sink,
    outputs,
    plain_lines,
    serve,
    spawn,
)
from tests.reliability.matrix import MATRIX
from usage_collector.simulator import Organization

USAGE_PATHS = ("/v1/organization/usage/", "/v1/organization/costs")


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_a_second_run_while_the_first_writes_exits_0_naming_the_holder(kind, tmp_path):
    # within `run`'s 7-day initial lookback; final at once (revision horizons 0)
    org = Organization(seed=606, start=TODAY - 5 * DAY, days=3)
    api = HookedAPI(org, admin_key=CANARY_KEY, revision_horizon=0, costs_revision_horizon=0)
    started, release = threading.Event(), threading.Event()

    def hold_first_usage_request(n: int, path: str) -> None:
        if path.startswith(USAGE_PATHS) and not started.is_set():
            started.set()
            release.wait(30)

    api.hook = hold_first_usage_request
    path = tmp_path / f"u.{kind}"
    args = ["--log-format", "json", "run", "--sink", f"{kind}:{path}"]
    with MATRIX.run("overlap: two `run` processes, one sink", kind), serve(api) as url:
        env = cli_env(url)
        first = spawn(args, env)
        assert started.wait(30), "the first run never reached a usage request"
        try:
            second = cli(args, env, timeout=30)
            assert first.poll() is None, "the first run ended before the second started: no overlap was tested"
        finally:
            release.set()
        first_done = finish(first)
        assert first_done.returncode == 0, describe(first_done)
        assert second.returncode == 0, describe(second)

        (line,) = plain_lines(second.stdout)  # one line, nothing else on stdout ...
        assert not plain_lines(second.stderr), describe(second)  # ... and only log records on stderr
        m = re.fullmatch(
            r"skipped: organization 'default' is being collected by (\S+):(\d+):([0-9a-f]+) "
            r"\(lease until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)",
            line,
        )
        assert m, line
        assert m.group(1) == socket.gethostname() and int(m.group(2)) == first.pid, line

        with open_sink(kind, path) as sink:
            assert_exact(sink, org, ALL, org.start, org.end)
            docs = sum(1 for _ in sink.iter_documents())
        if kind == "ndjson":
            assert len(ndjson_lines(path)) == docs, "a document was appended twice"
        again = cli(args, env)  # and a later run (the lease was released) writes nothing new
        assert again.returncode == 0 and "skipped" not in again.stdout, describe(again)
        if kind == "ndjson":
            assert len(ndjson_lines(path)) == docs
    assert_no_canary(f"overlap {kind}", outputs(first_done, second, again), [tmp_path])
