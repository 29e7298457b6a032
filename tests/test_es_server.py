"""The test server refuses what Elasticsearch refuses: each test shows one modelled rule through raw HTTP (httpx).

The rules and their sources are documented next to the code in ``tests/es_server.py``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.es_server import EsServer
from usage_collector.elastic import objects
from usage_collector.elastic.setup import setup

TODAY = r"\d{4}\.\d{2}\.\d{2}"


class Api:
    """Raw HTTP against one :class:`EsServer`, with the compatibility headers of its major version."""

    def __init__(self, server: EsServer, headers: dict[str, str] | None = None) -> None:
        major = server.state.major
        media = f"application/vnd.elasticsearch+json;compatible-with={major}"
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, headers={"Accept": media, "Content-Type": media, **(headers or {})}
        )

    def __call__(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        if isinstance(body, list):  # NDJSON for _bulk
            content = "".join(httpx.Response(200, json=line).text + "\n" for line in body)
            resp = self.http.request(method, path, content=content, params=params)
        else:
            resp = self.http.request(method, path, json=body, params=params)
        return resp.status_code, (resp.json() if resp.content else None)


@contextmanager
def es(version: str = "9.1.0", **kwargs: Any) -> Iterator[Api]:
    with EsServer(version, **kwargs) as server:
        api = Api(server)
        try:
            yield api
        finally:
            api.http.close()


def err(body: dict[str, Any]) -> tuple[str, str]:
    return body["error"]["type"], body["error"]["reason"]


def data_stream_template(api: Api, name: str = "t", pattern: str = "app-*", **template: Any) -> None:
    status, body = api(
        "PUT",
        f"/_index_template/{name}",
        {
            "index_patterns": [pattern],
            "data_stream": {},
            "priority": 300,
            "template": {"mappings": {"properties": {"n": {"type": "long"}, "k": {"type": "keyword"}}}, **template},
        },
    )
    assert status == 200, body


# --- rule 1: mappings and settings are validated when a template is stored and an index is created -----------
BAD_MAPPINGS = [
    ({"f": {"type": "strnig"}}, "No handler for type [strnig] declared on field [f]"),
    ({"f": {"type": "keyword", "ignore_abov": 10}}, "unknown parameter [ignore_abov] on mapper [f] of type [keyword]"),
    ({"f": {"type": "long", "scaling_factor": 10}}, "unknown parameter [scaling_factor] on mapper [f] of type [long]"),
    (
        {"f": {"type": "constant_keyword", "ignore_above": 5}},
        "unknown parameter [ignore_above] on mapper [f] of type [constant_keyword]",
    ),
    (
        {"o": {"properties": {"f": {"type": "date", "meta": {"a": "b"}, "formatt": "x"}}}},
        "unknown parameter [formatt] on mapper [f] of type [date]",
    ),
    (
        {"f": {"type": "long", "meta": {f"k{i}": "v" for i in range(6)}}},
        "[meta] can't have more than 5 entries, but got 6 on field [f]",
    ),
    (
        {"f": {"type": "long", "meta": {"k" * 21: "v"}}},
        f"[meta] keys can't be longer than 20 chars, but got [{'k' * 21}] for field [f]",
    ),
    (
        {"f": {"type": "long", "meta": {"unit": "u" * 51}}},
        f"[meta] values can't be longer than 50 chars, but got [{'u' * 51}] for field [f]",
    ),
    ({"f": {"type": "long", "meta": {"unit": 1}}}, "[meta] values can only be strings, but got int[1] for field [f]"),
    (
        {"o": {"type": "object", "meta": {"a": "b"}}},
        "Mapping definition for [o] has unsupported parameters:  [meta : {a=b}]",
    ),
    ({"f": {"type": "text", "fields": {"raw": {"type": "kw"}}}}, "no handler for type [kw] declared on field [raw]"),
    ({"f": {}}, "No type specified for field [f]"),
]


@pytest.mark.parametrize("properties,cause", BAD_MAPPINGS)
def test_a_component_template_with_an_invalid_mapping_is_refused(properties, cause):
    with es() as api:
        status, body = api("PUT", "/_component_template/c", {"template": {"mappings": {"properties": properties}}})
        assert status == 400
        assert err(body) == ("mapper_parsing_exception", f"Failed to parse mapping: {cause}")
        assert body["error"]["caused_by"] == {"type": "mapper_parsing_exception", "reason": cause}
        assert body["error"]["root_cause"] == [{"type": "mapper_parsing_exception", "reason": cause}]
        assert api("GET", "/_component_template/c")[0] == 404


def test_scaled_float_needs_a_positive_scaling_factor():
    with es() as api:
        for mapping, cause in [
            ({"type": "scaled_float"}, "Field [scaling_factor] is required"),
            ({"type": "scaled_float", "scaling_factor": 0}, "[scaling_factor] must be a positive number, got [0]"),
        ]:
            status, body = api(
                "PUT", "/_component_template/c", {"template": {"mappings": {"properties": {"f": mapping}}}}
            )
            assert (status, err(body)) == (400, ("mapper_parsing_exception", f"Failed to parse mapping: {cause}"))
            assert body["error"]["caused_by"] == {"type": "illegal_argument_exception", "reason": cause}


def test_unknown_root_mapping_parameters_are_refused_but_mapping_meta_has_no_limits():
    with es() as api:
        status, body = api("PUT", "/_component_template/c", {"template": {"mappings": {"dynamc": "strict"}}})
        assert (status, err(body)) == (
            400,
            (
                "mapper_parsing_exception",
                "Failed to parse mapping: Root mapping definition has unsupported parameters:  [dynamc : strict]",
            ),
        )
        big_meta = {f"key-longer-than-twenty-chars-{i}": "v" * 200 for i in range(10)}
        status, body = api("PUT", "/_component_template/c", {"template": {"mappings": {"_meta": big_meta}}})
        assert (status, body) == (200, {"acknowledged": True})


@pytest.mark.parametrize("version", ["8.15.0", "8.19.3", "9.1.0"])
def test_every_template_and_index_body_of_the_product_is_accepted(version):
    settings = make_settings(namespace="ns")
    with es(version) as api:
        for name, body in objects.component_templates(settings).items():
            assert api("PUT", f"/_component_template/{name}", body) == (200, {"acknowledged": True})
        for name, body in objects.index_templates(settings).items():
            assert api("PUT", f"/_index_template/{name}", body) == (200, {"acknowledged": True})
        status, body = api("PUT", f"/{objects.state_index(settings)}", objects.state_index_body(settings))
        assert status == 200, body


UNKNOWN = (
    "please check that any required plugins are installed, or check the breaking changes documentation "
    "for removed settings"
)


def test_unknown_settings_are_refused_by_component_templates_index_templates_and_index_creation():
    with es() as api:
        status, body = api("PUT", "/_component_template/c", {"template": {"settings": {"index.colour": "red"}}})
        assert (status, err(body)) == (400, ("illegal_argument_exception", f"unknown setting [index.colour] {UNKNOWN}"))
        status, body = api(
            "PUT",
            "/_index_template/t",
            {"index_patterns": ["x-*"], "template": {"settings": {"number_of_shard": 1, "colour": "red"}}},
        )
        # "did you mean": Levenshtein suggestions over the registered keys (the server knows a subset of them)
        assert (status, err(body)) == (
            400,
            (
                "invalid_index_template_exception",
                f"index_template [t] invalid, cause [Validation Failed: 1: unknown setting [index.colour] {UNKNOWN};2: "
                "unknown setting [index.number_of_shard] did you mean [index.number_of_shards]?;]",
            ),
        )
        status, body = api("PUT", "/plain", {"settings": {"index": {"colour": "red"}}})
        assert (status, err(body)) == (400, ("illegal_argument_exception", f"unknown setting [index.colour] {UNKNOWN}"))
        status, body = api("PUT", "/plain", {"mappings": {"properties": {"f": {"type": "string"}}}})
        assert (status, err(body)) == (
            400,
            ("mapper_parsing_exception", "Failed to parse mapping: No handler for type [string] declared on field [f]"),
        )
        assert api("HEAD", "/plain")[0] == 404


def test_without_ilm_the_lifecycle_settings_are_unknown_so_the_products_settings_component_is_refused():
    """Finding: ``usage-collector@settings`` sets ``index.lifecycle.name``; a cluster without ILM refuses it."""
    settings = make_settings(namespace="ns")
    body = objects.component_templates(settings)[objects.SETTINGS_COMPONENT]
    with es(ilm=False) as api:
        status, resp = api("PUT", f"/_component_template/{objects.SETTINGS_COMPONENT}", body)
        assert (status, err(resp)) == (
            400,
            ("illegal_argument_exception", f"unknown setting [index.lifecycle.name] {UNKNOWN}"),
        )
    with es(ilm=True) as api:
        assert api("PUT", f"/_component_template/{objects.SETTINGS_COMPONENT}", body)[0] == 200


def test_an_index_template_whose_composition_does_not_parse_is_refused():
    with es() as api:
        status, body = api(
            "PUT",
            "/_index_template/t",
            {
                "index_patterns": ["x-*"],
                "template": {"mappings": {"properties": {"f": {"type": "keyword", "meta": {"m": ["list"]}}}}},
            },
        )
        cause = "[meta] values can only be strings, but got list[[list]] for field [f]"
        assert (status, err(body)) == (
            400,
            ("illegal_argument_exception", "composable template [t] template after composition is invalid"),
        )
        assert body["error"]["caused_by"]["reason"] == f"Failed to parse mapping: {cause}"
        assert body["error"]["root_cause"] == [{"type": "mapper_parsing_exception", "reason": cause}]


# --- rule 2: a field's type cannot change in an existing index; a template change waits for the rollover -----
def test_a_mapping_update_that_changes_a_type_is_refused_and_changes_nothing():
    with es() as api:
        data_stream_template(api)
        assert api("PUT", "/_data_stream/app-x")[0] == 200
        status, body = api(
            "PUT", "/app-x/_mapping", {"properties": {"new": {"type": "keyword"}, "n": {"type": "keyword"}}}
        )
        assert (status, err(body)) == (
            400,
            ("illegal_argument_exception", "mapper [n] cannot be changed from type [long] to [keyword]"),
        )
        (mapping,) = api("GET", "/app-x/_mapping")[1].values()
        assert (
            mapping["mappings"]["properties"]["n"] == {"type": "long"}
            and "new" not in mapping["mappings"]["properties"]
        )
        status, body = api("PUT", "/app-x/_mapping", {"properties": {"k": {"properties": {"x": {"type": "long"}}}}})
        assert (status, err(body)) == (
            400,
            ("illegal_argument_exception", "mapper [k] cannot be changed from type [keyword] to [ObjectMapper]"),
        )


def test_a_constant_keyword_value_set_by_the_first_document_cannot_be_unset_by_a_mapping_update():
    """ConstantKeywordFieldMapper: the ``value`` merge validator is ``previous == null || equals(prev, current)``."""
    with es() as api:
        api(
            "PUT",
            "/_index_template/t",
            {
                "index_patterns": ["app-*"],
                "data_stream": {},
                "template": {"mappings": {"properties": {"ns": {"type": "constant_keyword"}}}},
            },
        )
        assert (
            api("POST", "/app-x/_doc", {"@timestamp": "2025-01-01T00:00:00Z", "ns": "prod"}, op_type="create")[0] == 201
        )
        status, body = api("PUT", "/app-x/_mapping", {"properties": {"ns": {"type": "constant_keyword"}}})
        assert (status, err(body)) == (
            400,
            (
                "illegal_argument_exception",
                "Mapper for [ns] conflicts with existing "
                "mapper:\n\tCannot update parameter [value] from [prod] to [null]",
            ),
        )
        assert (
            api("PUT", "/app-x/_mapping", {"properties": {"ns": {"type": "constant_keyword", "value": "prod"}}})[0]
            == 200
        )


def test_setup_can_update_the_mappings_of_a_data_stream_that_holds_documents():
    """Regression (found by this model): setup's PUT <ds>/_mapping sent data_stream.namespace as a
    constant_keyword without the value the first document set, which Elasticsearch refuses."""
    settings = make_settings(namespace="ns")
    with es() as api:
        setup(settings, client=_client(api), out=lambda _: None)
        ds = objects.data_stream_name(settings, "embeddings")
        doc = {
            "@timestamp": "2025-01-01T00:00:00Z",
            "data_stream": {"type": "metrics", "dataset": "openai.embeddings", "namespace": "ns"},
        }
        assert api("POST", f"/{ds}/_doc", doc, op_type="create")[0] == 201
        stale = objects.component_templates(settings)[objects.MAPPINGS_COMPONENT]
        stale["template"]["mappings"]["properties"].pop("gen_ai")  # an older version's mappings: setup must update
        api("PUT", f"/_component_template/{objects.MAPPINGS_COMPONENT}", stale)
        report = setup(settings, client=_client(api), out=lambda _: None)
        assert ("data stream mapping", ds, "updated") in [(a.kind, a.name, a.status) for a in report.actions]
        status, body = api("GET", f"/{ds}/_mapping")
        assert status == 200
        (mapping,) = body.values()
        assert "gen_ai" in mapping["mappings"]["properties"]
        assert mapping["mappings"]["properties"]["data_stream"]["properties"]["namespace"]["value"] == "ns"


def _client(api: Api) -> Any:
    from elasticsearch import Elasticsearch

    return Elasticsearch(api.server.url)


def test_a_template_change_reaches_a_data_stream_at_its_next_rollover_only():
    with es() as api:
        data_stream_template(api)
        api("PUT", "/_data_stream/app-x")
        changed = {
            "index_patterns": ["app-*"],
            "data_stream": {},
            "priority": 300,
            "template": {"mappings": {"properties": {"n": {"type": "keyword"}}}},
        }
        assert api("PUT", "/_index_template/t", changed) == (200, {"acknowledged": True})
        first = api("GET", "/app-x/_mapping")[1]
        assert [m["mappings"]["properties"]["n"] for m in first.values()] == [{"type": "long"}]
        assert api("POST", "/app-x/_doc", {"@timestamp": "2025-01-01", "n": "abc"}, op_type="create")[0] == 400
        new = api("POST", "/app-x/_rollover")[1]["new_index"]
        assert api("GET", f"/{new}/_mapping")[1][new]["mappings"]["properties"]["n"] == {"type": "keyword"}
        assert api("POST", "/app-x/_doc", {"@timestamp": "2025-01-01", "n": "abc"}, op_type="create")[0] == 201


# --- rule 3: bulk items written to a data stream name the backing index -----------------------------------
def test_bulk_items_of_a_data_stream_name_the_backing_index_on_success_409_and_mapping_errors():
    with es("9.0.0") as api:  # 9.0: no failure store, so no failure_store marker either
        data_stream_template(api)
        ts = "2025-01-01T00:00:00Z"
        status, body = api(
            "POST",
            "/_bulk",
            [
                {"create": {"_index": "app-x", "_id": "1"}},
                {"@timestamp": ts, "n": 1},
                {"create": {"_index": "app-x", "_id": "1"}},
                {"@timestamp": ts, "n": 1},
                {"create": {"_index": "app-x", "_id": "2"}},
                {"@timestamp": ts, "n": "many"},
                {"index": {"_index": "app-x", "_id": "3"}},
                {"@timestamp": ts, "n": 1},
            ],
        )
        assert status == 200 and body["errors"]
        ok, dup, bad, index_op = (next(iter(i.values())) for i in body["items"])
        assert re.fullmatch(rf"\.ds-app-x-{TODAY}-000001", ok["_index"])
        assert (ok["status"], dup["status"], bad["status"]) == (201, 409, 400)
        assert dup["_index"] == bad["_index"] == ok["_index"]
        assert dup["error"]["type"] == "version_conflict_engine_exception"
        assert bad["error"]["type"] == "document_parsing_exception" and "failure_store" not in bad
        # refused before it reaches a shard: the name the request used
        assert (index_op["_index"], index_op["status"]) == ("app-x", 400)


# --- rule 4: writing to a missing plain index creates it with dynamic mappings ------------------------------
def test_a_missing_plain_index_is_auto_created_with_dynamic_mappings_even_after_a_delete():
    with es() as api:
        assert (
            api("PUT", "/state", {"mappings": {"dynamic": False, "properties": {"position": {"type": "long"}}}})[0]
            == 200
        )
        assert api("DELETE", "/state") == (200, {"acknowledged": True})
        status, body = api(
            "PUT",
            "/state/_doc/cp",
            {"position": "12", "updated_at": 1.5, "complete": True, "when": "2025-01-01T00:00:00Z", "org": {"id": "o"}},
        )
        assert (status, body["result"]) == (201, "created")
        props = api("GET", "/state/_mapping")[1]["state"]["mappings"]["properties"]
        assert props == {
            "position": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "updated_at": {"type": "float"},
            "complete": {"type": "boolean"},
            "when": {"type": "date"},
            "org": {
                "properties": {"id": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}}
            },
        }


def test_auto_create_index_false_refuses_the_write():
    with es(auto_create_index=False) as api:
        status, body = api("PUT", "/state/_doc/cp", {"position": 1})
        assert (status, err(body)) == (
            404,
            ("index_not_found_exception", "no such index [state] and [action.auto_create_index] is [false]"),
        )
        # the built-in logs/metrics templates set allow_auto_create: true, which wins
        assert api("POST", "/logs-a-b/_doc", {"@timestamp": "2025-01-01"}, op_type="create")[0] == 201


# --- rule 5: from + size beyond index.max_result_window ----------------------------------------------------
def test_from_plus_size_beyond_10000_is_refused_and_scroll_and_search_after_go_past_it():
    with es() as api:
        api(
            "POST",
            "/_bulk",
            [x for i in range(10001) for x in ({"index": {"_index": "big", "_id": str(i)}}, {"n": i})],
            refresh="true",
        )
        assert api("POST", "/big/_search", {"size": 10000})[0] == 200
        status, body = api("POST", "/big/_search", {"from": 9990, "size": 11})
        reason = (
            "Result window is too large, from + size must be less than or equal to: [10000] but was [10001]. "
            "See the scroll api for a more efficient way to request large data sets. This limit can be set by "
            "changing the [index.max_result_window] index level setting."
        )
        assert (status, err(body)) == (400, ("search_phase_execution_exception", "all shards failed"))
        assert body["error"]["root_cause"] == [{"type": "illegal_argument_exception", "reason": reason}]
        assert body["error"]["caused_by"] == {"type": "illegal_argument_exception", "reason": reason}
        total = api("POST", "/big/_search", {"size": 0})[1]["hits"]["total"]
        assert total == {"value": 10000, "relation": "gte"}  # track_total_hits defaults to 10,000
        assert api("POST", "/big/_search", {"size": 0, "track_total_hits": True})[1]["hits"]["total"]["value"] == 10001
        seen = 0
        status, page = api("POST", "/big/_search", {"size": 5000}, scroll="1m")
        while page["hits"]["hits"]:
            seen += len(page["hits"]["hits"])
            page = api("POST", "/_search/scroll", {"scroll_id": page["_scroll_id"], "scroll": "1m"})[1]
        assert seen == 10001
        page = api("POST", "/big/_search", {"size": 10000, "sort": [{"n": "asc"}]})[1]
        after = page["hits"]["hits"][-1]["sort"]
        rest = api("POST", "/big/_search", {"size": 10, "sort": [{"n": "asc"}], "search_after": after})[1]
        assert [h["_id"] for h in rest["hits"]["hits"]] == ["10000"]


# --- rule 6: personalities ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,path,method",
    [
        ({"ilm": False}, "/_ilm/policy/usage-collector", "GET"),
        ({"ilm": False}, "/_ilm/policy/usage-collector", "PUT"),
        ({"security": False}, "/_security/user/_has_privileges", "POST"),
    ],
)
def test_an_absent_plugin_answers_no_handler_found(kwargs, path, method):
    with es(**kwargs) as api:
        status, body = api(method, path, {"policy": {"phases": {}}} if method == "PUT" else None)
        assert (status, body) == (400, {"error": f"no handler found for uri [{path}] and method [{method}]"})


def test_security_disabled_does_not_take_credentials():
    with pytest.raises(ValueError, match="security=False"):
        EsServer(security=False, api_key="k")


@pytest.mark.parametrize("version,mode", [("8.19.3", "standard"), ("9.0.0", "logsdb"), ("9.1.0", "logsdb")])
def test_new_logs_data_streams_are_logsdb_from_9_0(version, mode):
    with es(version) as api:
        assert api("POST", "/logs-app-default/_doc", {"@timestamp": "2025-01-01"}, op_type="create")[0] == 201
        (ds,) = api("GET", "/_data_stream/logs-app-default")[1]["data_streams"]
        assert ds["index_mode"] == mode
        (settings,) = api("GET", "/logs-app-default/_settings")[1].values()
        assert settings["settings"]["index"].get("mode", "standard") == mode
        # metrics-* never, and a template that sets index.mode wins
        api("POST", "/metrics-app-default/_doc", {"@timestamp": "2025-01-01"}, op_type="create")
        assert api("GET", "/_data_stream/metrics-app-default")[1]["data_streams"][0]["index_mode"] == "standard"
        api(
            "PUT",
            "/_index_template/std",
            {
                "index_patterns": ["logs-std-*"],
                "data_stream": {},
                "priority": 300,
                "template": {"settings": {"index.mode": "standard"}},
            },
        )
        api("POST", "/logs-std-default/_doc", {"@timestamp": "2025-01-01"}, op_type="create")
        assert api("GET", "/_data_stream/logs-std-default")[1]["data_streams"][0]["index_mode"] == "standard"


def test_logsdb_returns_synthetic_source():
    with es("9.1.0") as api:
        api(
            "PUT",
            "/_index_template/l",
            {
                "index_patterns": ["logs-s-*"],
                "data_stream": {},
                "priority": 300,
                "template": {
                    "mappings": {
                        "dynamic": "runtime",
                        "properties": {
                            "cost": {"type": "scaled_float", "scaling_factor": 100},
                            "tags": {"type": "keyword"},
                            "n": {"type": "double"},
                        },
                    }
                },
            },
        )
        doc = {
            "zeta": {"b": 1, "a": [3, 1]},
            "cost": 1.234,
            "@timestamp": "2025-01-01T00:00:00Z",
            "tags": ["b", "a", "b"],
            "n": 2,
            "a.b": "dotted",
        }
        status, item = api("POST", "/logs-s-default/_doc", doc, op_type="create", refresh="true")
        assert status == 201
        got = api("GET", f"/{item['_index']}/_doc/{item['_id']}")[1]["_source"]
        assert got == {
            "@timestamp": "2025-01-01T00:00:00.000Z",
            "a": {"b": "dotted"},
            "cost": 1.23,
            "n": 2.0,
            "tags": ["a", "b"],
            "zeta": {"a": [3, 1], "b": 1},
        }
        assert list(got) == ["@timestamp", "a", "cost", "n", "tags", "zeta"]
        hit = api("POST", "/logs-s-default/_search", {})[1]["hits"]["hits"][0]
        assert hit["_source"] == got


def test_failure_store_used_when_enabled_not_enabled_otherwise_absent_before_it_exists():
    bad = {"@timestamp": "2025-01-01T00:00:00Z", "n": "many"}
    with es("9.1.0") as api:
        data_stream_template(api, data_stream_options={"failure_store": {"enabled": True}})
        status, body = api("POST", "/_bulk", [{"create": {"_index": "app-x"}}, bad])
        (item,) = (i["create"] for i in body["items"])
        assert (status, body["errors"], item["status"], item["failure_store"], item["result"]) == (
            200,
            False,
            201,
            "used",
            "created",
        )
        assert re.fullmatch(rf"\.fs-app-x-{TODAY}-000002", item["_index"])
        (ds,) = api("GET", "/_data_stream/app-x")[1]["data_streams"]
        assert ds["failure_store"]["enabled"] is True and ds["generation"] == 2
        api("POST", "/app-x::failures/_refresh")
        (hit,) = api("POST", "/app-x::failures/_search", {})[1]["hits"]["hits"]
        assert hit["_source"]["document"]["source"] == bad
        assert hit["_source"]["error"]["type"] == "document_parsing_exception"
        # version conflicts are never redirected
        api("POST", "/_bulk", [{"create": {"_index": "app-x", "_id": "d"}}, {"@timestamp": "2025-01-01"}])
        dup = api("POST", "/_bulk", [{"create": {"_index": "app-x", "_id": "d"}}, {"@timestamp": "2025-01-01"}])[1]
        assert dup["items"][0]["create"]["status"] == 409 and "failure_store" not in dup["items"][0]["create"]
    with es("9.1.0") as api:
        data_stream_template(api)
        item = api("POST", "/_bulk", [{"create": {"_index": "app-x"}}, bad])[1]["items"][0]["create"]
        assert (item["status"], item["failure_store"], item["error"]["type"]) == (
            400,
            "not_enabled",
            "document_parsing_exception",
        )
        status, body = api("POST", "/app-x/_doc", bad, op_type="create")
        assert (status, body["error"]["failure_store"]) == (400, "not_enabled")
    with es("9.1.0", failure_store="app-*") as api:  # cluster setting data_streams.failure_store.enabled
        data_stream_template(api)
        item = api("POST", "/_bulk", [{"create": {"_index": "app-x"}}, bad])[1]["items"][0]["create"]
        assert (item["status"], item["failure_store"]) == (201, "used")
    with es("9.0.0") as api:
        status, body = api(
            "PUT",
            "/_index_template/t",
            {
                "index_patterns": ["app-*"],
                "data_stream": {},
                "template": {"data_stream_options": {"failure_store": {"enabled": True}}},
            },
        )
        assert (status, err(body)) == (
            400,
            ("x_content_parse_exception", "[template] unknown field [data_stream_options]"),
        )


def test_data_stream_lifecycle_from_8_11():
    with es("9.1.0", ilm=False) as api:
        data_stream_template(api, lifecycle={"data_retention": "30d"})
        api("PUT", "/_data_stream/app-x")
        (ds,) = api("GET", "/_data_stream/app-x")[1]["data_streams"]
        assert ds["lifecycle"] == {"enabled": True, "data_retention": "30d"} and "ilm_policy" not in ds
        assert api("PUT", "/_data_stream/app-x/_lifecycle", {"data_retention": "7d"}) == (200, {"acknowledged": True})
        got = api("GET", "/_data_stream/app-x/_lifecycle")[1]
        assert got == {"data_streams": [{"name": "app-x", "lifecycle": {"enabled": True, "data_retention": "7d"}}]}
    with es("8.10.4") as api:
        status, body = api("PUT", "/_component_template/c", {"template": {"lifecycle": {"data_retention": "30d"}}})
        assert (status, err(body)) == (400, ("x_content_parse_exception", "[template] unknown field [lifecycle]"))
    with es("9.1.0") as api:
        status, body = api("PUT", "/_index_template/t", {"index_patterns": ["x-*"], "template": {"lifecycle": {}}})
        assert (status, err(body)) == (
            400,
            (
                "illegal_argument_exception",
                "index template [t] specifies lifecycle "
                "configuration that can only be used in combination with a data stream",
            ),
        )


def test_the_ilm_policy_of_a_data_stream_is_reported():
    with es("8.19.3") as api:
        data_stream_template(api, settings={"index.lifecycle.name": "p"})
        api("PUT", "/_data_stream/app-x")
        (ds,) = api("GET", "/_data_stream/app-x")[1]["data_streams"]
        assert (ds["ilm_policy"], ds["index_mode"], ds["failure_store"]["enabled"]) == ("p", "standard", False)


# --- rule 7: security present with credentials --------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,good",
    [
        ({"api_key": "k1"}, "ApiKey k1"),
        ({"basic": ("u", "p")}, "Basic " + base64.b64encode(b"u:p").decode()),
    ],
)
def test_security_with_credentials_requires_them(kwargs, good):
    with EsServer(**kwargs) as server:
        bad = Api(server)
        status, body = bad("GET", "/")
        assert (status, err(body)) == (401, ("security_exception", "unable to authenticate user for REST request [/]"))
        assert Api(server, {"Authorization": good})("GET", "/")[0] == 200
