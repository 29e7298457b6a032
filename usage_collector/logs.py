"""Logging: ECS JSON lines or human-readable text on stderr, with secrets redacted.

* ``json`` — one ECS document per line (``ecs_logging.StdlibFormatter``): ``@timestamp``, ``log.level``,
  ``message``, ``ecs.version``, ``log.logger``, ``error.*``, ... Ship it with Filebeat/Elastic Agent as is.
* ``text`` — rich's ``RichHandler`` on a terminal, plain ``time level logger: message`` lines otherwise.
* ``auto`` — ``text`` when stderr is a terminal, else ``json`` (systemd's journal, Kubernetes, CI).

Every record passes :class:`RedactingFilter` before it is formatted. It replaces with ``[REDACTED]``:
values given to :func:`register_secret` (the Admin key, Elasticsearch credentials), OpenAI keys
(``sk-...``), ``Bearer``/``ApiKey``/``Basic`` credentials, the user-info part of URLs
(``https://user:pass@host``) and ``key=``/``token=``/``password=`` query values — in the message, its
arguments, ``extra`` fields, stack info and exception text (the chained exceptions included).

Noisy libraries (httpx, httpcore, elastic_transport, elasticsearch, urllib3, apscheduler) log at WARNING and
above unless the level is DEBUG. At DEBUG they may show request lines; those are redacted like everything
else, but DEBUG is for troubleshooting, not for production.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import IO, Any, Literal

import ecs_logging

from .errors import ConfigError

__all__ = [
    "LEVELS",
    "NOISY_LOGGERS",
    "REDACTED",
    "RedactingFilter",
    "configure_logging",
    "redact",
    "register_secret",
]

REDACTED = "[REDACTED]"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NOISY_LOGGERS = ("httpx", "httpcore", "elastic_transport", "elasticsearch", "urllib3", "apscheduler")
#: Registered secrets shorter than this are ignored: redacting "ab" everywhere would garble every line.
MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: re.Pattern[str] | None = None
_installed: logging.Handler | None = None  # the handler configure_logging() added last

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI keys: sk-..., sk-proj-..., sk-admin-..., sk-svcacct-...
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), REDACTED),
    # Authorization header values (also inside repr()'d dicts).
    (re.compile(r"\b(Bearer|ApiKey|Basic)(\s+)[A-Za-z0-9._~+/=\-:]+", re.IGNORECASE), rf"\1\2{REDACTED}"),
    # URL user-info: scheme://user:password@host -> scheme://[REDACTED]@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@:]+(?::[^/\s@]*)?@"), rf"\1{REDACTED}@"),
    # Credentials in query strings or key=value text.
    (
        re.compile(r"\b((?:api[_-]?key|access[_-]?token|token|password|passwd|secret)=)[^&\s\"']+", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
)

# LogRecord attributes that are not ``extra=`` fields.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def register_secret(value: str) -> None:
    """Redact ``value`` wherever it appears in a log record from now on.

    Args:
        value: a secret (the Admin key, an Elasticsearch API key or password). Surrounding whitespace is
            ignored; values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """
    global _secret_re
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: a secret may contain another
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def _forget_secrets() -> None:
    """Tests only: drop every registered secret."""
    global _secret_re
    with _secrets_lock:
        _secrets.clear()
        _secret_re = None


def redact(text: str) -> str:
    """``text`` with registered secrets and credential-looking substrings replaced by ``[REDACTED]``.

    Example::

        >>> redact("GET https://elastic:changeme@es:9200/_bulk with Bearer sk-admin-abc123XYZ")
        'GET https://[REDACTED]@es:9200/_bulk with Bearer [REDACTED]'
    """
    secret_re = _secret_re
    if secret_re is not None:
        text = secret_re.sub(REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactingFilter(logging.Filter):
    """Redacts secrets in a record before any formatter sees it (install it on the handler).

    The message is rendered (``msg % args``) and redacted, so ``args`` become empty; ``extra`` string
    values and ``stack_info`` are redacted too, and ``exc_text`` is set to the redacted traceback (chained
    exceptions included), which formatters print instead of formatting ``exc_info`` themselves.
    ``exc_info`` is left alone for other handlers; our formatters redact their whole output once more
    (ECS's ``error.message``/``error.stack_trace`` are built from ``exc_info``). Running it twice on a
    record is harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can show safely
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                setattr(record, key, _redact_value(value))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        exc_info = record.exc_info
        if exc_info and exc_info[0] is not None and exc_info[1] is not None:
            # Always from exc_info: another handler may have cached an unredacted exc_text already.
            record.exc_text = redact("".join(traceback.format_exception(*exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _RedactingFormatter(logging.Formatter):
    """A formatter whose output is redacted once more (after the filter): the last line of defence."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _PlainFormatter(_RedactingFormatter):
    """``2026-10-15T03:30:00Z INFO    usage_collector.collector: message`` (UTC)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")
        self.converter = time.gmtime


class _EcsFormatter(ecs_logging.StdlibFormatter):
    """ECS JSON; every string value is redacted once more before it is dumped (``error.stack_trace``
    is built here from the traceback frames, after the filter ran)."""

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        result: dict[str, Any] = _redact_value(super().format_to_ecs(record))
        return result


def _ecs_formatter() -> logging.Formatter:
    from . import __version__

    return _EcsFormatter(
        extra={"service.name": "usage-collector", "service.version": __version__},
        exclude_fields=["log.original"],  # the same text as "message"
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (like logging's last-resort handler).

    A handler bound to the ``sys.stderr`` object of configuration time breaks when that object is replaced
    and closed (test runners, ``CliRunner``): every later record would end in "I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:  # StreamHandler.__init__ assigns it
        pass


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(
    fmt: Literal["json", "text", "auto"] = "auto",
    level: str = "INFO",
    *,
    stream: IO[str] | None = None,
) -> None:
    """Send log records to stderr as ECS JSON or text, with secrets redacted.

    Calling it again replaces the handler it installed before (the CLI calls it once per command).

    Args:
        fmt: ``json``, ``text`` or ``auto`` (text on a terminal, else JSON).
        level: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL`` (any case).
        stream: where to write (default ``sys.stderr``; tests pass a ``StringIO``).

    Raises:
        ConfigError: an unknown format or level; the message names the option and the allowed values.
    """
    level_name = str(level).upper()
    if level_name not in LEVELS:
        raise ConfigError(f"--log-level: {level!r} is not allowed; use {', '.join(LEVELS)}")
    if fmt not in ("json", "text", "auto"):
        raise ConfigError(f"--log-format: {fmt!r} is not allowed; use json, text or auto")
    out: IO[str] = stream if stream is not None else sys.stderr
    tty = _is_tty(out)

    def stream_handler() -> logging.Handler:
        return logging.StreamHandler(stream) if stream is not None else _StderrHandler()

    chosen = ("text" if tty else "json") if fmt == "auto" else fmt

    handler: logging.Handler
    if chosen == "json":
        handler = stream_handler()
        handler.setFormatter(_ecs_formatter())
    elif tty:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(file=stream, stderr=True),  # file=None: sys.stderr at the time of writing
            show_path=False,
            markup=False,  # a message is text, not rich markup ("[REDACTED]" must stay as is)
            rich_tracebacks=False,  # rich would render the exception itself, around our redaction
            log_time_format="%H:%M:%S",
        )
        handler.setFormatter(_RedactingFormatter("%(message)s"))
    else:
        handler = stream_handler()
        handler.setFormatter(_PlainFormatter())
    handler.addFilter(RedactingFilter())
    handler.set_name("usage-collector")

    global _installed
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    root.addHandler(handler)
    _installed = handler
    root.setLevel(level_name)
    _quiet(NOISY_LOGGERS, debug=level_name == "DEBUG")
    logging.captureWarnings(True)


def _quiet(names: Iterable[str], *, debug: bool) -> None:
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
