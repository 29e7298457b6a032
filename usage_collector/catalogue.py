"""The catalogue: one declarative entry per OpenAI usage/costs stream.

Adding a stream is adding a :class:`StreamSpec` to :data:`STREAMS`. Every fact here comes from
``shared/reference/openai-usage-api.md`` (§0 limits and ``group_by`` values, §1.6 result
schemas, §4.14 object discriminators) and ``openai-usage-api-2026-11.md`` (the ``decisions`` endpoint,
``api_source``, costs by ``user_id``, the cache-write splits; OpenAI's Python SDK 3.57 types).

Dimensions OpenAI added later (``api_source``; ``user_id`` on costs) are *optional*: an organization whose API
refuses one (HTTP 400 naming it) loses that dimension for the stream, not the stream
(:meth:`StreamSpec.optional`). A stream may also know a dimension it does not request by default (costs
``user_id``, opt-in through the ``costs_group_by`` setting).

Field naming follows Elastic's ``openai`` integration (``elastic-openai-integration.md`` §3): the shared
dimensions and ``num_model_requests`` live under ``openai.base.*``; every other measure and dimension under
``openai.<stream>.<api field name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BucketWidth = Literal["1m", "1h", "1d"]
BUCKET_WIDTHS: tuple[BucketWidth, ...] = ("1m", "1h", "1d")
WIDTH_SECONDS: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}

#: Maximum buckets per page for usage endpoints (ref §0 / §1.1 ``limit``).
USAGE_LIMIT_MAX: dict[str, int] = {"1m": 1440, "1h": 168, "1d": 31}
#: Costs: ``limit`` ranges 1..180 and ``bucket_width`` is ``1d`` only (ref §1.3, §4.5).
COSTS_LIMIT_MAX = 180

#: Dimensions Elastic's integration keeps under ``openai.base.*`` (ref elastic §3a).
BASE_DIMENSIONS = frozenset({"project_id", "user_id", "api_key_id", "model"})
#: Measures kept under ``openai.base.*`` for compatibility with Elastic's dashboards.
BASE_MEASURES = frozenset({"num_model_requests"})

MeasureKind = Literal["counter", "gauge"]
ValueType = Literal["int", "decimal"]
DimType = Literal["keyword", "boolean"]


@dataclass(frozen=True)
class Measure:
    """A numeric field of a result.

    Attributes:
        name: the API field name (``input_tokens``); for costs a dotted path (``amount.value``). A measure is
            stored under this name exactly as reported; no stored measure is ever derived from others.
        kind: ``counter`` values add up over time and groups; a ``gauge`` (``usage_bytes``) does not add up
            over time.
        required: the API always returns it; optional measures that are absent stay absent.
        value_type: ``int`` or ``decimal`` (money and quantities, kept exact).
        gen_ai: the OpenTelemetry GenAI name it is also written under, if any.
    """

    name: str
    kind: MeasureKind = "counter"
    required: bool = False
    value_type: ValueType = "int"
    gen_ai: str | None = None


@dataclass(frozen=True)
class Dimension:
    """A grouping field of a result (``null`` unless the request grouped by it)."""

    name: str
    type: DimType = "keyword"


@dataclass(frozen=True)
class StreamSpec:
    """One endpoint of the Usage API or the Costs API.

    Attributes:
        name: the stream name, equal to the endpoint's last path segment (``completions``, ``costs``).
        path: path below the API base URL.
        object_type: the ``object`` discriminator of its results (ref §4.14).
        group_by: the ``group_by`` values the endpoint allows, in the order we send them.
        measures: numeric fields.
        attributes: non-numeric, non-grouping fields kept on the document (``amount.currency``).
        default_width: bucket width used when the configuration does not choose one.
        widths: bucket widths the endpoint supports.
        dimension_types: dimensions that are not ``keyword``.
        optional_dims: dimensions that may be dropped when the API refuses them (added after the endpoint).
        default_group_by: what is requested by default when not every allowed dimension is (``None``: all).
    """

    name: str
    path: str
    object_type: str
    group_by: tuple[str, ...]
    measures: tuple[Measure, ...]
    attributes: tuple[str, ...] = ()
    default_width: BucketWidth = "1h"
    widths: tuple[BucketWidth, ...] = BUCKET_WIDTHS
    dimension_types: dict[str, DimType] = field(default_factory=dict)
    optional_dims: tuple[str, ...] = ()
    default_group_by: tuple[str, ...] | None = None

    @property
    def is_costs(self) -> bool:
        return self.name == "costs"

    @property
    def request_group_by(self) -> tuple[str, ...]:
        """The ``group_by`` values sent by default, in catalogue order."""
        return self.group_by if self.default_group_by is None else self.default_group_by

    def optional(self, dim: str) -> bool:
        """Whether ``dim`` may be dropped (with a warning) when the API refuses it."""
        return dim in self.optional_dims

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return tuple(Dimension(g, self.dimension_types.get(g, "keyword")) for g in self.group_by)

    def limit_max(self, width: str) -> int:
        """The largest ``limit`` (buckets per page) the API accepts for ``width``."""
        return COSTS_LIMIT_MAX if self.is_costs else USAGE_LIMIT_MAX[width]

    def field_name(self, api_field: str) -> str:
        """The document field (dotted) that holds the API field ``api_field``."""
        if api_field in BASE_DIMENSIONS or api_field in BASE_MEASURES:
            return f"openai.base.{api_field}"
        return f"openai.{self.name}.{api_field}"


_USER_DIMS = ("project_id", "user_id", "api_key_id", "model")
_REQ = Measure("num_model_requests", required=True)

#: Completions and decisions measures (SDK 3.57 ``usage_completions_response.py``): every optional one is "number
#: or null", absent meaning "not reported", never 0. ``input_cache_write_tokens`` is the total over both retention
#: periods (it meant 30 minutes only in an older reference text); each part is stored as reported, never derived.
_TOKEN_MEASURES = (
    Measure("input_tokens", required=True, gen_ai="gen_ai.usage.input_tokens"),
    Measure("output_tokens", required=True, gen_ai="gen_ai.usage.output_tokens"),
    _REQ,
    Measure("input_cached_tokens", gen_ai="gen_ai.usage.cache_read.input_tokens"),
    Measure("input_cache_write_tokens", gen_ai="gen_ai.usage.cache_creation.input_tokens"),
    Measure("input_cache_write_30m_tokens"),
    Measure("input_cache_write_12h_tokens"),
    Measure("input_uncached_tokens"),
    Measure("input_text_tokens"),
    Measure("output_text_tokens"),
    Measure("input_cached_text_tokens"),
    Measure("input_audio_tokens"),
    Measure("input_cached_audio_tokens"),
    Measure("output_audio_tokens"),
    Measure("input_image_tokens"),
    Measure("input_cached_image_tokens"),
    Measure("output_image_tokens"),
)
_TOKEN_DIMS = (*_USER_DIMS, "batch", "service_tier", "api_source")

STREAMS: dict[str, StreamSpec] = {
    s.name: s
    for s in (
        StreamSpec(
            name="completions",
            path="organization/usage/completions",
            object_type="organization.usage.completions.result",
            group_by=_TOKEN_DIMS,
            dimension_types={"batch": "boolean"},
            optional_dims=("api_source",),
            measures=_TOKEN_MEASURES,
        ),
        StreamSpec(
            name="embeddings",
            path="organization/usage/embeddings",
            object_type="organization.usage.embeddings.result",
            group_by=_USER_DIMS,
            measures=(Measure("input_tokens", required=True, gen_ai="gen_ai.usage.input_tokens"), _REQ),
        ),
        StreamSpec(
            name="moderations",
            path="organization/usage/moderations",
            object_type="organization.usage.moderations.result",
            group_by=_USER_DIMS,
            measures=(Measure("input_tokens", required=True, gen_ai="gen_ai.usage.input_tokens"), _REQ),
        ),
        StreamSpec(
            name="images",
            path="organization/usage/images",
            object_type="organization.usage.images.result",
            group_by=(*_USER_DIMS, "size", "source"),
            measures=(Measure("images", required=True), _REQ),
        ),
        StreamSpec(
            name="audio_speeches",
            path="organization/usage/audio_speeches",
            object_type="organization.usage.audio_speeches.result",
            group_by=_USER_DIMS,
            measures=(Measure("characters", required=True), _REQ),
        ),
        StreamSpec(
            name="audio_transcriptions",
            path="organization/usage/audio_transcriptions",
            object_type="organization.usage.audio_transcriptions.result",
            group_by=_USER_DIMS,
            measures=(Measure("seconds", required=True), _REQ),
        ),
        StreamSpec(
            name="vector_stores",
            path="organization/usage/vector_stores",
            object_type="organization.usage.vector_stores.result",
            group_by=("project_id",),
            measures=(Measure("usage_bytes", kind="gauge", required=True),),
            # A gauge does not add up over time: one daily value per project is what a person (and storage
            # billing) reads, and summing hourly documents per day would give 24x the bytes.
            default_width="1d",
        ),
        StreamSpec(
            name="code_interpreter_sessions",
            path="organization/usage/code_interpreter_sessions",
            object_type="organization.usage.code_interpreter_sessions.result",
            group_by=("project_id",),
            measures=(Measure("num_sessions", required=True),),
        ),
        StreamSpec(
            name="file_search_calls",
            path="organization/usage/file_search_calls",
            object_type="organization.usage.file_searches.result",
            group_by=("project_id", "user_id", "api_key_id", "vector_store_id"),
            measures=(Measure("num_requests", required=True),),
        ),
        StreamSpec(
            name="web_search_calls",
            path="organization/usage/web_search_calls",
            object_type="organization.usage.web_searches.result",
            group_by=(*_USER_DIMS, "context_level", "api_source"),
            optional_dims=("api_source",),
            measures=(_REQ, Measure("num_requests", required=True)),
        ),
        StreamSpec(
            name="costs",
            path="organization/costs",
            object_type="organization.costs.result",
            # user_id is known (results carry it when grouped) but not requested by default: "some combinations
            # with user_id return HTTP 400" (SDK 3.57 usage_costs_params.py); the costs_group_by setting adds it.
            group_by=("project_id", "line_item", "api_key_id", "api_source", "user_id"),
            default_group_by=("project_id", "line_item", "api_key_id", "api_source"),
            optional_dims=("api_source", "user_id"),
            measures=(
                Measure("amount.value", required=True, value_type="decimal"),
                Measure("quantity", value_type="decimal"),
            ),
            attributes=("amount.currency", "quantity_unit"),
            default_width="1d",
            widths=("1d",),
        ),
        # last, so the order (and request numbering) of the streams before it is what it was
        StreamSpec(
            name="decisions",
            path="organization/usage/decisions",
            object_type="organization.usage.decisions.result",
            group_by=_TOKEN_DIMS,
            dimension_types={"batch": "boolean"},
            optional_dims=("api_source",),
            measures=_TOKEN_MEASURES,
        ),
    )
}

STREAM_NAMES: tuple[str, ...] = tuple(STREAMS)
