"""Kibana saved objects, checked statically (no Kibana can run here).

* the committed NDJSON and docs/dashboards.md are exactly what the definitions compile to;
* every object has what an import needs, in the form Kibana 8.11 stores (migration versions, panel layout);
* every reference resolves inside the bundle, and every Lens panel is internally consistent (columns,
  accessors, formula helpers, tinymath variables);
* every field a panel, control, filter, data view or rule uses is mapped in **every** template of the data it
  reads, with a type the operation can aggregate;
* the data views match our data streams and nothing else.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_settings, templates_of
from usage_collector.catalogue import STREAMS
from usage_collector.elastic import kibana
from usage_collector.elastic import objects as es_objects
from usage_collector.elastic.kibana.docs import render_docs
from usage_collector.elastic.kibana.lens import _Layer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "dashboards.md"

NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
KEYWORDISH = {"keyword", "constant_keyword", "boolean"}
AGGREGATABLE = NUMERIC | KEYWORDISH | {"date", "ip"}
#: What each Lens operation can aggregate.
OPERATION_TYPES = {
    "sum": NUMERIC,
    "average": NUMERIC,
    "min": NUMERIC | {"date"},
    "max": NUMERIC | {"date"},
    "median": NUMERIC,
    "unique_count": AGGREGATABLE,
    "last_value": AGGREGATABLE,
    "terms": KEYWORDISH,
    "date_histogram": {"date"},
}
REFERENCE_OPS = {"formula", "math", "cumulative_sum"}


# --- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [json.loads(line) for line in kibana.NDJSON_PATH.read_text().splitlines()]
    return out


def by_type(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["type"] == kind]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(dashboard["attributes"]["panelsJSON"])
    return out


def lens_panels(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for d in by_type(objects, "dashboard"):
        for p in panels(d):
            if p["type"] == "lens":
                yield d, p


KQL_FIELD = re.compile(r'(?:^|[\s(])(?:not\s+)?"?([A-Za-z_@][\w.@]*)"?\s*(?::|<=|>=|<|>)')


def kql_fields(query: str) -> set[str]:
    return set(KQL_FIELD.findall(query))


def field_uses(objects: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """``(data view id, field, operation, where)`` for every field use in the bundle."""
    uses: list[tuple[str, str, str, str]] = []
    views = {o["id"]: o for o in by_type(objects, "index-pattern")}
    for dv in views.values():
        uses.append((dv["id"], dv["attributes"]["timeFieldName"], "date_histogram", f"{dv['id']} time field"))
        for f in json.loads(dv["attributes"]["fieldFormatMap"]):
            uses.append((dv["id"], f, "exists", f"{dv['id']} field format"))
    for s in by_type(objects, "search"):
        dv_id = next(r["id"] for r in s["references"] if r["type"] == "index-pattern")
        source = json.loads(s["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        uses += [(dv_id, f, "exists", f"search {s['id']} column") for f in s["attributes"]["columns"]]
        uses += [(dv_id, f, "exists", f"search {s['id']} query") for f in kql_fields(source["query"]["query"])]
        uses += [(dv_id, f, "date_histogram", f"search {s['id']} sort") for f, _ in s["attributes"]["sort"]]
    for d in by_type(objects, "dashboard"):
        controls = json.loads(d["attributes"].get("controlGroupInput", {}).get("panelsJSON", "{}"))
        for c in controls.values():
            ei = c["explicitInput"]
            uses.append((ei["dataViewId"], ei["fieldName"], "terms", f"{d['id']} control {ei['title']}"))
    for d, p in lens_panels(objects):
        attrs = p["embeddableConfig"]["attributes"]
        where = f"{d['id']} panel {p.get('title')!r}"
        refs = {r["name"]: r["id"] for r in attrs["references"]}
        state = attrs["state"]
        for layer_id, layer in state["datasourceStates"]["formBased"]["layers"].items():
            dv_id = refs[f"indexpattern-datasource-layer-{layer_id}"]
            uses += [(dv_id, f, "exists", f"{where} query") for f in kql_fields(state["query"]["query"])]
            for col in layer["columns"].values():
                op = col["operationType"]
                src = col.get("sourceField")
                if src and src != "___records___":
                    uses.append((dv_id, src, op, where))
                if op == "last_value":
                    uses.append((dv_id, col["params"]["sortField"], "date_histogram", f"{where} sort"))
                if "filter" in col:
                    uses += [(dv_id, f, "exists", f"{where} filter") for f in kql_fields(col["filter"]["query"])]
    return uses


# --- the committed files -------------------------------------------------------------------------------
def test_committed_ndjson_is_what_the_definitions_compile_to():
    assert kibana.NDJSON_PATH.read_text() == kibana.render_ndjson(), (
        "kibana/usage-collector.ndjson is stale: run python -m usage_collector.elastic.kibana.docs"
    )


def test_the_compiled_bundle_breaks_no_kibana_rule():
    from usage_collector.elastic.kibana.validate import validate_bundle, violations_text

    objects = [json.loads(line) for line in kibana.render_ndjson().splitlines()]
    assert validate_bundle(objects) == [], violations_text(validate_bundle(objects))


def test_regenerating_twice_gives_identical_output():
    assert kibana.render_ndjson() == kibana.render_ndjson(kibana.default_settings())


def test_docs_list_every_dashboard_and_are_in_sync():
    assert DOCS.read_text() == render_docs(), (
        "docs/dashboards.md is stale: run python -m usage_collector.elastic.kibana.docs"
    )
    text = DOCS.read_text()
    for d in kibana.DASHBOARDS:
        assert d.title in text
        for p in d.panels:
            if p.title:
                assert p.title in text


def test_render_ndjson_follows_the_settings():
    s = make_settings(data_stream_type="logs")
    dv = json.loads(kibana.render_ndjson(s).splitlines()[0])
    assert dv["attributes"]["title"].startswith("logs-openai.completions-*,")


# --- importability -------------------------------------------------------------------------------------
def test_every_line_is_a_saved_object_an_import_accepts(objects):
    assert [o["type"] for o in objects] == ["index-pattern"] * 5 + ["search"] + ["dashboard"] * 4
    assert len({(o["type"], o["id"]) for o in objects}) == len(objects)
    for o in objects:
        assert set(o) == {"id", "type", "attributes", "references", "coreMigrationVersion", "typeMigrationVersion"}
        assert re.fullmatch(r"[a-z0-9\-]+", o["id"])
        assert o["attributes"]["title"]
        assert o["coreMigrationVersion"] == "8.8.0"
        # semver stack versions, not model versions (10.x.0): Kibana 8.11 refuses a version it does not know
        assert o["typeMigrationVersion"] == kibana.TYPE_MIGRATION_VERSIONS[o["type"]]
        assert tuple(map(int, o["typeMigrationVersion"].split("."))) <= (8, 11, 0)
        for r in o["references"]:
            assert set(r) == {"id", "name", "type"}


def test_dashboards_have_time_defaults_and_string_encoded_json(objects):
    datemath = re.compile(r"now(-\d+[smhdwMy])?(/[smhdwMy])?")
    for d in by_type(objects, "dashboard"):
        a = d["attributes"]
        assert a["timeRestore"] is True
        assert datemath.fullmatch(a["timeFrom"]) and datemath.fullmatch(a["timeTo"])
        for key in ("panelsJSON", "optionsJSON"):
            assert isinstance(a[key], str)
            json.loads(a[key])
        json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])
        assert json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])["filter"] == []
    by_id = {d["id"]: d["attributes"] for d in by_type(objects, "dashboard")}
    assert by_id["usage-collector-collector-health"]["timeFrom"] == "now-24h"
    assert by_id["usage-collector-usage-overview"]["timeFrom"] == "now-7d"


def test_panels_are_laid_out_on_the_grid_without_overlap(objects):
    for d in by_type(objects, "dashboard"):
        cells: set[tuple[int, int]] = set()
        ids = set()
        for p in panels(d):
            g = p["gridData"]
            assert g["i"] == p["panelIndex"] and p["panelIndex"] not in ids
            ids.add(p["panelIndex"])
            assert g["x"] >= 0 and g["x"] + g["w"] <= 48 and g["h"] > 0
            assert p["version"] == kibana.PANEL_VERSION
            assert p["type"] in ("lens", "visualization", "search")
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, f"{d['id']}: panel {p.get('title')} overlaps another"
            cells |= area


def test_every_reference_resolves_inside_the_bundle(objects):
    present = {(o["type"], o["id"]) for o in objects}
    for o in objects:
        for r in o["references"]:
            assert (r["type"], r["id"]) in present, f"{o['id']}: dangling reference {r}"
    for d in by_type(objects, "dashboard"):
        names = {r["name"]: r for r in d["references"]}
        for p in panels(d):
            if p["type"] == "search":
                assert f"{p['panelIndex']}:{p['panelRefName']}" in names
            for r in p["embeddableConfig"].get("attributes", {}).get("references", []):
                hoisted = names[f"{p['panelIndex']}:{r['name']}"]
                assert (hoisted["type"], hoisted["id"]) == (r["type"], r["id"])
        controls = json.loads(d["attributes"].get("controlGroupInput", {}).get("panelsJSON", "{}"))
        for cid, c in controls.items():
            ref = names[f"controlGroup_{cid}:optionsListDataView"]
            assert ref["id"] == c["explicitInput"]["dataViewId"]
    for s in by_type(objects, "search"):
        source = json.loads(s["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        assert source["indexRefName"] in {r["name"] for r in s["references"]}


def test_lens_panels_are_internally_consistent(objects):
    for d, p in lens_panels(objects):
        attrs = p["embeddableConfig"]["attributes"]
        where = f"{d['id']} {p.get('title')!r}"
        assert attrs["type"] == "lens" and attrs["visualizationType"] in (
            "lnsXY",
            "lnsMetric",
            "lnsPie",
            "lnsDatatable",
        )
        layers = attrs["state"]["datasourceStates"]["formBased"]["layers"]
        ref_names = {r["name"] for r in attrs["references"]}
        all_columns: dict[str, dict[str, Any]] = {}
        for layer_id, layer in layers.items():
            assert f"indexpattern-datasource-layer-{layer_id}" in ref_names, where
            cols = layer["columns"]
            assert sorted(layer["columnOrder"]) == sorted(cols), where
            bucketed = [c for c in layer["columnOrder"] if cols[c]["isBucketed"]]
            assert layer["columnOrder"][: len(bucketed)] == bucketed, f"{where}: buckets first"
            for cid, col in cols.items():
                for ref in col.get("references", []):
                    assert ref in cols, f"{where}: {cid} references missing {ref}"
                assert (col["operationType"] in REFERENCE_OPS) == ("references" in col), where
                if col["operationType"] == "math":
                    assert variables(col["params"]["tinymathAst"]) <= set(col["references"]), where
                if col["operationType"] == "terms":
                    order = col["params"]["orderBy"]
                    if order["type"] == "column":
                        assert order["columnId"] in cols and not cols[order["columnId"]]["isBucketed"], where
                if col["operationType"] == "formula":
                    assert not col["params"]["isFormulaBroken"] and col["params"]["formula"]
            all_columns.update(cols)
        for accessor in accessors(attrs["state"]["visualization"]):
            assert accessor in all_columns, f"{where}: visualization shows a missing column {accessor}"


def variables(node: Any) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(variables(a) for a in node["args"]))
    return set()


def accessors(vis: dict[str, Any]) -> list[str]:
    out = [vis[k] for k in ("metricAccessor", "secondaryMetricAccessor") if k in vis]
    out += [c["columnId"] for c in vis.get("columns", [])]
    for layer in vis.get("layers", []):
        out += layer.get("accessors", []) + layer.get("primaryGroups", []) + layer.get("metrics", [])
        out += [layer[k] for k in ("xAccessor", "splitAccessor") if k in layer]
    if "sorting" in vis:
        out.append(vis["sorting"]["columnId"])
    return out


# --- fields --------------------------------------------------------------------------------------------
def test_every_field_a_panel_uses_is_mapped_in_every_template_it_reads(objects):
    settings = kibana.default_settings()
    uses = field_uses(objects)
    assert len(uses) > 150
    problems = []
    for dv_id, fld, op, where in uses:
        for tname, mapping in templates_of(settings, dv_id).items():
            es_type = mapping.get(fld)
            if es_type is None:
                problems.append(f"{where}: {fld} is not mapped in {tname}")
            elif op in OPERATION_TYPES and es_type not in OPERATION_TYPES[op]:
                problems.append(f"{where}: {op} on {fld} ({es_type}) in {tname}")
    assert not problems, "\n".join(problems)


def test_field_checks_catch_a_missing_or_mistyped_field(objects):
    broken = json.loads(json.dumps(objects))
    d = next(o for o in broken if o["id"] == "usage-collector-costs")
    ps = panels(d)
    col = next(
        c
        for p in ps
        if p["type"] == "lens"
        for la in p["embeddableConfig"]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
        for c in la["columns"].values()
        if c.get("sourceField") == "openai.costs.amount.value"
    )
    col["sourceField"] = "openai.costs.line_item"  # sum over a keyword
    d["attributes"]["panelsJSON"] = json.dumps(ps)
    settings = kibana.default_settings()
    bad = [u for u in field_uses(broken) if u[1] == "openai.costs.line_item" and u[2] == "sum"]
    assert bad
    for dv_id, fld, op, _ in bad:
        assert all(m[fld] not in OPERATION_TYPES[op] for m in templates_of(settings, dv_id).values())


def test_panels_use_names_where_documents_carry_them(objects):
    text = kibana.NDJSON_PATH.read_text()
    for name in ("openai.base.project_name", "openai.base.api_key_name", "openai.base.user_email"):
        assert name in text


def test_share_of_org_panels_ignore_the_project_control(objects):
    d = next(o for o in objects if o["id"] == "usage-collector-chargeback")
    controls = json.loads(d["attributes"]["controlGroupInput"]["panelsJSON"])
    assert [c["explicitInput"]["fieldName"] for c in controls.values()] == ["openai.base.project_name"]
    shares = [p for p in panels(d) if "organization" in (p.get("title") or "").lower()]
    assert len(shares) == 3
    for p in shares:
        layers = p["embeddableConfig"]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        assert any(la.get("ignoreGlobalFilters") for la in layers.values())


def test_usage_overview_covers_elastics_panels_and_ours(objects):
    d = next(o for o in objects if o["id"] == "usage-collector-usage-overview")
    text = d["attributes"]["panelsJSON"]
    for fld in (
        "openai.base.num_model_requests",
        "openai.base.model",
        "openai.images.size",
        "openai.images.images",
        "openai.audio_transcriptions.seconds",
        "openai.audio_speeches.characters",
        "openai.completions.input_cached_tokens",
        "openai.completions.batch",
        "openai.vector_stores.usage_bytes",
        "openai.code_interpreter_sessions.num_sessions",
        "openai.file_search_calls.num_requests",
        "openai.web_search_calls.num_requests",
        "openai.embeddings.input_tokens",
        "openai.moderations.input_tokens",
    ):
        assert fld in text, fld


def test_month_to_date_panels_have_their_own_time_ranges(objects):
    d = next(o for o in objects if o["id"] == "usage-collector-costs")
    ranges = {p.get("title"): p["embeddableConfig"].get("timeRange") for p in panels(d)}
    assert ranges["Month to date"] == {"from": "now/M", "to": "now"}
    assert ranges["Last month"] == {"from": "now-1M/M", "to": "now-1M/M"}
    assert ranges["Billed cost"] is None


def test_cost_intelligence_panels_read_reconciliation_and_allocation(objects):
    d = next(o for o in objects if o["id"] == "usage-collector-costs")
    by_title = {p.get("title"): p for p in panels(d) if p["type"] == "lens"}
    expected = {
        "Estimated against billed cost per day": (kibana.RECONCILIATION_DATA_VIEW, "Billed"),
        "Estimated against billed by project and model": (kibana.RECONCILIATION_DATA_VIEW, "Billed"),
        "Allocated cost by model": (kibana.ALLOCATION_DATA_VIEW, "Allocated cost"),
        "Allocated cost by user": (kibana.ALLOCATION_DATA_VIEW, "Allocated cost"),
    }
    for title, (dv_id, rank_label) in expected.items():
        p = by_title[title]
        attrs = p["embeddableConfig"]["attributes"]
        assert {r["id"] for r in attrs["references"]} == {dv_id}, title
        if "allocated" in title.lower():
            assert "usage share" in p["embeddableConfig"]["description"], title
        (layer,) = attrs["state"]["datasourceStates"]["formBased"]["layers"].values()
        cols = layer["columns"]
        for c in cols.values():
            if c["operationType"] != "terms":
                continue
            order = c["params"]["orderBy"]
            ranked = cols[order["columnId"]]
            assert ranked["label"] == rank_label and ranked["operationType"] == "sum", title
            assert c["params"]["otherBucket"] or not c["params"]["missingBucket"], title
    daily = by_title["Estimated against billed cost per day"]["embeddableConfig"]["attributes"]["state"]
    assert {
        c.get("sourceField")
        for la in daily["datasourceStates"]["formBased"]["layers"].values()
        for c in la["columns"].values()
    } == {
        "@timestamp",
        "openai.reconciliation.estimated_cost",
        "openai.reconciliation.billed_cost",
    }
    assert daily["visualization"]["layers"][0]["seriesType"] == "line"  # not stacked: two totals side by side


# --- data views ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ds_type", ["metrics", "logs"])
def test_data_views_match_our_data_streams_and_nothing_else(ds_type):
    s = make_settings(data_stream_type=ds_type, namespace="prod")
    views = {
        o["id"]: o["attributes"]["title"].split(",") for o in kibana.saved_objects(s) if o["type"] == "index-pattern"
    }
    usage, runs, budgets = views[kibana.USAGE_DATA_VIEW], views[kibana.RUNS_DATA_VIEW], views[kibana.BUDGETS_DATA_VIEW]
    derived = {
        s: views[v]
        for s, v in (("reconciliation", kibana.RECONCILIATION_DATA_VIEW), ("allocation", kibana.ALLOCATION_DATA_VIEW))
    }

    def matches(patterns: list[str], name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    for stream in STREAMS:
        for ns in ("prod", "default"):
            assert matches(usage, f"{ds_type}-openai.{stream}-{ns}")
    assert matches(runs, es_objects.runs_data_stream(s))
    assert not matches(usage, es_objects.runs_data_stream(s))
    assert matches(budgets, es_objects.data_stream_name(s, "budgets"))
    assert not matches(usage, es_objects.data_stream_name(s, "budgets"))
    assert not any(matches(budgets, f"{ds_type}-openai.{stream}-prod") for stream in STREAMS)
    for stream, view in derived.items():
        assert matches(view, es_objects.data_stream_name(s, stream))
        assert not matches(usage, es_objects.data_stream_name(s, stream))
        assert not matches(budgets, es_objects.data_stream_name(s, stream))
        assert not any(matches(view, f"{ds_type}-openai.{other}-prod") for other in (*STREAMS, "budgets"))
        assert not any(matches(view, es_objects.data_stream_name(s, other)) for other in derived if other != stream)
    for foreign in (
        "logs-openai.audit-default",
        "logs-openai.rate_limits-default",
        "metrics-openai.other-default",
        "logs-nginx.access-default",
        "metrics-system.cpu-default",
        ".kibana",
    ):
        assert not any(matches(view, foreign) for view in (usage, runs, budgets, *derived.values()))
    every = usage + runs + budgets + [p for view in derived.values() for p in view]
    assert "logs-*" not in every and "metrics-*" not in every


# --- the formula compiler ----------------------------------------------------------------------------
def test_formula_compiles_to_helper_columns_and_tinymath():
    layer = _Layer("t", {"a": "long", "b": "long"})
    cid = layer.metric(kibana.M("Ratio", "sum(a) / sum(b, kql='x : \"y\"', shift='1w') - 1"), "m")
    cols = layer.columns
    assert cols[cid]["operationType"] == "formula" and cols[cid]["references"] == [f"{cid}X2"]
    assert cols[f"{cid}X0"]["sourceField"] == "a"
    assert cols[f"{cid}X1"]["filter"] == {"query": 'x : "y"', "language": "kuery"}
    assert cols[f"{cid}X1"]["timeShift"] == "1w"
    ast = cols[f"{cid}X2"]["params"]["tinymathAst"]
    assert ast["name"] == "subtract" and ast["args"][1] == 1
    assert ast["args"][0]["name"] == "divide" and ast["args"][0]["args"] == [f"{cid}X0", f"{cid}X1"]
    assert ast["text"] == "sum(a) / sum(b, kql='x : \"y\"', shift='1w') - 1"


def test_a_single_aggregation_is_a_plain_column():
    layer = _Layer("t", {"a": "long"})
    cid = layer.metric(kibana.M("A", "sum(a)"), "m")
    assert layer.columns[cid]["operationType"] == "sum" and len(layer.columns) == 1
    wrapped = layer.metric(kibana.M("Cumulative", "cumulative_sum(sum(a, shift='1M'))"), "c")
    assert layer.columns[wrapped]["references"] == [f"{wrapped}X0"]
    assert layer.columns[f"{wrapped}X0"]["timeShift"] == "1M"


@pytest.mark.parametrize("bad", ["sum(a", "frobnicate(a)", "sum(a) +", "sum(a) sum(b)"])
def test_malformed_formulas_are_refused(bad):
    with pytest.raises(ValueError):
        _Layer("t", {}).metric(kibana.M("x", bad), "m")
