"""Installation of the saved objects and the alert rules into Kibana, over its HTTP API.

**Installation.** :func:`install` sends one ``POST /api/saved_objects/_import?overwrite=true`` (multipart
field ``file``, header ``kbn-xsrf: true``, ``/s/<space>`` prefix for a space). Dashboards, data views and
searches are ``multiple-isolated``: an id lives in one space, so importing into a second space gives the objects
new ids there (``check_conflicts.ts``), which the response reports as ``destinationId``; the printed dashboard
URLs use them. A second import into the same space finds those copies by their origin
(``check_origin_conflicts.ts``) and overwrites them: idempotent per space. :func:`install_rules` creates or
updates the optional alert rules with the alerting API (``POST``/``PUT /api/alerting/rule/<id>``). Kibana
credentials are the Elasticsearch ones (:func:`usage_collector.secrets.auth_headers`: ``ELASTICSEARCH_API_KEY`` as
``Authorization: ApiKey``, else user and password as basic auth); Kibana accepts both. Both functions register
the settings' secrets, and every message they raise goes through :func:`usage_collector.secrets.redact`.
TLS is verified; ``ELASTICSEARCH_CA_CERTS`` is trusted in addition to the system
store, since self-managed stacks usually sign Kibana with the same CA.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from ... import secrets
from ...errors import CollectorError
from .alerts import rules
from .dashboards import DASHBOARDS
from .lens import _dumps, saved_objects
from .validate import validate_rule

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import httpx

    from ...config import Settings
    from ..setup import SetupReport


class KibanaError(CollectorError):
    """Kibana refused an object or could not be reached; the message never carries a credential."""


def kibana_base(settings: Settings, space: str | None) -> str:
    """``<kibana_url>`` or ``<kibana_url>/s/<space>`` (the default space has no prefix)."""
    if not settings.kibana_url:
        from ...errors import ConfigError

        raise ConfigError("KIBANA_URL: set the Kibana URL (e.g. https://kibana.example.com:5601) to install dashboards")
    url = settings.kibana_url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        from ...errors import ConfigError

        raise ConfigError("KIBANA_URL: must be an http:// or https:// URL")
    if parts.username or parts.password:
        from ...errors import ConfigError

        raise ConfigError(
            "KIBANA_URL: put credentials in ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME/_PASSWORD, not in the URL"
        )
    space = space if space is not None else settings.kibana_space
    if space and space != "default":
        if not re.fullmatch(r"[a-z0-9_\-]+", space):
            from ...errors import ConfigError

            raise ConfigError(f"space {space!r}: a Kibana space id is lowercase letters, digits, '_' and '-'")
        return f"{url}/s/{quote(space)}"
    return url


def dashboard_urls(
    settings: Settings, space: str | None = None, destinations: Mapping[str, str] | None = None
) -> list[str]:
    """Each dashboard's URL; ``destinations`` maps our ids to the ids the import gave them in the space."""
    base = kibana_base(settings, space)
    ids = destinations or {}
    return [f"{base}/app/dashboards#/view/{quote(ids.get(d.id, d.id))}" for d in DASHBOARDS]


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Certificate and host name verification with the system store, plus ``ELASTICSEARCH_CA_CERTS``."""
    ctx = ssl.create_default_context()
    if settings.elasticsearch_ca_certs is not None:
        ctx.load_verify_locations(cafile=str(settings.elasticsearch_ca_certs))
    return ctx


def make_client(
    settings: Settings, *, verify: bool | str | ssl.SSLContext | None = None, timeout: float = 60.0
) -> httpx.Client:
    """An ``httpx`` client for Kibana; TLS is verified with :func:`tls_context` unless ``verify`` says otherwise."""
    import httpx

    return httpx.Client(
        verify=tls_context(settings) if verify is None else verify,
        timeout=timeout,
        headers={"kbn-xsrf": "true"},
        follow_redirects=False,
    )


def _request(client: httpx.Client, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
    import httpx

    try:
        return client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise KibanaError(secrets.redact(f"{what}: {type(exc).__name__}: {exc}")) from None


def _fail(resp: httpx.Response, what: str) -> KibanaError:
    hint = {
        401: " (check ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME/_PASSWORD)",
        403: " (the user needs the Saved Objects Management and Dashboard privileges, or Stack Rules for "
        "rules, in this space)",
        404: " (is KIBANA_URL a Kibana, and does the space exist?)",
    }.get(resp.status_code, "")
    body = secrets.redact(resp.text)[:500]  # redacted before it is cut: no secret is left half-shown
    return KibanaError(secrets.redact(f"{what}: HTTP {resp.status_code}{hint}: {body}"))


def install(
    settings: Settings,
    *,
    space: str | None = None,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
    client: httpx.Client | None = None,
    report: SetupReport | None = None,
) -> list[str]:
    """Import the data views, saved search and dashboards into Kibana (idempotent per space); returns the URLs.

    One ``POST <kibana>[/s/<space>]/api/saved_objects/_import?overwrite=true`` with the NDJSON as the
    multipart field ``file`` and ``kbn-xsrf: true``. Where the objects' ids already live in another space,
    Kibana gives them new ids in this one (``destinationId`` in the response); the URLs returned are the ones
    that exist in this space. A second run overwrites the same objects.

    Args:
        settings: ``kibana_url``, ``kibana_space`` and the Elasticsearch credentials (reused for Kibana).
        space: the Kibana space id (``None``: ``settings.kibana_space``; ``"default"`` or empty: default space).
        dry_run: send nothing; say what would be imported.
        out: receives one line per object and one per dashboard URL.
        client: an ``httpx.Client`` (tests); one is built with TLS verification when ``None``.
        report: an :class:`..setup.SetupReport` to append the Kibana objects to.

    Raises:
        ConfigError: no or a malformed ``kibana_url``, or a bad space id.
        KibanaError: Kibana refused the import or one of the objects (the message lists them).
    """
    base = kibana_base(settings, space)
    objects = saved_objects(settings)
    if dry_run:
        urls = dashboard_urls(settings, space)
        for o in objects:
            line = f"Kibana {o['type']} {o['id']}: would import"
            out(line)
            if report is not None:
                report.add(f"Kibana {o['type']}", o["id"], "would update", "import with overwrite")
        for u in urls:
            out(f"dashboard: {u} (the import may give it another id in a space where it is new)")
        return urls
    secrets.register(settings)
    owned = client is None
    http = client or make_client(settings)
    try:
        body = "".join(_dumps(o) + "\n" for o in objects).encode()
        resp = _request(
            http,
            "POST",
            f"{base}/api/saved_objects/_import",
            "Kibana: import saved objects",
            params={"overwrite": "true"},
            headers={"kbn-xsrf": "true", **secrets.auth_headers(settings)},
            files={"file": ("usage-collector.ndjson", body, "application/ndjson")},
        )
        if resp.status_code != 200:
            raise _fail(resp, "Kibana: import saved objects")
        result = resp.json()
    finally:
        if owned:
            http.close()
    done = {(r.get("type"), r.get("id")): r for r in result.get("successResults") or []}
    destinations: dict[str, str] = {}
    for o in objects:
        r = done.get((o["type"], o["id"]))
        if r is None:
            continue
        status: Literal["updated", "created"] = "updated" if r.get("overwrite") else "created"
        dest = str(r.get("destinationId") or o["id"])
        where = f" as {dest} in this space" if dest != o["id"] else ""
        out(f"Kibana {o['type']} {o['id']}: {status}{where}")
        if report is not None:
            report.add(f"Kibana {o['type']}", o["id"], status, f"id {dest} in this space" if where else "")
        if o["type"] == "dashboard":
            destinations[o["id"]] = dest
    errors = result.get("errors") or []
    if not result.get("success", False) or errors:
        lines = [
            f"{e.get('type')} {e.get('id')}: {(e.get('error') or {}).get('type', 'error')}" + _missing(e)
            for e in errors
        ]
        raise KibanaError(secrets.redact("Kibana refused objects of the import: " + "; ".join(lines or ["unknown"])))
    urls = dashboard_urls(settings, space, destinations)
    for u in urls:
        out(f"dashboard: {u}")
    return urls


def _semver(text: str) -> tuple[int, int, int]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _kibana_version(http: httpx.Client, base: str, headers: Mapping[str, str]) -> tuple[int, int, int] | None:
    """``version.number`` of ``GET /api/status``, or ``None`` when Kibana does not say."""
    resp = _request(http, "GET", f"{base}/api/status", "Kibana: status", headers=dict(headers))
    if resp.status_code != 200:
        return None
    try:
        return _semver(str(resp.json()["version"]["number"]))
    except (ValueError, KeyError, TypeError):
        return None


def _missing(err: Mapping[str, Any]) -> str:
    refs = (err.get("error") or {}).get("references") or []
    names = ", ".join(f"{r.get('type')} {r.get('id')}" for r in refs)
    return f" (missing {names})" if refs else ""


def install_rules(
    settings: Settings,
    *,
    space: str | None = None,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
    client: httpx.Client | None = None,
    stale_intervals: int = 3,
    daily_cost_threshold: float | None = None,
    spike_factor: float = 3.0,
    report: SetupReport | None = None,
) -> list[str]:
    """Create or update the alert rules of :func:`rules` (idempotent); returns their ids.

    A rule with a version floor (the ES|QL cost-spike rule, :data:`.alerts.ESQL_RULE_MIN_VERSION`) is sent only
    when ``GET /api/status`` reports a Kibana at least that new; otherwise it is skipped with a warning (in
    ``out`` and the log), and the call still succeeds. Every body is checked against the ``.es-query`` params
    schema first (:func:`.validate.validate_rule`).

    Each rule has a fixed id: ``POST /api/alerting/rule/<id>`` creates it; on 409 (it exists)
    ``PUT /api/alerting/rule/<id>`` updates it to this definition. Rules have no actions: attach connectors in
    Kibana (Stack Management > Rules). A rule Kibana refuses (e.g. the ES|QL one on a Kibana without ES|QL
    rules) is reported and the others are still installed; the call then raises :class:`KibanaError`.
    """
    base = kibana_base(settings, space)
    defs = rules(
        settings, stale_intervals=stale_intervals, daily_cost_threshold=daily_cost_threshold, spike_factor=spike_factor
    )
    problems = [str(v) for r in defs for v in validate_rule(r.body)]
    if problems:
        raise KibanaError("alert rules do not match the .es-query params schema: " + "; ".join(problems))
    if dry_run:
        for r in defs:
            floor = f" (needs Kibana {r.min_kibana} or newer)" if r.min_kibana else ""
            out(f"Kibana rule {r.body['name']} ({r.id}): would create or update{floor}")
            if report is not None:
                report.add("Kibana rule", r.id, "would update", r.body["name"])
        return [r.id for r in defs]
    secrets.register(settings)
    headers = {"kbn-xsrf": "true", "Content-Type": "application/json", **secrets.auth_headers(settings)}
    owned = client is None
    http = client or make_client(settings)
    failures: list[str] = []
    try:
        version = _kibana_version(http, base, headers) if any(r.min_kibana for r in defs) else None
        for r in defs:
            if r.min_kibana and (version is None or version < _semver(r.min_kibana)):
                seen = ".".join(map(str, version)) if version else "unknown"
                msg = (
                    f"Kibana rule {r.body['name']} ({r.id}): skipped, needs Kibana/Elasticsearch {r.min_kibana} "
                    f"or newer (this Kibana: {seen})"
                )
                log.warning(msg)
                out(f"warning: {msg}")
                if report is not None:
                    report.add("Kibana rule", r.id, "unchanged", f"not installed: needs Kibana {r.min_kibana}+")
                continue
            what = f"Kibana: rule {r.body['name']}"
            url = f"{base}/api/alerting/rule/{r.id}"
            resp = _request(http, "POST", url, what, content=_dumps(r.body), headers=headers)
            status: Literal["created", "updated"] = "created"
            if resp.status_code == 409:
                resp = _request(http, "PUT", url, what, content=_dumps(r.update_body()), headers=headers)
                status = "updated"
            if resp.status_code != 200:
                failures.append(str(_fail(resp, what)))
                out(failures[-1])
                continue
            out(f"Kibana rule {r.body['name']} ({r.id}): {status}")
            if report is not None:
                report.add("Kibana rule", r.id, status, r.body["name"])
    finally:
        if owned:
            http.close()
    if failures:
        raise KibanaError("; ".join(failures))
    return [r.id for r in defs]
