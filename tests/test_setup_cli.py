"""`usage-collector setup` end to end: Elasticsearch (test server) and the recording Kibana stand-in."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.helpers import import_file
from usage_collector.cli import app

runner = CliRunner()


@pytest.mark.es_server("8.15.0")
def test_setup_installs_elasticsearch_and_kibana_and_a_second_run_changes_nothing(es, kb):
    env = {"ELASTICSEARCH_URL": es.url, "USAGE_COLLECTOR_NAMESPACE": es.namespace}
    first = runner.invoke(app, ["setup", "--kibana-url", kb.url, "--space", "finops"], env=env)
    assert first.exit_code == 0, first.output
    assert "created" in first.output.lower()
    second = runner.invoke(app, ["setup", "--kibana-url", kb.url, "--space", "finops"], env=env)
    assert second.exit_code == 0, second.output
    assert "nothing changed" in second.output
    imports = [r for r in kb.requests if r.path.endswith("/api/saved_objects/_import")]
    assert len(imports) == 2
    req = imports[0]
    assert (req.method, req.path, req.query) == ("POST", "/s/finops/api/saved_objects/_import", {"overwrite": ["true"]})
    assert req.headers["kbn-xsrf"] == "true"
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert "dashboard" in {obj["type"] for obj in import_file(req)}


def test_setup_without_elasticsearch_says_what_is_missing():
    result = runner.invoke(app, ["setup"], env={})
    assert result.exit_code == 2 and "ELASTICSEARCH_URL" in result.output
