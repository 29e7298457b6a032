"""Secrets: which values of the settings are secret, the one redaction, and the one credentials header.

**What is secret** (:func:`collect`): the OpenAI Admin key and the content of its key file, at the top level
and for each ``[[organizations]]`` entry; the Elasticsearch API key as given, its base64 encoding, and the
other form too (``id:key`` given: its base64; base64 given: the decoded ``id:key`` and the ``key`` part);
the Elasticsearch password, ``user:password`` and their base64 (the ``Authorization: Basic`` value), from the
settings or from the user information of ``ELASTICSEARCH_URL``; the content of ``ELASTICSEARCH_API_KEY_FILE``
and ``ELASTICSEARCH_PASSWORD_FILE``; a password in ``KIBANA_URL`` (Kibana otherwise reuses the Elasticsearch
credentials). A key file that cannot be read is skipped: collecting never fails. Values stay out of
``repr``: :class:`Secrets` prints only how many it holds.

**Redaction** (:func:`redact`): registered values (:func:`register` for the settings, :func:`register_secret`
for one value) and credential-looking text — OpenAI keys (``sk-...``), ``Bearer``/``ApiKey``/``Basic``
credentials, the user information of URLs (``https://user:pass@host``), ``key=``/``token=``/``password=``
values — become ``[REDACTED]``. It is the only redaction of the package: log records, the messages of
Elasticsearch, Kibana and OpenAI errors, and the CLI's error line all go through it. The CLI registers the
settings when it configures logging; the Elasticsearch sink, :func:`~usage_collector.elastic.connection.connect`,
``setup`` and the Kibana installer register the settings they are given, so code that builds them directly
(tests, embedding) is covered too.

**Log records of every logger.** Registering installs a :func:`logging.setLogRecordFactory` wrapper (once;
again if someone replaced it): every record created from then on, by any logger, has its message (rendered
with its arguments), stack info and exception text (``exc_text``, the whole chained traceback, which
formatters print instead of formatting ``exc_info``) redacted *before* any handler sees it. A
``logging.Filter`` would not do: a filter on a logger applies only to records logged on that very logger,
not to its children (``elastic_transport.node``, ``httpcore.http11``, ``urllib3.connectionpool``...), and
some of those do not propagate (``elastic_transport.node`` has ``propagate = False`` and logs request and
response bodies at DEBUG to whatever handler is attached to it); a filter on a handler covers only that
handler, not pytest's ``caplog`` or one an embedding application installs. The factory runs only for records
a logger lets through (after the level check). Limits: ``extra=`` fields are set on the record after the
factory returns, so they are redacted by the handler filter of :mod:`usage_collector.logs` only, and
``exc_info`` itself is left as is (other handlers may want the exception object).

**Credentials headers** (:func:`credentials`, :func:`auth_headers`, :func:`bearer`): the Elasticsearch
client gets ``api_key=``/``basic_auth=`` from :func:`credentials`; Kibana requests carry
:func:`auth_headers` (the same credentials as an ``Authorization`` header); the OpenAI client sends
:func:`bearer`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "Secrets",
    "auth_headers",
    "bearer",
    "collect",
    "credentials",
    "forget",
    "redact",
    "redact_record",
    "register",
    "register_secret",
]

REDACTED = "[REDACTED]"
#: Secrets shorter than this are not registered: redacting "ab" everywhere would garble every line.
MIN_SECRET_LENGTH = 4

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

_registered: set[str] = set()
_lock = threading.Lock()
_secret_re: re.Pattern[str] | None = None


class Secrets:
    """The secret values of one :class:`~usage_collector.config.Settings`; ``repr`` shows only their number."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values = frozenset(v for v in (s.strip() for s in values) if len(v) >= MIN_SECRET_LENGTH)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(<{len(self._values)} values>)"

    __str__ = __repr__


# --- what is secret ---------------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _value(secret: SecretStr | None) -> str | None:
    if secret is None:
        return None
    return secret.get_secret_value().strip() or None


def _api_key_forms(key: str) -> list[str]:
    """``key``, its base64, and the other form: ``id:key`` <-> ``base64(id:key)``, plus the ``key`` part."""
    out = [key, _b64(key)]
    decoded: str | None = key if ":" in key else None
    if decoded is None:
        try:
            text = base64.b64decode(key, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            text = ""
        if ":" in text and text.isprintable():
            decoded = text
    if decoded is not None:
        out += [decoded, _b64(decoded), decoded.partition(":")[2]]
    return out


def _password_forms(user: str | None, password: str) -> list[str]:
    out = [password, _b64(password)]
    if user:
        out += [f"{user}:{password}", _b64(f"{user}:{password}")]
    return out


def _url_userinfo(url: str | None) -> tuple[str | None, str | None, str | None]:
    """``(user, password, password as written)`` of a URL's user information (unquoted)."""
    if not url:
        return None, None, None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None, None, None
    user = unquote(parts.username) if parts.username else None
    raw = parts.password
    return user, (unquote(raw) if raw else None), raw


def collect(settings: Settings) -> Secrets:
    """Every secret value of ``settings`` in every form it may travel in (see the module docstring).

    Never raises: a key file that is missing or unreadable is skipped.
    """
    values: list[str] = []
    keys = [_value(settings.openai_admin_key), _read(settings.openai_admin_key_file)]
    for org in settings.organizations:
        keys += [_value(org.admin_key), _read(org.admin_key_file)]
    values += [k for k in keys if k]

    for key in (_value(settings.elasticsearch_api_key), _read(settings.elasticsearch_api_key_file)):
        if key:
            values += _api_key_forms(key)

    url_user, url_password, url_raw = _url_userinfo(settings.elasticsearch_url)
    user = settings.elasticsearch_username or url_user
    for password in (
        _value(settings.elasticsearch_password),
        _read(settings.elasticsearch_password_file),
        url_password,
        url_raw,
    ):
        if password:
            values += _password_forms(user, password)
            if url_user and url_user != user:
                values += _password_forms(url_user, password)

    kibana_user, kibana_password, kibana_raw = _url_userinfo(settings.kibana_url)
    for password in (kibana_password, kibana_raw):
        if password:
            values += _password_forms(kibana_user, password)
    return Secrets(values)


# --- registration and redaction ---------------------------------------------------------------------
def register_secret(value: str | SecretStr | None) -> None:
    """Redact ``value`` from every log record and error message from now on.

    Surrounding whitespace is ignored; values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """
    global _secret_re
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    text = (text or "").strip()
    if len(text) < MIN_SECRET_LENGTH:
        return
    _install_record_factory()
    with _lock:
        if text in _registered:
            return
        _registered.add(text)
        ordered = sorted(_registered, key=len, reverse=True)  # longest first: a secret may contain another
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def register(settings: Settings) -> Secrets:
    """Register every secret of ``settings`` (:func:`collect`); returns them."""
    found = collect(settings)
    _install_record_factory()
    for value in found:
        register_secret(value)
    return found


def forget() -> None:
    """Tests only: drop every registered secret (the record factory stays; it redacts patterns only then)."""
    global _secret_re
    with _lock:
        _registered.clear()
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


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record's message (rendered with its arguments), stack info and exception text in place.

    The message and arguments are left alone when nothing in them is secret. ``exc_text`` is set from
    ``exc_info`` (chained exceptions included) when the traceback holds a secret; formatters print it
    instead of formatting ``exc_info`` themselves. Running it twice on a record is harmless.
    """
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what we can show safely
        message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
    else:
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    exc_info = record.exc_info
    if exc_info and exc_info[0] is not None and exc_info[1] is not None:
        # Always from exc_info: a handler may have cached an unredacted exc_text already.
        text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        cleaned = redact(text)
        if cleaned != text or record.exc_text:
            record.exc_text = cleaned
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)


def _install_record_factory() -> None:
    """Wrap the log record factory with :func:`redact_record` (once; again if it was replaced since)."""
    with _lock:
        current = logging.getLogRecordFactory()
        if getattr(current, "_redacts_secrets", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            redact_record(record)
            return record

        factory._redacts_secrets = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


# --- credentials headers ----------------------------------------------------------------------------
def credentials(settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """``(api_key, None)``, ``(None, (user, password))`` or ``(None, None)`` for Elasticsearch and Kibana.

    The API key wins; else the user and password of the settings, or of ``ELASTICSEARCH_URL``'s user
    information when the settings have none (not with a cloud id, which has no URL).
    """
    if settings.elasticsearch_api_key is not None:
        return settings.elasticsearch_api_key.get_secret_value(), None
    username = settings.elasticsearch_username
    password = settings.elasticsearch_password.get_secret_value() if settings.elasticsearch_password else None
    if settings.elasticsearch_url and not settings.elasticsearch_cloud_id:
        url_user, url_password, _ = _url_userinfo(settings.elasticsearch_url)
        if url_user is not None or url_password is not None:
            username = username or url_user or ""
            password = password or url_password or ""
    if username:
        return None, (username, password or "")
    return None, None


def auth_headers(settings: Settings) -> dict[str, str]:
    """``{"Authorization": "ApiKey ..."}``, ``{"Authorization": "Basic ..."}`` or ``{}`` (see :func:`credentials`)."""
    api_key, basic = credentials(settings)
    if api_key is not None:
        return {"Authorization": f"ApiKey {api_key}"}
    if basic is not None:
        return {"Authorization": "Basic " + _b64(":".join(basic))}
    return {}


def bearer(key: SecretStr | str) -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}`` (the OpenAI Admin key)."""
    value = key.get_secret_value() if isinstance(key, SecretStr) else key
    return {"Authorization": f"Bearer {value}"}
