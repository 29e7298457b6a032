"""Logging: ECS JSON lines or human-readable text on stderr, with secrets redacted.

* ``json`` — one ECS document per line (``ecs_logging.StdlibFormatter``): ``@timestamp``, ``log.level``,
  ``message``, ``ecs.version``, ``log.logger``, ``error.*``, ... Ship it with Filebeat/Elastic Agent as is.
* ``text`` — rich's ``RichHandler`` on a terminal, plain ``time level logger: message`` lines otherwise.
* ``auto`` — ``text`` when stderr is a terminal, else ``json`` (systemd's journal, Kubernetes, CI).

Every record passes :class:`RedactingFilter` before it is formatted, and the formatters redact their output
once more. Both call :func:`usage_collector.secrets.redact`, the package's only redaction (which values and
patterns it replaces with ``[REDACTED]`` is described there): in the message, its arguments, ``extra``
fields, stack info and exception text (the chained exceptions included). Registering secrets
(:func:`usage_collector.secrets.register`, which the CLI calls with the settings) also redacts every record
at creation, whichever logger made it and whichever handler receives it (pytest's ``caplog``, a library's own
handler): see :mod:`usage_collector.secrets`.

Noisy libraries (httpx, httpcore, elasticsearch, apscheduler) log at WARNING and above unless the level is
DEBUG; the transport layers that retry (elastic_transport, urllib3) only at ERROR, because their retry warnings
carry the client's traceback and the collector reports the outcome itself, in one line. At DEBUG they may show
request lines; those are redacted like everything else, but DEBUG is for troubleshooting, not for production.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import IO, Any, Literal

import ecs_logging

from .errors import ConfigError
from .secrets import redact, redact_record

__all__ = [
    "LEVELS",
    "NOISY_LOGGERS",
    "TRANSPORT_LOGGERS",
    "RedactingFilter",
    "configure_logging",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NOISY_LOGGERS = ("httpx", "httpcore", "elastic_transport", "elasticsearch", "urllib3", "apscheduler")
#: Of those, the ones shown only from ERROR unless DEBUG (retry warnings with tracebacks).
TRANSPORT_LOGGERS = frozenset({"elastic_transport", "urllib3"})
_installed: logging.Handler | None = None  # the handler configure_logging() added last

# LogRecord attributes that are not ``extra=`` fields.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


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

    :func:`usage_collector.secrets.redact_record` (which the record factory already ran when the record was
    created, if secrets were registered by then) plus the ``extra`` fields: the message is rendered
    (``msg % args``) and redacted, so ``args`` become empty; ``extra`` string values and ``stack_info`` are
    redacted too, and ``exc_text`` is set to the redacted traceback (chained exceptions included) when it
    holds a secret, which formatters print instead of formatting ``exc_info`` themselves.
    ``exc_info`` is left alone for other handlers; our formatters redact their whole output once more
    (ECS's ``error.message``/``error.stack_trace`` are built from ``exc_info``). Running it twice on a
    record is harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        if record.args:  # nothing secret in it: render it anyway, so that no handler formats args again
            record.msg, record.args = record.getMessage(), None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                setattr(record, key, _redact_value(value))
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
        quiet = logging.ERROR if name in TRANSPORT_LOGGERS else logging.WARNING
        logging.getLogger(name).setLevel(logging.NOTSET if debug else quiet)
