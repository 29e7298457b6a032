"""Kibana's rules (``usage_collector.elastic.kibana.validate``): the bundle passes, and each rule, given one
object broken the way it forbids, names that object."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import make_settings
from usage_collector.elastic import kibana
from usage_collector.elastic.kibana.validate import validate_bundle, validate_rule, violations_text

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def bundle() -> list[Obj]:
    return [json.loads(line) for line in kibana.NDJSON_PATH.read_text().splitlines()]


def test_the_committed_bundle_breaks_no_kibana_rule(bundle):
    assert validate_bundle(bundle) == [], violations_text(validate_bundle(bundle))


def test_every_alert_rule_body_matches_the_es_query_params_schema():
    for rule in kibana.rules(kibana.default_settings(), daily_cost_threshold=10.0):
        assert validate_rule(rule.body) == [], violations_text(validate_rule(rule.body))


def test_budget_rules_match_the_es_query_params_schema():
    s = make_settings(budgets=[{"name": "org", "amount": 100}, {"name": "p", "amount": 5, "alert_at": [90]}])
    budget = [r for r in kibana.rules(s) if r.key.startswith("budget-")]
    assert [r.key for r in budget] == [
        "budget-forecast-over",
        "budget-spend-50",
        "budget-spend-80",
        "budget-spend-90",
        "budget-spend-100",
    ]
    assert len({r.id for r in budget}) == len(budget)
    for rule in budget:
        assert validate_rule(rule.body) == [], violations_text(validate_rule(rule.body))
    assert not [r for r in kibana.rules(kibana.default_settings()) if r.key.startswith("budget-")]


# --- breaking one object per rule -------------------------------------------------------------------------
def _panel(objs: list[Obj], title: str) -> tuple[Obj, list[Obj], Obj]:
    for d in objs:
        if d["type"] == "dashboard":
            ps = json.loads(d["attributes"]["panelsJSON"])
            for p in ps:
                if p.get("title") == title:
                    return d, ps, p
    raise KeyError(title)


def _layer(p: Obj) -> Obj:
    layers = p["embeddableConfig"]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    return next(iter(layers.values()))


def _terms(layer: Obj) -> Obj:
    return next(c for c in layer["columns"].values() if c["operationType"] == "terms")


def _edit_panel(title: str, change: Callable[[Obj], None]) -> Callable[[list[Obj]], None]:
    def apply(objs: list[Obj]) -> None:
        d, ps, p = _panel(objs, title)
        change(p)
        d["attributes"]["panelsJSON"] = json.dumps(ps)

    return apply


def _rank_by_formula(p: Obj) -> None:
    layer = _layer(p)
    formula = next(cid for cid, c in layer["columns"].items() if c["operationType"] == "formula")
    _terms(layer)["params"]["orderBy"] = {"type": "column", "columnId": formula}


def _rank_by_helper(p: Obj) -> None:
    layer = _layer(p)
    helper = next(cid for cid, c in layer["columns"].items() if c["operationType"] == "sum" and "X" in cid[-3:])
    _terms(layer)["params"]["orderBy"] = {"type": "column", "columnId": helper}


def _custom_order(p: Obj) -> None:
    _terms(_layer(p))["params"]["orderBy"] = {"type": "custom"}


def _time_shift(p: Obj) -> None:
    layer = _layer(p)
    next(c for c in layer["columns"].values() if c["operationType"] == "sum")["timeShift"] = "7d"


def _missing_without_other(p: Obj) -> None:
    params = _terms(_layer(p))["params"]
    params["missingBucket"], params["otherBucket"] = True, False


def _text_based_stub(p: Obj) -> None:
    p["embeddableConfig"]["attributes"]["state"]["datasourceStates"]["textBased"] = {"layers": {}}


def _layer_reference_renamed(p: Obj) -> None:
    p["embeddableConfig"]["attributes"]["references"][0]["name"] = "indexpattern-datasource-current-indexpattern"


def _column_order_incomplete(p: Obj) -> None:
    _layer(p)["columnOrder"].pop()


def _metric_before_bucket(p: Obj) -> None:
    order = _layer(p)["columnOrder"]
    order.append(order.pop(0))


def _dangling_column_reference(p: Obj) -> None:
    col = next(c for c in _layer(p)["columns"].values() if c["operationType"] == "formula")
    col["references"] = ["gone"]


def _math_uses_unreferenced(p: Obj) -> None:
    col = next(c for c in _layer(p)["columns"].values() if c["operationType"] == "math")
    col["references"] = col["references"][:1]


def _old_panel_version(p: Obj) -> None:
    p["version"] = "8.7.0"


def _unhoisted_reference(p: Obj) -> None:
    p["embeddableConfig"]["attributes"]["references"][0]["id"] = "usage-collector-runs"


def _dashboard(objs: list[Obj], dashboard_id: str) -> Obj:
    return next(o for o in objs if o["id"] == dashboard_id)


def _set(path: tuple[str, ...], value: Any, dashboard_id: str = "usage-collector-costs") -> Callable[[list[Obj]], None]:
    def apply(objs: list[Obj]) -> None:
        node = _dashboard(objs, dashboard_id)
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _drop_data_view(objs: list[Obj]) -> None:
    objs[:] = [o for o in objs if o["id"] != kibana.RUNS_DATA_VIEW]


def _foreign_type(objs: list[Obj]) -> None:
    objs[0]["type"] = "config"


def _control_reference_dropped(objs: list[Obj]) -> None:
    d = _dashboard(objs, "usage-collector-chargeback")
    d["references"] = [r for r in d["references"] if not r["name"].startswith("controlGroup_")]


def _search_panel_reference_dropped(objs: list[Obj]) -> None:
    d = _dashboard(objs, "usage-collector-collector-health")
    d["references"] = [r for r in d["references"] if r["type"] != "search"]


CASES = [
    # (rule, object named, how it is broken)
    ("lens-terms-order", "Token usage by model", _edit_panel("Token usage by model", _rank_by_formula)),
    ("lens-terms-order", "Top movers by project", _edit_panel("Top movers by project", _rank_by_helper)),
    ("lens-terms-order", "Daily cost by project", _edit_panel("Daily cost by project", _custom_order)),
    ("lens-time-shift", "Top movers by line item", _edit_panel("Top movers by line item", _time_shift)),
    (
        "lens-missing-bucket",
        "Images generated by size",
        _edit_panel("Images generated by size", _missing_without_other),
    ),
    ("lens-datasource", "Batch share", _edit_panel("Batch share", _text_based_stub)),
    ("lens-references", "Model usage", _edit_panel("Model usage", _layer_reference_renamed)),
    ("lens-column-order", "Streams", _edit_panel("Streams", _column_order_incomplete)),
    ("lens-column-order", "By model", _edit_panel("By model", _metric_before_bucket)),
    ("lens-references", "Cached input share", _edit_panel("Cached input share", _dangling_column_reference)),
    ("lens-references", "Top movers by project", _edit_panel("Top movers by project", _math_uses_unreferenced)),
    ("migration-version", "Token trend", _edit_panel("Token trend", _old_panel_version)),
    ("panel-references", "Tokens", _edit_panel("Tokens", _unhoisted_reference)),
    ("migration-version", "dashboard usage-collector-costs", _set(("typeMigrationVersion",), "8.7.0")),
    ("migration-version", "dashboard usage-collector-costs", _set(("typeMigrationVersion",), "8.12.0")),
    ("dashboard-schema", "dashboard usage-collector-costs", _set(("attributes", "tags"), ["openai"])),
    ("dashboard-schema", "dashboard usage-collector-costs", _set(("attributes", "refreshInterval"), {"pause": True})),
    (
        "dashboard-schema",
        "dashboard usage-collector-chargeback",
        _set(("attributes", "controlGroupInput", "autoApplySelections"), True, "usage-collector-chargeback"),
    ),
    ("dashboard-schema", "dashboard usage-collector-costs", _set(("attributes", "kibanaSavedObjectMeta", "x"), "")),
    ("import-references", "search usage-collector-failed-runs", _drop_data_view),
    ("import-type", "config usage-collector-openai", _foreign_type),
    ("panel-references", "dashboard usage-collector-chargeback", _control_reference_dropped),
    ("panel-references", "Failed runs, newest first", _search_panel_reference_dropped),
]


@pytest.mark.parametrize(("rule", "named", "breakage"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_names_the_object_that_breaks_it(bundle, rule, named, breakage):
    broken = copy.deepcopy(bundle)
    breakage(broken)
    found = [v for v in validate_bundle(broken) if v.rule == rule]
    assert found, f"{rule} did not fire"
    assert any(named in v.where or named in v.message for v in found), violations_text(found)


# --- rule bodies ------------------------------------------------------------------------------------------
def _rule(key: str) -> dict[str, Any]:
    rules = kibana.rules(kibana.default_settings(), daily_cost_threshold=10.0)
    return copy.deepcopy(next(r for r in rules if r.key == key).body)


@pytest.mark.parametrize(
    ("key", "change", "message"),
    [
        ("stream-stale", lambda p: p.update(extra=1), "unknown param"),
        ("stream-stale", lambda p: p.update(size=10001), "size"),
        ("stream-stale", lambda p: p.update(timeWindowUnit="w"), "timeWindowUnit"),
        ("stream-stale", lambda p: p.update(threshold=[1, 2, 3]), "threshold"),
        ("stream-stale", lambda p: p.update(thresholdComparator="between"), "two thresholds"),
        ("stream-stale", lambda p: p.pop("termSize"), "termField and termSize"),
        ("stream-stale", lambda p: p.update(termSize=1001), "termSize"),
        ("stream-stale", lambda p: p.update(groupBy="row"), "groupBy"),
        ("stream-stale", lambda p: p.update(esQuery='{"size": 1}'), "query"),
        ("stream-stale", lambda p: p.update(esQuery="{nope"), "valid JSON"),
        ("collector-silent", lambda p: p.pop("timeField"), "timeField"),
        ("collector-silent", lambda p: p.update(index=[]), "index"),
        ("daily-cost", lambda p: p.pop("aggField"), "aggField"),
        ("daily-cost", lambda p: p.update(aggType="median"), "aggType"),
        ("cost-spike", lambda p: p.update(threshold=[1]), "threshold [0]"),
        ("cost-spike", lambda p: p.update(thresholdComparator=">="), "thresholdComparator >"),
        ("cost-spike", lambda p: p.update(index=["x"]), "not allowed"),
        ("cost-spike", lambda p: p.update(esqlQuery={"query": "FROM x"}), "esqlQuery"),
    ],
)
def test_rule_bodies_that_break_the_params_schema_are_named(key, change, message):
    body = _rule(key)
    change(body["params"])
    found = validate_rule(body)
    assert any(message in v.message for v in found), violations_text(found)
    assert all(body["name"] in v.where for v in found)
