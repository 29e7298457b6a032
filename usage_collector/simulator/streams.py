"""The simulator's own description of OpenAI's usage and costs endpoints.

This is an independent model of the API (it must not share code with the collector it tests). Every fact cites
``shared/reference/openai-usage-api.md`` (below: *ref*), the OpenAPI excerpt next to it (*SPEC*), or
``openai-usage-api-2026-11.md`` (*ref-11*: OpenAI's Python SDK 3.57 types: ``decisions``, ``api_source``, costs
``user_id`` and ``line_items``, the cache-write retention splits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StreamKind = Literal["counter", "gauge", "costs"]

#: Seconds per bucket width (ref §1.1 ``bucket_width`` enum ``1m``, ``1h``, ``1d``).
WIDTH_SECONDS: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}

#: ``limit`` (default, max) per bucket width for usage endpoints (ref §0, §1.1 ``limit`` text).
USAGE_LIMITS: dict[str, tuple[int, int]] = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}

#: Costs: ``limit`` default 7, range 1..180 (ref §1.3, §4.5).
COSTS_LIMITS: tuple[int, int] = (7, 180)

#: Enum of the ``sources`` filter (ref §1.2 images).
IMAGE_SOURCES = ("image.generation", "image.edit", "image.variation")
#: Enum of the ``sizes`` filter (ref §1.2 images, §4.15: the result's ``size`` itself is a free string).
IMAGE_SIZE_FILTER_ENUM = ("256x256", "512x512", "1024x1024", "1792x1792", "1024x1792")
#: Enum of the ``context_levels`` filter (ref §1.2 web_search_calls).
CONTEXT_LEVELS = ("low", "medium", "high")
#: Values of ``api_source`` (ref-11 "New dimension"): attributed Agents API activity, and everything else.
API_SOURCES = ("agents_api", "unlabeled")


@dataclass(frozen=True)
class FilterDef:
    """A query filter of an endpoint.

    Attributes:
        param: the query parameter name (``project_ids``).
        dimension: the result dimension it restricts (``project_id``).
        kind: ``list`` (string array) or ``bool`` (the completions ``batch`` flag).
        enum: allowed values, if the SPEC declares an enum.
    """

    param: str
    dimension: str
    kind: Literal["list", "bool"] = "list"
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StreamDef:
    """One endpoint of the Usage API or the Costs API as the simulator serves it.

    Attributes:
        name: stream name = last path segment (``completions``, ``costs``).
        path: full request path including ``/v1``.
        object: the ``object`` discriminator of its results (ref §1.6, §4.14).
        kind: ``counter`` (summable), ``gauge`` (vector store bytes) or ``costs``.
        group_by: allowed ``group_by`` values (ref §0), also the dimension fields of every result.
        filters: endpoint filters (ref §1.2, §1.3).
        measures: output measure fields in emission order (ref §1.6).
    """

    name: str
    path: str
    object: str
    kind: StreamKind
    group_by: tuple[str, ...]
    filters: tuple[FilterDef, ...]
    measures: tuple[str, ...]

    @property
    def widths(self) -> tuple[str, ...]:
        """Bucket widths the endpoint accepts (costs: ``1d`` only, ref §1.3)."""
        return ("1d",) if self.kind == "costs" else ("1m", "1h", "1d")

    def filter_for(self, param: str) -> FilterDef | None:
        """Return the filter definition for a query parameter name, if the endpoint has it."""
        for f in self.filters:
            if f.param == param:
                return f
        return None


_P = FilterDef("project_ids", "project_id")
_U = FilterDef("user_ids", "user_id")
_K = FilterDef("api_key_ids", "api_key_id")
_M = FilterDef("models", "model")
_BASE_DIMS = ("project_id", "user_id", "api_key_id", "model")

#: Completions (and decisions) measures: ref §1.6 table, fields added by ``535f5dc``, and the cache-write
#: retention splits of ref-11.
COMPLETIONS_MEASURES = (
    "input_tokens",
    "input_cached_tokens",
    "input_cache_write_tokens",
    "input_cache_write_30m_tokens",
    "input_cache_write_12h_tokens",
    "input_uncached_tokens",
    "output_tokens",
    "input_text_tokens",
    "output_text_tokens",
    "input_cached_text_tokens",
    "input_audio_tokens",
    "input_cached_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "input_cached_image_tokens",
    "output_image_tokens",
    "num_model_requests",
)


def _usage(
    name: str, obj: str, group_by: tuple[str, ...], filters: tuple[FilterDef, ...], measures: tuple[str, ...]
) -> StreamDef:
    kind: StreamKind = "gauge" if name == "vector_stores" else "counter"
    return StreamDef(name, f"/v1/organization/usage/{name}", obj, kind, group_by, filters, measures)


#: All streams by name (ref §0 table; objects ref §1.6 / §4.14; filters ref §1.2 / §1.3).
STREAMS: dict[str, StreamDef] = {
    s.name: s
    for s in (
        _usage(
            "completions",
            "organization.usage.completions.result",
            (*_BASE_DIMS, "batch", "service_tier", "api_source"),
            (_P, _U, _K, _M, FilterDef("batch", "batch", kind="bool")),
            COMPLETIONS_MEASURES,
        ),
        _usage(  # ref-11 "New endpoint": parameters and group_by of completions plus api_source
            "decisions",
            "organization.usage.decisions.result",
            (*_BASE_DIMS, "batch", "service_tier", "api_source"),
            (_P, _U, _K, _M, FilterDef("batch", "batch", kind="bool")),
            COMPLETIONS_MEASURES,
        ),
        _usage(
            "embeddings",
            "organization.usage.embeddings.result",
            _BASE_DIMS,
            (_P, _U, _K, _M),
            ("input_tokens", "num_model_requests"),
        ),
        _usage(
            "moderations",
            "organization.usage.moderations.result",
            _BASE_DIMS,
            (_P, _U, _K, _M),
            ("input_tokens", "num_model_requests"),
        ),
        _usage(
            "images",
            "organization.usage.images.result",
            (*_BASE_DIMS, "size", "source"),
            (
                _P,
                _U,
                _K,
                _M,
                FilterDef("sizes", "size", enum=IMAGE_SIZE_FILTER_ENUM),
                FilterDef("sources", "source", enum=IMAGE_SOURCES),
            ),
            ("images", "num_model_requests"),
        ),
        _usage(
            "audio_speeches",
            "organization.usage.audio_speeches.result",
            _BASE_DIMS,
            (_P, _U, _K, _M),
            ("characters", "num_model_requests"),
        ),
        _usage(
            "audio_transcriptions",
            "organization.usage.audio_transcriptions.result",
            _BASE_DIMS,
            (_P, _U, _K, _M),
            ("seconds", "num_model_requests"),
        ),
        _usage(
            "vector_stores",
            "organization.usage.vector_stores.result",
            ("project_id",),
            (_P,),
            ("usage_bytes",),
        ),
        _usage(
            "code_interpreter_sessions",
            "organization.usage.code_interpreter_sessions.result",
            ("project_id",),
            (_P,),
            ("num_sessions",),
        ),
        _usage(
            "file_search_calls",
            # ref §4.14: the discriminator is file_searches, not file_search_calls.
            "organization.usage.file_searches.result",
            ("project_id", "user_id", "api_key_id", "vector_store_id"),
            (_P, _U, _K, FilterDef("vector_store_ids", "vector_store_id")),
            ("num_requests",),
        ),
        _usage(
            "web_search_calls",
            "organization.usage.web_searches.result",
            (*_BASE_DIMS, "context_level", "api_source"),
            (_P, _U, _K, _M, FilterDef("context_levels", "context_level", enum=CONTEXT_LEVELS)),
            ("num_model_requests", "num_requests"),
        ),
        StreamDef(
            "costs",
            "/v1/organization/costs",
            "organization.costs.result",
            "costs",
            # ref-11 "Costs": group_by project_id, user_id, line_item, api_key_id, api_source; filter line_items
            ("project_id", "user_id", "line_item", "api_key_id", "api_source"),
            (_P, _K, FilterDef("line_items", "line_item")),
            ("amount", "quantity", "quantity_unit"),
        ),
    )
}

#: Path -> stream.
STREAMS_BY_PATH: dict[str, StreamDef] = {s.path: s for s in STREAMS.values()}
