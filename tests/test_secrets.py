"""``usage_collector.secrets``: every secret form is collected and redacted, and no canary planted in any secret
source reaches a log record, an exception or a file, whichever code path logs or raises.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.conftest import T0, make_settings
from tests.conftest_es import es_target
from usage_collector import logs, secrets
from usage_collector.catalogue import STREAMS
from usage_collector.client import OpenAIClient, RequestStats
from usage_collector.documents import Target, shape
from usage_collector.elastic import kibana
from usage_collector.elastic.kibana import client as kibana_client
from usage_collector.elastic.setup import setup
from usage_collector.errors import CollectorError
from usage_collector.logs import NOISY_LOGGERS, configure_logging
from usage_collector.secrets import REDACTED, auth_headers, bearer, collect, credentials, redact, register_secret


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# One distinct canary per secret source; none looks like an OpenAI key or a credential pattern, so only
# registration can catch them.
TOP_KEY = "topkey-CANARY-a1b2c3"
TOP_FILE_KEY = "topfile-CANARY-d4e5f6"
ORG_KEY = "orgkey-CANARY-0a1b2c"
ORG_FILE_KEY = "orgfile-CANARY-3d4e5f"
ES_B64_ID, ES_B64_SECRET = "esid-CANARY-77aa", "essecret-CANARY-88bb"
ES_API_KEY_B64 = b64(f"{ES_B64_ID}:{ES_B64_SECRET}")  # given encoded
ES_RAW_ID, ES_RAW_SECRET = "rawid-CANARY-11dd", "rawsecret-CANARY-22ee"
ES_API_KEY_RAW = f"{ES_RAW_ID}:{ES_RAW_SECRET}"  # given as id:key
ES_USER, ES_PASSWORD = "elastic", "espw-CANARY-99cc"
URL_USER, URL_PASSWORD = "urluser", "urlpw-CANARY-5e5e"

#: Every form each secret may travel in, by the settings that hold it; none may ever show.
OPENAI_FORMS = (TOP_KEY, TOP_FILE_KEY, ORG_KEY, ORG_FILE_KEY)
B64_FORMS = (ES_API_KEY_B64, f"{ES_B64_ID}:{ES_B64_SECRET}", ES_B64_SECRET)
RAW_FORMS = (ES_API_KEY_RAW, b64(ES_API_KEY_RAW), ES_RAW_SECRET)
BASIC_FORMS = (ES_PASSWORD, b64(f"{ES_USER}:{ES_PASSWORD}"), f"{ES_USER}:{ES_PASSWORD}")
URL_FORMS = (URL_PASSWORD, b64(f"{URL_USER}:{URL_PASSWORD}"), f"{URL_USER}:{URL_PASSWORD}")
FORBIDDEN = OPENAI_FORMS + B64_FORMS + RAW_FORMS + BASIC_FORMS + URL_FORMS
SPEC = STREAMS["images"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    installed = logs._installed
    secrets.forget()
    yield
    if logs._installed is not None and logs._installed is not installed:
        root.removeHandler(logs._installed)
        logs._installed.close()
        logs._installed = None
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lv in noisy.items():
        logging.getLogger(n).setLevel(lv)
    logging.captureWarnings(False)
    secrets.forget()


@pytest.fixture
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The key files, outside ``tmp_path`` (whose files must not hold a canary)."""
    where = tmp_path_factory.mktemp("keys")
    (where / "top").write_text(TOP_FILE_KEY + "\n")
    (where / "org").write_text(ORG_FILE_KEY + "\n")
    return where / "top", where / "org"


# --- collect: one test per secret form ------------------------------------------------------------------
def test_collect_the_top_level_key_and_key_file(key_files: tuple[Path, Path]) -> None:
    found = collect(make_settings(openai_admin_key=TOP_KEY, openai_admin_key_file=key_files[0]))
    assert TOP_KEY in found and TOP_FILE_KEY in found


def test_collect_each_organizations_key_and_key_file(key_files: tuple[Path, Path]) -> None:
    found = collect(
        make_settings(
            organizations=[{"id": "a", "admin_key": ORG_KEY}, {"id": "b", "admin_key_file": str(key_files[1])}]
        )
    )
    assert ORG_KEY in found and ORG_FILE_KEY in found


def test_a_missing_key_file_is_skipped(tmp_path: Path) -> None:
    found = collect(
        make_settings(
            openai_admin_key=TOP_KEY,
            openai_admin_key_file=tmp_path / "nope",
            organizations=[{"id": "a", "admin_key_file": str(tmp_path / "gone")}],
        )
    )
    assert set(found) == {TOP_KEY}


def test_collect_an_api_key_given_base64_and_its_decoded_forms() -> None:
    found = collect(make_settings(elasticsearch_api_key=ES_API_KEY_B64))
    assert {ES_API_KEY_B64, f"{ES_B64_ID}:{ES_B64_SECRET}", ES_B64_SECRET} <= set(found)
    assert ES_B64_ID not in found  # the id is not a secret


def test_collect_an_api_key_given_as_id_and_key_and_its_base64() -> None:
    found = collect(make_settings(elasticsearch_api_key=ES_API_KEY_RAW))
    assert {ES_API_KEY_RAW, b64(ES_API_KEY_RAW), ES_RAW_SECRET} <= set(found)


def test_collect_an_api_key_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(ES_API_KEY_RAW)
    found = collect(make_settings(elasticsearch_api_key_file=tmp_path / "k"))
    assert {ES_API_KEY_RAW, b64(ES_API_KEY_RAW), ES_RAW_SECRET} <= set(found)


def test_collect_the_password_user_password_and_its_base64() -> None:
    found = collect(make_settings(elasticsearch_username=ES_USER, elasticsearch_password=ES_PASSWORD))
    assert {ES_PASSWORD, f"{ES_USER}:{ES_PASSWORD}", b64(f"{ES_USER}:{ES_PASSWORD}")} <= set(found)
    assert ES_USER not in found


def test_collect_the_password_of_the_elasticsearch_url() -> None:
    found = collect(make_settings(elasticsearch_url=f"https://{URL_USER}:urlpw-CANARY%2F5e@es:9200"))
    assert {"urlpw-CANARY/5e", "urlpw-CANARY%2F5e", b64(f"{URL_USER}:urlpw-CANARY/5e")} <= set(found)


def test_collect_a_password_in_the_kibana_url() -> None:
    found = collect(make_settings(kibana_url="https://kb:kbpw-CANARY-6f6f@kibana:5601"))
    assert {"kbpw-CANARY-6f6f", b64("kb:kbpw-CANARY-6f6f")} <= set(found)


def test_collected_secrets_do_not_show_in_repr() -> None:
    found = collect(make_settings(openai_admin_key=TOP_KEY, elasticsearch_api_key=ES_API_KEY_RAW))
    assert TOP_KEY not in repr(found) and ES_RAW_SECRET not in str(found)
    assert repr(found).startswith("Secrets(")


# --- redact: one test per form --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings_kwargs,secret",
    [
        ({"openai_admin_key": TOP_KEY}, TOP_KEY),
        ({"organizations": [{"id": "a", "admin_key": ORG_KEY}]}, ORG_KEY),
        ({"elasticsearch_api_key": ES_API_KEY_B64}, ES_API_KEY_B64),
        ({"elasticsearch_api_key": ES_API_KEY_B64}, f"{ES_B64_ID}:{ES_B64_SECRET}"),
        ({"elasticsearch_api_key": ES_API_KEY_B64}, ES_B64_SECRET),
        ({"elasticsearch_api_key": ES_API_KEY_RAW}, ES_API_KEY_RAW),
        ({"elasticsearch_api_key": ES_API_KEY_RAW}, b64(ES_API_KEY_RAW)),
        ({"elasticsearch_username": ES_USER, "elasticsearch_password": ES_PASSWORD}, ES_PASSWORD),
        ({"elasticsearch_username": ES_USER, "elasticsearch_password": ES_PASSWORD}, b64(f"{ES_USER}:{ES_PASSWORD}")),
        ({"elasticsearch_url": f"http://{URL_USER}:{URL_PASSWORD}@es:9200"}, URL_PASSWORD),
    ],
)
def test_registered_settings_redact_each_form(settings_kwargs: dict[str, Any], secret: str) -> None:
    text = f"Preview of field's value: '{secret}' (header {secret})"
    assert redact(text) == text  # no pattern catches it...
    secrets.register(make_settings(**settings_kwargs))
    assert redact(text) == f"Preview of field's value: '{REDACTED}' (header {REDACTED})"  # ...registered, it is


def test_redact_patterns_need_no_registration() -> None:
    assert redact("GET https://elastic:changeme@es:9200/_bulk with Bearer sk-admin-abc123XYZ") == (
        f"GET https://{REDACTED}@es:9200/_bulk with Bearer {REDACTED}"
    )
    assert redact("?password=x&token=y") == f"?password={REDACTED}&token={REDACTED}"


def test_short_values_are_not_registered() -> None:
    register_secret("ab")
    register_secret(SecretStr("  cd  "))
    register_secret(None)
    assert redact("ab cd") == "ab cd"


# --- credentials headers ----------------------------------------------------------------------------------
def test_auth_headers_prefer_the_api_key_then_basic_then_nothing() -> None:
    both = make_settings(
        elasticsearch_api_key=ES_API_KEY_B64, elasticsearch_username=ES_USER, elasticsearch_password=ES_PASSWORD
    )
    assert auth_headers(both) == {"Authorization": f"ApiKey {ES_API_KEY_B64}"}
    assert credentials(both) == (ES_API_KEY_B64, None)
    basic = make_settings(elasticsearch_username=ES_USER, elasticsearch_password=ES_PASSWORD)
    assert auth_headers(basic) == {"Authorization": "Basic " + b64(f"{ES_USER}:{ES_PASSWORD}")}
    in_url = make_settings(elasticsearch_url=f"http://{URL_USER}:{URL_PASSWORD}@es:9200")
    assert credentials(in_url) == (None, (URL_USER, URL_PASSWORD))
    assert auth_headers(make_settings()) == {}
    assert bearer(SecretStr(TOP_KEY)) == {"Authorization": f"Bearer {TOP_KEY}"}


# --- end to end: no canary anywhere ----------------------------------------------------------------------
class _Keep(logging.Handler):
    """A handler someone else installed: no filter of ours, formats with the standard formatter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


def _docs(namespace: str, canaries: tuple[str, ...]) -> list[Any]:
    """One document per canary, each with the canary where a number belongs (the server echoes it)."""
    docs = []
    for i, canary in enumerate(canaries):
        row = {
            "object": SPEC.object_type,
            "images": 1,
            "num_model_requests": 1,
            "project_id": f"p{i}",
            "user_id": None,
            "api_key_id": None,
            "model": "gpt-image-1",
            "size": "1024x1024",
            "source": "image.generation",
        }
        doc = shape(SPEC, Target("org", namespace=namespace), "1h", T0, T0 + 3600, SPEC.group_by, row)
        doc.source["openai"]["images"]["images"] = canary
        docs.append(doc)
    return docs


def _echo(status: int, canaries: tuple[str, ...]) -> httpx.MockTransport:
    """A stand-in that refuses every request, echoing ``canaries`` and the Authorization header it got."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            json={
                "error": {"message": "bad credentials: " + " ".join(canaries)},
                "authorization": request.headers.get("authorization", ""),
            },
        )

    return httpx.MockTransport(handler)


def _texts(exc: BaseException) -> list[str]:
    return [str(exc), "".join(traceback.format_exception(exc))]


def test_no_canary_reaches_a_log_record_an_exception_or_a_file(
    key_files: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in NOISY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    log_file = tmp_path / "collector.log"
    stream = log_file.open("w")
    configure_logging("json", "DEBUG", stream=stream)
    # elastic_transport.node does not propagate; it logs request and response bodies to its own handlers.
    node, everyone = _Keep(), _Keep()
    logging.getLogger("elastic_transport.node").addHandler(node)
    logging.getLogger().addHandler(everyone)
    errors: list[str] = []
    try:
        with es_target(api_key=ES_API_KEY_B64, basic=(ES_USER, ES_PASSWORD)) as es:
            server = es.require_server()
            base: dict[str, Any] = {
                "openai_admin_key": TOP_KEY,
                "openai_admin_key_file": key_files[0],
                "organizations": [{"id": "a", "admin_key": ORG_KEY}, {"id": "b", "admin_key_file": str(key_files[1])}],
                "kibana_url": "http://kibana.test:5601",
            }
            with_b64 = es.settings(**base, elasticsearch_api_key=ES_API_KEY_B64)
            with_raw = es.settings(**base, elasticsearch_api_key=ES_API_KEY_RAW)
            with_basic = es.settings(**base, elasticsearch_username=ES_USER, elasticsearch_password=ES_PASSWORD)
            with_url = es.settings(
                **base, elasticsearch_url=server.url.replace("://", f"://{URL_USER}:{URL_PASSWORD}@")
            )
            # Each step starts with nothing registered: the code path must register its settings itself.

            # Elasticsearch: a bulk write whose every item fails with a canary echoed in the reason.
            for settings, api_key, forms in (
                (with_b64, ES_API_KEY_B64, B64_FORMS),
                (with_raw, ES_API_KEY_RAW, RAW_FORMS),
            ):
                secrets.forget()
                server.api_key = api_key
                sink = es.sink(settings)
                with pytest.raises(CollectorError) as info:
                    sink.write_window(_docs(es.namespace, OPENAI_FORMS + forms), None)
                errors += [*_texts(info.value), json.dumps(getattr(info.value, "errors", []))]
                assert "Preview of field's value: '[REDACTED]'" in str(info.value)
                sink.close()
            # setup refused (a missing privilege), then credentials refused.
            secrets.forget()
            server.denied_privileges = {"manage_ilm"}
            with pytest.raises(CollectorError, match="manage_ilm") as info:
                setup(with_basic, out=lambda _: None)
            errors += _texts(info.value)
            server.denied_privileges = set()
            secrets.forget()
            server.api_key, server.basic = "another-key", (URL_USER, "another-password")
            with pytest.raises(CollectorError, match="authentication failed") as info:
                es.sink(with_url).open()
            errors += _texts(info.value)

            # Kibana: refusals and a transport error that echo the credentials (and the header sent).
            for settings, status, forms in ((with_basic, 401, BASIC_FORMS), (with_b64, 403, B64_FORMS)):
                for call in (kibana.install, kibana.install_rules):
                    secrets.forget()
                    with pytest.raises(CollectorError, match=f"HTTP {status}") as info:
                        call(
                            settings,
                            out=errors.append,
                            client=httpx.Client(transport=_echo(status, OPENAI_FORMS + forms)),
                        )
                    errors += _texts(info.value)

            def refuse(request: httpx.Request) -> httpx.Response:
                raise httpx.ConnectError("cannot connect with " + " ".join(OPENAI_FORMS + RAW_FORMS), request=request)

            secrets.forget()
            with pytest.raises(CollectorError, match="ConnectError") as info:
                kibana.install(with_raw, client=httpx.Client(transport=httpx.MockTransport(refuse)))
            errors += _texts(info.value)

            # The CLI: setup works on Elasticsearch, then Kibana refuses (echoing); the error line is redacted.
            secrets.forget()
            monkeypatch.setattr(
                kibana_client,
                "make_client",
                lambda settings, **_: httpx.Client(transport=_echo(401, (TOP_KEY, *RAW_FORMS))),
            )
            server.api_key, server.basic = ES_API_KEY_RAW, None
            for name, value in (
                ("ELASTICSEARCH_URL", es.url),
                ("ELASTICSEARCH_API_KEY", ES_API_KEY_RAW),
                ("OPENAI_ADMIN_KEY", TOP_KEY),
                ("USAGE_COLLECTOR_NAMESPACE", es.namespace),
                ("KIBANA_URL", "http://kibana.test:5601"),
            ):
                monkeypatch.setenv(name, value)
            from usage_collector.cli import app

            result = CliRunner().invoke(app, ["--log-level", "DEBUG", "--log-format", "json", "setup"])
            assert result.exit_code == 1, result.output
            assert "Kibana: import saved objects: HTTP 401" in result.stderr
            errors += [result.output, result.stderr]

        # OpenAI: a 401 whose body echoes the key, for every organization's key (one read from its file).
        for org in with_b64.orgs():
            secrets.forget()
            client = OpenAIClient(
                "http://openai.test/v1",
                org.resolve_key(),
                max_attempts=1,
                transport=_echo(401, (org.resolve_key().get_secret_value(),)),
            )
            with pytest.raises(CollectorError, match="HTTP 401") as info:
                client.call("organization/usage/images", [], RequestStats())
            client.close()
            errors += _texts(info.value)
    finally:
        logging.getLogger("elastic_transport.node").removeHandler(node)
        logging.getLogger().removeHandler(everyone)
        configure_logging("json", "INFO", stream=io.StringIO())  # let go of the file
        stream.close()

    assert any("Preview of field" in line for line in node.lines)  # the bodies were logged at DEBUG...
    assert any(r.name.startswith("httpx") for r in caplog.records)
    records = caplog.records + node.records + everyone.records
    texts = [r.getMessage() for r in records] + node.lines + everyone.lines + [caplog.text] + errors
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert log_file.stat().st_size > 0
    leaks = {secret for secret in FORBIDDEN for text in texts if secret in text}
    assert not leaks  # ...and redacted everywhere
