"""Shared fixtures: a clean environment, a fake clock, the Elasticsearch target and a Kibana stand-in.

Helpers (constants, settings, builders) live in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_es import EsTarget, es_target
from tests.helpers import CANARY_KEY, T0, KibanaStandIn, kibana_stand_in, make_settings
from usage_collector.clock import FakeClock
from usage_collector.sinks.base import Sink

#: Still importable from here (``from tests.conftest import CANARY_KEY``); defined in ``tests/helpers.py``.
__all__ = ["CANARY_KEY", "T0", "make_settings"]

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
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    """Each file sink in turn, opened in a fresh directory (``test_sink_contract.py`` covers Elasticsearch too)."""
    from usage_collector.sinks.duckdb import DuckDBSink
    from usage_collector.sinks.ndjson import NdjsonSink

    s: Sink = DuckDBSink(tmp_path / "u.duckdb") if request.param == "duckdb" else NdjsonSink(tmp_path / "u.ndjson")
    s.open()
    yield s
    s.close()


@pytest.fixture
def es(request: pytest.FixtureRequest) -> Iterator[EsTarget]:
    """Where an Elasticsearch test writes: ``tests/es_server.py``, or the live cluster of ``ELASTICSEARCH_URL``.

    Configure the test server with the ``es_server`` marker (``@pytest.mark.es_server("8.15.0", api_key=...)``,
    the arguments of :func:`~tests.conftest_es.es_target`), or parametrize ``es`` indirectly with versions.
    """
    marker = request.node.get_closest_marker("es_server")
    args: tuple[Any, ...] = marker.args if marker else ()
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if hasattr(request, "param"):
        args = (request.param,)
    with es_target(*args, **kwargs) as target:
        yield target


@pytest.fixture
def kb() -> Iterator[KibanaStandIn]:
    """A Kibana stand-in on 127.0.0.1 that records every request (``kb.url``, ``kb.requests``)."""
    with kibana_stand_in() as stand_in:
        yield stand_in
