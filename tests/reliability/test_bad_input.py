"""Bad input, as a user meets it (the installed command, a clean environment, its own working directory):
exit status non-zero, one clear line on stderr naming the problem, and nothing written (configuration and
date errors: not even a sink file; API errors: no document).
"""

from __future__ import annotations

import pytest

from tests.helpers import CANARY_KEY
from tests.reliability.helpers import (
    assert_no_canary,
    cli,
    cli_env,
    describe,
    open_sink,
    past_org,
    plain_lines,
    serve,
)
from tests.reliability.matrix import MATRIX
from usage_collector.simulator import SimulatedAPI

#: (name, arguments, extra environment, the line on stderr must contain)
EXIT_2 = [
    ("malformed config TOML", ["--config", "bad.toml", "run"], {}, "--config: bad.toml is not valid TOML"),
    ("unknown stream", ["run", "--stream", "nope"], {}, "unknown stream 'nope'"),
    ("unknown setting in TOML", ["--config", "typo.toml", "run"], {}, "finalisation_grace"),
    ("bad date", ["backfill", "--start", "2026-13-01"], {}, "--start: '2026-13-01' is not a date"),
    (
        "end before start",
        ["backfill", "--start", "2026-10-05", "--end", "2026-10-01"],
        {},
        "--end (2026-10-01) must be after --start (2026-10-05)",
    ),
    ("bad bucket width", ["backfill", "--start", "2026-10-01", "--bucket-width", "2h"], {}, "--bucket-width"),
    ("unknown sink", ["run", "--sink", "postgres:x"], {}, "--sink: unknown sink 'postgres:x'"),
    ("bad duration in the environment", ["run"], {"USAGE_COLLECTOR_FINALIZATION_GRACE": "soon"}, "'soon'"),
    (
        "no Admin key",
        ["run", "--sink", "ndjson:o.ndjson"],
        {"OPENAI_ADMIN_KEY": None},
        "OPENAI_ADMIN_KEY or OPENAI_ADMIN_KEY_FILE",
    ),
    (
        "unreadable key file",
        ["run", "--sink", "ndjson:o.ndjson"],
        {"OPENAI_ADMIN_KEY": None, "OPENAI_ADMIN_KEY_FILE": "missing.key"},
        "OPENAI_ADMIN_KEY_FILE: cannot read",
    ),
]


def _env(extra):
    env = cli_env("http://127.0.0.1:9/v1")
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@pytest.mark.parametrize("name,args,extra,message", EXIT_2, ids=[c[0] for c in EXIT_2])
def test_bad_configuration_or_input_exits_2_with_one_line_and_writes_nothing(name, args, extra, message, tmp_path):
    (tmp_path / "bad.toml").write_text('sink = "duckdb:x.duckdb"\n[restatement\ncosts = "3d"\n')
    (tmp_path / "typo.toml").write_text('finalisation_grace = "15m"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    with MATRIX.run("bad input: config, stream, dates, sink, key", name):
        result = cli(["--log-format", "json", *args], _env(extra), cwd=tmp_path, timeout=30)
        assert result.returncode == 2, describe(result)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), describe(result)
        assert message in result.stderr, describe(result)
        assert not result.stdout.strip(), describe(result)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"
    assert_no_canary(f"bad input {name}", [result.stdout, result.stderr], [tmp_path])


def test_a_malformed_streams_environment_variable_exits_2_with_one_line(tmp_path):
    """Regression (found by this matrix, fixed in f6d2ca0): ``USAGE_COLLECTOR_STREAMS`` (README) was decoded
    as JSON by pydantic-settings before the ``_streams`` validator saw it, so ``nope`` (and the documented
    ``completions,costs``) ended in a ``SettingsError`` traceback with exit status 1."""
    with MATRIX.run("bad input: config, stream, dates, sink, key", "USAGE_COLLECTOR_STREAMS=nope"):
        bad = cli(["run"], {**_env({}), "USAGE_COLLECTOR_STREAMS": "nope"}, cwd=tmp_path, timeout=30)
        assert bad.returncode == 2 and "unknown stream 'nope'" in bad.stderr, describe(bad)
        assert bad.stderr.count("\n") == 1, describe(bad)
        assert list(tmp_path.iterdir()) == [], "something was written"


def test_the_documented_comma_list_of_streams_in_the_environment_is_accepted(tmp_path):
    """The other face of the same regression: ``USAGE_COLLECTOR_STREAMS=completions,costs`` selects two
    streams (here it gets as far as the network, which is unreachable: exit 1 naming both)."""
    env = {
        **_env({"USAGE_COLLECTOR_MAX_ATTEMPTS": "1", "USAGE_COLLECTOR_ENRICH_NAMES": "false"}),
        "USAGE_COLLECTOR_STREAMS": "completions,costs",
    }
    result = cli(["--log-format", "json", "run", "--sink", "ndjson:o.ndjson"], env, cwd=tmp_path, timeout=30)
    assert result.returncode == 1, describe(result)
    assert plain_lines(result.stderr)[0] == "2 stream(s) failed:", describe(result)


@pytest.fixture(scope="module")
def org():
    return past_org(seed=808, days=2)


def test_an_unreachable_url_exits_1_with_one_line_naming_it_and_writes_no_document(tmp_path):
    env = _env(
        {
            "USAGE_COLLECTOR_MAX_ATTEMPTS": "2",
            "USAGE_COLLECTOR_INITIAL_BACKOFF": "0.05",
            "USAGE_COLLECTOR_MAX_BACKOFF": "0.1",
        }
    )
    path = tmp_path / "o.ndjson"
    with MATRIX.run("bad input: unreachable URL, non-admin key", "unreachable URL"):
        result = cli(
            ["--log-format", "json", "run", "--stream", "costs", "--sink", f"ndjson:{path}"],
            env,
            cwd=tmp_path,
            timeout=60,
        )
        assert result.returncode == 1, describe(result)
        assert plain_lines(result.stderr) == [
            "1 stream(s) failed:",
            "  default/costs: UnreachableError: cannot connect to http://127.0.0.1:9/v1: ConnectError after 2 "
            "attempt(s): check OPENAI_BASE_URL (http://127.0.0.1:9/v1) and the network",
        ], describe(result)
        assert not path.exists() or path.read_bytes() == b"", "documents were written"
    assert_no_canary("bad input unreachable", [result.stdout, result.stderr], [tmp_path])


@pytest.mark.parametrize(
    "key", ["sk-proj-a-project-key-not-an-admin-key", CANARY_KEY + "-wrong"], ids=["project-key", "wrong-admin-key"]
)
def test_a_key_the_api_refuses_exits_1_saying_an_admin_key_is_required(key, org, tmp_path):
    path = tmp_path / "o.duckdb"
    with (
        MATRIX.run("bad input: unreachable URL, non-admin key", "401"),
        serve(SimulatedAPI(org, admin_key=CANARY_KEY)) as url,
    ):
        result = cli(
            ["--log-format", "json", "run", "--stream", "completions", "--sink", f"duckdb:{path}"],
            cli_env(url, key=key),
            cwd=tmp_path,
            timeout=30,
        )
        assert result.returncode == 1, describe(result)
        lines = plain_lines(result.stderr)
        assert lines[0] == "1 stream(s) failed:" and len(lines) == 2, describe(result)
        assert lines[1].startswith("  default/completions: AuthError: HTTP 401") and "Admin key" in lines[1], lines
        with open_sink("duckdb", path) as sink:
            assert list(sink.iter_documents()) == [], "documents were written"
    assert_no_canary("bad input 401", [result.stdout, result.stderr], [tmp_path])
