"""Where the Elasticsearch tests write: ``tests/es_server.py``, or a live cluster if ``ELASTICSEARCH_URL`` is set.

Tests use the ``es`` fixture of ``tests/conftest.py``, which wraps :func:`es_target`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from tests.es_server import EsServer

if TYPE_CHECKING:
    from usage_collector.config import Settings
    from usage_collector.elastic.sink import ElasticsearchSink

#: Read at import (collection time), before tests/conftest.py clears ELASTICSEARCH_* for each test.
LIVE_URL = os.environ.get("ELASTICSEARCH_URL")
_LIVE = {
    name.lower(): os.environ[name]
    for name in (
        "ELASTICSEARCH_API_KEY",
        "ELASTICSEARCH_USERNAME",
        "ELASTICSEARCH_PASSWORD",
        "ELASTICSEARCH_CA_CERTS",
        "ELASTICSEARCH_VERIFY_CERTS",
    )
    if os.environ.get(name)
}


@dataclass
class EsTarget:
    """Where a test writes: the in-memory server (``server`` set) or a live cluster (``server`` is None).

    Each target has its own namespace, so tests on a live cluster do not see each other's data streams (the
    index templates are shared: setup installs the same ones for every namespace).
    """

    url: str
    server: EsServer | None
    namespace: str
    _clients: list[Any] = field(default_factory=list)

    def require_server(self) -> EsServer:
        """The test server; skips the test on a live cluster (fault hooks need the test server)."""
        if self.server is None:
            pytest.skip("needs the test server's fault hooks (ELASTICSEARCH_URL is set)")
        return self.server

    def settings(self, **overrides: Any) -> Settings:
        from tests.helpers import make_settings

        base: dict[str, Any] = {"elasticsearch_url": self.url, "namespace": self.namespace}
        if self.server is None:
            base.update(_LIVE)
        return make_settings(**{**base, **overrides})

    def sink(self, settings: Settings | None = None, **kwargs: Any) -> ElasticsearchSink:
        from usage_collector.elastic.sink import ElasticsearchSink

        kwargs.setdefault("initial_backoff", 0.0)
        kwargs.setdefault("max_backoff", 0.0)
        kwargs.setdefault("transport_backoff", 0.0)
        return ElasticsearchSink(settings or self.settings(), **kwargs)

    def client(self) -> Any:
        """A raw client (compatibility headers pinned like the sink's)."""
        from usage_collector.elastic.connection import connect

        client, _ = connect(self.settings())
        self._clients.append(client)
        return client

    def data_stream(self, stream: str) -> str:
        from usage_collector.elastic.objects import data_stream_name

        return data_stream_name(self.settings(), stream)

    def rollover(self, stream: str) -> str:
        return str(self.client().indices.rollover(alias=self.data_stream(stream))["new_index"])

    def copies(self, stream: str, doc_id: str) -> list[str]:
        """Backing indices holding ``doc_id`` (a search: the sink writes with refresh)."""
        body = self.client().search(
            index=self.data_stream(stream), query={"ids": {"values": [doc_id]}}, ignore_unavailable=True
        )
        return sorted(h["_index"] for h in body["hits"]["hits"])

    def close(self) -> None:
        if self.server is None and self._clients:  # live cluster: remove this test's objects
            client = self._clients[0]
            for call in (
                lambda: client.indices.delete_data_stream(name=f"*-{self.namespace}"),
                lambda: client.indices.delete(index=f"usage-collector-state-{self.namespace}"),
            ):
                with suppress(Exception):  # best effort
                    call()
        for client in self._clients:
            client.close()


@contextmanager
def es_target(version: str = "9.1.0", **server_kwargs: Any) -> Iterator[EsTarget]:
    """The test server (``version``, ``server_kwargs`` as in :class:`EsServer`), or the live cluster."""
    namespace = "t" + uuid.uuid4().hex[:10]
    if LIVE_URL:
        target = EsTarget(LIVE_URL, None, namespace)
        try:
            _skip_unless_live_cluster_is(target, server_kwargs)
            yield target
        finally:
            target.close()
        return
    with EsServer(version, **server_kwargs) as server:
        target = EsTarget(server.url, server, namespace)
        try:
            yield target
        finally:
            target.close()


#: Test-server options a live cluster cannot be switched to: a test asking for one is skipped there.
_PERSONALITY_ONLY = ("security", "logsdb", "failure_store", "auto_create_index", "api_key", "basic")


def _skip_unless_live_cluster_is(target: EsTarget, server_kwargs: dict[str, Any]) -> None:
    """On a live cluster, run a test only if the cluster is the kind it asks for (ILM or not); skip tests that
    need a test-server personality (security off, failure store, credentials of its own...)."""
    asked = [k for k in _PERSONALITY_ONLY if k in server_kwargs]
    if asked:
        pytest.skip(f"needs the test server configured with {', '.join(asked)} (ELASTICSEARCH_URL is set)")
    if "ilm" in server_kwargs:
        from usage_collector.elastic.setup import has_ilm

        if has_ilm(target.client()) != server_kwargs["ilm"]:
            pytest.skip(f"needs a cluster {'with' if server_kwargs['ilm'] else 'without'} ILM")
