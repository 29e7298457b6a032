"""The sink and ``setup`` on the kinds of cluster Elasticsearch really comes as.

Without ILM (Elastic Cloud Serverless, distributions without x-pack), with LogsDB as the default for
``logs-*-*`` (9.x), with the failure store enabled (8.19/9.1+), after the state index was deleted and re-created
by a write, with more checkpoints than one search returns, and with an 8.x client (``.ci/run`` runs this module
with elasticsearch-py 8.13 too). The rules of each kind are in ``tests/es_server.py``, with their sources.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from tests.helpers import T0, cp, current, docs
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Document, Target, shape
from usage_collector.elastic import objects
from usage_collector.elastic.setup import setup
from usage_collector.errors import SinkError
from usage_collector.sinks.base import Checkpoint


def _quiet(_: str) -> None:
    pass


@pytest.mark.es_server("9.1.0", ilm=False)
def test_without_ilm_setup_chooses_the_data_stream_lifecycle_and_collects(es):
    server = es.require_server()
    settings = es.settings(retention_days=30)
    lines: list[str] = []
    report = setup(settings, client=es.client(), out=lines.append)
    assert report.lifecycle == "data_stream"
    assert "Elasticsearch: retention by data stream lifecycle (delete after 30 days; lifecycle = auto)" in lines
    assert not any(a.kind == "ILM policy" for a in report.actions)
    component = server.state.component_templates[objects.SETTINGS_COMPONENT]["template"]
    assert component == {"settings": {"index": {"mode": "standard"}}, "lifecycle": {"data_retention": "30d"}}
    ds = es.client().indices.get_data_stream(name=es.data_stream("embeddings"))["data_streams"][0]
    assert ds["lifecycle"]["data_retention"] == "30d" and "ilm_policy" not in ds
    again = setup(settings, client=es.client(), out=_quiet)
    assert again.changed == []
    sink = es.sink(settings)
    assert sink.write_window(docs(namespace=es.namespace), cp()).created == 3
    assert sink.retention() == "data stream lifecycle, data_retention 30d"


@pytest.mark.es_server("9.1.0", ilm=False)
def test_a_new_retention_reaches_the_existing_data_streams(es):
    setup(es.settings(retention_days=30), client=es.client(), out=_quiet)
    report = setup(es.settings(retention_days=90), client=es.client(), out=_quiet)
    updated = {a.name for a in report.actions if a.kind == "data stream lifecycle" and a.status == "updated"}
    assert es.data_stream("costs") in updated and len(updated) == len(STREAMS) + 1  # and the runs stream
    ds = es.client().indices.get_data_stream(name=es.data_stream("costs"))["data_streams"][0]
    assert ds["lifecycle"]["data_retention"] == "90d"
    kept = setup(es.settings(), client=es.client(), out=_quiet)  # no retention: managed, kept forever
    assert es.sink().retention() == "data stream lifecycle, kept forever"
    assert any(a.kind == "data stream lifecycle" and a.status == "updated" for a in kept.actions)


@pytest.mark.es_server("9.1.0", ilm=False)
def test_lifecycle_ilm_on_a_cluster_without_ilm_is_refused_with_the_way_out(es):
    with pytest.raises(SinkError, match=r"lifecycle = ilm, but this cluster has no ILM.*LIFECYCLE=data_stream"):
        setup(es.settings(lifecycle="ilm"), client=es.client(), out=_quiet)


@pytest.mark.es_server("9.1.0", ilm=True)
def test_with_ilm_auto_chooses_the_ilm_policy(es):
    report = setup(es.settings(retention_days=400), client=es.client(), out=_quiet)
    assert report.lifecycle == "ilm"
    assert es.sink().retention() == f"ILM policy {objects.ILM_POLICY}"


@pytest.mark.es_server("9.1.0", ilm=True)
def test_lifecycle_data_stream_is_honoured_where_ilm_exists(es):
    server = es.require_server()
    report = setup(es.settings(lifecycle="data_stream"), client=es.client(), out=_quiet)
    assert report.lifecycle == "data_stream"
    settings = server.state.component_templates[objects.SETTINGS_COMPONENT]["template"]["settings"]
    assert "lifecycle" not in settings["index"]


@pytest.mark.es_server("9.1.0")
def test_on_a_logsdb_cluster_documents_read_back_exactly_as_written(es):
    """9.x makes new ``logs-*-*`` data streams LogsDB (synthetic _source: scaled_float rounded to 1e-6); our
    templates set index.mode standard, so a costs value with 8 decimals reads back exactly."""
    settings = es.settings(data_stream_type="logs")
    spec = STREAMS["costs"]
    row = {
        "object": spec.object_type,
        "amount": {"value": Decimal("0.12345678"), "currency": "usd"},
        "line_item": "gpt-4o, input",
        "project_id": "p",
        "api_key_id": None,
    }
    doc = shape(
        spec, Target("org", namespace=es.namespace, data_stream_type="logs"), "1d", T0, T0 + 86400, spec.group_by, row
    )
    sink = es.sink(settings)
    sink.write_window([doc], Checkpoint("org", "costs", "1d", position=T0 + 86400))
    (stored,) = list(sink.iter_documents("costs"))
    assert stored["_source"]["openai"]["costs"]["amount"]["value"] == 0.12345678
    assert stored["_source"]["@timestamp"] == doc.source["@timestamp"]
    ds = es.client().indices.get_data_stream(name=doc.index)["data_streams"][0]
    assert ds.get("index_mode", "standard") == "standard"
    runs = es.client().indices.get_data_stream(name=objects.runs_data_stream(settings))["data_streams"][0]
    assert runs.get("index_mode", "standard") == "standard"


@pytest.mark.es_server("9.1.0", failure_store="metrics-openai.*")
def test_a_document_the_failure_store_took_fails_the_window(es):
    server = es.require_server()
    sink = es.sink()
    good = docs(namespace=es.namespace)
    bad = Document(
        good[0].id,
        good[0].index,
        good[0].stream,
        good[0].timestamp,
        good[0].hash,
        {**good[0].source, "openai": {"embeddings": {"input_tokens": "not a number"}}},
    )
    with pytest.raises(SinkError, match="failure store") as info:
        sink.write_window([bad, *good[1:]], cp())
    # the item names the failure store's own document and index, not ours (the failed document is wrapped)
    assert [(e["type"], e["_index"][:4]) for e in info.value.errors] == [("failure_store", ".fs-")]
    assert sink.load_checkpoint("org", "embeddings", "1h") is None  # not moved
    failures = es.client().search(index=f"{bad.index}::failures")["hits"]["hits"]
    assert len(failures) == 1
    assert server.copies(bad.id) == []  # our document is not in the data stream


def test_a_state_index_recreated_by_a_write_is_refused_by_name(es):
    es.require_server()
    sink = es.sink()
    sink.open()
    client = es.client()
    state = objects.state_index(es.settings())
    client.indices.delete(index=state)
    client.index(index=state, id="org/costs/1d/run", document={"type": "checkpoint"}, refresh=True)  # auto-created
    with pytest.raises(SinkError, match=rf"index {state} exists but was not created by usage-collector"):
        es.sink().open()


def test_more_checkpoints_than_one_search_returns_are_all_listed(es):
    es.require_server()
    sink = es.sink()
    sink.open()
    n = 10_050
    ops = []
    for i in range(n):
        c = Checkpoint("org", f"s{i}", "1h", position=T0 + i)
        ops += [{"index": {"_index": sink.state_index, "_id": c.key}}, {**c.to_dict(), "type": "checkpoint"}]
    assert not es.client().bulk(operations=ops, refresh=True)["errors"]
    listed = sink.list_checkpoints()
    assert len(listed) == n and {c.position for c in listed} == {T0 + i for i in range(n)}


def test_an_unreachable_cluster_is_one_line_naming_the_url_without_credentials(tmp_path):
    env = {"ELASTICSEARCH_URL": "http://elastic:pw-CANARY@127.0.0.1:9", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for command in (["status"], ["report"], ["setup", "--dry-run"], ["run"]):
        proc = subprocess.run(
            [sys.executable, "-m", "usage_collector.cli", *command],
            env={**env, "OPENAI_ADMIN_KEY": "sk-admin-" + "x" * 20},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 1, (command, proc.stderr)
        assert proc.stderr.splitlines() == [
            "error: elasticsearch:http://127.0.0.1:9: GET /: Elasticsearch unreachable (ConnectionError: "
            "HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new connection: [Errno 111] "
            "Connection refused)"
        ], command
        assert "CANARY" not in proc.stdout + proc.stderr


def test_the_sink_connects_with_this_client(es):
    """Any elasticsearch-py the project allows (8.13 through 9.x): no constructor argument it lacks."""
    sink = es.sink()
    sink.write_window(docs(namespace=es.namespace), cp())
    assert current(sink) and sink.server is not None
