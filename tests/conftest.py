"""Shared fixtures: a fake clock, settings with no sleeping, and small page builders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from usage_collector.clock import FakeClock
from usage_collector.config import Settings, load_settings

#: 2026-10-15T00:00:00Z
T0 = 1760486400
CANARY_KEY = "sk-admin-CANARY-7f3a9c1e5b"

_ENV_PREFIXES = ("OPENAI_", "USAGE_COLLECTOR_", "ELASTICSEARCH_", "KIBANA_")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's or CI's real configuration."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) and name != "ELASTICSEARCH_URL":
            monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 3 * 3600 + 30 * 60)  # 03:30Z


@pytest.fixture(params=["duckdb", "ndjson"])
def sink(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """Each file sink in turn, opened in a fresh directory."""
    from usage_collector.sinks.duckdb import DuckDBSink
    from usage_collector.sinks.ndjson import NdjsonSink

    s = DuckDBSink(tmp_path / "u.duckdb") if request.param == "duckdb" else NdjsonSink(tmp_path / "u.ndjson")
    s.open()
    yield s
    s.close()


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: the canary key, no real backoff, a generous rate limit."""
    base: dict[str, Any] = {
        "openai_admin_key": CANARY_KEY,
        "openai_base_url": "http://testserver/v1",
        "rate_limit": 1000.0,
        "initial_backoff": 0.0,
        "max_backoff": 0.0,
        "enrich_names": False,
        "concurrency": 1,
    }
    base.update(overrides)
    return load_settings(None, **base)


def page(buckets: list[dict[str, Any]], has_more: bool = False, next_page: str | None = None) -> dict[str, Any]:
    """A ``UsageResponse`` envelope (ref §1.5)."""
    return {"object": "page", "data": buckets, "has_more": has_more, "next_page": next_page}


def bucket(start: int, end: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "bucket", "start_time": start, "end_time": end, "results": results}
