"""Kibana's own rules for the bundle, applied statically (no Kibana runs here).

:func:`validate_bundle` checks every saved object the way Kibana's import, dashboard schema and Lens will;
:func:`validate_rule` checks an alert rule body against the ``.es-query`` params schema. Each returns a list of
:class:`Violation` (empty: Kibana accepts and renders it). Every rule below names the Kibana source file it
follows (paths in ``elastic/kibana``; several moved to ``src/platform/...`` / ``x-pack/platform/...`` in 9.x).
Where we could not tell from the source what Kibana does, the rule errs strict and says so.

Facts are transcribed, not copied: the schema's field names, limits and messages' meaning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LENS_BY_VALUE_MIGRATION",
    "OLDEST_DASHBOARD_VERSION",
    "Violation",
    "validate_bundle",
    "validate_rule",
]


@dataclass(frozen=True)
class Violation:
    """One broken rule: which rule, which object (``type id``, plus the panel title where there is one)."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


#: The newest by-value Lens migration: ``x-pack/plugins/lens/server/embeddable/make_lens_embeddable_factory.ts``
#: (9.x: ``x-pack/platform/plugins/shared/lens/server/embeddable/...``) ends at ``'8.9.0'``
#: (``commonMigrateMetricFormatter``), in 8.11 and in current 9.x alike.
LENS_BY_VALUE_MIGRATION = "8.9.0"
#: The newest ``typeMigrationVersion`` of a dashboard that Kibana 8.11 knows. Its dashboard migration map merges
#: every embeddable migration (``dashboard_saved_object_migrations.ts``), Lens's 8.9.0 included; we do not know
#: whether a later key exists in 8.11, so we err strict and allow no more than 8.9.0.
OLDEST_DASHBOARD_VERSION = "8.9.0"
#: Types the import accepts (``collect_saved_objects.ts``: only importable-and-exportable types); the bundle
#: uses three of them and we allow no others.
_IMPORTABLE = {"index-pattern", "search", "dashboard"}
#: What each type's newest ``typeMigrationVersion`` may be for Kibana 8.11 (document migrator, below).
_MAX_TYPE_VERSION = {"dashboard": OLDEST_DASHBOARD_VERSION, "index-pattern": "8.0.0", "search": "8.0.0"}

#: Dashboard attributes allowed by ``src/plugins/dashboard/server/dashboard_saved_object/schema/v1/v1.ts``
#: (``unknowns: 'forbid'``) and ``v2/v2.ts`` (adds ``controlGroupInput.showApplySelections``).
_DASHBOARD_ATTRIBUTES = {
    "title",
    "description",
    "kibanaSavedObjectMeta",
    "timeRestore",
    "timeFrom",
    "timeTo",
    "refreshInterval",
    "controlGroupInput",
    "panelsJSON",
    "optionsJSON",
    "hits",
    "version",
}
_CONTROL_GROUP_INPUT = {
    "panelsJSON",
    "controlStyle",
    "chainingSystem",
    "ignoreParentSettingsJSON",
    "showApplySelections",
}
_REFRESH_INTERVAL = {"pause", "value", "display", "section"}

#: Operations Lens marks ``shiftable`` (each metric operation's definition under
#: ``form_based/operations/definitions/``: count, metrics, cardinality, percentile(_rank), last_value, ...).
_SHIFTABLE = {
    "count",
    "sum",
    "average",
    "min",
    "max",
    "median",
    "standard_deviation",
    "unique_count",
    "percentile",
    "percentile_rank",
    "last_value",
}
#: Operations that hold ``references`` (formula, math, and the reference-based calculations).
_REFERENCE_OPS = {"formula", "math", "cumulative_sum", "differences", "moving_average", "counter_rate", "overall_sum"}


# =====================================================================================================
# The bundle
# =====================================================================================================
def validate_bundle(objects: Sequence[Mapping[str, Any]]) -> list[Violation]:
    """Every violation of Kibana's import, dashboard and Lens rules in a list of saved objects."""
    out: list[Violation] = []
    present = {(o.get("type"), o.get("id")) for o in objects}
    for o in objects:
        where = f"{o.get('type')} {o.get('id')}"
        out += _check_import(o, where, present)
        if o.get("type") == "dashboard":
            out += _check_dashboard(o, where)
    return out


def _check_import(o: Mapping[str, Any], where: str, present: set[tuple[Any, Any]]) -> list[Violation]:
    out: list[Violation] = []
    # collect_saved_objects.ts (packages/core/saved-objects/core-saved-objects-import-export-server-internal/
    # src/import/lib/): objects of a type that is not importable are refused (``unsupported_type``).
    if o.get("type") not in _IMPORTABLE:
        out.append(Violation("import-type", where, f"type {o.get('type')!r} is not one the bundle may import"))
    # validate_references.ts (same folder): a reference neither in the file nor in the space is a
    # ``missing_references`` error; the bundle must carry everything it references.
    for r in o.get("references", []):
        if set(r) != {"id", "name", "type"}:
            out.append(Violation("import-references", where, f"reference {r} is not {{id, name, type}}"))
        elif (r["type"], r["id"]) not in present:
            out.append(
                Violation("import-references", where, f"reference {r['name']} to {r['type']} {r['id']} is missing")
            )
    # document_migrator.ts (packages/core/saved-objects/core-saved-objects-migration-server-internal/src/
    # document_migrator/): a typeMigrationVersion above the type's last known version is refused ("belongs to
    # a more recent version of Kibana"); the oldest Kibana we support (8.11) sets the ceiling.
    tmv = o.get("typeMigrationVersion")
    limit = _MAX_TYPE_VERSION.get(str(o.get("type")))
    if not isinstance(tmv, str) or limit is None or _version(tmv) > _version(limit):
        out.append(Violation("migration-version", where, f"typeMigrationVersion {tmv!r} is newer than 8.11 knows"))
    return out


def _check_dashboard(d: Mapping[str, Any], where: str) -> list[Violation]:
    out: list[Violation] = []
    a = d.get("attributes", {})
    # schema/v1/v1.ts + v2/v2.ts (src/plugins/dashboard/server/dashboard_saved_object/): unknown attributes are
    # forbidden; title a string; panelsJSON/optionsJSON strings; kibanaSavedObjectMeta only searchSourceJSON.
    for key in sorted(set(a) - _DASHBOARD_ATTRIBUTES):
        out.append(Violation("dashboard-schema", where, f"attribute {key!r} is not in the dashboard schema"))
    if not isinstance(a.get("title"), str):
        out.append(Violation("dashboard-schema", where, "title must be a string"))
    for key in ("panelsJSON", "optionsJSON", "description", "timeFrom", "timeTo"):
        if key in a and not isinstance(a[key], str):
            out.append(Violation("dashboard-schema", where, f"{key} must be a string"))
    meta = a.get("kibanaSavedObjectMeta")
    if not isinstance(meta, dict) or set(meta) - {"searchSourceJSON"}:
        out.append(Violation("dashboard-schema", where, "kibanaSavedObjectMeta must hold only searchSourceJSON"))
    ri = a.get("refreshInterval")
    if ri is not None and (not isinstance(ri, dict) or set(ri) - _REFRESH_INTERVAL or {"pause", "value"} - set(ri)):
        out.append(Violation("dashboard-schema", where, "refreshInterval must be {pause, value[, display, section]}"))
    cgi = a.get("controlGroupInput")
    if cgi is not None and (not isinstance(cgi, dict) or set(cgi) - _CONTROL_GROUP_INPUT):
        out.append(Violation("dashboard-schema", where, "controlGroupInput has keys the schema does not know"))
    try:
        panels = json.loads(a.get("panelsJSON", "[]"))
    except (TypeError, ValueError):
        return [*out, Violation("dashboard-schema", where, "panelsJSON is not JSON")]
    refs = {r.get("name"): r for r in d.get("references", [])}
    has_lens = False
    for p in panels:
        pwhere = f"{where} panel {p.get('title') or p.get('panelIndex')!r}"
        # migrate_extract_panel_references.ts / the dashboard's reference injection: a by-reference panel is
        # found through the dashboard reference named ``<panelIndex>:<panelRefName>``.
        if "panelRefName" in p and f"{p.get('panelIndex')}:{p['panelRefName']}" not in refs:
            out.append(Violation("panel-references", pwhere, f"no dashboard reference {p['panelRefName']!r}"))
        if p.get("type") != "lens":
            continue
        has_lens = True
        # migrate_by_value_dashboard_panels.ts: the panel version is the migration version its state is in.
        if not isinstance(p.get("version"), str) or _version(p["version"]) < _version(LENS_BY_VALUE_MIGRATION):
            out.append(Violation("migration-version", pwhere, f"panel version {p.get('version')!r} below 8.9.0"))
        attrs = (p.get("embeddableConfig") or {}).get("attributes")
        if not isinstance(attrs, dict):
            out.append(Violation("lens-state", pwhere, "a by-value Lens panel needs embeddableConfig.attributes"))
            continue
        for r in attrs.get("references", []):
            hoisted = refs.get(f"{p.get('panelIndex')}:{r.get('name')}")
            if hoisted is None or (hoisted.get("type"), hoisted.get("id")) != (r.get("type"), r.get("id")):
                out.append(
                    Violation("panel-references", pwhere, f"Lens reference {r.get('name')} not on the dashboard")
                )
        out += validate_lens(attrs, pwhere)
    # dashboard_saved_object_migrations.ts + migrate_by_value_dashboard_panels.ts: an import runs every
    # embeddable migration newer than the dashboard's typeMigrationVersion on each by-value panel; the Lens states
    # here are already in their 8.9+ form, so the dashboard must not claim an older version.
    tmv = d.get("typeMigrationVersion")
    if has_lens and (not isinstance(tmv, str) or _version(tmv) < _version(LENS_BY_VALUE_MIGRATION)):
        out.append(Violation("migration-version", where, f"typeMigrationVersion {tmv!r} would re-run Lens migrations"))
    controls = json.loads((cgi or {}).get("panelsJSON", "{}")) if isinstance(cgi, dict) else {}
    for cid, c in controls.items():
        # control group reference extraction (src/plugins/controls/common/control_group/
        # control_group_persistable_state.ts): an options list finds its data view through the reference
        # ``controlGroup_<id>:optionsListDataView``.
        ref = refs.get(f"controlGroup_{cid}:optionsListDataView")
        if ref is None or ref.get("id") != c.get("explicitInput", {}).get("dataViewId"):
            out.append(Violation("panel-references", where, f"control {cid} has no data view reference"))
    return out


# =====================================================================================================
# Lens states
# =====================================================================================================
def validate_lens(attrs: Mapping[str, Any], where: str) -> list[Violation]:
    """The violations in one Lens saved-object ``attributes`` (by value)."""
    out: list[Violation] = []
    state = attrs.get("state", {})
    sources = state.get("datasourceStates", {})
    # x-pack/plugins/lens/public/state_management/lens_slice.ts (getActiveDatasourceIdFromDoc): the first key of
    # datasourceStates becomes the active datasource; anything but the form-based one (an empty ``textBased``
    # stub included) is refused here.
    if list(sources) != ["formBased"]:
        out.append(Violation("lens-datasource", where, f"datasourceStates must be only formBased, not {list(sources)}"))
    layers = (sources.get("formBased") or {}).get("layers", {})
    ref_names = {r.get("name") for r in attrs.get("references", [])}
    for layer_id, layer in layers.items():
        lwhere = f"{where} layer {layer_id}"
        # form_based/form_based.ts (extractReferences / injectReferences): each layer's data view is the
        # reference named ``indexpattern-datasource-layer-<layerId>``.
        if f"indexpattern-datasource-layer-{layer_id}" not in ref_names:
            out.append(Violation("lens-references", lwhere, "no indexpattern-datasource-layer reference"))
        out += _check_layer(layer, lwhere)
    return out


def _referenced(columns: Mapping[str, Any], cid: str) -> bool:
    return any(cid in (c.get("references") or []) for c in columns.values())


def sortable(columns: Mapping[str, Any], cid: str) -> bool:
    """``isSortableByColumn`` (form_based/operations/definitions/terms/helpers.ts)."""
    col = columns.get(cid)
    if not col or col.get("isBucketed") or "references" in col or _referenced(columns, cid):
        return False
    if col.get("operationType") == "last_value":
        params = col.get("params") or {}
        return col.get("dataType") in ("number", "date") and not params.get("showArrayValues")
    if col.get("operationType") == "percentile":
        return float((col.get("params") or {}).get("percentile", 0)).is_integer()
    return True


def _variables(node: Any) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_variables(a) for a in node.get("args", [])))
    return set()


def _check_layer(layer: Mapping[str, Any], where: str) -> list[Violation]:
    out: list[Violation] = []
    columns: Mapping[str, Any] = layer.get("columns", {})
    order: list[str] = list(layer.get("columnOrder", []))
    # form_based/operations/layer_helpers.ts (getColumnOrder): columnOrder lists every column once, bucketed
    # columns first.
    if sorted(order) != sorted(columns) or len(set(order)) != len(order):
        out.append(Violation("lens-column-order", where, "columnOrder is not exactly the layer's columns"))
    else:
        bucketed = [c for c in order if columns[c].get("isBucketed")]
        if order[: len(bucketed)] != bucketed:
            out.append(Violation("lens-column-order", where, "bucketed columns must come first in columnOrder"))
    for cid, col in columns.items():
        op = col.get("operationType")
        cwhere = f"{where} column {col.get('label', cid)!r}"
        # layer_helpers.ts (getErrorMessages / isColumnInvalid) and formula/math.tsx: every reference names a
        # column of the same layer, only reference operations carry references, and every tinymath variable
        # is one of the math column's references.
        for ref in col.get("references") or []:
            if ref not in columns:
                out.append(Violation("lens-references", cwhere, f"references a missing column {ref}"))
        if (op in _REFERENCE_OPS) != ("references" in col):
            out.append(
                Violation(
                    "lens-references",
                    cwhere,
                    f"{op} columns {'need' if op in _REFERENCE_OPS else 'have no'} references",
                )
            )
        if op == "math" and not _variables((col.get("params") or {}).get("tinymathAst")) <= set(
            col.get("references") or []
        ):
            out.append(Violation("lens-references", cwhere, "the formula uses a column it does not reference"))
        if op == "terms":
            out += _check_terms(columns, cid, col, cwhere)
    # terms/helpers.ts (getDisallowedTermsMessage): with dynamic top values in the layer, all shiftable columns
    # must share one time shift. 9.x skips referenced columns without a shift; 8.11 counts every shiftable column,
    # and so do we (strict).
    if any(c.get("operationType") == "terms" for c in columns.values()):
        shifts = {c.get("timeShift") or "" for c in columns.values() if c.get("operationType") in _SHIFTABLE}
        if len(shifts) > 1:
            out.append(Violation("lens-time-shift", where, f"time shifts {sorted(shifts)} next to dynamic top values"))
    return out


def _check_terms(columns: Mapping[str, Any], cid: str, col: Mapping[str, Any], where: str) -> list[Violation]:
    out: list[Violation] = []
    params = col.get("params") or {}
    order = params.get("orderBy") or {}
    # terms/index.tsx: ranking is a column, alphabetical or rarity. A custom order aggregation (``custom`` with
    # ``orderAgg``) is absent from the 8.x terms operation we could read, so it is refused (strict).
    if order.get("type") not in ("column", "alphabetical", "rare"):
        out.append(Violation("lens-terms-order", where, f"rank by {order.get('type')!r} is not known to Kibana 8.11"))
    # terms/helpers.ts (isSortableByColumn) + terms/index.tsx (toEsAggsFn): a column with references, or one
    # another column references, is no esaggs aggregation, so the terms order becomes "-1" and Elasticsearch
    # refuses the search; the editor never stores such a state.
    if order.get("type") == "column" and not sortable(columns, str(order.get("columnId"))):
        target = columns.get(str(order.get("columnId")), {}).get("label", order.get("columnId"))
        out.append(Violation("lens-terms-order", where, f"cannot rank by {target!r} (not a plain aggregation)"))
    # terms/index.tsx (toEsAggsFn): ``missingBucket: otherBucket && missingBucket`` — without the other bucket,
    # documents without the field are silently dropped.
    if params.get("missingBucket") and not params.get("otherBucket"):
        out.append(Violation("lens-missing-bucket", where, "missingBucket has no effect without otherBucket"))
    return out


# =====================================================================================================
# Alert rules
# =====================================================================================================
#: x-pack/plugins/stack_alerts/server/rule_types/es_query/rule_type_params.ts (9.x:
#: src/platform/packages/shared/response-ops/rule_params/es_query/): the params ``schema.object`` (unknown keys
#: refused), ES_QUERY_MAX_HITS_PER_EXECUTION 10000; core_query_types.ts of triggers_actions_ui: time window
#: units s/m/h/d, aggregation types, groupBy all/top, MAX_GROUPS 1000; comparators of comparator_types.ts.
_RULE_PARAMS = {
    "size",
    "timeWindowSize",
    "excludeHitsFromPreviousRun",
    "timeWindowUnit",
    "threshold",
    "thresholdComparator",
    "aggType",
    "aggField",
    "groupBy",
    "termField",
    "termSize",
    "searchType",
    "timeField",
    "searchConfiguration",
    "esQuery",
    "index",
    "esqlQuery",
    "sourceFields",
}
_COMPARATORS = {">", "<", ">=", "<=", "between", "notBetween"}
_AGG_TYPES = {"count", "avg", "min", "max", "sum"}
_MAX_GROUPS = 1000


def validate_rule(body: Mapping[str, Any]) -> list[Violation]:
    """The violations of an ``.es-query`` rule create body (``POST /api/alerting/rule/<id>``)."""
    where = f"rule {body.get('name')!r}"
    out: list[Violation] = []

    def bad(message: str) -> None:
        out.append(Violation("rule-params", where, message))

    # x-pack/plugins/alerting/server/routes/create_rule.ts: name, rule_type_id, consumer, schedule.interval,
    # params are required.
    for key in ("name", "rule_type_id", "consumer", "schedule", "params"):
        if key not in body:
            bad(f"{key} is required")
    if body.get("rule_type_id") != ".es-query":
        bad("rule_type_id must be .es-query")
    p = body.get("params") or {}
    for key in sorted(set(p) - _RULE_PARAMS):
        bad(f"unknown param {key!r}")
    size = p.get("size")
    if not isinstance(size, int) or not 0 <= size <= 10000:
        bad("size must be 0..10000")
    if not isinstance(p.get("timeWindowSize"), int) or p["timeWindowSize"] < 1:
        bad("timeWindowSize must be at least 1")
    if p.get("timeWindowUnit") not in ("s", "m", "h", "d"):
        bad("timeWindowUnit must be s, m, h or d")
    threshold = p.get("threshold")
    if not isinstance(threshold, list) or not 1 <= len(threshold) <= 2:
        bad("threshold must hold one or two numbers")
        threshold = [0]
    comparator = p.get("thresholdComparator")
    if comparator not in _COMPARATORS:
        bad(f"thresholdComparator {comparator!r} is unknown")
    if comparator in ("between", "notBetween") and len(threshold) != 2:
        bad("between comparators need two thresholds")
    agg = p.get("aggType", "count")
    if agg not in _AGG_TYPES:
        bad(f"aggType {agg!r} is unknown")
    if agg != "count" and not p.get("aggField"):
        bad("aggField is required for aggType other than count")
    group = p.get("groupBy", "all")
    if group not in ("all", "top"):  # "row" exists only for ES|QL in newer Kibana: strict
        bad(f"groupBy {group!r} is not all or top")
    if group == "top" and (p.get("termField") is None or p.get("termSize") is None):
        bad("groupBy top needs termField and termSize")
    if group == "top" and isinstance(p.get("termSize"), int) and p["termSize"] > _MAX_GROUPS:
        bad("termSize must be at most 1000")
    kind = p.get("searchType", "esQuery")
    if kind == "esQuery":
        if not p.get("timeField"):
            bad("timeField is required")
        if not isinstance(p.get("index"), list) or not p["index"] or not all(p["index"]):
            bad("index must be a non-empty list")
        if "esqlQuery" in p or "searchConfiguration" in p:
            bad("esqlQuery/searchConfiguration are not allowed with searchType esQuery")
        try:
            if not json.loads(p.get("esQuery") or "").get("query"):
                bad('esQuery must contain "query"')
        except (TypeError, ValueError, AttributeError):
            bad("esQuery must be valid JSON")
    elif kind == "esqlQuery":
        if "esQuery" in p or "index" in p or "searchConfiguration" in p:
            bad("esQuery/index/searchConfiguration are not allowed with searchType esqlQuery")
        q = p.get("esqlQuery")
        if not isinstance(q, dict) or set(q) != {"esql"} or not q.get("esql"):
            bad("esqlQuery must be {esql: <query>}")
        if not p.get("timeField"):
            bad("timeField is required")
        if comparator != ">" or threshold[0] != 0:
            bad("an ES|QL rule needs thresholdComparator > and threshold [0]")
    else:
        bad(f"searchType {kind!r} is not esQuery or esqlQuery")
    return out


def violations_text(violations: Iterable[Violation]) -> str:
    """One line per violation (for assertion messages)."""
    return "\n".join(str(v) for v in violations)
