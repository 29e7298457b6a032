"""Talking to Elasticsearch: the client (:func:`connect`), the compatibility header, and errors turned into
:class:`~usage_collector.errors.SinkError` s that name the request and never a credential (:func:`guard`,
:func:`sink_error`, :func:`field_of`). Used by the setup and the sink.

**Elasticsearch 8.x and 9.x.** elasticsearch-py 9 sends ``Accept``/``Content-Type:
application/vnd.elasticsearch+json; compatible-with=9``, which an 8.x server refuses with
``media_type_header_exception`` (elastic/elasticsearch-py#2923). :func:`connect` installs a transport that
rewrites ``compatible-with`` on every request: ``8`` until the server's version is known (8.x and 9.x both
accept it, ``RestCompatibleVersionHelper`` allows the current and the previous major), then the server's
major (capped at the client's). ``GET /`` needs the ``monitor`` cluster privilege; without it the collector
stays on ``compatible-with=8`` and says so in a warning.

Credentials stay ``SecretStr`` until handed to the client (:func:`usage_collector.secrets.credentials`).
:func:`connect` registers them with :mod:`usage_collector.secrets`, whose
:func:`~usage_collector.secrets.redact` cleans every message here and every log record; URLs are shown
without user information. ``elasticsearch`` is imported only when a client is needed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .. import secrets
from ..errors import ConfigError, SinkError

if TYPE_CHECKING:
    from elastic_transport import Transport
    from elasticsearch import Elasticsearch

    from ..config import Settings

log = logging.getLogger(__name__)

_COMPAT = re.compile(r"compatible-with=\d+")


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /`` said and the compatibility header chosen for it."""

    version: str
    compat: int


# --- connection -------------------------------------------------------------------------------------
def _pin_compat(headers: Mapping[str, str], major: int) -> dict[str, str]:
    out = dict(headers)
    for key, value in out.items():
        if key.lower() in ("accept", "content-type") and isinstance(value, str):
            out[key] = _COMPAT.sub(f"compatible-with={major}", value)
    return out


@functools.cache
def _compat_transport() -> type[Transport]:
    """A transport pinning ``compatible-with`` and counting bulk items rejected with 429 (per thread)."""
    from elastic_transport import Transport, TransportApiResponse

    class CompatTransport(Transport):
        compat_major = 8

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._local = threading.local()

        def perform_request(self, method: str, target: str, **kwargs: Any) -> TransportApiResponse:
            headers = kwargs.get("headers")
            if isinstance(headers, Mapping):
                kwargs["headers"] = _pin_compat(headers, self.compat_major)
            resp = super().perform_request(method, target, **kwargs)
            body = resp.body
            if target.partition("?")[0].endswith("/_bulk") and isinstance(body, dict) and body.get("errors"):
                rejected = sum(1 for item in body.get("items", ()) for r in item.values() if r.get("status") == 429)
                self._local.rejected = self.rejected_items() + rejected
            return resp

        def rejected_items(self) -> int:
            return int(getattr(self._local, "rejected", 0))

    return CompatTransport


def _connection(settings: Settings) -> tuple[dict[str, Any], str]:
    """Client keyword arguments and a credential-free description."""
    kwargs: dict[str, Any] = {"verify_certs": settings.elasticsearch_verify_certs}
    if settings.elasticsearch_cloud_id:
        kwargs["cloud_id"] = settings.elasticsearch_cloud_id
        description = f"elasticsearch:cloud:{settings.elasticsearch_cloud_id.partition(':')[0]}"
    elif settings.elasticsearch_url:
        parts = urlsplit(settings.elasticsearch_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("ELASTICSEARCH_URL: must be an http:// or https:// URL")
        # Credentials in the URL are moved out of it (secrets.credentials reads them).
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        kwargs["hosts"] = [url]
        description = f"elasticsearch:{url}"
    else:
        raise ConfigError("the elasticsearch sink needs ELASTICSEARCH_URL or ELASTICSEARCH_CLOUD_ID")
    api_key, basic = secrets.credentials(settings)
    if api_key is not None:
        kwargs["api_key"] = api_key
    elif basic is not None:
        kwargs["basic_auth"] = basic
    if settings.elasticsearch_ca_certs is not None:
        kwargs["ca_certs"] = str(settings.elasticsearch_ca_certs)
    return kwargs, description


def describe(settings: Settings) -> str:
    """``elasticsearch:https://host:9200``: where the sink writes, without credentials."""
    return _connection(settings)[1]


def connect(
    settings: Settings, *, request_timeout: float = 30.0, max_retries: int = 3, retry_backoff: float = 0.5
) -> tuple[Elasticsearch, ServerInfo]:
    """A client for ``settings`` whose headers suit the server's major version.

    Args:
        settings: ``elasticsearch_*`` connection settings.
        request_timeout: seconds per request.
        max_retries: transport retries of a whole request after a connection error, 429 or 502/503/504
            (item-level 429s inside a bulk response are retried by the bulk helper instead).
        retry_backoff: base of the transport's exponential backoff with jitter (``0`` retries at once).

    Raises:
        ConfigError: neither a URL nor a cloud id.
        SinkError: unreachable, authentication failed, not Elasticsearch, or older than 8.0.
    """
    from elasticsearch import Elasticsearch

    secrets.register(settings)
    kwargs, description = _connection(settings)
    client = Elasticsearch(
        **kwargs,
        **_backoff_kwargs(retry_backoff),
        transport_class=_compat_transport(),
        request_timeout=request_timeout,
        max_retries=max_retries,
        retry_on_status=(429, 502, 503, 504),
    )
    try:
        return client, _detect(client, description)
    except BaseException:
        client.close()
        raise


def _backoff_kwargs(base: float) -> dict[str, Any]:
    """The transport's backoff between retries, where this elasticsearch-py has it.

    ``retry_backoff_base``/``retry_backoff_cap`` are constructor arguments of ``Elasticsearch`` only from
    elasticsearch-py 9.4.1 (absent from every tag v8.13.0 through v9.4.0, which the project also allows):
    passing them to an older client is a ``TypeError``. Older clients retry at once; the bulk helper's own
    backoff (``initial_backoff``/``max_backoff``) still spaces item-level 429 retries on every version.
    """
    from elasticsearch import Elasticsearch

    if "retry_backoff_base" not in inspect.signature(Elasticsearch.__init__).parameters:
        return {}
    return {"retry_backoff_base": base, "retry_backoff_cap": 30.0}


def _detect(client: Elasticsearch, description: str) -> ServerInfo:
    import elasticsearch
    from elasticsearch import AuthorizationException, BadRequestError, UnsupportedProductError

    transport: Any = client.transport
    what = f"{description}: GET /"
    for compat in (8, 9):  # 8 first: accepted by 8.x and 9.x; a 10.x server would want 9
        transport.compat_major = compat
        try:
            body = guard(client.info, what, reraise=(AuthorizationException, BadRequestError, UnsupportedProductError))
            break
        except UnsupportedProductError:
            raise SinkError(f"{what}: the server is not Elasticsearch") from None
        except AuthorizationException:
            log.warning(
                "%s: no 'monitor' privilege to read the version (GET /); using compatible-with=8, "
                "which Elasticsearch 8.x and 9.x accept",
                description,
            )
            return ServerInfo("unknown", 8)
        except BadRequestError as exc:
            if "media_type" not in str(exc):
                raise sink_error(exc, what) from None
            if compat == 9:
                raise SinkError(
                    f"{sink_error(exc, what)}; the server accepts neither compatible-with=8 "
                    "nor 9: it is older than 8.0, which is not supported (use 8.x or 9.x)"
                ) from None
    version = str(body.get("version", {}).get("number", "0"))
    major = int(version.split(".")[0] or 0)
    if major < 8:
        raise SinkError(f"{description}: Elasticsearch {version} is not supported; use 8.x or 9.x")
    transport.compat_major = 8 if major == 8 else min(major, elasticsearch.__version__[0])
    log.info("%s: Elasticsearch %s, sending compatible-with=%d", description, version, transport.compat_major)
    return ServerInfo(version, transport.compat_major)


# --- errors -----------------------------------------------------------------------------------------
def _reason(body: Any) -> tuple[str | None, str]:
    """``(type, reason)`` of an error response body or of a bulk item's ``error``."""
    err = body["error"] if isinstance(body, Mapping) and "error" in body else body
    if isinstance(err, Mapping):
        reason = str(err.get("reason"))
        cause = err.get("caused_by")
        if isinstance(cause, Mapping) and cause.get("reason"):
            reason += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return (str(err["type"]) if err.get("type") else None), reason
    return None, str(err)


def _api_message(what: str, exc: Any) -> str:
    kind, reason = _reason(getattr(exc, "body", None))
    return secrets.redact(f"{what}: HTTP {exc.status_code} {kind or exc.message}: {reason}")


def sink_error(exc: Exception, what: str, hint: str | None = None) -> SinkError:
    """A :class:`SinkError` for a client error: names ``what`` and the reason, never a secret
    (:func:`usage_collector.secrets.redact`).

    ``hint`` names the privilege the request needs; it is added to a 403 message.
    """
    from elasticsearch import ApiError, AuthenticationException, AuthorizationException, NotFoundError

    if isinstance(exc, AuthenticationException):
        return SinkError(
            f"{what}: authentication failed; check ELASTICSEARCH_API_KEY or "
            "ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD"
        )
    if isinstance(exc, AuthorizationException):
        need = f"this needs the {hint} privilege" if hint else "see the privileges a run needs"
        return SinkError(_api_message(what, exc) + f"; {need} (docs/elasticsearch.md)")
    if isinstance(exc, NotFoundError):
        return SinkError(_api_message(what, exc) + "; has `usage-collector setup` been run?")
    if isinstance(exc, ApiError):
        return SinkError(_api_message(what, exc))
    message = getattr(exc, "message", None) or str(exc)
    if type(exc).__name__ == "TlsError":  # elastic_transport.TlsError: handshake or certificate
        return SinkError(
            secrets.redact(
                f"{what}: TLS failed ({message}); check the URL's scheme, and ELASTICSEARCH_CA_CERTS for a "
                "private CA (verification stays on)"
            )
        )
    return SinkError(secrets.redact(f"{what}: Elasticsearch unreachable ({type(exc).__name__}: {message})"))


def guard(
    fn: Callable[[], Any],
    what: str,
    *,
    allow_404: bool = False,
    reraise: tuple[type[BaseException], ...] = (),
    hint: str | None = None,
) -> Any:
    """Run one request; turn client errors into a :class:`SinkError` (see :func:`sink_error`).

    Args:
        fn: the request.
        what: names the request in messages.
        allow_404: return ``None`` on 404 instead of raising.
        reraise: exception types the caller handles itself.
        hint: the privilege the request needs, named in a 403 message.

    Returns:
        The response body, or ``None`` on an allowed 404.
    """
    from elasticsearch import ApiError, NotFoundError, TransportError

    try:
        resp = fn()
        return getattr(resp, "body", resp)
    except reraise:
        raise
    except NotFoundError as exc:
        if allow_404:
            return None
        raise sink_error(exc, what, hint) from None
    except (ApiError, TransportError) as exc:
        raise sink_error(exc, what, hint) from None


_FIELD_PATTERNS = (
    re.compile(r"dynamic introduction of \[(?P<leaf>[^\]]+)\] within \[(?P<parent>[^\]]+)\]"),
    re.compile(r"failed to parse field \[(?P<field>[^\]]+)\]"),
    re.compile(r"field \[(?P<field>[^\]]+)\]"),
)


def field_of(reason: str) -> str | None:
    """The field an Elasticsearch item error names, if any.

    >>> field_of("[1:7] failed to parse field [openai.base.num_model_requests] of type [long] in document")
    'openai.base.num_model_requests'
    >>> field_of("mapping set to strict, dynamic introduction of [x] within [openai.images] is not allowed")
    'openai.images.x'
    """
    for pattern in _FIELD_PATTERNS:
        m = pattern.search(reason)
        if m:
            groups = m.groupdict()
            if groups.get("leaf"):
                parent = groups["parent"]
                return groups["leaf"] if parent == "_doc" else f"{parent}.{groups['leaf']}"
            return groups["field"]
    return None
