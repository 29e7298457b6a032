"""Canary secret: the Admin key is ``sk-admin-CANARY-...`` in every scenario of the matrix, and each one scans
what it produced (outputs, logs, files) for it. This module adds the places the other scenarios do not
reach: DEBUG logs in both formats, a crash and its rerun, a revoked key (error texts on checkpoints and run
records), ``status``, ``report --html``, a key given as a file, a wrong key, and exception texts in
process. Zero hits for the key or its distinctive part anywhere: stdout/stderr, ``*.state.json``,
``*.lease``, NDJSON bytes, DuckDB file bytes, the HTML report.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import CANARY_KEY, make_settings
from tests.reliability.helpers import (
    DAY,
    assert_no_canary,
    backfill_args,
    cli,
    cli_env,
    describe,
    killed_by_sigkill,
    open_sink,
    outputs,
    past_org,
    serve,
)
from tests.reliability.matrix import MATRIX
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.simulator import FaultKind, FaultPlan, SimulatedAPI
from usage_collector.sinks.duckdb import DuckDBSink


@pytest.fixture(scope="module")
def org():
    return past_org(seed=707, days=3)


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_the_admin_key_appears_in_no_log_error_state_file_document_or_report(kind, org, tmp_path, tmp_path_factory):
    path = tmp_path / f"u.{kind}"
    sink = f"{kind}:{path}"
    results = []
    with MATRIX.run("canary secret: DEBUG logs, crash, revoked key, status, report", kind):
        with serve(SimulatedAPI(org, admin_key=CANARY_KEY)) as url:
            env = cli_env(url)
            crashed = cli(
                ["--log-level", "DEBUG", *backfill_args(org, sink, log_format="json")],
                {**env, "USAGE_COLLECTOR_FAILPOINTS": "window.shaped:4"},
            )
            assert killed_by_sigkill(crashed), describe(crashed)
            rerun = cli(["--log-level", "DEBUG", *backfill_args(org, sink, log_format="text")], env)
            assert rerun.returncode == 0, describe(rerun)
            key_file = tmp_path_factory.mktemp("secret") / "admin.key"  # outside the scanned directory
            key_file.write_text(CANARY_KEY + "\n")
            file_env = {k: v for k, v in env.items() if k != "OPENAI_ADMIN_KEY"}
            by_file = cli(
                ["--log-level", "DEBUG", *backfill_args(org, sink)],
                {**file_env, "OPENAI_ADMIN_KEY_FILE": str(key_file)},
            )
            assert by_file.returncode == 0, describe(by_file)
            results += [crashed, rerun, by_file]
        # the key is revoked after a few requests: errors land in stderr, checkpoints and run records
        with serve(SimulatedAPI(org, admin_key=CANARY_KEY, faults=FaultPlan(unauthorized_from=5))) as url:
            revoked = cli(["--log-level", "DEBUG", *backfill_args(org, sink, "--bucket-width", "1d")], cli_env(url))
            assert revoked.returncode == 1 and "Admin key" in revoked.stderr, describe(revoked)
        # a wrong key: the API echoes a redacted form of what it was sent
        with serve(SimulatedAPI(org, admin_key="sk-admin-the-right-one-0000")) as url:
            wrong = cli(["--log-level", "DEBUG", "run", "--sink", f"{kind}:{tmp_path}/wrong.{kind}"], cli_env(url))
            assert wrong.returncode == 1, describe(wrong)
        status = cli(["status", "--sink", sink], cli_env())
        report = cli(["report", "--sink", sink, "--html", str(tmp_path / "report.html")], cli_env())
        assert status.returncode == 0 and report.returncode == 0, describe(report)
        assert "AuthError: HTTP 401" in status.stdout, "the revoked key's error is not on the checkpoints"
        results += [revoked, wrong, status, report]
        with open_sink(kind, path) as s:
            records = json.dumps(
                [list(s.iter_documents()), [c.to_dict() for c in s.list_checkpoints()], s.list_runs(1000)], default=str
            )
        files = sorted(p.name for p in tmp_path.iterdir())
        assert {"report.html", f"u.{kind}.lease"} <= set(files), files
        if kind == "ndjson":
            assert f"u.{kind}.state.json" in files
    assert_no_canary(f"dedicated {kind}", [*outputs(*results), records], [tmp_path])


def test_exception_texts_carry_no_key(org, tmp_path):
    """In process: every error string the collector produces for a revoked key, a refused connection and a
    server error (stream results, checkpoints, run records, log records)."""
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp_path / "u.duckdb")
    texts = []
    with MATRIX.run("canary secret: DEBUG logs, crash, revoked key, status, report", "exception texts"):
        import logging

        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Keep()
        logging.getLogger().addHandler(handler)
        old = logging.getLogger().level
        logging.getLogger().setLevel(logging.DEBUG)
        try:
            faults = FaultPlan(unauthorized_from=4, schedule={1: FaultKind.SERVER_ERROR, 2: FaultKind.TRUNCATED})
            with serve(SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, faults=faults)) as url:
                collector = Collector(make_settings(openai_base_url=url), sink, clock=clock)
                result = collector.backfill(BackfillRange(org.start, org.end))
            unreachable = Collector(
                make_settings(openai_base_url="http://127.0.0.1:9/v1", max_attempts=2), sink, clock=clock
            ).backfill(BackfillRange(org.start, org.end))
        finally:
            logging.getLogger().removeHandler(handler)
            logging.getLogger().setLevel(old)
        assert result.failed and unreachable.failed
        texts += [r.error or "" for r in [*result.streams, *unreachable.streams]]
        texts += [f"{r.getMessage()} {r.exc_text or ''}" for r in records]
        texts.append(json.dumps([[c.to_dict() for c in sink.list_checkpoints()], sink.list_runs(1000)], default=str))
        assert any("Admin key" in t for t in texts) and any("cannot connect" in t for t in texts)
    sink.close()
    assert_no_canary("exception texts", texts, [tmp_path])
