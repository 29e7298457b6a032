"""`usage-collector setup` end to end: Elasticsearch (test server) and a recording Kibana stand-in."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from typer.testing import CliRunner

from tests.conftest_es import es_target
from usage_collector.cli import app

runner = CliRunner()


class _Kibana(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.requests.append(("POST", self.path, dict(self.headers), body))
        objects = [json.loads(line) for line in body.replace(b"\r\n", b"\n").split(b"\n")
                   if line.startswith(b"{")]
        payload = {"success": True, "successCount": len(objects),
                   "successResults": [{"type": o["type"], "id": o["id"], "meta": {"title": o["id"]}}
                                      for o in objects]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_setup_installs_elasticsearch_and_kibana_and_a_second_run_changes_nothing():
    _Kibana.requests = []
    kibana = ThreadingHTTPServer(("127.0.0.1", 0), _Kibana)
    threading.Thread(target=kibana.serve_forever, daemon=True).start()
    kibana_url = f"http://127.0.0.1:{kibana.server_address[1]}"
    try:
        with es_target("8.15.0") as es:
            env = {"ELASTICSEARCH_URL": es.url, "USAGE_COLLECTOR_NAMESPACE": es.namespace}
            first = runner.invoke(app, ["setup", "--kibana-url", kibana_url, "--space", "finops"], env=env)
            assert first.exit_code == 0, first.output
            assert "created" in first.output.lower()
            second = runner.invoke(app, ["setup", "--kibana-url", kibana_url, "--space", "finops"], env=env)
            assert second.exit_code == 0, second.output
            assert "nothing changed" in second.output
    finally:
        kibana.shutdown()
    imports = [r for r in _Kibana.requests if "/api/saved_objects/_import" in r[1]]
    assert len(imports) == 2
    method, path, headers, body = imports[0]
    assert method == "POST"
    assert path.startswith("/s/finops/api/saved_objects/_import") and "overwrite=true" in path
    assert headers.get("kbn-xsrf") or headers.get("Kbn-Xsrf")
    assert "multipart/form-data" in headers.get("Content-Type", "")
    assert b'name="file"' in body and b'"type":"dashboard"' in body.replace(b" ", b"")


def test_setup_without_elasticsearch_says_what_is_missing():
    result = runner.invoke(app, ["setup"], env={})
    assert result.exit_code == 2 and "ELASTICSEARCH_URL" in result.output
