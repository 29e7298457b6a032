"""``setup``: idempotent, dry-run, privileges, template priority; templates cover every field; docs/fields.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest_es import EsTarget
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Names, Target, shape
from usage_collector.elastic import objects
from usage_collector.elastic.setup import setup
from usage_collector.errors import SinkError

pytestmark = pytest.mark.live_es

FIELDS_MD = Path(__file__).resolve().parent.parent / "docs" / "fields.md"


def writes(es: EsTarget) -> list[str]:
    assert es.server is not None
    return [
        f"{r.method} {r.path}"
        for r in es.server.requests
        if r.method in ("PUT", "POST", "DELETE") and "_search" not in r.path and "_has_privileges" not in r.path
    ]


def test_setup_twice_the_second_run_changes_nothing(es):
    lines: list[str] = []
    first = setup(es.settings(), out=lines.append)
    assert first.server_version
    assert {a.kind for a in first.changed} >= (
        {"data stream"}
        if es.server is None
        else {"ILM policy", "component template", "index template", "index", "data stream"}
    )
    lines.clear()
    second = setup(es.settings(), out=lines.append)
    assert second.changed == []
    assert lines[-1] == "Elasticsearch: nothing changed, every object is up to date"
    kinds = {a.kind for a in second.actions}
    assert kinds == {"ILM policy", "component template", "index template", "index mapping", "data stream"}
    streams = [a.name for a in second.actions if a.kind == "data stream"]
    assert len(streams) == len(STREAMS) + 1


def test_dry_run_writes_nothing_and_reports_what_it_would_do(es):
    es.require_server()
    report = setup(es.settings(), dry_run=True, out=lambda _: None)
    assert report.dry_run and report.changed and {a.status for a in report.actions} == {"would create"}
    assert writes(es) == []
    setup(es.settings(), out=lambda _: None)
    before = len(writes(es))
    assert setup(es.settings(), dry_run=True, out=lambda _: None).changed == []
    assert len(writes(es)) == before


def test_a_changed_template_is_updated_and_its_mappings_reach_existing_data_streams(es):
    server = es.require_server()
    settings = es.settings()
    setup(settings, out=lambda _: None)
    stale = server.state.component_templates[objects.MAPPINGS_COMPONENT]
    del stale["template"]["mappings"]["properties"]["gen_ai"]  # as written by an older version
    report = setup(settings, out=lambda _: None)
    assert [(a.kind, a.status) for a in report.changed][:1] == [("component template", "updated")]
    updated = {a.name for a in report.changed if a.kind == "data stream mapping"}
    assert updated == {objects.data_stream_name(settings, s) for s in STREAMS}
    backing = server.state.data_streams[objects.data_stream_name(settings, "completions")]["indices"][0]
    assert "gen_ai" in server.state.indices[backing].mappings["properties"]


def test_removing_retention_removes_the_delete_phase(es):
    es.require_server()
    settings = es.settings()
    setup(settings, out=lambda _: None, retention_days=400)
    assert setup(settings, out=lambda _: None, retention_days=400).changed == []
    report = setup(settings, out=lambda _: None)
    assert [(a.kind, a.status) for a in report.changed] == [("ILM policy", "updated")]


def test_setup_names_the_privileges_it_lacks(es):
    server = es.require_server()
    server.denied_privileges = {"manage_ilm", "create_index"}
    with pytest.raises(SinkError, match=r"cluster:manage_ilm.*create_index"):
        setup(es.settings(), out=lambda _: None)
    assert writes(es) == []


def test_a_run_with_only_run_privileges_cannot_set_up_and_says_so(es):
    server = es.require_server()
    server.denied_privileges = {"manage_index_templates"}
    with pytest.raises(SinkError, match=r"missing .*metrics-openai\.completions.*run `usage-collector setup`"):
        es.sink().open()


def test_same_priority_as_an_installed_fleet_integration_is_refused_loudly(es):
    """With data_stream_type=logs our patterns overlap Elastic's openai integration (priority 200)."""
    server = es.require_server()
    server.state.index_templates["logs-openai.completions"] = {
        "index_patterns": ["logs-openai.completions-*"],
        "priority": 200,
        "data_stream": {},
        "composed_of": [],
    }
    with pytest.raises(SinkError, match=r"index template usage-collector-logs-openai\.completions.*same priority"):
        setup(es.settings(data_stream_type="logs"), out=lambda _: None)


def test_templates_outrank_the_builtin_ones_and_map_every_stream_everywhere(es):
    settings = es.settings()
    templates = objects.index_templates(settings)
    assert all(t["priority"] > 100 for t in templates.values())
    mappings = objects.component_templates(settings)[objects.MAPPINGS_COMPONENT]["template"]["mappings"]
    assert mappings["dynamic"] == "strict"
    for spec in STREAMS.values():
        t = templates[objects.index_template_name(settings, spec.name)]
        assert objects.MAPPINGS_COMPONENT in t["composed_of"]  # every stream's fields, in every stream
        assert t["index_patterns"] == [f"metrics-openai.{spec.name}-*"]
    amount = mappings["properties"]["openai"]["properties"]["costs"]["properties"]["amount"]["properties"]
    assert amount["value"]["type"] == "scaled_float" and amount["value"]["scaling_factor"] == 1000000


def _leaves(doc: dict, prefix: str = "") -> Iterator[str]:
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


@pytest.mark.parametrize("stream", list(STREAMS))
def test_every_field_a_document_can_carry_is_mapped(stream):
    spec = STREAMS[stream]
    row = {"object": spec.object_type, "amount": {"value": "1.5", "currency": "usd"}, "quantity_unit": "tokens"}
    row.update({d.name: "x" for d in spec.dimensions})
    row.update({m.name: 1 for m in spec.measures if "." not in m.name})
    names = Names({"x": "Project"}, {"x": "Key"}, {"x": "a@example.com"})
    doc = shape(spec, Target("org", "Org"), spec.default_width, 0, 86400, spec.group_by, row, names)
    fields = objects.document_fields()
    assert sorted(set(_leaves(doc.source)) - set(fields)) == []


def test_docs_fields_md_is_in_sync_with_the_templates():
    assert FIELDS_MD.read_text() == objects.render_fields_md(), (
        "docs/fields.md is stale: python -c 'from usage_collector.elastic.objects import render_fields_md as r; "
        'open("docs/fields.md", "w").write(r())\''
    )


def test_docs_show_the_roles_that_setup_and_run_need():
    import json

    from usage_collector.config import Settings

    text = (FIELDS_MD.parent / "elasticsearch.md").read_text()
    for name, body in objects.role_descriptors(Settings()).items():
        assert f"POST _security/role/{name}`\n\n```json\n{json.dumps(body, indent=2)}\n```" in text, name
