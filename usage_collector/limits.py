"""Spend controls as data: snapshots of spend limits, spend alerts and rate limits.

OpenAI keeps a hard monthly **spend limit** and **spend alerts** per organization and per project, and **rate
limits** per project and model (``openai-usage-api-2026-11.md`` "Spend controls"; SDK 3.57
``organization_spend_limit.py``, ``organization_spend_alert.py``, ``projects/project_rate_limit.py``):

======================================================  ==============================================
``GET organization/spend_limit``                        one object (``organization.spend_limit``)
``GET organization/spend_alerts``                       a list (``organization.spend_alert``)
``GET organization/projects/{id}/spend_limit``          one object (``project.spend_limit``)
``GET organization/projects/{id}/spend_alerts``         a list (``project.spend_alert``)
``GET organization/projects/{id}/rate_limits``          a list (``project.rate_limit``), one per model
======================================================  ==============================================

Each object becomes one document in ``metrics-openai.limits-<namespace>`` per UTC day, and another whenever its
content changes the same day: the ``_id`` is a hash of (organization, object, project, object id, day, content
hash), so an unchanged object read again writes nothing. ``threshold_amount`` arrives in **cents** and is stored in
dollars as an exact ``Decimal`` (``openai.limits.threshold_amount``, currency in ``openai.limits.currency``).

A 403 (the key may not read it) or 404 (no such limit, or the feature is not there for this organization) costs
only those documents: logged, never a failed run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .client import OpenAIClient, RequestStats
from .clock import iso
from .documents import ECS_VERSION, Document, Names, Target, _digest_id, measure_hash
from .errors import ApiError, CollectorError

log = logging.getLogger(__name__)

#: The pseudo-stream name of the limits documents (``event.dataset`` ``openai.limits``).
LIMITS_STREAM = "limits"
DATASET = f"openai.{LIMITS_STREAM}"
#: Fields of a rate limit object (all integers; only ``max_requests``/``max_tokens`` per minute always present).
RATE_LIMIT_FIELDS = (
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "max_requests_per_1_day",
    "batch_1_day_max_input_tokens",
)
_CENTS = Decimal(100)
#: attempts per request: limits are a nicety next to usage, a failing endpoint must not hold up the cycle
ATTEMPTS = 2


@dataclass
class LimitsResult:
    """What one snapshot read: the documents, and the endpoints that answered 403/404 or failed."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: RequestStats = field(default_factory=RequestStats)


def fetch_limits(client: OpenAIClient, target: Target, now: float, names: Names | None = None) -> LimitsResult:
    """Read every spend limit, spend alert and rate limit of the organization and its active projects.

    Args:
        client: the organization's client.
        target: organization and data stream naming.
        now: the snapshot time (``@timestamp``; its UTC day is part of the ``_id``).
        names: project names, when known.
    """
    out = LimitsResult()
    shaper = _LimitShaper(target, now, names)

    def guarded(what: str, read: Any) -> None:
        try:
            for obj, project in read():
                out.documents.append(shaper.document(obj, project))
        except ApiError as exc:
            if exc.status_code in (403, 404):
                out.skipped.append(f"{what}: HTTP {exc.status_code}")
                log.info("%s: %s unavailable (HTTP %s); no documents for it", target.org_id, what, exc.status_code)
            else:
                out.errors.append(f"{what}: {exc}")
                log.warning("%s: could not read %s: %s", target.org_id, what, exc)
        except CollectorError as exc:
            out.errors.append(f"{what}: {exc}")
            log.warning("%s: could not read %s: %s", target.org_id, what, exc)

    def one(path: str, project: str | None) -> Iterator[tuple[Mapping[str, Any], str | None]]:
        body = client.call(path, [], out.requests, max_attempts=ATTEMPTS).json()
        yield body, project

    def many(path: str, project: str | None) -> Iterator[tuple[Mapping[str, Any], str | None]]:
        for obj in client.iter_list(path, out.requests, None, ATTEMPTS):
            yield obj, project

    guarded("organization spend limit", lambda: one("organization/spend_limit", None))
    guarded("organization spend alerts", lambda: many("organization/spend_alerts", None))
    projects: list[str] = []
    try:
        projects = [p["id"] for p in client.iter_list("organization/projects", out.requests, None, ATTEMPTS)]
    except CollectorError as exc:
        out.errors.append(f"projects: {exc}")
        log.warning("%s: could not list projects for their limits: %s", target.org_id, exc)
    for pid in projects:
        base = f"organization/projects/{pid}"
        guarded(f"spend limit of {pid}", lambda b=base, p=pid: one(f"{b}/spend_limit", p))
        guarded(f"spend alerts of {pid}", lambda b=base, p=pid: many(f"{b}/spend_alerts", p))
        guarded(f"rate limits of {pid}", lambda b=base, p=pid: many(f"{b}/rate_limits", p))
    return out


def _dollars(cents: Any) -> Decimal | None:
    if cents is None or isinstance(cents, bool):
        return None
    return Decimal(str(cents)) / _CENTS


class _LimitShaper:
    def __init__(self, target: Target, now: float, names: Names | None) -> None:
        self.org = target.org_id
        self.index = target.data_stream(LIMITS_STREAM)
        self.ts = iso(now)
        self.now = int(now)
        self.day = iso(now - now % 86400)[:10]
        self.names = names
        self._org = {"id": target.org_id} if target.org_name is None else {"id": target.org_id, "name": target.org_name}
        self._ds = {"type": target.data_stream_type, "dataset": DATASET, "namespace": target.namespace}

    def document(self, obj: Mapping[str, Any], project: str | None) -> Document:
        object_type = str(obj.get("object") or "")
        kind = object_type.rsplit(".", 1)[-1] or "unknown"
        own: dict[str, Any] = {
            "object": object_type,
            "kind": kind,
            "scope": "project" if project else "organization",
        }
        if obj.get("id") is not None:
            own["id"] = str(obj["id"])
        for name in ("currency", "interval", "model"):
            if obj.get(name) is not None:
                own[name] = obj[name]
        threshold = _dollars(obj.get("threshold_amount"))
        if threshold is not None:
            own["threshold_amount"] = threshold
        enforcement = obj.get("enforcement")
        if isinstance(enforcement, Mapping) and enforcement.get("status") is not None:
            own["enforcement_status"] = enforcement["status"]
        channel = obj.get("notification_channel")
        if isinstance(channel, Mapping):
            own["notification_channel"] = {
                k: channel[k] for k in ("type", "recipients", "subject_prefix") if channel.get(k) is not None
            }
        for name in RATE_LIMIT_FIELDS:
            value = obj.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                own[name] = value
        digest = measure_hash(own)
        base: dict[str, Any] = {}
        if project:
            base["project_id"] = project
            if self.names is not None and project in self.names.projects:
                base["project_name"] = self.names.projects[project]
        source: dict[str, Any] = {
            "@timestamp": self.ts,
            "ecs": {"version": ECS_VERSION},
            "event": {"kind": "metric", "dataset": DATASET, "module": "openai", "hash": digest},
            "data_stream": self._ds,
            "organization": self._org,
            "openai": {"base": base, LIMITS_STREAM: own} if base else {LIMITS_STREAM: own},
        }
        ident = own.get("id") or own.get("model") or ""
        key = "\x1f".join([self.org, LIMITS_STREAM, object_type, project or "", str(ident), self.day, digest])
        return Document(_digest_id(key), self.index, LIMITS_STREAM, self.now, digest, source)
