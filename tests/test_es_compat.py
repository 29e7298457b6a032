"""Elasticsearch 8.x and 9.x headers, authentication, and credentials kept out of logs and errors."""

from __future__ import annotations

import base64
import logging

import elasticsearch
import pytest
from elasticsearch import BadRequestError, Elasticsearch

from tests.conftest_es import es_target
from tests.es_server import EsServer
from tests.helpers import CANARY_KEY, T0, image_doc
from usage_collector.catalogue import STREAMS
from usage_collector.elastic.setup import setup
from usage_collector.errors import SinkError
from usage_collector.sinks.base import Checkpoint

CANARY_PASSWORD = "canary-es-password-XYZ"
CANARY_API_KEY = "canary-es-apikey-XYZ"
SPEC = STREAMS["images"]


def window(namespace: str, images: int = 3) -> list:
    return [image_doc(namespace, images)]


#: elasticsearch-py's major: an 8.x client speaks compatible-with=8 even to a 9.x server, which accepts it.
CLIENT_MAJOR = int(elasticsearch.__version__[0])


@pytest.mark.parametrize(("es", "server_major"), [("8.15.0", 8), ("8.19.3", 8), ("9.1.0", 9)], indirect=["es"])
def test_every_request_carries_headers_the_server_version_accepts(es, server_major):
    major = min(server_major, CLIENT_MAJOR)
    server = es.require_server()
    sink = es.sink()
    sink.open()  # GET /, setup, data streams
    sink.write_window(window(es.namespace), Checkpoint("org", "images", "1h", position=T0 + 3600))
    sink.record_run({"@timestamp": "2025-10-15T00:00:00Z"})
    assert sink.list_runs() and list(sink.iter_documents("images"))
    assert sink.server is not None and sink.server.compat == major
    json_type = f"application/vnd.elasticsearch+json; compatible-with={major}"
    first, *rest = server.requests  # GET / goes out with 8, which 8.x and 9.x both accept
    assert (first.method, first.path, first.headers["accept"]) == (
        "GET",
        "/",
        "application/vnd.elasticsearch+json; compatible-with=8",
    )
    assert {r.headers["accept"] for r in rest} == {json_type}
    bulk = server.headers_of("/_bulk")
    assert bulk and {h["content-type"] for h in bulk} == {
        f"application/vnd.elasticsearch+x-ndjson; compatible-with={major}"
    }
    with_body = [
        r.headers
        for r in server.requests
        if int(r.headers.get("content-length", 0)) and not r.path.startswith("/_bulk")
    ]
    assert with_body and {h["content-type"] for h in with_body} == {json_type}


@pytest.mark.skipif(CLIENT_MAJOR < 9, reason="about elasticsearch-py 9's default header")
def test_the_test_server_refuses_elasticsearch_py_9_defaults_like_a_real_8x():
    """Without the pinned header, elasticsearch-py 9 fails on 8.x (elastic/elasticsearch-py#2923)."""
    with EsServer("8.15.0") as server:
        client = Elasticsearch(server.url)
        with pytest.raises(BadRequestError, match="media_type_header_exception") as info:
            client.info()
        assert "Accept version must be either version 8 or 7, but found 9" in str(info.value.body)
        client.close()
    with EsServer("9.1.0") as server:
        client = Elasticsearch(server.url)
        assert client.info()["version"]["number"] == "9.1.0"
        client.close()


@pytest.mark.es_server("7.17.0")
def test_elasticsearch_7_is_refused_with_a_clear_message(es):
    es.require_server()
    with pytest.raises(SinkError, match=r"older than 8\.0.*use 8\.x or 9\.x"):
        es.sink().open()


@pytest.mark.parametrize("auth", ["basic", "api_key", "url"])
def test_credentials_appear_in_no_log_record_or_exception(auth, caplog):
    caplog.set_level(logging.DEBUG)
    basic = ("elastic", CANARY_PASSWORD)
    kwargs = {"api_key": CANARY_API_KEY} if auth == "api_key" else {"basic": basic}
    with es_target(**kwargs) as es:
        server = es.require_server()
        if auth == "basic":
            settings = es.settings(elasticsearch_username="elastic", elasticsearch_password=CANARY_PASSWORD)
        elif auth == "api_key":
            settings = es.settings(elasticsearch_api_key=CANARY_API_KEY)
        else:
            settings = es.settings(elasticsearch_url=server.url.replace("://", f"://elastic:{CANARY_PASSWORD}@"))
        sink = es.sink(settings)
        sink.open()
        assert sink.write_window(window(es.namespace), None).created == 1
        errors = []
        bad = window(es.namespace, images=4)  # a revision, so it is written
        secret = CANARY_API_KEY if auth == "api_key" else CANARY_PASSWORD
        bad[0].source["openai"]["images"]["images"] = secret  # even a document value equal to the secret
        for attempt in (lambda: sink.write_window(bad, None), lambda: setup(settings, out=print)):
            server.denied_privileges = {"manage_ilm"}
            try:
                attempt()
            except SinkError as exc:
                errors.append(str(exc))
        server.api_key, server.basic = "another-key", None  # credentials no longer accepted
        with pytest.raises(SinkError, match="authentication failed") as info:
            es.sink(settings).open()
        errors.append(str(info.value))
        server.stop()
        with pytest.raises(SinkError, match="unreachable") as info:
            sink.load_checkpoint("org", "images", "1h")
        errors.append(str(info.value))
        assert len(errors) == 4
    encoded = base64.b64encode(f"elastic:{CANARY_PASSWORD}".encode()).decode()
    texts = [r.getMessage() for r in caplog.records] + errors + [repr(sink), sink.description]
    for secret in (CANARY_PASSWORD, CANARY_API_KEY, encoded, CANARY_KEY):
        assert not [t for t in texts if secret in t], secret
    assert "openai.images.images" in errors[0]  # the value itself is redacted, the field is named


def test_a_server_that_is_not_elasticsearch_is_named_as_such(es):
    """The client checks the X-Elastic-Product header; the sink says what that means."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class NotElastic(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"version": {"number": "9.0.0"}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotElastic)
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        settings = es.settings(elasticsearch_url=f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(SinkError, match="not Elasticsearch"):
            es.sink(settings).open()
    finally:
        httpd.shutdown()
        httpd.server_close()
