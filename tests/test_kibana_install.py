"""``install`` and ``install_rules`` against the Kibana stand-in (``kb``, ``tests/helpers.py``) that records every
request.

The requests are checked against what Kibana's API documents:

* import: ``POST [/s/<space>]/api/saved_objects/_import?overwrite=true``, ``kbn-xsrf`` header, a
  ``multipart/form-data`` body whose part ``file`` carries the NDJSON; the response's ``successResults``
  (``overwrite: true`` for objects that existed) and ``errors`` (``missing_references``...);
* rules: ``POST [/s/<space>]/api/alerting/rule/<id>`` (id a UUID v1/v4) with ``name``, ``rule_type_id``,
  ``consumer``, ``schedule``, ``params``; on 409 ``PUT`` with the body less ``rule_type_id``/``consumer``/
  ``enabled``; ``.es-query`` params as the rule type requires them (query DSL and ES|QL forms).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import unittest.mock
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import KibanaStandIn, import_file, make_settings, multipart_parts, templates_of
from usage_collector.elastic import kibana
from usage_collector.elastic.kibana import client as kibana_client
from usage_collector.errors import ConfigError

API_KEY = "a2liYW5hLWtleS1DQU5BUlk6c2VjcmV0LUNBTkFSWQ=="
PASSWORD = "pw-CANARY-19e2"


def settings_for(kb: KibanaStandIn, **extra: Any):
    return make_settings(kibana_url=kb.url, elasticsearch_api_key=API_KEY, **extra)


# --- import --------------------------------------------------------------------------------------------
def test_install_sends_the_documented_import_request(kb):
    s = settings_for(kb)
    lines: list[str] = []
    urls = kibana.install(s, space="team-a", out=lines.append)
    (req,) = kb.requests
    assert (req.method, req.path) == ("POST", "/s/team-a/api/saved_objects/_import")
    assert req.query == {"overwrite": ["true"]}
    assert req.headers["kbn-xsrf"] == "true"
    assert req.headers["authorization"] == f"ApiKey {API_KEY}"
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(req)
    assert list(parts) == ["file"]
    assert parts["file"].get_filename().endswith(".ndjson")
    assert parts["file"].get_payload(decode=True).decode() == kibana.render_ndjson(s)
    assert urls == [f"{kb.url}/s/team-a/app/dashboards#/view/{d.id}" for d in kibana.DASHBOARDS]
    assert [line for line in lines if line.startswith("dashboard: ")] == [f"dashboard: {u}" for u in urls]
    assert sum(": created" in line for line in lines) == 10
    assert not any(API_KEY in line for line in lines)


def test_install_is_idempotent_a_second_run_overwrites_the_same_objects(kb):
    s = settings_for(kb)
    first: list[str] = []
    second: list[str] = []
    kibana.install(s, out=first.append)
    kibana.install(s, out=second.append)
    assert [r.path for r in kb.requests] == ["/api/saved_objects/_import"] * 2  # default space: no /s/ prefix
    assert import_file(kb.requests[0]) == import_file(kb.requests[1])
    assert sum(": updated" in line for line in second) == 10 and not any(": created" in line for line in second)


def test_install_uses_the_configured_space_and_basic_auth(kb):
    s = make_settings(
        kibana_url=kb.url + "/",
        kibana_space="finance",
        elasticsearch_username="elastic",
        elasticsearch_password=PASSWORD,
    )
    urls = kibana.install(s, out=lambda _: None)
    (req,) = kb.requests
    assert req.path == "/s/finance/api/saved_objects/_import"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    assert urls[0].startswith(f"{kb.url}/s/finance/app/dashboards#/view/")
    kibana.install(s, space="default", out=lambda _: None)
    assert kb.requests[-1].path == "/api/saved_objects/_import"


def test_install_appends_to_the_setup_report(kb):
    from usage_collector.elastic.setup import SetupReport

    report = SetupReport(dry_run=False)
    kibana.install(settings_for(kb), out=lambda _: None, report=report)
    assert {(a.kind, a.status) for a in report.actions} == {
        ("Kibana index-pattern", "created"),
        ("Kibana search", "created"),
        ("Kibana dashboard", "created"),
    }
    assert len(report.actions) == 10


def test_dry_run_sends_nothing(kb):
    lines: list[str] = []
    urls = kibana.install(settings_for(kb), dry_run=True, out=lines.append)
    assert kb.requests == []
    assert len(urls) == 4 and sum("would import" in line for line in lines) == 10


def test_refused_objects_are_reported_with_their_missing_references(kb):
    kb.override = lambda req: (
        200,
        {
            "success": False,
            "successCount": 0,
            "errors": [
                {
                    "id": "usage-collector-costs",
                    "type": "dashboard",
                    "title": "x",
                    "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "gone"}]},
                }
            ],
        },
    )
    with pytest.raises(
        kibana.KibanaError,
        match=r"dashboard usage-collector-costs: missing_references "
        r"\(missing index-pattern gone\)",
    ):
        kibana.install(settings_for(kb), out=lambda _: None)


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "ELASTICSEARCH_API_KEY"), (403, "privileges"), (404, "space exist")]
)
def test_http_errors_name_the_cause_and_never_the_credential(kb, status, hint):
    kb.override = lambda req: (status, {"message": f"rejected {req.headers.get('authorization')}"})
    with pytest.raises(kibana.KibanaError) as info:
        kibana.install(settings_for(kb), out=lambda _: None)
    assert f"HTTP {status}" in str(info.value) and hint in str(info.value)
    assert API_KEY not in str(info.value)


def test_an_unreachable_kibana_is_a_kibana_error():
    s = make_settings(kibana_url="http://127.0.0.1:9", elasticsearch_api_key=API_KEY)
    with pytest.raises(kibana.KibanaError, match="import saved objects"):
        kibana.install(s, out=lambda _: None)


@pytest.mark.parametrize(
    ("url", "space", "message"),
    [
        (None, None, "KIBANA_URL: set"),
        ("kibana:5601", None, "http"),
        ("https://u:p@kb", None, "not in the URL"),
        ("https://kb", "Team A", "space"),
    ],
)
def test_bad_kibana_settings_are_config_errors(url, space, message):
    with pytest.raises(ConfigError, match=message):
        kibana.install(make_settings(kibana_url=url), space=space, dry_run=True, out=lambda _: None)


def test_tls_is_verified_by_default(tmp_path):
    ctx = kibana.tls_context(make_settings(kibana_url="https://kb.example"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(FileNotFoundError):  # a configured CA is loaded, not ignored
        kibana.tls_context(make_settings(elasticsearch_ca_certs=str(tmp_path / "missing.pem")))
    captured = {}
    real = kibana_client.tls_context

    def spy(settings):
        captured["ctx"] = real(settings)
        return captured["ctx"]

    with unittest.mock.patch.object(kibana_client, "tls_context", spy):
        kibana.make_client(make_settings()).close()
    assert captured["ctx"].verify_mode == ssl.CERT_REQUIRED


# --- rules ---------------------------------------------------------------------------------------------
def rule_requests(kb: KibanaStandIn, method: str) -> dict[str, dict[str, Any]]:
    out = {}
    for r in kb.requests:
        if r.method == method:
            assert r.headers["kbn-xsrf"] == "true" and r.headers["content-type"] == "application/json"
            out[r.path.rsplit("/", 1)[1]] = json.loads(r.body)
    return out


def test_rules_are_created_with_the_documented_bodies(kb):
    s = settings_for(kb)
    ids = kibana.install_rules(s, space="ops", out=lambda _: None, daily_cost_threshold=250.0)
    assert kb.requests[0].method == "GET" and kb.requests[0].path == "/s/ops/api/status"  # the ES|QL rule's floor
    assert all(r.path.startswith("/s/ops/api/alerting/rule/") for r in kb.requests[1:])
    bodies = rule_requests(kb, "POST")
    assert list(bodies) == ids and len(ids) == 4
    for rid, body in bodies.items():
        assert uuid.UUID(rid).version == 4
        assert body["rule_type_id"] == ".es-query" and body["consumer"] == "stackAlerts"
        assert re.fullmatch(r"\d+[smhd]", body["schedule"]["interval"])
        assert body["actions"] == [] and body["enabled"] is True and body["name"]
        p = body["params"]
        for key in ("threshold", "thresholdComparator", "timeWindowSize", "timeWindowUnit", "size"):
            assert key in p
        assert isinstance(p["threshold"], list) and p["timeWindowUnit"] in ("s", "m", "h", "d")
        if p["searchType"] == "esQuery":
            assert {"index", "timeField", "esQuery"} <= set(p)
            assert "query" in json.loads(p["esQuery"])
        else:
            assert p["searchType"] == "esqlQuery" and p["esqlQuery"]["esql"].startswith("FROM ")
            assert p["threshold"] == [0] and p["thresholdComparator"] == ">"
    daily = bodies[kibana.RULE_IDS["daily-cost"]]["params"]
    assert daily["aggType"] == "sum" and daily["threshold"] == [250.0]


def test_rules_are_updated_on_a_second_run(kb):
    s = settings_for(kb)
    kibana.install_rules(s, out=lambda _: None)
    lines: list[str] = []
    kibana.install_rules(s, out=lines.append, stale_intervals=5)
    puts = rule_requests(kb, "PUT")
    assert set(puts) == set(kb.rules) and len(puts) == 3  # no daily-cost rule without a threshold
    for body in puts.values():
        assert not {"rule_type_id", "consumer", "enabled"} & set(body)
    assert all(": updated" in line for line in lines)


def test_one_refused_rule_does_not_stop_the_others(kb):
    spike = kibana.RULE_IDS["cost-spike"]
    kb.override = lambda req: (400, {"message": "ES|QL is not enabled"}) if req.path.endswith(spike) else None
    with pytest.raises(kibana.KibanaError, match="HTTP 400"):
        kibana.install_rules(settings_for(kb), out=lambda _: None)
    assert set(kb.rules) == {kibana.RULE_IDS["stream-stale"], kibana.RULE_IDS["collector-silent"]}


def test_rules_dry_run_sends_nothing(kb):
    kibana.install_rules(settings_for(kb), dry_run=True, out=lambda _: None)
    assert kb.requests == []


def dsl_fields(node: Any) -> Iterator[tuple[str, str]]:
    """``(field, query kind)`` of every term/range/exists clause."""
    if isinstance(node, dict):
        for kind in ("term", "range", "match_phrase"):
            if kind in node:
                yield from ((f, kind) for f in node[kind])
        if "exists" in node:
            yield node["exists"]["field"], "exists"
        for v in node.values():
            yield from dsl_fields(v)
    elif isinstance(node, list):
        for v in node:
            yield from dsl_fields(v)


def test_every_field_a_rule_uses_is_mapped_with_a_usable_type():
    s = make_settings(budgets=[{"name": "org", "amount": 100}])
    problems = []
    for rule in kibana.rules(s, daily_cost_threshold=1.0):
        p = rule.body["params"]
        is_runs = any("usage_collector.runs" in i for i in p.get("index", [])) or "runs" in rule.key
        dv = kibana.RUNS_DATA_VIEW if is_runs else kibana.USAGE_DATA_VIEW
        uses: list[tuple[str, set[str] | None]] = [(p["timeField"], {"date"})]
        if p["searchType"] == "esQuery":
            uses += [
                (
                    f,
                    {"keyword", "constant_keyword", "long"}
                    if k == "term"
                    else {"long", "date", "double", "scaled_float"},
                )
                for f, k in dsl_fields(json.loads(p["esQuery"]))
            ]
        else:
            uses += [
                (f, None)
                for f in re.findall(
                    r"\b(?:openai|gen_ai|event)\.[\w.]+|@timestamp", p["esqlQuery"]["esql"].split("\n", 1)[1]
                )
            ]
        if "aggField" in p:
            uses.append((p["aggField"], {"long", "double", "scaled_float"}))
        if "termField" in p:
            uses.append((p["termField"], {"keyword"}))
        for tname, mapping in templates_of(s, dv).items():
            for fld, ok in uses:
                if fld not in mapping or (ok is not None and mapping[fld] not in ok):
                    problems.append(f"{rule.key}: {fld} ({mapping.get(fld)}) in {tname}")
    assert not problems, problems


def test_stale_limits_follow_each_streams_width_and_grace():
    s = make_settings(
        streams=["completions", "costs"],
        bucket_width={"completions": "1m"},
        finalization_grace="15m",
        costs_finalization_grace="2h",
        interval="5m",
    )
    stale = next(r for r in kibana.rules(s, stale_intervals=4) if r.key == "stream-stale")
    clauses = json.loads(stale.body["params"]["esQuery"])["query"]["bool"]["filter"][1]["bool"]["should"]
    limits = {
        c["bool"]["filter"][0]["term"]["usage_collector.stream"]: c["bool"]["filter"][1]["range"][
            "usage_collector.lag_seconds"
        ]["gt"]
        for c in clauses
    }
    assert limits == {"completions": 4 * 60 + 900 + 300, "costs": 4 * 86400 + 7200 + 300}
    assert stale.body["params"]["groupBy"] == "top"
    assert stale.body["params"]["termField"] == "usage_collector.stream"


def test_cost_spike_rule_compares_yesterday_with_the_trailing_median():
    spike = next(r for r in kibana.rules(make_settings(), spike_factor=2.5) if r.key == "cost-spike")
    esql = spike.body["params"]["esqlQuery"]["esql"]
    assert esql.startswith("FROM metrics-openai.costs-*\n")
    assert "MEDIAN(trailing)" in esql and "latest_cost > 2.5 * median_cost" in esql
    assert spike.body["params"]["timeWindowSize"] == 30 and spike.body["params"]["timeWindowUnit"] == "d"


# --- spaces ----------------------------------------------------------------------------------------------
def dashboard_ids_in(kb: KibanaStandIn, space: str) -> set[str]:
    return {o.id for o in kb.in_space(space).values() if o.type == "dashboard"}


def test_a_second_space_gets_new_ids_and_the_printed_urls_are_the_ones_that_exist(kb):
    s = settings_for(kb)
    kibana.install(s, out=lambda _: None)  # default space: our own ids
    assert dashboard_ids_in(kb, "default") == {d.id for d in kibana.DASHBOARDS}
    lines: list[str] = []
    urls = kibana.install(s, space="team-a", out=lines.append)
    ids = dashboard_ids_in(kb, "team-a")
    assert len(ids) == 4 and not ids & {d.id for d in kibana.DASHBOARDS}  # check_conflicts.ts: new ids
    assert {u.rsplit("/", 1)[1] for u in urls} == ids
    assert all(u.startswith(f"{kb.url}/s/team-a/app/dashboards#/view/") for u in urls)
    assert sum(" in this space" in line for line in lines) == 10
    # references were rewritten to the copies in this space, so every panel finds its data view there
    here = kb.in_space("team-a")
    for o in here.values():
        for r in o.references:
            assert (r["type"], r["id"]) in here, (o.type, o.id, r)


def test_installing_again_into_the_same_space_overwrites_the_same_copies(kb):
    s = settings_for(kb)
    kibana.install(s, out=lambda _: None)
    first = kibana.install(s, space="team-a", out=lambda _: None)
    lines: list[str] = []
    second = kibana.install(s, space="team-a", out=lines.append)
    assert first == second  # check_origin_conflicts.ts: the copies are found by their origin
    assert len(kb.in_space("team-a")) == 10 and len(kb.in_space("default")) == 10
    assert sum(": updated" in line for line in lines) == 10


def test_a_space_that_does_not_exist_is_named(kb):
    kb.spaces = {"default"}
    with pytest.raises(kibana.KibanaError, match=r"HTTP 404.*space exist"):
        kibana.install(settings_for(kb), space="nope", out=lambda _: None)


# --- the ES|QL rule's floor --------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["8.11.4", "8.16.6", None])
def test_the_esql_rule_is_skipped_with_a_warning_below_its_floor(kb, version):
    if version is None:
        kb.override = lambda req: (401, {"statusCode": 401}) if req.path.endswith("/api/status") else None
    else:
        kb.version = version
    lines: list[str] = []
    ids = kibana.install_rules(settings_for(kb), out=lines.append)
    assert kibana.RULE_IDS["cost-spike"] not in kb.rules
    assert set(kb.rules) == {kibana.RULE_IDS["stream-stale"], kibana.RULE_IDS["collector-silent"]}
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "8.17.0" in warning and (version or "unknown") in warning
    assert kibana.RULE_IDS["cost-spike"] in ids  # still one of the rules this version defines


def test_the_esql_rule_is_installed_from_its_floor_on(kb):
    kb.version = "8.17.0"
    kibana.install_rules(settings_for(kb), out=lambda _: None)
    assert kibana.RULE_IDS["cost-spike"] in kb.rules
