"""Elasticsearch objects of usage-collector, built from the catalogue: names, field mappings, the bodies of
the ILM policy, component and index templates, state index and roles, and the generated ``docs/fields.md``.
Pure functions of the settings; no client (installing them is :mod:`usage_collector.elastic.setup`).

Objects (names for ``data_stream_type = "metrics"``, namespace ``default``):

=====================================  ==========================================================
ILM policy ``usage-collector``         rollover at 50 GB per primary shard or 30 days; a delete
                                       phase only when a retention is configured (default: keep);
                                       not on a cluster without ILM (data stream lifecycle instead)
component template                     ``usage-collector-openai@mappings``: every field any stream's
                                       documents carry, mapped explicitly, ``dynamic: strict``
component template                     ``usage-collector@settings``: ``index.mode: standard`` and
                                       the lifecycle (ILM policy, or data stream lifecycle with the
                                       retention as ``data_retention``)
index template per stream              ``usage-collector-metrics-openai.<stream>`` for
                                       ``metrics-openai.<stream>-*``, ``data_stream: {}``, priority 200
index template for run documents       ``usage-collector-logs-usage_collector.runs``
state index                            ``usage-collector-state-<namespace>`` (checkpoints, leases)
data streams                           ``metrics-openai.<stream>-<namespace>`` and
                                       ``logs-usage_collector.runs-<namespace>``
=====================================  ==========================================================

Why these choices:

* **Every stream's fields in every stream's template** (one shared mappings component): a dashboard panel
  over ``metrics-openai.*`` never fails on a missing field when a stream is disabled (Elastic had to add this
  to its own integration, ``elastic-openai-integration.md`` §3b, elastic/integrations#19345).
* **dynamic: strict**: documents are generated from the same catalogue as the mappings, so an unmapped field
  means the templates are older than the collector. Strict rejects that document with an error naming the
  field (``strict_dynamic_mapping_exception``), where ``dynamic: false`` would silently keep it unsearchable.
  ``tests/test_es_objects.py`` checks that every field :func:`usage_collector.documents.shape` can produce is
  mapped. The one exception is each stream's own object ``openai.<stream>``, which is ``dynamic: true``: a
  numeric result field OpenAI added after the catalogue is kept there under its own name, and the dynamic
  templates map it ``long`` (a whole number) or ``double`` (a fraction), never ``float``.
* **Priority 200**: the built-in ``logs``/``metrics`` templates (patterns ``logs-*-*``/``metrics-*-*``) have
  priority 100, and a higher priority wins, so our mappings (not the built-in dynamic ones) apply. 200 is also
  what Fleet integrations use: Elasticsearch refuses a template whose patterns overlap another's at the same
  priority, so ``setup`` fails loudly instead of silently shadowing an installed Elastic ``openai``
  integration that owns the same data stream names (possible only with ``data_stream_type = "logs"``).
* **Money as scaled_float(1e6)**: ``openai.costs.amount.value`` is stored as an exact integer number of
  micro-units (a millionth of a dollar, 10 000 times finer than a cent), so stored values carry no binary
  fraction artefacts and sums agree with the bill to the cent; ``_source`` keeps the value as sent, because
  every template sets ``index.mode: standard`` (a LogsDB index, the 9.x default for ``logs-*-*``, rebuilds
  ``_source`` from doc values and would give back the rounded value).
  ``openai.costs.quantity`` is a ``double``: token counts are integers (exact in a double up to 2**53) and
  fractional units such as ``gibibyte_hours`` must not be rounded to 1e-6.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..budgets import BUDGETS_STREAM
from ..catalogue import STREAMS, Measure
from ..documents import RUNS_DATASET, Target
from ..estimate import ESTIMATED_COST, USAGE_STREAMS
from ..limits import LIMITS_STREAM, RATE_LIMIT_FIELDS
from ..reconcile import ALLOCATION_STREAM, DERIVED_STREAMS, RECONCILIATION_STREAM

if TYPE_CHECKING:
    from ..config import Settings

#: How data expires: an ILM policy, or the data stream lifecycle (``settings.lifecycle`` ``auto`` picks one).
Lifecycle = Literal["ilm", "data_stream"]

#: Marks every object we own, so ``setup`` (and people) can tell ours from others'.
MANAGED_BY = "usage-collector"
ILM_POLICY = "usage-collector"
MAPPINGS_COMPONENT = "usage-collector-openai@mappings"
SETTINGS_COMPONENT = "usage-collector@settings"
#: Above the built-in ``logs``/``metrics`` templates (100); equal to Fleet integrations (see module docstring).
TEMPLATE_PRIORITY = 200
ROLLOVER = {"max_primary_shard_size": "50gb", "max_age": "30d"}

#: Cluster privileges ``setup`` needs (plus, optionally, ``monitor`` for ``GET /``, the version banner).
SETUP_CLUSTER_PRIVILEGES = ("manage_index_templates", "manage_ilm")
#: Index privileges ``setup`` needs on every pattern of :func:`index_patterns`.
SETUP_INDEX_PRIVILEGES = ("create_index", "manage", "view_index_metadata")
#: Cluster privileges ``run`` needs: ``monitor`` is optional (``GET /`` to pick the compatibility header).
RUN_CLUSTER_PRIVILEGES = ("monitor",)
#: Index privileges ``run`` needs, per pattern kind.
RUN_INDEX_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "usage": ("create_doc", "index", "delete", "read", "view_index_metadata", "auto_configure"),
    "runs": ("create_doc", "read", "view_index_metadata", "auto_configure"),
    "state": ("create_doc", "index", "read", "view_index_metadata"),
}

_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_LONG: dict[str, Any] = {"type": "long"}
_DATE: dict[str, Any] = {"type": "date"}
_CONST: dict[str, Any] = {"type": "constant_keyword"}
_UNITS = {"usage_bytes": "byte", "seconds": "s"}


# --- names ------------------------------------------------------------------------------------------
def data_stream_name(settings: Settings, stream: str) -> str:
    """``metrics-openai.completions-default``: the data stream a stream's documents go to."""
    return Target("", namespace=settings.namespace, data_stream_type=settings.data_stream_type).data_stream(stream)


def runs_data_stream(settings: Settings) -> str:
    """``logs-usage_collector.runs-<namespace>``: where run documents go."""
    return f"logs-{RUNS_DATASET}-{settings.namespace}"


def state_index(settings: Settings) -> str:
    """``usage-collector-state-<namespace>``: checkpoints and leases (a regular index)."""
    return f"usage-collector-state-{settings.namespace}"


def index_template_name(settings: Settings, stream: str) -> str:
    return f"usage-collector-{settings.data_stream_type}-openai.{stream}"


def index_patterns(settings: Settings) -> dict[str, str]:
    """The index-name patterns a role must cover, by kind (``usage``, ``runs``, ``state``)."""
    return {
        "usage": f"{settings.data_stream_type}-openai.*-{settings.namespace}",
        "runs": runs_data_stream(settings),
        "state": state_index(settings),
    }


# --- fields -----------------------------------------------------------------------------------------
def _measure_mapping(m: Measure) -> dict[str, Any]:
    if m.value_type == "decimal":
        mapping: dict[str, Any] = (
            {"type": "scaled_float", "scaling_factor": 1000000} if m.name == "amount.value" else {"type": "double"}
        )
    else:
        mapping = {"type": "long"}
    meta: dict[str, str] = {"metric_type": m.kind}
    if m.name in _UNITS:
        meta["unit"] = _UNITS[m.name]
    if m.name == "amount.value":
        meta["unit"] = "currency in openai.costs.amount.currency"
    return {**mapping, "meta": meta}


def document_fields() -> dict[str, dict[str, Any]]:
    """Every field a usage document can carry, of every stream: dotted name -> mapping.

    The layout is the one :func:`usage_collector.documents.shape` writes.
    """
    fields: dict[str, dict[str, Any]] = {
        "@timestamp": _DATE,
        "ecs.version": _KW,
        "event.kind": _KW,
        "event.dataset": _KW,
        "event.module": _KW,
        "event.hash": _KW,
        "data_stream.type": _CONST,
        "data_stream.dataset": _CONST,
        "data_stream.namespace": _CONST,
        "organization.id": _KW,
        "organization.name": _KW,
    }
    for name in (
        "model",
        "project_id",
        "user_id",
        "api_key_id",
        "usage_object_type",
        "bucket_width",
        "project_name",
        "api_key_name",
        "user_email",
        "service_account_name",
    ):
        fields[f"openai.base.{name}"] = _KW
    fields["openai.base.start_time"] = _DATE
    fields["openai.base.end_time"] = _DATE
    for spec in STREAMS.values():
        for dim in spec.dimensions:
            fields.setdefault(spec.field_name(dim.name), {"type": "boolean"} if dim.type == "boolean" else _KW)
        for m in spec.measures:
            fields.setdefault(spec.field_name(m.name), _measure_mapping(m))
            if m.gen_ai:
                fields.setdefault(m.gen_ai, {"type": "long", "meta": {"metric_type": m.kind}})
        for attr in spec.attributes:
            fields.setdefault(spec.field_name(attr), _KW)
    for stream in USAGE_STREAMS:
        fields[f"openai.{stream}.{ESTIMATED_COST}"] = _ESTIMATE
    fields["gen_ai.request.model"] = _KW
    fields["gen_ai.provider.name"] = _KW
    fields.update(limits_fields())
    fields.update(budgets_fields())
    fields.update(derived_fields())
    return dict(sorted(fields.items()))


#: Estimated cost (USD) is a ``double``, not the bill's ``scaled_float(1e6)``: one document's estimate is often
#: below a micro-dollar (a minute of 40 embedding tokens costs $0.0000008), and rounding each of millions of
#: documents to 1e-6 would add up to visible errors in a sum; a double keeps 15-17 significant digits. The exact
#: figures are in the reconciliation documents, recomputed as ``Decimal``.
_ESTIMATE: dict[str, Any] = {"type": "double", "meta": {"metric_type": "counter", "unit": "USD (estimated)"}}
_MONEY: dict[str, Any] = {"type": "scaled_float", "scaling_factor": 1000000}


def derived_fields() -> dict[str, dict[str, Any]]:
    """The fields of reconciliation and allocation documents (:mod:`usage_collector.reconcile`).

    Billed and allocated amounts are money as on the bill (``scaled_float(1e6)``, exact micro-dollars); estimated
    sums, differences and shares are ``double`` (see ``_ESTIMATE``).
    """
    rec, alloc = f"openai.{RECONCILIATION_STREAM}", f"openai.{ALLOCATION_STREAM}"
    return {
        f"{rec}.estimated_cost": {**_ESTIMATE, "meta": {"metric_type": "counter", "unit": "USD (estimated)"}},
        f"{rec}.billed_cost": {**_MONEY, "meta": {"metric_type": "counter", "unit": f"currency in {rec}.currency"}},
        f"{rec}.difference": {"type": "double", "meta": {"metric_type": "counter", "unit": "billed - estimated"}},
        f"{rec}.share_explained": {"type": "double", "meta": {"metric_type": "gauge", "unit": "estimated / billed"}},
        f"{rec}.unpriced_documents": {"type": "long", "meta": {"metric_type": "counter"}},
        f"{rec}.usage_documents": {"type": "long", "meta": {"metric_type": "counter"}},
        f"{rec}.line_items": _KW,
        f"{rec}.item": _KW,
        f"{rec}.currency": _KW,
        f"{alloc}.amount": {**_MONEY, "meta": {"metric_type": "counter", "unit": f"currency in {alloc}.currency"}},
        f"{alloc}.billed_amount": {**_MONEY, "meta": {"metric_type": "gauge", "unit": f"currency in {alloc}.currency"}},
        f"{alloc}.weight": {"type": "double", "meta": {"metric_type": "gauge", "unit": f"quantity of {alloc}.unit"}},
        f"{alloc}.line_item": _KW,
        f"{alloc}.method": _KW,
        f"{alloc}.unit": _KW,
        f"{alloc}.tier": _KW,
        f"{alloc}.api_source": _KW,
        f"{alloc}.currency": _KW,
    }


def limits_fields() -> dict[str, dict[str, Any]]:
    """The fields of spend-control snapshots (``metrics-openai.limits-*``, :mod:`usage_collector.limits`)."""
    lim = f"openai.{LIMITS_STREAM}"
    fields: dict[str, dict[str, Any]] = {
        f"{lim}.{name}": _KW
        for name in (
            "object",
            "kind",
            "scope",
            "id",
            "currency",
            "interval",
            "model",
            "enforcement_status",
            "notification_channel.type",
            "notification_channel.recipients",
            "notification_channel.subject_prefix",
        )
    }
    fields[f"{lim}.threshold_amount"] = {
        "type": "scaled_float",
        "scaling_factor": 1000000,
        "meta": {"metric_type": "gauge", "unit": f"currency in {lim}.currency"},
    }
    for name in RATE_LIMIT_FIELDS:
        fields[f"{lim}.{name}"] = {"type": "long", "meta": {"metric_type": "gauge"}}
    return fields


def budgets_fields() -> dict[str, dict[str, Any]]:
    """The fields of budget documents (``metrics-openai.budgets-*``, :mod:`usage_collector.budgets`)."""
    b = f"openai.{BUDGETS_STREAM}"
    usd = {"type": "scaled_float", "scaling_factor": 1000000, "meta": {"metric_type": "gauge", "unit": "USD"}}
    percent = {"type": "double", "meta": {"metric_type": "gauge", "unit": "percent"}}
    fields: dict[str, dict[str, Any]] = {
        f"{b}.{name}": _KW
        for name in ("name", "scope", "month", "currency", "status", "forecast.method", "forecast.interval_method")
    }
    fields[f"{b}.day"] = {"type": "date", "format": "strict_date"}
    for name in (
        "amount",
        "billed",
        "today_estimate",
        "month_to_date",
        "forecast.point",
        "forecast.lower",
        "forecast.upper",
        "openai_limits.spend_limit",
        "openai_limits.alerts",
    ):
        fields[f"{b}.{name}"] = dict(usd)
    fields[f"{b}.spend_percent"] = dict(percent)
    fields[f"{b}.forecast.percent"] = dict(percent)
    fields[f"{b}.forecast.coverage"] = {"type": "double"}
    fields[f"{b}.alert_at"] = _LONG
    fields[f"{b}.crossed"] = _LONG
    fields[f"{b}.openai_limits.enforcement_status"] = _KW
    return fields


#: Unknown numeric result fields under ``openai.<stream>`` (dynamic there): whole numbers ``long``, fractions
#: ``double`` (``match_mapping_type`` ``long``/``double`` is how Elasticsearch sees JSON numbers).
DYNAMIC_TEMPLATES: list[dict[str, Any]] = [
    {"openai_new_whole_numbers": {"path_match": "openai.*", "match_mapping_type": "long", "mapping": _LONG}},
    {"openai_new_fractions": {"path_match": "openai.*", "match_mapping_type": "double", "mapping": {"type": "double"}}},
]


def document_mappings() -> dict[str, Any]:
    """The ``mappings`` of the shared component template: strict, except each stream's own object."""
    props = nest(document_fields())
    for stream in (*STREAMS, LIMITS_STREAM):
        node = props["openai"]["properties"].setdefault(stream, {"properties": {}})
        node["dynamic"] = True
    return {"dynamic": "strict", "dynamic_templates": DYNAMIC_TEMPLATES, "properties": props}


def runs_fields() -> dict[str, dict[str, Any]]:
    """The mapping of the run document :func:`usage_collector.documents.run_document` builds."""
    uc = "usage_collector"
    fields: dict[str, dict[str, Any]] = {
        "@timestamp": _DATE,
        "event.kind": _KW,
        "event.dataset": _KW,
        "event.outcome": _KW,
        "event.duration": _LONG,
        "organization.id": _KW,
        "data_stream.type": _CONST,
        "data_stream.dataset": _CONST,
        "data_stream.namespace": _CONST,
        "error.message": {"type": "text"},
    }
    for name in ("run_id", "mode", "stream", "bucket_width"):
        fields[f"{uc}.{name}"] = _KW
    for name in ("window.start", "window.end", "position", "final_edge"):
        fields[f"{uc}.{name}"] = _DATE
    for name in (
        "windows",
        "requests",
        "retries",
        "lag_seconds",
        "documents.created",
        "documents.updated",
        "documents.unchanged",
        "documents.deleted",
        "new_fields",
        "unpriced",
    ):
        fields[f"{uc}.{name}"] = _LONG
    for name in ("new_field_names", "dropped_dimensions", "group_by", "unavailable"):
        fields[f"{uc}.{name}"] = _KW
    return fields


def _state_fields() -> dict[str, dict[str, Any]]:
    # Unix seconds as numbers (fractional): ``double``, since a date field would need the number as a string.
    seconds = {"type": "double"}
    return {
        "type": _KW,
        "org_id": _KW,
        "stream": _KW,
        "bucket_width": _KW,
        "scope": _KW,
        "holder": _KW,
        "position": _LONG,
        "range_start": _LONG,
        "range_end": _LONG,
        "complete": {"type": "boolean"},
        "updated_at": seconds,
        "last_success_at": seconds,
        "last_error_at": seconds,
        "last_error": {"type": "text"},
        "expires_at": seconds,
        "acquired_at": seconds,
        "dropped_group_by": _KW,
        "dropped_at": seconds,
        "unavailable": {"type": "text"},
        "unavailable_since": seconds,
        "unavailable_checked_at": seconds,
    }


def nest(fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"a.b": {...}}`` -> ``{"a": {"properties": {"b": {...}}}}`` (mapping ``properties``)."""
    root: dict[str, Any] = {}
    for dotted, mapping in fields.items():
        node = root
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = dict(mapping)
    return root


# --- objects ----------------------------------------------------------------------------------------
def _meta(description: str) -> dict[str, Any]:
    return {"managed_by": MANAGED_BY, "description": description}


def data_stream_lifecycle(retention_days: int | None) -> dict[str, Any]:
    """A data stream lifecycle body: ``{"data_retention": "90d"}``, or ``{}`` (managed, kept forever)."""
    return {"data_retention": f"{int(retention_days)}d"} if retention_days else {}


def ilm_policy(settings: Settings, retention_days: int | None = None) -> dict[str, Any]:
    """The ILM policy body (``PUT _ilm/policy/usage-collector``).

    Args:
        settings: the settings; their ``retention_days`` applies when ``retention_days`` is not given.
        retention_days: delete backing indices this many days after rollover; ``None`` keeps them forever.
    """
    if retention_days is None:
        retention_days = settings.retention_days
    phases: dict[str, Any] = {"hot": {"min_age": "0ms", "actions": {"rollover": dict(ROLLOVER)}}}
    if retention_days:
        phases["delete"] = {"min_age": f"{int(retention_days)}d", "actions": {"delete": {}}}
    return {"policy": {"phases": phases, "_meta": _meta("usage-collector data streams")}}


def component_templates(
    settings: Settings, lifecycle: Lifecycle = "ilm", retention_days: int | None = None
) -> dict[str, dict[str, Any]]:
    """Component template bodies by name: the shared mappings, and the settings with the lifecycle.

    Args:
        settings: the settings; their ``retention_days`` applies when ``retention_days`` is not given.
        lifecycle: ``ilm`` names the ILM policy in ``index.lifecycle.name``; ``data_stream`` gives the template a
            data stream lifecycle (``template.lifecycle``, Elasticsearch 8.11+) with ``data_retention`` when a
            retention is set, and no ``index.lifecycle.*`` setting (unknown on a cluster without ILM).
        retention_days: delete data this many days old; ``None`` keeps it.

    ``index.mode: standard`` is set explicitly: from 9.0 a new cluster makes ``logs-*-*`` data streams LogsDB by
    default, whose synthetic ``_source`` gives back ``scaled_float`` values rounded and dates reformatted; the
    documents must read back exactly as written (see the module docstring).
    """
    if retention_days is None:
        retention_days = settings.retention_days
    if lifecycle == "ilm":
        settings_part: dict[str, Any] = {"settings": {"index": {"mode": "standard", "lifecycle": {"name": ILM_POLICY}}}}
    else:
        settings_part = {
            "settings": {"index": {"mode": "standard"}},
            "lifecycle": data_stream_lifecycle(retention_days),
        }
    return {
        MAPPINGS_COMPONENT: {
            "template": {"mappings": document_mappings()},
            "_meta": _meta("fields of every OpenAI usage and costs stream (generated from the catalogue)"),
        },
        SETTINGS_COMPONENT: {
            "template": settings_part,
            "_meta": _meta(f"index mode and lifecycle ({lifecycle}) of usage-collector data streams"),
        },
    }


def index_templates(settings: Settings) -> dict[str, dict[str, Any]]:
    """Index template bodies by name: one per catalogue stream, plus the run documents'."""
    out: dict[str, dict[str, Any]] = {}
    for stream in (*STREAMS, LIMITS_STREAM, BUDGETS_STREAM, *DERIVED_STREAMS):
        dataset = f"openai.{stream}"
        out[index_template_name(settings, stream)] = {
            "index_patterns": [f"{settings.data_stream_type}-{dataset}-*"],
            "data_stream": {},
            "priority": TEMPLATE_PRIORITY,
            "composed_of": [MAPPINGS_COMPONENT, SETTINGS_COMPONENT],
            "template": {
                "mappings": {
                    "properties": nest(
                        {
                            "data_stream.type": {**_CONST, "value": settings.data_stream_type},
                            "data_stream.dataset": {**_CONST, "value": dataset},
                        }
                    )
                }
            },
            "_meta": _meta(
                "OpenAI spend limits, spend alerts and rate limits (usage-collector)"
                if stream == LIMITS_STREAM
                else "budgets: month to date, forecast and status per budget and day (usage-collector)"
                if stream == BUDGETS_STREAM
                else f"OpenAI estimated against billed cost, {stream} (usage-collector)"
                if stream in DERIVED_STREAMS
                else f"OpenAI {stream} usage (usage-collector)"
            ),
        }
    out[f"usage-collector-logs-{RUNS_DATASET}"] = {
        "index_patterns": [f"logs-{RUNS_DATASET}-*"],
        "data_stream": {},
        "priority": TEMPLATE_PRIORITY,
        "composed_of": [SETTINGS_COMPONENT],
        "template": {
            "mappings": {
                "dynamic": "runtime",
                "properties": nest(
                    {
                        **runs_fields(),
                        "data_stream.type": {**_CONST, "value": "logs"},
                        "data_stream.dataset": {**_CONST, "value": RUNS_DATASET},
                    }
                ),
            }
        },
        "_meta": _meta("usage-collector run documents, one per stream per cycle"),
    }
    return out


def state_index_body(settings: Settings) -> dict[str, Any]:
    """``PUT <state index>`` body: checkpoints (``_id`` = checkpoint key) and leases (``lease/<org>``)."""
    return {
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        "mappings": {"dynamic": False, "properties": nest(_state_fields()), "_meta": _meta("checkpoints, leases")},
    }


# --- roles ------------------------------------------------------------------------------------------
def role_descriptors(settings: Settings) -> dict[str, dict[str, Any]]:
    """The two roles, as ``POST _security/role/<name>`` bodies (or an API key's ``role_descriptors``).

    ``usage_collector_setup`` installs the objects; ``usage_collector_run`` collects (``docs/elasticsearch.md``).
    ``monitor`` lets either read ``GET /`` to pick the compatibility header; without it 8.x-compatible headers
    are sent, which 8.x and 9.x accept.
    """
    pats = index_patterns(settings)
    return {
        "usage_collector_setup": {
            "cluster": [*SETUP_CLUSTER_PRIVILEGES, "monitor"],
            "indices": [{"names": list(pats.values()), "privileges": list(SETUP_INDEX_PRIVILEGES)}],
        },
        "usage_collector_run": {
            "cluster": list(RUN_CLUSTER_PRIVILEGES),
            "indices": [
                {"names": [pats[kind]], "privileges": list(privs)} for kind, privs in RUN_INDEX_PRIVILEGES.items()
            ],
        },
    }


# --- docs/fields.md ---------------------------------------------------------------------------------
def render_fields_md() -> str:
    """The text of ``docs/fields.md``: every mapped field, generated from the templates."""
    origin: dict[str, list[str]] = {}
    for spec in STREAMS.values():
        for api in (*spec.group_by, *(m.name for m in spec.measures), *spec.attributes):
            origin.setdefault(spec.field_name(api), []).append(spec.name)
        for m in spec.measures:
            if m.gen_ai:
                origin.setdefault(m.gen_ai, []).append(spec.name)
    for name in limits_fields():
        origin.setdefault(name, []).append(LIMITS_STREAM)
    for name in budgets_fields():
        origin.setdefault(name, []).append(BUDGETS_STREAM)
    for stream in USAGE_STREAMS:
        origin.setdefault(f"openai.{stream}.{ESTIMATED_COST}", []).append(stream)
    for name in derived_fields():
        origin.setdefault(name, []).append(name.split(".")[1])
    lines = [
        "# Fields",
        "",
        "<!-- Generated by usage_collector.elastic.objects.render_fields_md(); tests/test_es_objects.py keeps it"
        " in sync. Do not edit. -->",
        "",
        "Every usage data stream (`<type>-openai.<stream>-<namespace>`) maps **all** of these fields, whichever",
        "stream it holds, so dashboards over `metrics-openai.*` never meet an unmapped field. Mappings are",
        "`dynamic: strict`. *Streams* lists the streams whose documents fill the field (blank: all).",
        "",
        "**New fields.** Each stream's own object `openai.<stream>` is `dynamic: true`: a numeric field OpenAI adds",
        "to its results after this list was written is kept under `openai.<stream>.<api name>`, exactly as",
        "reported, and mapped by a dynamic template (whole numbers `long`, fractions `double`). The collector logs",
        "`new field ... kept` once per field per run and counts it in the run document (`usage_collector.new_fields`).",
        "",
        "**Spend controls** (`<type>-openai.limits-<namespace>`): one document per spend limit, spend alert and",
        "rate limit of the organization and each project, per UTC day and whenever it changes;",
        "`threshold_amount` is in dollars (OpenAI reports cents).",
        "",
        "**Budgets** (`<type>-openai.budgets-<namespace>`): one document per configured budget per UTC day, replaced",
        "by every `run` that day (`usage_collector/budgets.py`): month to date, forecast, percent of the amount,",
        "the `alert_at` percents crossed, status, and OpenAI's spend limit and alerts of the same scope.",
        "**Estimated cost** (`openai.<stream>.estimated_cost`, USD, `double`): what the usage costs by the price",
        "table in force on the bucket's day (`usage_collector/estimate.py`); absent when the table has no price.",
        "**Reconciliation** (`<type>-openai.reconciliation-<namespace>`): estimated against billed per closed day,",
        "project and model; **allocation** (`<type>-openai.allocation-<namespace>`): each billed line split over",
        "users and models by usage share (`usage_collector/reconcile.py`).",
        "",
        "| Field | Type | Streams |",
        "|---|---|---|",
    ]
    for name, mapping in document_fields().items():
        kind = mapping["type"]
        if kind == "scaled_float":
            kind = f"scaled_float ({mapping['scaling_factor']})"
        metric = mapping.get("meta", {}).get("metric_type")
        if metric:
            kind += f", {metric}"
        streams = ", ".join(origin.get(name, [])) if name.startswith(("openai.", "gen_ai.usage")) else ""
        lines.append(f"| `{name}` | {kind} | {streams} |")
    lines += [
        "",
        "## Run documents (`logs-usage_collector.runs-<namespace>`)",
        "",
        "Mapped with `dynamic: runtime`: other fields stay queryable as runtime fields.",
        "",
        "| Field | Type |",
        "|---|---|",
    ]
    lines += [f"| `{n}` | {m['type']} |" for n, m in sorted(runs_fields().items())]
    return "\n".join(lines) + "\n"
