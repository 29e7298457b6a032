"""Sinks: DuckDB (embedded default), NDJSON (debug/export), Elasticsearch (production).

:func:`make_sink` turns a sink spec (``duckdb:PATH``, ``ndjson:PATH``, ``elasticsearch``) into a sink.
Heavy client libraries are imported only when their sink is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Checkpoint, Lease, Sink, WriteStats

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Checkpoint", "Lease", "Sink", "WriteStats", "make_sink"]

SINK_KINDS = ("duckdb:PATH", "ndjson:PATH", "elasticsearch")


def make_sink(spec: str, settings: Settings) -> Sink:
    """Build the sink named by ``spec``.

    Raises:
        ConfigError: unknown kind or a missing path; the message lists the allowed forms.
    """
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "duckdb":
        from .duckdb import DuckDBSink

        return DuckDBSink(arg or "usage.duckdb")
    if kind == "ndjson":
        if not arg:
            raise ConfigError("--sink: ndjson needs a path, e.g. ndjson:out.ndjson")
        from .ndjson import NdjsonSink

        return NdjsonSink(arg)
    if kind in ("elasticsearch", "es"):
        from ..elastic.sink import ElasticsearchSink

        sink: Sink = ElasticsearchSink.from_settings(settings)
        return sink
    raise ConfigError(f"--sink: unknown sink {spec!r}; allowed: {', '.join(SINK_KINDS)}")
