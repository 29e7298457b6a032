"""Configuration: precedence flag > env > file > default, key files, one clear line per bad value."""

from __future__ import annotations

import pytest

from usage_collector.config import load_settings, parse_duration
from usage_collector.errors import ConfigError


def test_precedence_flag_over_env_over_file_over_default(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('rate_limit = 3.0\nnamespace = "fromfile"\nfinalization_grace = "20m"\n')
    s = load_settings(cfg)
    assert (s.rate_limit, s.namespace, s.finalization_grace, s.concurrency) == (3.0, "fromfile", 1200.0, 4)
    monkeypatch.setenv("USAGE_COLLECTOR_RATE_LIMIT", "4")
    monkeypatch.setenv("USAGE_COLLECTOR_NAMESPACE", "fromenv")
    s = load_settings(cfg)
    assert (s.rate_limit, s.namespace) == (4.0, "fromenv")
    s = load_settings(cfg, rate_limit=9.0)
    assert (s.rate_limit, s.namespace) == (9.0, "fromenv")


def test_config_file_from_environment_and_per_stream_tables(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'streams = ["completions", "costs"]\n[bucket_width]\ncompletions = "1m"\n'
        '[restatement]\ncompletions = "2h"\ncosts = "1d"\n'
    )
    monkeypatch.setenv("USAGE_COLLECTOR_CONFIG", str(cfg))
    s = load_settings()
    assert s.streams == ["completions", "costs"]
    assert s.width_for("completions") == "1m" and s.width_for("costs") == "1d"
    assert s.restatement_for("completions") == 7200
    assert s.restatement_for("costs") == 2 * 86400  # costs re-read at least 2 UTC days


def test_admin_key_from_file_and_env(tmp_path, monkeypatch):
    keyfile = tmp_path / "key"
    keyfile.write_text("sk-admin-from-file\n")
    monkeypatch.setenv("OPENAI_ADMIN_KEY_FILE", str(keyfile))
    assert load_settings().orgs()[0].resolve_key().get_secret_value() == "sk-admin-from-file"
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-env")
    assert load_settings().orgs()[0].resolve_key().get_secret_value() == "sk-admin-env"


def test_missing_key_names_both_settings():
    with pytest.raises(ConfigError, match="OPENAI_ADMIN_KEY or OPENAI_ADMIN_KEY_FILE"):
        load_settings().orgs()[0].resolve_key()


def test_sink_defaults_to_duckdb_and_to_elasticsearch_when_configured(monkeypatch):
    assert load_settings().sink_spec() == "duckdb:usage.duckdb"
    monkeypatch.setenv("ELASTICSEARCH_URL", "https://es.example:9200")
    assert load_settings().sink_spec() == "elasticsearch"
    assert load_settings(sink="ndjson:x.ndjson").sink_spec() == "ndjson:x.ndjson"


def test_secrets_are_not_in_repr(monkeypatch):
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-SECRET-123")
    assert "SECRET-123" not in repr(load_settings())


@pytest.mark.parametrize(
    "overrides,env,message",
    [
        ({"rate_limit": 0}, {}, "rate_limit (USAGE_COLLECTOR_RATE_LIMIT): must be > 0"),
        ({"streams": ["completion"]}, {}, "unknown stream 'completion'"),
        ({"bucket_width": {"costs": "1h"}}, {}, "costs supports only 1d"),
        (
            {"finalization_grace": "soon"},
            {},
            "finalization_grace (USAGE_COLLECTOR_FINALIZATION_GRACE): 'soon' is not a duration",
        ),
        ({}, {"OPENAI_BASE_URL": "api.openai.com"}, "OPENAI_BASE_URL: must be an http"),
        ({}, {"USAGE_COLLECTOR_CONCURRENCY": "0"}, "concurrency (USAGE_COLLECTOR_CONCURRENCY): must be >= 1"),
        ({"namespace": "Prod-1"}, {}, "namespace (USAGE_COLLECTOR_NAMESPACE): lowercase"),
    ],
    ids=["rate", "unknown-stream", "costs-width", "duration", "url", "env-int", "namespace"],
)
def test_bad_values_raise_one_line_naming_the_setting(monkeypatch, overrides, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_toml_and_unknown_keys_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("rate_limit = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "u.toml"
    unknown.write_text("rate_limt = 3\n")
    with pytest.raises(ConfigError, match=r"rate_limt.*unknown setting"):
        load_settings(unknown)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml")


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), (5, 5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_elasticsearch_secrets_from_files(tmp_path, monkeypatch):
    key = tmp_path / "es-key"
    key.write_text("es-api-key-from-file\n")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY_FILE", str(key))
    assert load_settings().elasticsearch_api_key.get_secret_value() == "es-api-key-from-file"
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="ELASTICSEARCH_PASSWORD_FILE: cannot read"):
        load_settings()
