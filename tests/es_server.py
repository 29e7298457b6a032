"""A small in-memory Elasticsearch for tests: exactly the REST subset the sink and ``setup`` use.

Rules it models, each with its source (``R:`` = ``/work/shared/reference/delivery-semantics.md``):

* compatibility headers: a server of major N accepts ``compatible-with`` N or N-1 on ``Accept`` and, with a
  body, on ``Content-Type``; both versioned or neither, and equal (elastic/elasticsearch
  ``server/src/main/java/org/elasticsearch/rest/RestCompatibleVersionHelper.java``). So an 8.x server refuses
  elasticsearch-py 9's ``compatible-with=9`` with 400 ``media_type_header_exception``
  (elastic/elasticsearch-py#2923, elastic/mcp-server-elasticsearch#171);
* data streams accept only ``create``; ``index`` on a data stream name is an item 400 (R §2,
  https://elastic.co/guide/reference/api/bulk);
* a duplicate ``_id`` gives 409 ``version_conflict_engine_exception`` only within one backing index, so
  after a rollover the same ``_id`` can be created again (R §2, elastic/elasticsearch#44794);
* a backing index takes ``index`` only with ``if_seq_no``/``if_primary_term`` and never ``create``
  (``TransportBulkAction.prohibitAppendWritesInBackingIndices``); a stale pair is a 409;
* auto-creating a data stream needs a matching index template with ``data_stream`` (``no matching index
  template found for data stream``); a name no template matches is a 404, as with
  ``action.auto_create_index: false``; same-priority overlapping templates are refused;
* search is near-real-time: it sees only refreshed documents (``_refresh`` or ``?refresh=true``); GET and
  mget by ``_id`` are real-time;
* mapped fields are type-checked (``document_parsing_exception`` naming the field, as ES 8.x/9.x), and
  ``dynamic: strict`` refuses unknown fields (``strict_dynamic_mapping_exception``);
* mappings and index settings are validated when a component/index template is stored and when an index is
  created (field types and their parameters from a table, field ``meta`` limits, unknown settings), and a mapping
  update may not change a field's type (:func:`parse_mappings`, :func:`_merge_update`, :func:`_settings_errors`);
  a template change reaches a data stream at its next rollover only;
* bulk items of a data stream name the backing index (successes and shard-level failures);
* writing to a missing index auto-creates it (``action.auto_create_index``, dynamic mappings);
* ``from + size`` above ``index.max_result_window`` (10,000) is refused; ``track_total_hits`` caps at 10,000;
* personalities (:class:`Personality`): ILM and security present or not (``no handler found``), LogsDB by
  default for ``logs-*-*`` from 9.0 (synthetic ``_source``), data stream lifecycle (8.11+), the failure store
  (8.19/9.1+).

Each rule's code cites the Elasticsearch source or reference page it follows; where the source was not verified
the comment says so and the server errs on refusing.

Fault hooks: :meth:`EsServer.reject_next_items` (item-level 429, R §3), :meth:`EsServer.fail_item`
(item-level 400), :meth:`EsServer.stop`/:meth:`EsServer.start` (down and back on the same port, data kept)
and :meth:`EsServer.die_after_bulks` (the server dies in the middle of a run).

Tests reach it through ``tests/conftest_es.py`` (``es_target``), which picks a live cluster instead when
``ELASTICSEARCH_URL`` is set.
"""

from __future__ import annotations

import base64
import bisect
import fnmatch
import functools
import itertools
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class EsError(Exception):
    """An Elasticsearch error response (or bulk item error).

    ``root_cause`` is the innermost cause, as ``ElasticsearchException.guessRootCauses`` reports it; ``extra``
    carries the additional top-level fields some errors have (``phase``, ``grouped``, ``failure_store``).
    """

    def __init__(
        self,
        status: int,
        type_: str,
        reason: str,
        caused_by: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status, self.type, self.reason, self.caused_by = status, type_, reason, caused_by
        self.extra = dict(extra or {})
        self.index: str | None = None  # the concrete index a bulk item error names (see EsState.write)
        self.failure_store: str | None = None  # IndexDocFailureStoreStatus label, when it applies

    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "reason": self.reason, **self.extra}
        if self.caused_by:
            err["caused_by"] = self.caused_by
        return err

    def root_cause(self) -> dict[str, Any]:
        node: dict[str, Any] = {"type": self.type, "reason": self.reason}
        cause = self.caused_by
        while cause:
            node = {"type": cause["type"], "reason": cause["reason"]}
            cause = cause.get("caused_by")
        return node

    def body(self) -> dict[str, Any]:
        return {"error": {"root_cause": [self.root_cause()], **self.error()}, "status": self.status}


class RawError(Exception):
    """A response that is not an ``ElasticsearchException``, e.g. ``RestController.handleBadRequest``'s."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status, self.body = status, body


def _no_index(name: str) -> EsError:
    return EsError(404, "index_not_found_exception", f"no such index [{name}]")


# --- personalities ------------------------------------------------------------------------------------
def _version_tuple(version: str) -> tuple[int, ...]:
    nums = [int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3]]
    return tuple(([*nums, 0, 0, 0])[:3])


@dataclass(frozen=True)
class Personality:
    """What kind of cluster the server pretends to be (see :class:`EsServer` for the defaults by version)."""

    version: str
    ilm: bool = True
    security: bool = True
    logsdb: bool = True
    failure_store: bool = True
    failure_store_patterns: tuple[str, ...] = ()
    auto_create_index: bool = True
    lifecycle: bool = True

    @classmethod
    def of(
        cls,
        version: str,
        *,
        ilm: bool = True,
        security: bool = True,
        logsdb: bool | None = None,
        failure_store: bool | str | None = None,
        auto_create_index: bool = True,
    ) -> Personality:
        v = _version_tuple(version)
        # LogsDB by default for new ``logs-*-*`` data streams from 9.0 on (cluster.logsdb.enabled defaults to true
        # on clusters created in 9.x): x-pack/plugin/logsdb/.../LogsdbIndexModeSettingsProvider.java and
        # https://www.elastic.co/docs/manage-data/data-store/data-streams/logs-data-stream ("As of Elasticsearch
        # version 9.0, logsdb mode is automatically set on new data streams with names matching logs-*-*").
        if logsdb is None:
            logsdb = v >= (9, 0, 0)
        # The failure store is GA in 8.19 and 9.1 (elastic/docs-content manage-data/data-store/data-streams/
        # failure-store.md, ``applies_to: stack: ga 8.19.0 / 9.1.0``); 9.0 does not have it.
        patterns: tuple[str, ...] = ()
        if isinstance(failure_store, str):
            patterns = tuple(p.strip() for p in failure_store.split(",") if p.strip())
            failure_store = True
        if failure_store is None:
            failure_store = (8, 19, 0) <= v < (9, 0, 0) or v >= (9, 1, 0)
        # Data stream lifecycle (``template.lifecycle``, ``_data_stream/<name>/_lifecycle``): 8.11 on.
        return cls(
            version,
            ilm=ilm,
            security=security,
            logsdb=logsdb,
            failure_store=failure_store,
            failure_store_patterns=patterns,
            auto_create_index=auto_create_index,
            lifecycle=v >= (8, 11, 0),
        )

    @property
    def at_least(self) -> tuple[int, ...]:
        return _version_tuple(self.version)


def _no_handler(uri: str, method: str) -> RawError:
    """RestController.handleBadRequest (server/src/main/java/org/elasticsearch/rest/RestController.java): a path
    no plugin registered answers 400 with a bare ``{"error": "no handler found for uri [...] and method [...]"}``
    (no type, no status field). That is what ``_ilm/*`` gives without the ILM plugin and ``_security/*`` with
    security disabled: ``Security.getRestHandlers`` returns ``emptyList()`` when ``enabled == false``
    (x-pack/plugin/security/.../Security.java). The 7.x "Security must be explicitly enabled when using a [basic]
    license" 500 came from ``SecurityActionFilter`` and is not what 8.x/9.x answer."""
    return RawError(400, {"error": f"no handler found for uri [{uri}] and method [{method}]"})


def _java_str(value: Any) -> str:
    """``Object.toString`` of a parsed JSON value, as Elasticsearch prints it inside messages."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_str(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_java_str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _remaining(node: dict[str, Any]) -> str:
    """``MappingParser.checkNoRemainingFields``/``getRemainingFields``: ``" [key : value]"`` per leftover entry."""
    return "".join(f" [{k} : {_java_str(v)}]" for k, v in node.items())


# --- index settings -----------------------------------------------------------------------------------
# The index settings the server knows, as registered in IndexScopedSettings.BUILT_IN_INDEX_SETTINGS
# (server/src/main/java/org/elasticsearch/common/settings/IndexScopedSettings.java) plus the ones plugins
# register (ILM: LifecycleSettings; LogsDB). Not every built-in setting is listed: a real setting missing here
# is refused (erring strict); add it when a test needs it.
_INDEX_SETTINGS = frozenset(
    {
        "index.number_of_shards",
        "index.number_of_replicas",
        "index.number_of_routing_shards",
        "index.auto_expand_replicas",
        "index.refresh_interval",
        "index.codec",
        "index.hidden",
        "index.mode",
        "index.priority",
        "index.default_pipeline",
        "index.final_pipeline",
        "index.query.default_field",
        "index.max_result_window",
        "index.max_inner_result_window",
        "index.max_docvalue_fields_search",
        "index.max_script_fields",
        "index.max_terms_count",
        "index.max_regex_length",
        "index.max_slices_per_scroll",
        "index.mapping.total_fields.limit",
        "index.mapping.total_fields.ignore_dynamic_beyond_limit",
        "index.mapping.depth.limit",
        "index.mapping.nested_fields.limit",
        "index.mapping.nested_objects.limit",
        "index.mapping.field_name_length.limit",
        "index.mapping.dimension_fields.limit",
        "index.mapping.ignore_malformed",
        "index.mapping.coerce",
        "index.mapping.source.mode",
        "index.mapping.synthetic_source_keep",
        "index.sort.field",
        "index.sort.order",
        "index.sort.mode",
        "index.sort.missing",
        "index.routing_path",
        "index.time_series.start_time",
        "index.time_series.end_time",
        "index.look_ahead_time",
        "index.look_back_time",
        "index.lifecycle.prefer_ilm",
        "index.blocks.read_only",
        "index.blocks.read_only_allow_delete",
        "index.blocks.read",
        "index.blocks.write",
        "index.blocks.metadata",
        "index.translog.durability",
        "index.translog.sync_interval",
        "index.translog.flush_threshold_size",
        "index.merge.policy.max_merged_segment",
        "index.routing.allocation.enable",
        "index.routing.allocation.total_shards_per_node",
        "index.routing.rebalance.enable",
        "index.unassigned.node_left.delayed_timeout",
        "index.search.idle.after",
        "index.gc_deletes",
        "index.store.type",
        "index.logsdb.add_host_name_field",
        "index.logsdb.sort_on_host_name",
        "index.write.wait_for_active_shards",
    }
)
#: Group settings (any key under the prefix).
_INDEX_SETTING_GROUPS = (
    "index.routing.allocation.include.",
    "index.routing.allocation.exclude.",
    "index.routing.allocation.require.",
    "index.analysis.",
    "index.similarity.",
    "index.search.slowlog.",
    "index.indexing.slowlog.",
    "index.merge.scheduler.",
)
#: Registered by the ILM plugin (x-pack/plugin/core/.../ilm/LifecycleSettings.java): unknown without ILM.
_ILM_SETTINGS = frozenset(
    {
        "index.lifecycle.name",
        "index.lifecycle.rollover_alias",
        "index.lifecycle.origination_date",
        "index.lifecycle.parse_origination_date",
        "index.lifecycle.indexing_complete",
        "index.lifecycle.step.wait_time_threshold",
        "index.lifecycle.skip",
    }
)


def _flat_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Nested or dotted settings -> dotted keys with the ``index.`` prefix (``Settings.Builder.normalizePrefix``),
    values as strings (Elasticsearch stores every setting as a string)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                out[f"{prefix}{k}"] = [_java_str(x) for x in v] if isinstance(v, list) else _java_str(v)

    walk("", settings or {})
    return {k if k.startswith("index.") else f"index.{k}": v for k, v in out.items()}


def _similarity(a: str, b: str) -> float:
    """Lucene's ``LevenshteinDistance.getDistance``: 1 - edits / max length (what the suggestions use)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b), 1)


def _settings_errors(flat: dict[str, Any], p: Personality) -> list[str]:
    """AbstractScopedSettings.validate (server/src/main/java/org/elasticsearch/common/settings/
    AbstractScopedSettings.java): keys in sorted order; an unknown key gets "did you mean" for registered keys
    with a Levenshtein similarity above 0.7, otherwise the "required plugins" hint."""
    known = _INDEX_SETTINGS | (_ILM_SETTINGS if p.ilm else frozenset())
    errors = []
    for key in sorted(flat):
        if key in known or key.startswith(_INDEX_SETTING_GROUPS):
            if key == "index.mode":
                modes = (
                    ["standard", "time_series"]
                    + (["logsdb"] if p.at_least >= (8, 15, 0) else [])
                    + (["lookup"] if p.at_least >= (8, 18, 0) else [])
                )
                if str(flat[key]).lower() not in modes:  # IndexMode.fromString (unverified wording)
                    errors.append(f"[{flat[key]}] is an invalid index mode, valid modes are: [{', '.join(modes)}]")
            continue
        near = sorted(((s, k) for k in known if (s := _similarity(key, k)) > 0.7), key=lambda t: (-t[0], t[1]))
        msg = f"unknown setting [{key}]"
        if near:
            names = [k for _, k in near]
            msg += " did you mean " + (f"[{names[0]}]" if len(names) == 1 else f"any of [{', '.join(names)}]") + "?"
        else:
            msg += (
                " please check that any required plugins are installed, or check the breaking changes "
                "documentation for removed settings"
            )
        errors.append(msg)
    return errors


def _check_index_settings(flat: dict[str, Any], p: Personality) -> None:
    """Creating an index (also the throw-away index ``MetadataIndexTemplateService.validateTemplate`` creates for
    a component template): ``IndicesService.createIndexService`` runs ``indexScopedSettings.validate`` and
    ``ExceptionsHelper.rethrowAndSuppress`` throws the first error as a plain ``illegal_argument_exception``
    (the others become ``suppressed``, not modelled)."""
    errors = _settings_errors(flat, p)
    if errors:
        raise EsError(400, "illegal_argument_exception", errors[0])


# --- mappings -----------------------------------------------------------------------------------------
# Parameters every field mapper accepts (FieldMapper.Builder: ``meta`` is FieldMapper.Parameter.metaParam,
# ``fields`` the multi-fields, ``copy_to``; ``synthetic_source_keep`` is Mapper.SYNTHETIC_SOURCE_KEEP_PARAM).
_COMMON_PARAMS = frozenset({"meta", "fields", "copy_to", "synthetic_source_keep"})
_NUMBER_PARAMS = frozenset(
    {
        "index",
        "doc_values",
        "store",
        "coerce",
        "ignore_malformed",
        "null_value",
        "script",
        "on_script_error",
        "time_series_metric",
        "time_series_dimension",
    }
)
_DATE_PARAMS = frozenset(
    {"index", "doc_values", "store", "format", "locale", "null_value", "ignore_malformed", "script", "on_script_error"}
)
# Field type -> the parameters its mapper declares (``getParameters()`` of each builder): KeywordFieldMapper,
# NumberFieldMapper, ScaledFloatFieldMapper (modules/mapper-extras), DateFieldMapper, BooleanFieldMapper,
# ConstantKeywordFieldMapper (x-pack/plugin/mapper-constant-keyword), TextFieldMapper, MatchOnlyTextFieldMapper,
# WildcardFieldMapper, IpFieldMapper, BinaryFieldMapper, FlattenedFieldMapper, GeoPointFieldMapper,
# VersionStringFieldMapper, DenseVectorFieldMapper. A type not listed is "No handler for type" (as for a
# plugin that is not installed); a parameter not listed is "unknown parameter" (err strict: add it when needed).
_FIELD_PARAMS: dict[str, frozenset[str]] = {
    "keyword": frozenset(
        {
            "index",
            "doc_values",
            "store",
            "ignore_above",
            "null_value",
            "normalizer",
            "eager_global_ordinals",
            "index_options",
            "norms",
            "similarity",
            "split_queries_on_whitespace",
            "script",
            "on_script_error",
            "time_series_dimension",
        }
    ),
    "constant_keyword": frozenset({"value"}),
    "wildcard": frozenset({"ignore_above", "null_value"}),
    "text": frozenset(
        {
            "analyzer",
            "search_analyzer",
            "search_quote_analyzer",
            "index",
            "index_options",
            "index_phrases",
            "index_prefixes",
            "norms",
            "position_increment_gap",
            "store",
            "similarity",
            "term_vector",
            "fielddata",
            "fielddata_frequency_filter",
            "eager_global_ordinals",
        }
    ),
    "match_only_text": frozenset(),
    **{
        t: _NUMBER_PARAMS
        for t in ("long", "integer", "short", "byte", "double", "float", "half_float", "unsigned_long")
    },
    "scaled_float": _NUMBER_PARAMS | {"scaling_factor"},
    "date": _DATE_PARAMS,
    "date_nanos": _DATE_PARAMS,
    "boolean": frozenset(
        {
            "index",
            "doc_values",
            "store",
            "null_value",
            "ignore_malformed",
            "script",
            "on_script_error",
            "time_series_dimension",
        }
    ),
    "ip": frozenset(
        {
            "index",
            "doc_values",
            "store",
            "null_value",
            "ignore_malformed",
            "script",
            "on_script_error",
            "time_series_dimension",
        }
    ),
    "binary": frozenset({"doc_values", "store"}),
    "flattened": frozenset(
        {
            "depth_limit",
            "doc_values",
            "eager_global_ordinals",
            "ignore_above",
            "index",
            "index_options",
            "null_value",
            "similarity",
            "split_queries_on_whitespace",
            "time_series_dimensions",
        }
    ),
    "geo_point": frozenset(
        {
            "ignore_malformed",
            "ignore_z_value",
            "index",
            "doc_values",
            "store",
            "null_value",
            "script",
            "on_script_error",
        }
    ),
    "version": frozenset(),
    "dense_vector": frozenset({"dims", "element_type", "index", "similarity", "index_options"}),
}
#: ObjectMapper.TypeParser.parseObjectOrDocumentTypeProperties; NestedObjectMapper adds the include_in_* pair.
_OBJECT_PARAMS = frozenset({"type", "properties", "dynamic", "enabled", "subobjects"})
_NESTED_PARAMS = _OBJECT_PARAMS | {"include_in_parent", "include_in_root"}
#: RootObjectMapper plus the metadata field mappers a mapping may configure (MappingParser).
_ROOT_PARAMS = _OBJECT_PARAMS - {"type"} | {
    "_meta",
    "_source",
    "_routing",
    "_field_names",
    "_data_stream_timestamp",
    "dynamic_templates",
    "date_detection",
    "numeric_detection",
    "dynamic_date_formats",
    "runtime",
}
#: Parameters a mapping update may not change (FieldMapper.Parameter ``updateable == false``); others merge.
_FIXED_PARAMS = ("scaling_factor", "index", "doc_values", "store", "format", "null_value", "analyzer", "normalizer")


def _mapping_error(reason: str, caused_by: dict[str, Any] | None = None) -> EsError:
    return EsError(400, "mapper_parsing_exception", reason, caused_by)


def _parse_meta(name: str, meta: Any) -> None:
    """TypeParsers.parseMeta (server/src/main/java/org/elasticsearch/index/mapper/TypeParsers.java): at most 5
    entries, keys of at most 20 code points, values non-null strings of at most 50 code points. Only the
    field-level ``meta`` parameter goes through it; the mapping-level ``_meta`` is a free-form map with no such
    limits (RootObjectMapper/MappingParser never call parseMeta for it)."""
    if not isinstance(meta, dict):
        raise _mapping_error(
            f"[meta] must be an object, got {type(meta).__name__}[{_java_str(meta)}] for field [{name}]"
        )
    if len(meta) > 5:
        raise _mapping_error(f"[meta] can't have more than 5 entries, but got {len(meta)} on field [{name}]")
    for key in meta:
        if len(key) > 20:
            raise _mapping_error(f"[meta] keys can't be longer than 20 chars, but got [{key}] for field [{name}]")
    for value in meta.values():
        if isinstance(value, str):
            if len(value) > 50:
                raise _mapping_error(
                    f"[meta] values can't be longer than 50 chars, but got [{value}] for field [{name}]"
                )
        elif value is None:
            raise _mapping_error(f"[meta] values can't be null (field [{name}])")
        else:
            raise _mapping_error(
                f"[meta] values can only be strings, but got {type(value).__name__}"
                f"[{_java_str(value)}] for field [{name}]"
            )


def _parse_dynamic(name: str, value: Any) -> None:
    # ObjectMapper.TypeParser: "strict"/"runtime" or a boolean (XContentMapValues.nodeBooleanValue); the wording
    # for a bad value is not verified against the source.
    if str(value).lower() not in ("true", "false", "strict", "runtime"):
        raise EsError(400, "illegal_argument_exception", f"Could not convert [{name}.dynamic] to boolean")


def _parse_field(name: str, node: Any, *, multi_field: bool = False) -> None:
    """One entry of ``properties`` (ObjectMapper.TypeParser.parseProperties) or of ``fields`` (multi-fields,
    TypeParsers.parseMultiField); raises the inner ``mapper_parsing_exception``/``illegal_argument_exception``."""
    if not isinstance(node, dict):
        raise _mapping_error(f"Expected map for property [fields] on field [{name}] but got a {type(node).__name__}")
    type_ = node.get("type")
    if type_ is None:
        if multi_field:
            raise _mapping_error(f"no type specified for property [{name}]")
        if "properties" in node or (len(node) == 1 and "enabled" in node):
            type_ = "object"
        else:
            raise _mapping_error(f"No type specified for field [{name}]")
    type_ = _java_str(type_)
    if type_ in ("object", "nested"):
        if multi_field:
            raise _mapping_error(f"Type [{type_}] cannot be used in multi field")
        _parse_object(name, node, _NESTED_PARAMS if type_ == "nested" else _OBJECT_PARAMS)
        return
    if type_ == "alias":  # FieldAliasMapper.TypeParser: only "path"
        rest = {k: v for k, v in node.items() if k not in ("type", "path")}
        if rest:
            raise _mapping_error(f"Mapping definition for [{name}] has unsupported parameters: {_remaining(rest)}")
        return
    allowed = _FIELD_PARAMS.get(type_)
    if allowed is None:  # ObjectMapper.TypeParser.parseProperties / TypeParsers.parseMultiField (lower-case "no")
        raise _mapping_error(f"{'no' if multi_field else 'No'} handler for type [{type_}] declared on field [{name}]")
    for key, value in node.items():  # FieldMapper.Builder.parse: entries in order, the first bad one throws
        if key == "type":
            continue
        if key == "meta":
            _parse_meta(name, value)
        elif key == "fields":
            if multi_field:  # TypeParsers.parseMultiField, indices created on 8.0+
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"Encountered a multi-field [{name}] which itself "
                    "contains a multi-field. Defining chained multi-fields is not supported.",
                )
            for sub, subnode in (value or {}).items():
                _parse_field(sub, subnode, multi_field=True)
        elif key not in allowed and key not in _COMMON_PARAMS:
            raise _mapping_error(f"unknown parameter [{key}] on mapper [{name}] of type [{type_}]")
    if type_ == "scaled_float":  # ScaledFloatFieldMapper.Builder: the scaling_factor validator
        factor = node.get("scaling_factor")
        if factor is None:
            raise EsError(400, "illegal_argument_exception", "Field [scaling_factor] is required")
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"[scaling_factor] must be a positive number, got [{_java_str(factor)}]",
            )


def _parse_object(name: str, node: dict[str, Any], allowed: frozenset[str]) -> None:
    rest = {k: v for k, v in node.items() if k not in allowed}
    if rest:  # MappingParser.checkNoRemainingFields
        raise _mapping_error(f"Mapping definition for [{name}] has unsupported parameters: {_remaining(rest)}")
    if "dynamic" in node:
        _parse_dynamic(name, node["dynamic"])
    for field_name, field_node in (node.get("properties") or {}).items():
        _parse_field(field_name.split(".")[-1], field_node)


def parse_mappings(mappings: dict[str, Any] | None) -> None:
    """MapperService.parseMapping/doMerge (server/src/main/java/org/elasticsearch/index/mapper/MapperService.java):
    any parse failure is rethrown as ``mapper_parsing_exception`` "Failed to parse mapping: <cause>" with the
    cause as ``caused_by``. Used when a component/index template is stored, an index is created and a mapping is
    updated."""
    if not mappings:
        return
    try:
        mappings = mappings.get("_doc", mappings) if set(mappings) == {"_doc"} else mappings
        rest = {k: v for k, v in mappings.items() if k not in _ROOT_PARAMS}
        if rest:
            raise _mapping_error(f"Root mapping definition has unsupported parameters: {_remaining(rest)}")
        if "_meta" in mappings and not isinstance(mappings["_meta"], dict):
            raise _mapping_error(
                f"[_meta] must be an object, got {type(mappings['_meta']).__name__}[{_java_str(mappings['_meta'])}]"
            )
        if "dynamic" in mappings:
            _parse_dynamic("_doc", mappings["dynamic"])
        for field_name, field_node in (mappings.get("properties") or {}).items():
            _parse_field(field_name.split(".")[-1], field_node)
    except EsError as exc:
        raise _mapping_error(f"Failed to parse mapping: {exc.reason}", exc.error()) from None


def _is_object(m: dict[str, Any]) -> bool:
    return (
        (m.get("type", "object") in ("object", "nested") and "type" in m)
        or "properties" in m
        or ("type" not in m and "enabled" in m)
    )


def _compose(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Composing template mappings (MergeReason.INDEX_TEMPLATE): objects merge recursively, a leaf field of a later
    template replaces the earlier definition whole (MapperService.mergeMappings with INDEX_TEMPLATE)."""
    for key, value in other.items():
        if key == "properties" and isinstance(into.get(key), dict):
            for fname, fnode in value.items():
                cur = into[key].get(fname)
                if isinstance(cur, dict) and _is_object(cur) and isinstance(fnode, dict) and _is_object(fnode):
                    _compose(cur, fnode)
                else:
                    into[key][fname] = json.loads(json.dumps(fnode))
        elif isinstance(value, dict) and isinstance(into.get(key), dict) and key != "_meta":
            _compose(into[key], value)
        else:
            into[key] = json.loads(json.dumps(value))
    return into


def _merge_update(existing: dict[str, Any], incoming: dict[str, Any], prefix: str = "") -> None:
    """A mapping update on an existing index (MergeReason.MAPPING_UPDATE), in place; raises on a conflict.

    FieldMapper.merge/checkIncomingMergeType: "mapper [<full path>] cannot be changed from type [a] to [b]";
    a leaf replaced by an object is the same message with the ObjectMapper class name; ObjectMapper.merge refuses
    an object replaced by a leaf ("can't merge a non object mapping [x] with an object mapping", wording not
    verified); FieldMapper.Conflicts.check: "Mapper for [x] conflicts with existing mapper:\\n\\tCannot update
    parameter [p] from [a] to [b]" for a parameter that is not updateable (FieldMapper.Parameter.updateable)."""
    for key, value in incoming.items():
        if key != "properties":
            existing[key] = json.loads(json.dumps(value))
            continue
        props = existing.setdefault("properties", {})
        for fname, fnode in value.items():
            path = prefix + fname
            cur = props.get(fname)
            if cur is None:
                props[fname] = json.loads(json.dumps(fnode))
            elif _is_object(cur):
                if not _is_object(fnode):
                    raise EsError(
                        400,
                        "illegal_argument_exception",
                        f"can't merge a non object mapping [{path}] with an object mapping",
                    )
                _merge_update(cur, {k: v for k, v in fnode.items() if k != "type"}, path + ".")
            elif _is_object(fnode):
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"mapper [{path}] cannot be changed from type [{cur.get('type')}] to [ObjectMapper]",
                )
            elif fnode.get("type") != cur.get("type"):
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"mapper [{path}] cannot be changed from type [{cur.get('type')}] to [{fnode.get('type')}]",
                )
            else:
                conflicts = [
                    f"Cannot update parameter [{p}] from [{_java_str(cur.get(p))}] to [{_java_str(fnode.get(p))}]"
                    for p in _FIXED_PARAMS
                    if cur.get(p) != fnode.get(p)
                ]
                if cur.get("type") == "constant_keyword" and "value" in cur and cur["value"] != fnode.get("value"):
                    conflicts.append(
                        f"Cannot update parameter [value] from [{cur['value']}] to [{_java_str(fnode.get('value'))}]"
                    )
                if conflicts:
                    raise EsError(
                        400,
                        "illegal_argument_exception",
                        f"Mapper for [{path}] conflicts with existing mapper:\n\t" + "\n\t".join(conflicts),
                    )
                props[fname] = json.loads(json.dumps(fnode))


# --- synthetic _source (LogsDB) -------------------------------------------------------------------------
def _parse_date(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        if re.fullmatch(r"-?\d+", value):
            return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)
    return None


def _synthetic_leaf(m: dict[str, Any], value: Any) -> Any:
    """One value as its doc values give it back (each mapper's ``syntheticFieldLoader``)."""
    kind = m.get("type")
    try:
        if kind == "scaled_float":  # ScaledFloatFieldMapper: encode Math.round(v * factor), decode / factor
            factor = float(m["scaling_factor"])
            return math.floor(float(value) * factor + 0.5) / factor
        if kind in ("double", "float", "half_float"):
            return float(value)
        if kind in ("long", "integer", "short", "byte", "unsigned_long"):
            return int(float(value))
        if kind == "boolean":
            return value in (True, "true")
        if kind in ("date", "date_nanos") and "format" not in m:  # printed with strict_date_optional_time
            dt = _parse_date(value)
            if dt is not None:
                return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
        if kind in ("keyword", "constant_keyword", "wildcard"):
            return _java_str(value)
    except (TypeError, ValueError):
        pass
    return value


def _mapping_at(mappings: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = mappings
    for part in path:
        node = ((node or {}).get("properties") or {}).get(part)
        if node is None or (node.get("type") in _FIELD_PARAMS and part != path[-1]):
            return None
    return node


def synthetic_source(mappings: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """``_source`` as a LogsDB index (synthetic source) rebuilds it from doc values, per the documented
    modifications (reference "Synthetic _source", mapping-source-field, "Modifications to _source"):
    dotted field names expanded into objects, keys in alphabetical order, arrays of objects flattened into
    objects of arrays, leaf arrays sorted (keyword also de-duplicated), one-element arrays as the value, nulls
    dropped, numbers as their field type stores them (a ``scaled_float`` rounded to its scaling factor:
    reference "Numeric field types", synthetic source, ``"f": 123`` with factor 0.01 comes back as 100.0),
    dates printed in the field's format (``2024-01-01T00:00:00.000Z``). Unmapped fields (``dynamic: false``/
    ``runtime``) come back as sent (they are kept in ``_ignored_source``). Not modelled: ``synthetic_source_keep``,
    ``ignore_above`` overflow order, custom date formats. ``constant_keyword`` emits the mapped value even if the
    document left it out (not verified)."""
    values: dict[tuple[str, ...], list[Any]] = {}

    def collect(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                collect(v, path + tuple(k.split(".")))
        elif isinstance(node, list):
            for v in node:
                collect(v, path)
        elif node is not None:
            values.setdefault(path, []).append(node)

    collect(source, ())

    def constants(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for k, m in (node.get("properties") or {}).items():
            if m.get("type") == "constant_keyword" and "value" in m:
                values.setdefault((*path, k), [m["value"]])
            elif "properties" in m:
                constants(m, (*path, k))

    constants(mappings, ())
    out: dict[str, Any] = {}
    for path, vals in values.items():
        m = _mapping_at(mappings, list(path))
        if m is not None and m.get("type") in _FIELD_PARAMS:
            vals = [_synthetic_leaf(m, v) for v in vals]
            if m.get("type") in ("keyword", "constant_keyword", "wildcard"):
                vals = sorted(set(vals))
            else:
                vals = sorted(vals, key=lambda v: (str(type(v)), v))
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[path[-1]] = vals[0] if len(vals) == 1 else vals

    def ordered(node: Any) -> Any:
        return {k: ordered(node[k]) for k in sorted(node)} if isinstance(node, dict) else node

    return ordered(out)


@dataclass
class Doc:
    source: dict[str, Any]
    seq_no: int
    primary_term: int = 1
    version: int = 1


@dataclass
class Index:
    name: str
    mappings: dict[str, Any]
    data_stream: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # flat, ``index.``-prefixed, values as strings
    docs: dict[str, Doc] = field(default_factory=dict)
    visible: dict[str, Doc] = field(default_factory=dict)  # what search sees: docs as of the last refresh
    seq: int = -1
    failure_store: bool = False  # a ``.fs-`` index of a data stream
    #: :func:`_by_time`'s sort of ``visible`` by ``@timestamp`` (``visible`` when sorted, the order, the documents)
    time_order: tuple[dict[str, Any], list[tuple[datetime, int]], list[tuple[str, Any]]] | None = field(
        default=None, repr=False, compare=False
    )

    def refresh(self) -> None:
        self.visible = dict(self.docs)

    @property
    def mode(self) -> str:
        return str(self.settings.get("index.mode", "standard")).lower()

    def source_of(self, doc: Doc) -> dict[str, Any]:
        """``_source`` as GET/search return it: synthetic for a LogsDB index (see :func:`synthetic_source`)."""
        return synthetic_source(self.mappings, doc.source) if self.mode == "logsdb" else doc.source

    @property
    def max_result_window(self) -> int:
        return int(self.settings.get("index.max_result_window", 10000))


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


def _merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = json.loads(json.dumps(v))
    return into


def _get(source: dict[str, Any], dotted: str) -> Any:
    node: Any = source
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _overlap(a: str, b: str) -> bool:
    return fnmatch.fnmatchcase(a.replace("*", "x"), b) or fnmatch.fnmatchcase(b.replace("*", "x"), a)


#: Failures that are never redirected to a failure store (TransportBulkAction/BulkOperation.processFailure:
#: version conflicts and rejections are returned as they are).
_NOT_REDIRECTED = ("version_conflict_engine_exception", "es_rejected_execution_exception")


class EsState:
    """Everything the server stores; survives :meth:`EsServer.stop`/:meth:`EsServer.start`."""

    def __init__(self, personality: Personality, builtin_templates: bool) -> None:
        self.p = personality
        self.version = personality.version
        self.major = int(self.version.split(".")[0])
        self.lock = threading.RLock()
        self.component_templates: dict[str, dict[str, Any]] = {}
        self.index_templates: dict[str, dict[str, Any]] = {}
        self.ilm: dict[str, dict[str, Any]] = {}
        self.indices: dict[str, Index] = {}
        self.data_streams: dict[str, dict[str, Any]] = {}
        self.scrolls: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self.ids = itertools.count(1)
        if builtin_templates:
            # Elasticsearch's own logs/metrics templates, priority 100 (elastic.objects docstring), reduced to what
            # matters for dynamic mapping (x-pack/plugin/core/template-resources: data-streams@mappings maps
            # data_stream.{type,dataset,namespace} as constant_keyword; ecs@mappings' last dynamic template,
            # all_strings_to_keywords, maps strings to keyword with ignore_above 1024).
            const = {"type": "constant_keyword"}
            builtin = {
                "dynamic": True,
                "dynamic_templates": [
                    {
                        "all_strings_to_keywords": {
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword", "ignore_above": 1024},
                        }
                    }
                ],
                "properties": {
                    "@timestamp": {"type": "date"},
                    "data_stream": {"properties": {"type": const, "dataset": const, "namespace": const}},
                },
            }
            for kind in ("logs", "metrics"):
                self.index_templates[kind] = {
                    "index_patterns": [f"{kind}-*-*"],
                    "priority": 100,
                    "data_stream": {},
                    "allow_auto_create": True,
                    "composed_of": [],
                    "template": {"mappings": json.loads(json.dumps(builtin))},
                }

    # --- templates ----------------------------------------------------------------------------------
    def template_for(self, name: str) -> tuple[str, dict[str, Any]] | None:
        found = [
            (t.get("priority", 0), n, t)
            for n, t in self.index_templates.items()
            if any(fnmatch.fnmatchcase(name, p) for p in t["index_patterns"])
        ]
        if not found:
            return None
        _, tname, template = max(found, key=lambda f: f[0])
        return tname, template

    def _parts(self, template: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            self.component_templates[c]["template"]
            for c in template.get("composed_of", [])
            if c in self.component_templates
        ] + [template.get("template") or {}]

    def mappings_of(self, template: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {"properties": {}}
        for part in self._parts(template):
            _compose(merged, json.loads(json.dumps(part.get("mappings") or {})))
        return merged

    def settings_of(self, template: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for part in self._parts(template):
            flat.update(_flat_settings(part.get("settings")))
        return flat

    def template_option(self, template: dict[str, Any], key: str) -> Any:
        """``lifecycle``/``data_stream_options`` of the composed template (later parts win)."""
        found = None
        for part in self._parts(template):
            if part.get(key) is not None:
                found = _merge(found or {}, part[key])
        return found

    def _check_template_body(self, name: str, template: dict[str, Any] | None) -> None:
        """The ``template`` object's own fields (ComponentTemplate/Template PARSER): ``lifecycle`` exists from 8.11
        (data stream lifecycle), ``data_stream_options`` from the failure store versions; on older versions they
        are an ``x_content_parse_exception`` "[template] unknown field [...]" (the real message is prefixed with the
        parser position, ``[1:NN]``, not modelled)."""
        for key, ok in (("lifecycle", self.p.lifecycle), ("data_stream_options", self.p.failure_store)):
            if template and key in template and not ok:
                raise EsError(400, "x_content_parse_exception", f"[template] unknown field [{key}]")
        retention = ((template or {}).get("lifecycle") or {}).get("data_retention")
        if retention is not None and not re.fullmatch(r"\d+(nanos|micros|ms|s|m|h|d)", str(retention)):
            # TimeValue.parseTimeValue (wording of the wrapped error not verified)
            raise EsError(
                400,
                "illegal_argument_exception",
                f"failed to parse setting [data_retention] with value "
                f"[{retention}] as a time value: unit is missing or unrecognized",
            )

    def put_component_template(self, name: str, body: dict[str, Any]) -> None:
        """MetadataIndexTemplateService.addComponentTemplate: ``validateTemplate`` creates a throw-away index with the
        template's settings and mappings (so settings fail as on index creation, then the mappings are parsed),
        then every composable template using this component is validated again: a failure there is
        "updating component template [x] results in invalid composable template [y] after templates are merged"."""
        template = body.get("template") or {}
        self._check_template_body(name, template)
        _check_index_settings(_flat_settings(template.get("settings")), self.p)
        parse_mappings(template.get("mappings"))
        old = self.component_templates.get(name)
        self.component_templates[name] = body
        try:
            for tname, t in self.index_templates.items():
                if name in t.get("composed_of", []):
                    try:
                        parse_mappings(self.mappings_of(t))
                    except EsError as exc:
                        raise EsError(
                            400,
                            "illegal_argument_exception",
                            f"updating component template [{name}] results in invalid composable template "
                            f"[{tname}] after templates are merged",
                            exc.error(),
                        ) from None
        except EsError:
            if old is None:
                del self.component_templates[name]
            else:
                self.component_templates[name] = old
            raise

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        missing = [c for c in body.get("composed_of", []) if c not in self.component_templates]
        if missing:
            raise EsError(
                400,
                "invalid_index_template_exception",
                f"index_template [{name}] invalid, cause [index template [{name}] specifies component "
                f"templates {missing} that do not exist]",
            )
        for other, t in self.index_templates.items():  # MetadataIndexTemplateService: same-priority overlap
            if (
                other != name
                and t.get("priority", 0) == body.get("priority", 0)
                and any(_overlap(a, b) for a in t["index_patterns"] for b in body["index_patterns"])
            ):
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"index template [{name}] has index patterns {body['index_patterns']} matching "
                    f"patterns from existing templates [{other}] that have the same priority "
                    f"[{body.get('priority', 0)}], multiple index templates may not match during "
                    "index creation, please use a different priority",
                )
        template = body.get("template") or {}
        self._check_template_body(name, template)
        # MetadataIndexTemplateService.validate(name, template, ...): settings errors are collected into a
        # ValidationException and thrown as InvalidIndexTemplateException (also seen in elastic/docs-content#3914:
        # "index_template [x] invalid, cause [Validation Failed: 1: unknown setting [...] did you mean [...]?;]").
        errors = _settings_errors(_flat_settings(template.get("settings")), self.p)
        if errors:
            cause = "Validation Failed: " + "".join(f"{i}: {e};" for i, e in enumerate(errors, 1))
            raise EsError(400, "invalid_index_template_exception", f"index_template [{name}] invalid, cause [{cause}]")
        if template.get("lifecycle") is not None and "data_stream" not in body:
            # MetadataIndexTemplateService.validateLifecycle
            raise EsError(
                400,
                "illegal_argument_exception",
                f"index template [{name}] specifies lifecycle "
                "configuration that can only be used in combination with a data stream",
            )
        # validateIndexTemplateV2 -> validateCompositeTemplate: the composed mappings must parse, else
        # "composable template [x] template after composition [with component templates [...] ]is invalid".
        try:
            parse_mappings(self.mappings_of(body))
        except EsError as exc:
            comps = body.get("composed_of") or []
            with_comps = f"with component templates [{', '.join(comps)}] " if comps else ""
            raise EsError(
                400,
                "illegal_argument_exception",
                f"composable template [{name}] template after composition {with_comps}is invalid",
                exc.error(),
            ) from None
        self.index_templates[name] = body

    # --- indices and data streams ----------------------------------------------------------------------
    def create_index(self, name: str, body: dict[str, Any], template: dict[str, Any] | None = None) -> Index:
        """MetadataCreateIndexService: template settings/mappings, then the request's; settings validated
        (IndexScopedSettings, plain ``illegal_argument_exception``), mappings parsed ("Failed to parse mapping")."""
        if name in self.indices or name in self.data_streams:
            raise EsError(400, "resource_already_exists_exception", f"index [{name}] already exists")
        settings = self.settings_of(template) if template else {}
        settings.update(_flat_settings(body.get("settings")))
        _check_index_settings(settings, self.p)
        parse_mappings(body.get("mappings"))
        mappings = self.mappings_of(template) if template else {"properties": {}}
        _compose(mappings, json.loads(json.dumps(body.get("mappings") or {})))
        index = self.indices[name] = Index(name, mappings, settings=settings)
        return index

    def create_data_stream(self, name: str) -> dict[str, Any]:
        if name in self.data_streams or name in self.indices:
            raise EsError(400, "resource_already_exists_exception", f"data_stream [{name}] already exists")
        found = self.template_for(name)
        if found is None or "data_stream" not in found[1]:
            raise EsError(
                400, "illegal_argument_exception", f"no matching index template found for data stream [{name}]"
            )
        template = found[1]
        options = self.template_option(template, "data_stream_options") or {}
        enabled = (options.get("failure_store") or {}).get("enabled")
        if enabled is None:  # cluster setting data_streams.failure_store.enabled (patterns)
            enabled = any(fnmatch.fnmatchcase(name, p) for p in self.p.failure_store_patterns)
        # The index mode is decided when the data stream is created (LogsdbIndexModeSettingsProvider: only when
        # the template does not set index.mode).
        mode = self.settings_of(template).get("index.mode")
        if mode is None and self.p.logsdb and fnmatch.fnmatchcase(name, "logs-*-*"):
            mode = "logsdb"
        ds = {
            "name": name,
            "template": found[0],
            "indices": [],
            "generation": 0,
            "index_mode": mode or "standard",
            "failure_store": bool(enabled and self.p.failure_store),
            "failure_indices": [],
            "lifecycle": self.template_option(template, "lifecycle") if self.p.lifecycle else None,
        }
        self.data_streams[name] = ds
        self.rollover(name)
        return ds

    def rollover(self, name: str) -> tuple[str, str]:
        """A new write index named as DataStream.getDefaultBackingIndexName (``.ds-<ds>-<uuuu.MM.dd>-<%06d gen>``),
        with the template's mappings and settings *as they are now*: a template change reaches a data stream only
        at its next rollover; existing backing indices keep their mappings (PUT <ds>/_mapping changes them)."""
        ds = self.data_streams[name]
        tname, template = self.template_for(name) or (ds["template"], self.index_templates[ds["template"]])
        ds["generation"] += 1
        backing = f".ds-{name}-{time.strftime('%Y.%m.%d', time.gmtime())}-{ds['generation']:06d}"
        mappings = _compose(self.mappings_of(template), {"properties": {"@timestamp": {"type": "date"}}})
        settings = {**self.settings_of(template), "index.hidden": "true"}
        if ds["index_mode"] != "standard":
            settings["index.mode"] = ds["index_mode"]
        self.indices[backing] = Index(backing, mappings, data_stream=name, settings=settings)
        old = ds["indices"][-1] if ds["indices"] else ""
        ds["indices"].append(backing)
        ds["template"] = tname
        return old, backing

    def failure_index(self, name: str) -> Index:
        """The failure store's write index, created lazily on the first failure with the data stream's next
        generation (DataStream.getDefaultFailureStoreName: ``.fs-<ds>-<uuuu.MM.dd>-<%06d gen>``)."""
        ds = self.data_streams[name]
        if not ds["failure_indices"]:
            ds["generation"] += 1
            fs = f".fs-{name}-{time.strftime('%Y.%m.%d', time.gmtime())}-{ds['generation']:06d}"
            self.indices[fs] = Index(
                fs,
                {"dynamic": False, "properties": {"@timestamp": {"type": "date"}}},
                data_stream=name,
                settings={"index.hidden": "true"},
                failure_store=True,
            )
            ds["failure_indices"].append(fs)
        return self.indices[ds["failure_indices"][-1]]

    def delete_index(self, expr: str) -> None:
        for part in expr.split(","):
            if part in self.data_streams:  # MetadataDeleteIndexService: a data stream is not an index
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"index [{part}] is the write index for data stream [{part}] and cannot be deleted",
                )
            index = self.indices.get(part)
            if index is None:
                raise _no_index(part)
            if index.data_stream and self.data_streams[index.data_stream]["indices"][-1] == part:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"index [{part}] is the write index for data stream [{index.data_stream}] and cannot be deleted",
                )
            del self.indices[part]
            if index.data_stream:
                self.data_streams[index.data_stream]["indices"].remove(part)

    def delete_data_stream(self, expr: str) -> None:
        for part in expr.split(","):
            names = [n for n in self.data_streams if fnmatch.fnmatchcase(n, part)] if "*" in part else [part]
            for name in names:
                if name not in self.data_streams:
                    raise EsError(404, "resource_not_found_exception", f"data_stream matching [{name}] not found")
                ds = self.data_streams.pop(name)
                for i in ds["indices"] + ds["failure_indices"]:
                    self.indices.pop(i, None)

    def resolve(self, expr: str, ignore_unavailable: bool = False) -> list[Index]:
        """Comma-separated names/wildcards -> concrete indices (data streams expand to backing indices;
        ``<ds>::failures`` to its failure store indices)."""
        out: list[Index] = []
        for part in expr.split(","):
            failures = part.endswith("::failures")
            part = part.removesuffix("::failures")
            if "*" in part:
                names = [n for n in self.data_streams if fnmatch.fnmatchcase(n, part)]
                names += [n for n in self.indices if fnmatch.fnmatchcase(n, part) and not n.startswith(".")]
            elif part in self.data_streams or part in self.indices:
                names = [part]
            elif ignore_unavailable:
                names = []
            else:
                raise _no_index(part)
            for n in names:
                if n in self.data_streams:
                    key = "failure_indices" if failures else "indices"
                    out += [self.indices[i] for i in self.data_streams[n][key]]
                else:
                    out.append(self.indices[n])
        return out

    def auto_create(self, target: str) -> None:
        """AutoCreateIndex.shouldAutoCreate (server/src/main/java/org/elasticsearch/action/support/
        AutoCreateIndex.java): a template's ``allow_auto_create`` wins; otherwise ``action.auto_create_index``
        (default true) decides; false is a 404 "no such index [x] and [action.auto_create_index] is [false]".
        Allowed, a name whose template has ``data_stream`` becomes a data stream, anything else a plain index
        with the template's (or no) mappings: dynamic mappings, so a deleted index is silently re-created."""
        found = self.template_for(target)
        allow = found[1].get("allow_auto_create") if found else None
        if allow is False:
            raise EsError(
                404,
                "index_not_found_exception",
                f"no such index [{target}] and composable template "
                f"{_java_str(found[1]['index_patterns'])} forbids index auto creation",
            )
        if allow is None and not self.p.auto_create_index:
            raise EsError(
                404, "index_not_found_exception", f"no such index [{target}] and [action.auto_create_index] is [false]"
            )
        if found is not None and "data_stream" in found[1]:
            self.create_data_stream(target)
        else:
            self.create_index(target, {}, found[1] if found else None)

    # --- writes ---------------------------------------------------------------------------------------
    def write(
        self,
        op: str,
        target: str,
        doc_id: str | None,
        source: dict[str, Any] | None,
        if_seq_no: int | None = None,
        if_primary_term: int | None = None,
    ) -> dict[str, Any]:
        """One document operation, as a bulk item result (raises :class:`EsError` for an item error).

        An error raised once the document reached its concrete index (a shard-level failure: parsing, mapping,
        409) carries ``_index`` = that index, i.e. the backing index for a data stream
        (TransportShardBulkAction builds ``BulkItemResponse.Failure`` with ``context.getConcreteIndex()``);
        coordinating-level refusals keep the name the request used."""
        if target in self.data_streams:
            if op != "create":  # R §2: "Data streams support only the create action"
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    "only write ops with an op_type of create are allowed in data streams",
                )
            index = self.indices[self.data_streams[target]["indices"][-1]]
        elif target in self.indices:
            index = self.indices[target]
            if index.data_stream and op == "create":  # TransportBulkAction.prohibitAppendWritesInBackingIndices
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    "index request with op_type=create targeting backing indices is disallowed, target "
                    f"corresponding data stream [{index.data_stream}] instead",
                )
            if index.data_stream and op == "index" and if_seq_no is None:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    "index request with op_type=index and no if_primary_term and if_seq_no set targeting "
                    f"backing indices is disallowed, target corresponding data stream [{index.data_stream}]"
                    " instead",
                )
        elif op == "delete":
            raise _no_index(target)
        else:
            self.auto_create(target)
            return self.write(op, target, doc_id, source, if_seq_no, if_primary_term)
        try:
            return self._write_in(index, op, doc_id, source, if_seq_no, if_primary_term)
        except EsError as exc:
            exc.index = exc.index or index.name
            if target in self.data_streams and op != "delete" and exc.type not in _NOT_REDIRECTED:
                return self._redirect(target, doc_id, source, exc)
            raise

    def _redirect(self, ds_name: str, doc_id: str | None, source: Any, exc: EsError) -> dict[str, Any]:
        """The failure store (reference failure-store.md "Failure redirection"; IndexDocFailureStoreStatus): with it
        enabled, a document that fails parsing/mapping is stored in the failure index and the item is a 201 with
        ``failure_store: "used"``; on a version that has the failure store but with it disabled, the error item
        says ``failure_store: "not_enabled"`` (version conflicts and rejections are never redirected)."""
        ds = self.data_streams[ds_name]
        if not self.p.failure_store:
            raise exc
        if not ds["failure_store"]:
            exc.failure_store = "not_enabled"
            raise exc
        fs = self.failure_index(ds_name)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        failure = {
            "@timestamp": now,
            "document": {"id": doc_id, "index": ds_name, "source": source},
            "error": {"type": exc.type, "message": exc.reason, "stack_trace": ""},
        }
        item = self._write_in(fs, "create", None, failure, None, None)
        return {**item, "failure_store": "used"}

    def _write_in(
        self,
        index: Index,
        op: str,
        doc_id: str | None,
        source: dict[str, Any] | None,
        if_seq_no: int | None,
        if_primary_term: int | None,
    ) -> dict[str, Any]:
        doc_id = doc_id or base64.urlsafe_b64encode(next(self.ids).to_bytes(8, "big")).decode().rstrip("=")
        cur = index.docs.get(doc_id)
        if if_seq_no is not None:
            if cur is None:
                raise EsError(
                    409,
                    "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, required seqNo [{if_seq_no}], primary term "
                    f"[{if_primary_term}]. but no document was found",
                )
            if (cur.seq_no, cur.primary_term) != (if_seq_no, if_primary_term):
                raise EsError(
                    409,
                    "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, required seqNo [{if_seq_no}], primary term "
                    f"[{if_primary_term}]. current document has seqNo [{cur.seq_no}] and primary "
                    f"term [{cur.primary_term}]",
                )
        item = {"_index": index.name, "_id": doc_id}
        if op == "delete":
            if cur is None:
                return {**item, "result": "not_found", "status": 404}
            index.seq += 1
            del index.docs[doc_id]
            return {**item, "result": "deleted", "status": 200, "_seq_no": index.seq, "_primary_term": 1}
        if op == "create" and cur is not None:
            raise EsError(
                409,
                "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, document already exists (current version [{cur.version}])",
            )
        assert source is not None
        if index.data_stream and not index.failure_store and "@timestamp" not in source:
            raise EsError(400, "illegal_argument_exception", "data stream timestamp field [@timestamp] is missing")
        _check(index.mappings, source, doc_id)
        index.seq += 1
        version = cur.version + 1 if cur else 1
        index.docs[doc_id] = Doc(json.loads(json.dumps(source)), index.seq, 1, version)
        return {
            **item,
            "_version": version,
            "result": "updated" if cur else "created",
            "_seq_no": index.seq,
            "_primary_term": 1,
            "status": 200 if cur else 201,
            "_shards": {"total": 1, "successful": 1, "failed": 0},
        }

    # --- mappings ---------------------------------------------------------------------------------------
    def put_mapping(self, expr: str, body: dict[str, Any], write_index_only: bool = False) -> None:
        """PUT <target>/_mapping: parsed, then merged into every concrete index (the write index only with
        ``write_index_only``); MetadataMappingService applies it to all or none, so conflicts are checked on
        copies first."""
        parse_mappings(body)
        targets = self.resolve(expr)
        if write_index_only:
            targets = [
                i for i in targets if not i.data_stream or self.data_streams[i.data_stream]["indices"][-1] == i.name
            ]
        merged = {}
        for index in targets:
            copy = json.loads(json.dumps(index.mappings))
            _merge_update(copy, body)
            merged[index.name] = copy
        for index in targets:
            index.mappings = merged[index.name]

    # --- search ---------------------------------------------------------------------------------------
    def search(self, indices: list[Index], body: dict[str, Any], params: dict[str, str]) -> list[dict[str, Any]]:
        query = body.get("query") or {"match_all": {}}
        want_seq = body.get("seq_no_primary_term") or params.get("seq_no_primary_term") == "true"
        includes = params.get("_source_includes")
        src_filter = body.get("_source", includes.split(",") if includes else True)
        hits = []
        position = 0
        for index in indices:
            candidates = _by_time(index, query)
            for doc_id, doc in index.visible.items() if candidates is None else candidates:
                position += 1
                source = index.source_of(doc)
                if not _matches(query, doc_id, source):
                    continue
                hit: dict[str, Any] = {
                    "_index": index.name,
                    "_id": doc_id,
                    "_score": 1.0,
                    "_source": _filter_source(source, src_filter),
                    "_doc": position,
                }
                if want_seq:
                    hit.update(_seq_no=doc.seq_no, _primary_term=doc.primary_term)
                hits.append(hit)
        keys = _sort_keys(body.get("sort") or params.get("sort"))
        for key, order in reversed(keys):
            hits.sort(key=lambda h, k=key: _sort_value(h, k), reverse=order == "desc")
        for hit in hits:
            if keys:
                hit["sort"] = [_sort_value(hit, k)[1] for k, _ in keys]
                hit["_score"] = None
        after = body.get("search_after")
        if after is not None:
            if not keys:  # SearchSourceBuilder / SearchAfterBuilder
                raise EsError(400, "illegal_argument_exception", "[search_after] requires sort to be specified")
            hits = [h for h in hits if _after(h["sort"], after, [o for _, o in keys])]
        for hit in hits:
            hit.pop("_doc")
        return hits


_TIME_ORDER_LOCK = threading.Lock()


def _by_time(index: Index, query: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """For a top-level ``range`` query on ``@timestamp``: the documents whose timestamp may match, in the order a
    full scan visits them; ``None`` otherwise (a full scan). Only a speed-up of this model (a search scans every
    document in Python, and a reader of one day per search would scan a data stream once per day): the candidates
    are still checked by :func:`_matches`, and an index with a timestamp that is not a date is scanned in full."""
    spec = query.get("range", {}).get("@timestamp") if len(query) == 1 else None
    if not isinstance(spec, dict) or set(spec) - {"gt", "gte", "lt", "lte"}:
        return None
    visible = index.visible
    with _TIME_ORDER_LOCK:
        cached = index.time_order
        if cached is None or cached[0] is not visible:  # refreshed since: sort again
            docs = list(visible.items())
            stamps = [_get(index.source_of(doc), "@timestamp") for _, doc in docs]
            keys = [_parse_date_text(t) if isinstance(t, str) else None for t in stamps]
            if any(k is None for k in keys):
                return None
            cached = index.time_order = (visible, sorted((k, i) for i, k in enumerate(keys) if k is not None), docs)
    _, order, docs = cached
    low = _parse_date(spec.get("gte", spec.get("gt")))
    high = _parse_date(spec.get("lte", spec.get("lt")))
    first = 0 if low is None else bisect.bisect_left(order, (low, -1))
    last = len(order) if high is None else bisect.bisect_right(order, (high, len(order)))
    return [docs[i] for i in sorted(i for _, i in order[first:last])]


def _after(values: list[Any], after: list[Any], orders: list[str]) -> bool:
    for v, a, order in zip(values, after, orders, strict=False):
        if v == a:
            continue
        try:
            greater = v > a
        except TypeError:
            greater = str(v) > str(a)
        return greater if order != "desc" else not greater
    return False


def _sort_keys(sort: Any) -> list[tuple[str, str]]:
    if not sort:
        return []
    keys = []
    for entry in sort if isinstance(sort, list) else [sort]:
        if isinstance(entry, str):
            name, _, order = entry.partition(":")
            keys.append((name, order or "asc"))
        else:
            ((name, spec),) = entry.items()
            keys.append((name, spec.get("order", "asc") if isinstance(spec, dict) else spec))
    return keys


def _sort_value(hit: dict[str, Any], key: str) -> tuple[bool, Any]:
    if key in ("_doc", "_shard_doc"):
        return False, hit["_doc"]
    value = hit["_index"] if key == "_index" else hit["_id"] if key == "_id" else _get(hit["_source"], key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        value = None if value is None else str(value)
    return value is None, value if value is not None else ""


def _matches(query: dict[str, Any], doc_id: str, source: dict[str, Any]) -> bool:
    ((kind, arg),) = query.items()
    if kind == "match_all":
        return True
    if kind == "ids":
        return doc_id in arg["values"]
    if kind in ("term", "terms"):
        ((fname, value),) = arg.items()
        values = value if kind == "terms" else [value["value"] if isinstance(value, dict) else value]
        actual = doc_id if fname == "_id" else _get(source, fname)
        return actual in values
    if kind == "range":
        return _in_range(arg, source)
    if kind == "bool":

        def listed(key: str) -> list[dict[str, Any]]:
            value = arg.get(key) or []
            return value if isinstance(value, list) else [value]

        return all(_matches(c, doc_id, source) for c in listed("must") + listed("filter")) and not any(
            _matches(c, doc_id, source) for c in listed("must_not")
        )
    raise EsError(400, "parsing_exception", f"unknown query [{kind}] (not modelled by the test server)")


def _in_range(arg: dict[str, Any], source: dict[str, Any]) -> bool:
    """``range`` query (Elasticsearch reference, Query DSL "Range query"; elasticsearch
    ``server/src/main/java/org/elasticsearch/index/query/RangeQueryBuilder.java``): ``gt``/``gte``/``lt``/``lte`` on a
    numeric or a date field; a date bound is an ISO 8601 string or epoch milliseconds (the date field's default
    format, ``strict_date_optional_time||epoch_millis``: ``DateFieldMapper.DEFAULT_DATE_TIME_FORMATTER`` in
    ``server/src/main/java/org/elasticsearch/index/mapper/DateFieldMapper.java``). Other parameters (``format``,
    ``time_zone``, ``relation``) and ranges over strings are not modelled: refused."""
    ((fname, bounds),) = arg.items()
    unknown = sorted(set(bounds) - {"gt", "gte", "lt", "lte"})
    if unknown:
        raise EsError(400, "parsing_exception", f"[range] query parameter [{unknown[0]}] is not modelled")
    actual = _get(source, fname)
    if actual is None:
        return False
    numeric = isinstance(actual, int | float) and not isinstance(actual, bool)
    value = actual if numeric else _parse_date_text(actual) if isinstance(actual, str) else _parse_date(actual)
    if value is None:
        raise EsError(400, "parsing_exception", f"[range] on [{fname}]: only numeric and date fields are modelled")
    for op, bound in bounds.items():
        limit = bound if numeric else _parse_date(bound)
        if limit is None or (numeric and not isinstance(limit, int | float)):
            raise EsError(400, "parse_exception", f"failed to parse [{bound}] for the [{op}] of [{fname}]")
        ok = {"gt": value > limit, "gte": value >= limit, "lt": value < limit, "lte": value <= limit}[op]
        if not ok:
            return False
    return True


@functools.lru_cache(maxsize=1 << 16)
def _parse_date_text(value: str) -> datetime | None:
    """:func:`_parse_date` of a string, remembered (a range query reads every document's ``@timestamp``, and a data
    stream of buckets holds few distinct ones)."""
    return _parse_date(value)


def _filter_source(source: dict[str, Any], spec: Any) -> dict[str, Any]:
    if spec is True or spec is None:
        return source
    if spec is False:
        return {}
    paths = spec if isinstance(spec, list) else spec.get("includes", []) if isinstance(spec, dict) else [spec]
    out: dict[str, Any] = {}
    for p in paths:
        value = _get(source, p)
        if value is not None:
            node = out
            *head, leaf = p.split(".")
            for part in head:
                node = node.setdefault(part, {})
            node[leaf] = value
    return out


_NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}


def _dynamic_mapping(value: Any, templates: list[dict[str, Any]] = (), path: str = "") -> dict[str, Any] | None:
    """Dynamic field mapping with the defaults (reference "Dynamic field mapping"; DynamicFieldsBuilder): a string
    that date detection recognises (``strict_date_optional_time``, ``yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z``) is a
    ``date``, another string ``text`` with a ``keyword`` sub-field (``ignore_above: 256``); a whole number ``long``,
    a fraction ``float``, a boolean ``boolean``, an object ``object``; an array maps as its first non-null value;
    ``null`` adds no field. ``dynamic_templates`` apply first, in order (reference "Dynamic templates"): the first
    whose ``match_mapping_type`` (``long`` for a whole number, ``double`` for a fraction, ``string``, ``*``) and
    ``path_match``/``match`` (simple ``*`` wildcards, on the full dotted path / the leaf name) fit wins."""
    if isinstance(value, list):
        value = next((v for v in value if v is not None), None)
    if value is None:
        return None
    if isinstance(value, dict):
        return {"properties": {}}
    if isinstance(value, bool):
        return {"type": "boolean"}
    detected = "long" if isinstance(value, int) else "double" if isinstance(value, float) else "string"
    date = re.compile(
        r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?|"
        r"\d{4}/\d{2}/\d{2}( \d{2}:\d{2}:\d{2})?( [+-]\d{4})?"
    )
    if detected == "string" and date.fullmatch(str(value)):
        return {"type": "date"}
    for entry in templates:
        (spec,) = entry.values()
        if set(spec) - {"match_mapping_type", "mapping", "path_match", "match"}:
            continue  # other conditions are not modelled: never matches
        if spec.get("match_mapping_type") not in ("*", detected):
            continue
        if "path_match" in spec and not fnmatch.fnmatchcase(path, spec["path_match"]):
            continue
        if "match" in spec and not fnmatch.fnmatchcase(path.rsplit(".", 1)[-1], spec["match"]):
            continue
        return json.loads(json.dumps(spec["mapping"]))
    if detected == "long":
        return {"type": "long"}
    if detected == "double":
        return {"type": "float"}
    return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


def _check(mappings: dict[str, Any], source: dict[str, Any], doc_id: str) -> None:
    """Enforce mapped types and ``dynamic: strict`` like Elasticsearch's document parser."""

    def walk(props: dict[str, Any], dynamic: Any, obj: dict[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            path = prefix + key
            m = props.get(key)
            if m is None:
                if str(dynamic).lower() == "strict":
                    raise EsError(
                        400,
                        "strict_dynamic_mapping_exception",
                        f"[1:2] mapping set to strict, dynamic introduction of [{key}] within "
                        f"[{prefix[:-1] or '_doc'}] is not allowed",
                    )
                if str(dynamic).lower() == "true":
                    inferred = _dynamic_mapping(value, mappings.get("dynamic_templates") or [], path)
                    if inferred is None:
                        continue
                    props[key] = m = inferred
                else:
                    continue  # dynamic false / runtime: kept in _source, not indexed
            if "properties" in m or m.get("type") == "object":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise EsError(
                        400,
                        "document_parsing_exception",
                        f"[1:2] object mapping for [{path}] tried to parse field [{key}] as object, "
                        "but found a concrete value",
                    )
                walk(m.setdefault("properties", {}), m.get("dynamic", dynamic), value, path + ".")
            else:
                for v in value if isinstance(value, list) else [value]:
                    _check_leaf(m, v, path, doc_id)

    walk(mappings.setdefault("properties", {}), mappings.get("dynamic", True), source, "")


def _check_leaf(m: dict[str, Any], value: Any, path: str, doc_id: str) -> None:
    kind = m.get("type", "object")
    ok = True
    if value is None:
        return
    if kind in _NUMERIC:
        ok = not isinstance(value, bool | dict | list)
        if ok and isinstance(value, str):
            ok = re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value.strip()) is not None
    elif kind == "date":
        ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value) is not None
        )
    elif kind == "boolean":
        ok = value in (True, False, "true", "false", "")
    elif kind == "constant_keyword":
        if "value" not in m:
            m["value"] = value
        elif m["value"] != value:
            raise EsError(
                400,
                "document_parsing_exception",
                f"[1:2] failed to parse field [{path}] of type [constant_keyword] in document with id "
                f"'{doc_id}'. Preview of field's value: '{value}'",
                {
                    "type": "illegal_argument_exception",
                    "reason": f"[constant_keyword] field [{path}] only "
                    f"accepts values that are equal to the value defined in the mappings [{m['value']}], "
                    f"but got [{value}]",
                },
            )
    elif kind in ("keyword", "text", "match_only_text", "wildcard"):
        ok = not isinstance(value, dict)
    if not ok:
        raise EsError(
            400,
            "document_parsing_exception",
            f"[1:2] failed to parse field [{path}] of type [{kind}] in document with id '{doc_id}'. "
            f"Preview of field's value: '{value}'",
        )


class EsServer:
    """An Elasticsearch-protocol server on 127.0.0.1 (ephemeral port); use as a context manager.

    Args:
        version: the version banner, e.g. ``"8.15.0"`` or ``"9.1.0"``; it also picks the defaults below.
        api_key: when set, requests must carry ``Authorization: ApiKey <api_key>``.
        basic: when set, requests must carry HTTP basic ``(user, password)``. With neither, requests are
            served as the anonymous user with every privilege (``xpack.security.authc.anonymous.roles``).
        builtin_templates: model Elasticsearch's built-in ``logs``/``metrics`` templates (priority 100).
        ilm: the ILM plugin is there; without it every ``_ilm/*`` request is a 400 "no handler found" and
            ``index.lifecycle.*`` settings are unknown (as on a cluster without ILM, e.g. serverless).
        security: security enabled; disabled, ``_security/*`` is a 400 "no handler found" (credentials then
            must not be configured: Elasticsearch ignores them).
        logsdb: new ``logs-*-*`` data streams get ``index.mode: logsdb`` (synthetic ``_source``) unless their
            template sets ``index.mode``; default: version 9.0 or later.
        failure_store: the failure store exists (default: 8.19+ in 8.x, 9.1+); a string is also the cluster
            setting ``data_streams.failure_store.enabled`` (comma-separated data stream patterns).
        auto_create_index: ``action.auto_create_index`` (writing to a missing index creates it).
    """

    def __init__(
        self,
        version: str = "9.1.0",
        *,
        api_key: str | None = None,
        basic: tuple[str, str] | None = None,
        builtin_templates: bool = True,
        ilm: bool = True,
        security: bool = True,
        logsdb: bool | None = None,
        failure_store: bool | str | None = None,
        auto_create_index: bool = True,
    ) -> None:
        if not security and (api_key is not None or basic is not None):
            raise ValueError("security=False: Elasticsearch does not authenticate, so api_key/basic make no sense")
        self.personality = Personality.of(
            version,
            ilm=ilm,
            security=security,
            logsdb=logsdb,
            failure_store=failure_store,
            auto_create_index=auto_create_index,
        )
        self.state = EsState(self.personality, builtin_templates)
        self.api_key, self.basic = api_key, basic
        self.requests: list[Recorded] = []
        self.denied_privileges: set[str] = set()
        self._reject: list[tuple[int, int]] = []  # (items left, status)
        self._fail_ids: dict[str, EsError] = {}
        self._bulks_left: int | None = None
        self.down = False
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`); the stored data is kept."""
        server = self

        class Handler(_Handler):
            es = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.down, self._bulks_left = False, None
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Go down: refuse new connections and drop requests on open ones."""
        self.down = True
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()

    # --- fault hooks ------------------------------------------------------------------------------------
    def reject_next_items(self, n: int, status: int = 429) -> None:
        """The next ``n`` bulk items get an item-level ``status`` (``es_rejected_execution_exception``)."""
        self._reject.append((n, status))

    def fail_item(
        self,
        doc_id: str,
        reason: str = "injected failure",
        type_: str = "illegal_argument_exception",
        status: int = 400,
    ) -> None:
        """Every bulk item for ``doc_id`` fails with this error until :meth:`heal`."""
        self._fail_ids[doc_id] = EsError(status, type_, reason)

    def heal(self) -> None:
        self._fail_ids.clear()
        self._reject.clear()

    def die_after_bulks(self, n: int) -> None:
        """Serve ``n`` more bulk requests, then drop every request and stop, as a crashed node would."""
        self._bulks_left = n

    # --- test helpers ---------------------------------------------------------------------------------
    def rollover(self, data_stream: str) -> str:
        with self.state.lock:
            return self.state.rollover(data_stream)[1]

    def copies(self, doc_id: str) -> list[str]:
        """The indices holding ``doc_id`` (real time)."""
        return [i.name for i in self.state.indices.values() if doc_id in i.docs]

    def source(self, index: str, doc_id: str) -> dict[str, Any]:
        return self.state.indices[index].docs[doc_id].source

    def headers_of(self, path_suffix: str) -> list[dict[str, str]]:
        return [r.headers for r in self.requests if r.path.split("?")[0].endswith(path_suffix)]

    def take_item_fault(self, doc_id: str | None) -> EsError | None:
        if doc_id in self._fail_ids:
            return self._fail_ids[doc_id]
        if self._reject:
            n, status = self._reject[0]
            self._reject[0] = (n - 1, status)
            if n - 1 <= 0:
                self._reject.pop(0)
            return EsError(
                status,
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation [injected by the test server]",
            )
        return None


class _Handler(BaseHTTPRequestHandler):
    es: EsServer
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # one buffered write per response (flushed by handle_one_request) ...
    disable_nagle_algorithm = True  # ... and no 40 ms delayed-ACK stall per request

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        es = self.es
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if es.down or (es._bulks_left == 0 and self.path.split("?")[0].endswith("_bulk")):
            es.down = True
            threading.Thread(target=es.stop, daemon=True).start()
            self.close_connection = True  # no response at all: the client sees a dropped connection
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        es.requests.append(Recorded(self.command, self.path, headers, raw))
        accept, ctype = headers.get("accept", ""), headers.get("content-type", "")
        try:
            self._check_media(accept, ctype, bool(raw))
            self._check_auth(headers.get("authorization", ""))
            with es.state.lock:
                status, body = self._route(raw)
        except EsError as exc:
            status, body = exc.status, exc.body()
        except RawError as exc:
            status, body = exc.status, exc.body
        compat = re.search(r"compatible-with=(\d+)", accept)
        out = b"" if self.command == "HEAD" else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header(
            "Content-Type",
            f"application/vnd.elasticsearch+json;compatible-with={compat.group(1)}" if compat else "application/json",
        )
        self.send_header("Content-Length", str(len(out) if self.command != "HEAD" else len(json.dumps(body))))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def _check_media(self, accept: str, ctype: str, has_body: bool) -> None:
        """RestCompatibleVersionHelper.getCompatibleVersion (see the module docstring)."""
        major = self.es.state.major

        def version(header: str) -> int | None:
            m = re.search(r"compatible-with=(\d+)", header)
            return int(m.group(1)) if m else None

        def fail(reason: str) -> EsError:
            return EsError(
                400,
                "media_type_header_exception",
                "Invalid media-type value on headers [Accept, Content-Type]",
                {"type": "status_exception", "reason": reason},
            )

        a, c = version(accept), version(ctype)
        av, cv = (major if a is None else a), (major if c is None else c)
        if not major - 1 <= av <= major:
            raise fail(f"Accept version must be either version {major} or {major - 1}, but found {av}. Accept={accept}")
        if has_body:
            if not major - 1 <= cv <= major:
                raise fail(
                    f"Content-Type version must be either version {major} or {major - 1}, but found {cv}. "
                    f"Content-Type={ctype}"
                )
            if av != cv or (a is None) != (c is None):
                raise fail(
                    "A compatible version is required on both Content-Type and Accept headers if either "
                    f"one has requested a compatible version. Accept={accept}, Content-Type={ctype}"
                )

    def _check_auth(self, header: str) -> None:
        es = self.es
        if not es.personality.security or (es.api_key is None and es.basic is None):
            return
        ok = (es.api_key is not None and header == f"ApiKey {es.api_key}") or (
            es.basic is not None and header == "Basic " + base64.b64encode(":".join(es.basic).encode()).decode()
        )
        if not ok:
            raise EsError(401, "security_exception", f"unable to authenticate user for REST request [{self.path}]")

    # --- routing --------------------------------------------------------------------------------------
    def _route(self, raw: bytes) -> tuple[int, Any]:
        st, p = self.es.state, self.es.personality
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [unquote(x) for x in url.path.split("/") if x]
        body = json.loads(raw) if raw and parts[-1:] != ["_bulk"] else {}
        m, n = self.command, len(parts)
        if n == 0:
            return 200, {
                "name": "test",
                "cluster_name": "es-test-server",
                "tagline": "You Know, for Search",
                "version": {"number": st.version, "build_flavor": "default"},
            }
        head = parts[0]
        if (head == "_ilm" and not p.ilm) or (head == "_security" and not p.security):
            raise _no_handler(self.path, m)
        if head == "_bulk":
            return 200, self._bulk(raw, params)
        if head == "_component_template" and n == 2:
            if m == "PUT":
                st.put_component_template(parts[1], body)
                return 200, {"acknowledged": True}
            if parts[1] not in st.component_templates:
                raise EsError(
                    404, "resource_not_found_exception", f"component template matching [{parts[1]}] not found"
                )
            body = st.component_templates[parts[1]]
            return 200, {"component_templates": [{"name": parts[1], "component_template": body}]}
        if head == "_index_template" and n == 2:
            if m == "PUT":
                st.put_index_template(parts[1], body)
                return 200, {"acknowledged": True}
            if parts[1] not in st.index_templates:
                raise EsError(404, "resource_not_found_exception", f"index template matching [{parts[1]}] not found")
            t = json.loads(json.dumps(st.index_templates[parts[1]]))
            if "data_stream" in t:  # Elasticsearch fills in defaults
                t["data_stream"] = {"hidden": False, "allow_custom_routing": False, **t["data_stream"]}
            return 200, {"index_templates": [{"name": parts[1], "index_template": t}]}
        if head == "_ilm" and n == 3 and parts[1] == "policy":
            if m == "PUT":
                prev = st.ilm.get(parts[2], {"version": 0})
                st.ilm[parts[2]] = {"version": prev["version"] + 1, "policy": body["policy"]}
                return 200, {"acknowledged": True}
            if parts[2] not in st.ilm:
                raise EsError(404, "resource_not_found_exception", f"Lifecycle policy not found: {parts[2]}")
            pol = json.loads(json.dumps(st.ilm[parts[2]]))
            for phase in pol["policy"]["phases"].values():
                phase.setdefault("min_age", "0ms")
            return 200, {parts[2]: {**pol, "modified_date": "2026-01-01T00:00:00.000Z"}}
        if head == "_data_stream" and n == 2:
            if m == "PUT":
                st.create_data_stream(parts[1])
                return 200, {"acknowledged": True}
            if m == "DELETE":
                st.delete_data_stream(parts[1])
                return 200, {"acknowledged": True}
            return 200, self._get_data_streams(parts[1])
        if head == "_data_stream" and n == 3 and parts[2] == "_lifecycle" and p.lifecycle:
            return 200, self._lifecycle(parts[1], body)
        if head == "_data_stream" and n == 3 and parts[2] == "_options" and p.failure_store:
            return 200, self._options(parts[1], body)
        if head == "_security":
            return 200, self._has_privileges(body)
        if head == "_mget":
            return 200, {"docs": [self._get_doc(d["_index"], d["_id"]) for d in body["docs"]]}
        if head == "_search" and n == 2 and parts[1] == "scroll":
            return 200, self._scroll(body, m)
        if head in ("_search", "_refresh", "_mapping", "_settings"):
            parts, n = ["*", *parts], n + 1
        target = parts[0]
        if n == 1:
            return self._index(target, body)
        op = parts[1]
        if op == "_search":
            return 200, self._search(target, body, params)
        if op == "_refresh":
            for index in st.resolve(target, ignore_unavailable=True):
                index.refresh()
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_rollover":
            old, new = st.rollover(target)
            return 200, {"acknowledged": True, "old_index": old, "new_index": new, "rolled_over": True}
        if op == "_mapping":
            if m == "GET":
                return 200, {i.name: {"mappings": i.mappings} for i in st.resolve(target)}
            st.put_mapping(target, body, params.get("write_index_only") == "true")
            return 200, {"acknowledged": True}
        if op == "_settings" and m == "GET":
            return 200, {i.name: {"settings": _nest_settings(i.settings)} for i in st.resolve(target)}
        if op in ("_doc", "_create"):
            return self._doc(target, op, parts[2] if n > 2 else None, body, params)
        raise EsError(400, "illegal_argument_exception", f"{m} {url.path} is not modelled by the test server")

    def _index(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        st, m = self.es.state, self.command
        if m == "PUT":
            st.create_index(target, body)
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": target}
        if m == "DELETE":
            st.delete_index(target)
            return 200, {"acknowledged": True}
        indices = st.resolve(target)
        return 200, {
            i.name: {"aliases": {}, "mappings": i.mappings, "settings": _nest_settings(i.settings)} for i in indices
        }

    def _doc(self, target: str, op: str, doc_id: str | None, body: Any, params: dict[str, str]) -> tuple[int, Any]:
        st = self.es.state
        if self.command in ("GET", "HEAD"):
            found = self._get_doc(target, doc_id or "")
            return (200 if found["found"] else 404), found
        kind = (
            "delete"
            if self.command == "DELETE"
            else "create"
            if op == "_create" or params.get("op_type") == "create"
            else "index"
        )
        seq = params.get("if_seq_no")
        try:
            item = st.write(
                kind,
                target,
                doc_id,
                body,
                int(seq) if seq is not None else None,
                int(params["if_primary_term"]) if "if_primary_term" in params else None,
            )
        except EsError as exc:
            if exc.failure_store:  # single-document API: inside "error" (ExceptionWithFailureStoreStatus)
                exc.extra["failure_store"] = exc.failure_store
            raise
        if params.get("refresh") in ("true", ""):
            st.indices[item["_index"]].refresh()
        return item.pop("status"), item

    def _get_doc(self, index: str, doc_id: str) -> dict[str, Any]:
        idx = self.es.state.indices.get(index)
        if idx is None:
            raise _no_index(index)
        doc = idx.docs.get(doc_id)
        if doc is None:
            return {"_index": index, "_id": doc_id, "found": False}
        return {
            "_index": index,
            "_id": doc_id,
            "_version": doc.version,
            "_seq_no": doc.seq_no,
            "_primary_term": doc.primary_term,
            "found": True,
            "_source": idx.source_of(doc),
        }

    def _bulk(self, raw: bytes, params: dict[str, str]) -> dict[str, Any]:
        es, st = self.es, self.es.state
        if es._bulks_left is not None:
            es._bulks_left -= 1
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        items, touched = [], set()
        while lines:
            ((op, meta),) = lines.pop(0).items()
            source = None if op == "delete" else lines.pop(0)
            doc_id = meta.get("_id")
            try:
                fault = es.take_item_fault(doc_id)
                if fault:
                    raise fault
                result = st.write(
                    op, meta["_index"], doc_id, source, meta.get("if_seq_no"), meta.get("if_primary_term")
                )
                touched.add(result["_index"])
            except EsError as exc:
                # BulkItemResponse.toXContent: _index (the concrete index for shard-level failures), _id, status,
                # the failure store status (item level for bulk: an assumption, the reference shows it only for
                # the single-document API), then error.
                result = {"_index": exc.index or meta.get("_index"), "_id": doc_id, "status": exc.status}
                if exc.failure_store:
                    result["failure_store"] = exc.failure_store
                result["error"] = exc.error()
            items.append({op: result})
        if params.get("refresh") in ("true", ""):
            for name in touched:
                st.indices[name].refresh()
        return {"took": 1, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}

    def _search(self, target: str, body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        st = self.es.state
        ignore = params.get("ignore_unavailable") == "true"
        indices = st.resolve(target, ignore_unavailable=ignore)
        size = int(body.get("size", params.get("size", 10)))
        from_ = int(body.get("from", params.get("from", 0)))
        scroll = "scroll" in params
        _check_window(indices, from_, size, scroll)
        if body.get("search_after") is not None and from_ > 0:  # SearchService.parseSource
            raise EsError(
                400, "illegal_argument_exception", "[from] parameter must be set to 0 when [search_after] is used"
            )
        hits = st.search(indices, body, params)
        resp: dict[str, Any] = {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": len(indices), "successful": len(indices), "skipped": 0, "failed": 0},
            "hits": {"total": _total(len(hits), body, params), "max_score": None, "hits": hits[from_ : from_ + size]},
        }
        if resp["hits"]["total"] is None:
            del resp["hits"]["total"]
        if scroll:
            scroll_id = f"scroll-{next(st.ids)}"
            st.scrolls[scroll_id] = (hits[size:], size)
            resp["_scroll_id"] = scroll_id
        return resp

    def _scroll(self, body: dict[str, Any], method: str) -> dict[str, Any]:
        st = self.es.state
        if method == "DELETE":
            ids = body.get("scroll_id")
            ids = ids if isinstance(ids, list) else [ids]
            freed = sum(1 for i in ids if st.scrolls.pop(i, None) is not None)
            return {"succeeded": True, "num_freed": freed}
        rest, size = st.scrolls[body["scroll_id"]]
        st.scrolls[body["scroll_id"]] = (rest[size:], size)
        return {
            "_scroll_id": body["scroll_id"],
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"total": {"value": len(rest), "relation": "eq"}, "hits": rest[:size]},
        }

    def _get_data_streams(self, expr: str) -> dict[str, Any]:
        """GET _data_stream (GetDataStreamAction.Response): the index mode, the ILM policy of the template, the
        data stream lifecycle and, on failure store versions, the failure store."""
        st, p = self.es.state, self.es.personality
        out = []
        for part in expr.split(","):
            names = [n for n in st.data_streams if fnmatch.fnmatchcase(n, part)] if "*" in part else [part]
            for name in names:
                if name not in st.data_streams:
                    raise _no_index(name)
                ds = st.data_streams[name]
                entry: dict[str, Any] = {
                    "name": name,
                    "timestamp_field": {"name": "@timestamp"},
                    "generation": ds["generation"],
                    "indices": [{"index_name": i, "index_uuid": i} for i in ds["indices"]],
                    "status": "GREEN",
                    "template": ds["template"],
                    "hidden": False,
                    "system": False,
                    "allow_custom_routing": False,
                    "replicated": False,
                    "index_mode": ds["index_mode"],
                }
                policy = st.indices[ds["indices"][-1]].settings.get("index.lifecycle.name")
                if policy:
                    entry["ilm_policy"] = policy
                if ds["lifecycle"] is not None:
                    entry["lifecycle"] = {"enabled": True, **ds["lifecycle"]}
                if p.failure_store:
                    entry["failure_store"] = {
                        "enabled": ds["failure_store"],
                        "rollover_on_write": not ds["failure_indices"],
                        "indices": [{"index_name": i, "index_uuid": i} for i in ds["failure_indices"]],
                    }
                out.append(entry)
        return {"data_streams": out}

    def _lifecycle(self, expr: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT/GET/DELETE _data_stream/<name>/_lifecycle (data stream lifecycle, 8.11+; DataStreamLifecycle)."""
        st = self.es.state
        names = [n for n in st.data_streams if fnmatch.fnmatchcase(n, expr)] if "*" in expr else [expr]
        for name in names:
            if name not in st.data_streams:
                raise _no_index(name)
        if self.command == "PUT":
            st._check_template_body(expr, {"lifecycle": body})
            for name in names:
                st.data_streams[name]["lifecycle"] = dict(body)
            return {"acknowledged": True}
        if self.command == "DELETE":
            for name in names:
                st.data_streams[name]["lifecycle"] = None
            return {"acknowledged": True}
        return {
            "data_streams": [
                {"name": n, "lifecycle": {"enabled": True, **st.data_streams[n]["lifecycle"]}}
                if st.data_streams[n]["lifecycle"] is not None
                else {"name": n}
                for n in names
            ]
        }

    def _options(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT/GET _data_stream/<name>/_options (data stream options: the failure store, 8.19/9.1+)."""
        st = self.es.state
        if name not in st.data_streams:
            raise _no_index(name)
        ds = st.data_streams[name]
        if self.command == "PUT":
            ds["failure_store"] = bool((body.get("failure_store") or {}).get("enabled"))
            return {"acknowledged": True}
        return {"data_streams": [{"name": name, "options": {"failure_store": {"enabled": ds["failure_store"]}}}]}

    def _has_privileges(self, body: dict[str, Any]) -> dict[str, Any]:
        denied = self.es.denied_privileges
        cluster = {p: p not in denied for p in body.get("cluster", [])}
        index = {
            n: {p: p not in denied for p in entry["privileges"]}
            for entry in body.get("index", [])
            for n in entry["names"]
        }
        ok = all(cluster.values()) and all(all(v.values()) for v in index.values())
        return {"username": "test", "has_all_requested": ok, "cluster": cluster, "index": index, "application": {}}


def _nest_settings(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        node = out
        *head, leaf = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _total(count: int, body: dict[str, Any], params: dict[str, str]) -> dict[str, Any] | None:
    """``hits.total`` under ``track_total_hits`` (reference "Track total hits"): by default counted up to 10,000,
    past that ``{"value": 10000, "relation": "gte"}``; ``true`` counts exactly, ``false`` leaves it out."""
    track = body.get("track_total_hits", params.get("track_total_hits", 10000))
    if str(track).lower() == "true":
        return {"value": count, "relation": "eq"}
    if str(track).lower() == "false":
        return None
    limit = int(track)
    return {"value": count, "relation": "eq"} if count <= limit else {"value": limit, "relation": "gte"}


def _check_window(indices: list[Index], from_: int, size: int, scroll: bool) -> None:
    """DefaultSearchContext.preProcess (server/src/main/java/org/elasticsearch/search/DefaultSearchContext.java):
    each shard refuses ``from + size`` above its index's ``index.max_result_window`` (10,000), or a scroll batch
    ``size`` above it; when every shard fails the search is a 400 ``search_phase_execution_exception`` "all
    shards failed" whose cause is the ``illegal_argument_exception``. Here one refusing index fails the whole
    search (err strict: real Elasticsearch returns partial results when only some shards refuse)."""
    failing = [i for i in indices if (size if scroll else from_ + size) > i.max_result_window]
    if not failing:
        return
    window = failing[0].max_result_window
    if scroll:
        reason = (
            f"Batch size is too large, size must be less than or equal to: [{window}] but was [{size}]. "
            "Scroll batch sizes cost as much memory as result windows so they are controlled by the "
            "[index.max_result_window] index level setting."
        )
    else:
        reason = (
            f"Result window is too large, from + size must be less than or equal to: [{window}] but was "
            f"[{from_ + size}]. See the scroll api for a more efficient way to request large data sets. "
            "This limit can be set by changing the [index.max_result_window] index level setting."
        )
    cause = {"type": "illegal_argument_exception", "reason": reason}
    raise EsError(
        400,
        "search_phase_execution_exception",
        "all shards failed",
        cause,
        extra={
            "phase": "query",
            "grouped": True,
            "failed_shards": [{"shard": 0, "index": failing[0].name, "node": "test", "reason": cause}],
        },
    )
