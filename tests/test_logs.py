"""Logging: ECS JSON shape, text/auto selection, library quieting, and that secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from tests.conftest import CANARY_KEY
from usage_collector import logs, secrets
from usage_collector.errors import ConfigError
from usage_collector.logs import NOISY_LOGGERS, TRANSPORT_LOGGERS, configure_logging
from usage_collector.secrets import REDACTED, redact, register_secret

ES_CANARY = "ZXNfY2FuYXJ5X2lkOmVzX2NhbmFyeV9rZXk="  # an Elasticsearch API key (base64 id:key)
PASSWORD_CANARY = "pw-CANARY-41c7e"  # does not look like a key: only registration can catch it
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    yield
    if logs._installed is not None:
        root.removeHandler(logs._installed)
        logs._installed = None
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lv in noisy.items():
        logging.getLogger(n).setLevel(lv)
    logging.captureWarnings(False)
    secrets.forget()


def json_lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def emit_everything(log: logging.Logger) -> None:
    """Log the registered canaries every way a secret could slip out."""
    log.info("connecting with key %s", CANARY_KEY)  # in the args
    log.warning(f"retrying; password was {PASSWORD_CANARY}")  # in the message itself
    log.info("request", extra={"http": {"request": {"headers": {"authorization": f"ApiKey {ES_CANARY}"}}}})
    try:
        try:
            raise ValueError(f"elasticsearch rejected api key {ES_CANARY}")
        except ValueError as inner:
            raise RuntimeError(f"OpenAI said 401 for {CANARY_KEY}") from inner
    except RuntimeError:
        log.exception("cycle failed")


# --- JSON ------------------------------------------------------------------------------------------------


def test_json_lines_are_ecs_documents() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    logging.getLogger("usage_collector.test").info("collected %d buckets", 42, extra={"event.dataset": "x.y"})
    [doc] = json_lines(out)
    assert doc["message"] == "collected 42 buckets"
    assert doc["log.level"] == "info" or doc["log"]["level"] == "info"  # type: ignore[index]
    assert "@timestamp" in doc and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(doc["@timestamp"]))
    assert "ecs.version" in doc
    assert doc["log"]["logger"] == "usage_collector.test"  # type: ignore[index]
    assert doc["service"] == {"name": "usage-collector", "version": "0.1.0"}
    assert doc["event"] == {"dataset": "x.y"}


def test_json_exception_fields_keep_the_type_and_lose_the_secret() -> None:
    register_secret(CANARY_KEY)
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    try:
        raise PermissionError(f"401 for key {CANARY_KEY}")
    except PermissionError:
        logging.getLogger("usage_collector").exception("auth failed")
    [doc] = json_lines(out)
    error = doc["error"]
    assert isinstance(error, dict)
    assert error["type"] == "PermissionError"
    assert error["message"] == f"401 for key {REDACTED}"
    assert "test_json_exception_fields" in error["stack_trace"]  # the frames are still there
    assert CANARY_KEY not in out.getvalue()


# --- secrets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text", "rich"])
def test_registered_secrets_never_reach_the_output(fmt: str) -> None:
    for secret in (CANARY_KEY, ES_CANARY, PASSWORD_CANARY):
        register_secret(secret)
    out: io.StringIO = TTY() if fmt == "rich" else io.StringIO()
    configure_logging("text" if fmt == "rich" else fmt, "DEBUG", stream=out)  # type: ignore[arg-type]
    emit_everything(logging.getLogger("usage_collector.collector"))
    text = ANSI.sub("", out.getvalue())
    for secret in (CANARY_KEY, ES_CANARY, PASSWORD_CANARY, "7f3a9c1e5b", "41c7e"):
        assert secret not in text, f"{secret!r} leaked in {fmt} output:\n{text}"
    assert text.count(REDACTED) >= 4
    # The lines are still useful: the redacted messages, the exception types and the chain are there.
    assert "connecting with key [REDACTED]" in text
    assert "RuntimeError" in text
    if fmt != "json":  # ECS keeps the outermost exception only (error.type/message/stack_trace)
        assert "ValueError" in text and "The above exception was the direct cause" in text


def test_credential_patterns_are_redacted_without_registration() -> None:
    out = io.StringIO()
    configure_logging("text", "INFO", stream=out)
    log = logging.getLogger("httpx")
    log.warning("POST https://elastic:s3cr3t-pass@es.internal:9200/_bulk")
    log.warning("headers: %r", {"Authorization": "Bearer sk-proj-Zz9_unregistered-Key"})
    log.warning("es: ApiKey dW5yZWdpc3RlcmVkOmtleQ==; url=https://x/?api_key=hunter2hunter2&page=2")
    text = out.getvalue()
    for leaked in ("s3cr3t-pass", "elastic:", "sk-proj-Zz9", "dW5yZWdpc3RlcmVk", "hunter2"):
        assert leaked not in text
    assert "https://[REDACTED]@es.internal:9200/_bulk" in text
    assert "'Bearer [REDACTED]'" in text
    assert "page=2" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sk-admin-abcdef123", REDACTED),
        ("Bearer abc.def-ghi", f"Bearer {REDACTED}"),
        ("authorization: ApiKey Zm9vOmJhcg==", f"authorization: ApiKey {REDACTED}"),
        ("basic Zm9vOmJhcg==", f"basic {REDACTED}"),
        ("http://user@host/x", f"http://{REDACTED}@host/x"),
        ("https://user:p%40ss@host:9200", f"https://{REDACTED}@host:9200"),
        ("?password=x&token=y", f"?password={REDACTED}&token={REDACTED}"),
        # look-alikes that are not secrets stay
        ("disk-usage and task-runner", "disk-usage and task-runner"),
        ("see https://platform.openai.com/settings", "see https://platform.openai.com/settings"),
        ("user@example.com", "user@example.com"),
    ],
    ids=[
        "openai-key",
        "bearer",
        "apikey",
        "basic",
        "url-user",
        "url-user-pass",
        "query",
        "no-sk-in-words",
        "plain-url",
        "email",
    ],
)
def test_redact_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_short_secrets_are_not_registered_and_longest_wins() -> None:
    register_secret("ab")
    register_secret("  secret-value-1  ")
    register_secret("secret-value-1-and-more")
    assert redact("ab secret-value-1-and-more secret-value-1") == f"ab {REDACTED} {REDACTED}"


# --- formats, levels -------------------------------------------------------------------------------------


def test_auto_is_json_when_not_a_terminal_and_text_on_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("auto", "INFO", stream=out)
    logging.getLogger("usage_collector").info("hello")
    assert json_lines(out)[0]["message"] == "hello"

    tty = TTY()
    configure_logging("auto", "INFO", stream=tty)
    from rich.logging import RichHandler

    assert isinstance(logs._installed, RichHandler)
    logging.getLogger("usage_collector").info("hello [REDACTED] stays literal")
    text = ANSI.sub("", tty.getvalue())
    assert "hello [REDACTED] stays literal" in text
    assert not text.lstrip().startswith("{")


def test_plain_text_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("text", "INFO", stream=out)
    logging.getLogger("usage_collector.sinks").warning("lease held by %s", "host:1")
    line = out.getvalue().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ WARNING usage_collector\.sinks: lease held by host:1", line)


def test_noisy_libraries_are_quiet_unless_debug() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    for name in NOISY_LOGGERS:
        quiet = logging.ERROR if name in TRANSPORT_LOGGERS else logging.WARNING
        assert logging.getLogger(name).getEffectiveLevel() == quiet
    logging.getLogger("elastic_transport.transport").warning("Retrying request after failure (attempt 2 of 3)")
    logging.getLogger("httpx").info("HTTP Request: GET ... 200")
    logging.getLogger("apscheduler.executors.default").info('Running job "cycle"')
    logging.getLogger("usage_collector").debug("hidden at INFO")
    assert out.getvalue() == ""

    configure_logging("json", "debug", stream=out)
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    logging.getLogger("httpx").debug("now visible")
    assert json_lines(out)[0]["message"] == "now visible"


def test_configuring_twice_replaces_the_handler() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    configure_logging("json", "INFO", stream=io.StringIO())
    configure_logging("text", "INFO", stream=io.StringIO())
    assert len(root.handlers) == before + 1


@pytest.mark.parametrize(
    ("fmt", "level", "match"),
    [("json", "LOUD", "--log-level"), ("xml", "INFO", "--log-format")],
    ids=["bad-level", "bad-format"],
)
def test_bad_options_are_config_errors(fmt: str, level: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        configure_logging(fmt, level, stream=io.StringIO())  # type: ignore[arg-type]


def test_default_stream_is_the_current_stderr_even_after_it_was_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("text", "INFO")
    logging.getLogger("usage_collector").info("one")
    first.close()  # e.g. a CLI test runner that captured stderr for one command
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("usage_collector").info("two")
    assert "two" in second.getvalue()


def test_the_filter_is_idempotent_and_leaves_exc_info_to_other_handlers() -> None:
    for secret in (CANARY_KEY, ES_CANARY, PASSWORD_CANARY):
        register_secret(secret)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    first = Keep()
    first.addFilter(logs.RedactingFilter())  # a second redacting handler runs before ours
    root = logging.getLogger()
    root.addHandler(first)
    try:
        out = io.StringIO()
        configure_logging("text", "INFO", stream=out)
        emit_everything(logging.getLogger("usage_collector"))
    finally:
        root.removeHandler(first)
    text = out.getvalue()
    assert CANARY_KEY not in text and ES_CANARY not in text
    assert "ValueError: elasticsearch rejected api key [REDACTED]" in text  # the chain survived two passes
    assert isinstance(seen[-1].exc_info[1], RuntimeError)  # type: ignore[index]
