"""The idempotent ``setup``: install or update every Elasticsearch object usage-collector needs.

:func:`setup` reads each object, compares it with what this version wants, and writes only what differs; a
second run reports that nothing changed. Kibana saved objects are a separate step that appends to the same
:class:`SetupReport` (see :func:`setup`).

The objects themselves are built in :mod:`usage_collector.elastic.objects`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .. import secrets
from ..catalogue import STREAMS
from ..documents import RUNS_DATASET
from ..errors import SinkError
from .connection import connect, guard
from .objects import (
    ILM_POLICY,
    MAPPINGS_COMPONENT,
    SETUP_CLUSTER_PRIVILEGES,
    SETUP_INDEX_PRIVILEGES,
    Lifecycle,
    component_templates,
    data_stream_lifecycle,
    data_stream_name,
    ilm_policy,
    index_patterns,
    index_template_name,
    index_templates,
    runs_data_stream,
    state_index,
    state_index_body,
)

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from ..config import Settings

Status = Literal["created", "updated", "unchanged", "would create", "would update"]


@dataclass
class SetupAction:
    """One object ``setup`` looked at."""

    kind: str
    name: str
    status: Status
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.kind} {self.name}: {self.status}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class SetupReport:
    """What ``setup`` did (or, with ``dry_run``, would do).

    Kibana saved objects are installed by a separate step that appends its own :class:`SetupAction` s with
    :meth:`add`, so one report covers the whole ``usage-collector setup``.
    """

    dry_run: bool
    server_version: str = ""
    lifecycle: Lifecycle | None = None
    actions: list[SetupAction] = field(default_factory=list)

    def add(self, kind: str, name: str, status: Status, detail: str = "") -> SetupAction:
        action = SetupAction(kind, name, status, detail)
        self.actions.append(action)
        return action

    @property
    def changed(self) -> list[SetupAction]:
        return [a for a in self.actions if a.status != "unchanged"]


def _same(actual: Any, desired: Any) -> bool:
    """``desired`` is contained in ``actual`` as Elasticsearch returns it.

    Elasticsearch adds defaults (``min_age: 0ms``, ``data_stream.hidden``), turns settings into strings
    (``"1"``) and numbers into floats (``1000000.0``), so dicts compare as subsets and scalars by value.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and _same(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(desired)
            and all(_same(a, d) for a, d in zip(actual, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(desired).lower()
    if isinstance(desired, int | float) and isinstance(actual, int | float | str):
        try:
            return float(actual) == float(desired)
        except ValueError:
            return False
    return str(actual) == str(desired)


class _Setup:
    def __init__(self, client: Elasticsearch, report: SetupReport, dry_run: bool, out: Callable[[str], None]) -> None:
        self.es = client
        self.report = report
        self.dry_run = dry_run
        self.out = out

    def get(self, read: Callable[[], Any], what: str, privilege: str) -> Any:
        """The object as Elasticsearch returns it, or ``None`` when it does not exist."""
        return guard(read, f"setup: read {what}", allow_404=True, hint=privilege)

    def record(
        self,
        kind: str,
        name: str,
        exists: bool,
        same: bool,
        write: Callable[[], object],
        privilege: str,
        detail: str = "",
    ) -> bool:
        """Write the object unless it is already as wanted; returns whether it changed (or would)."""
        if exists and same:
            self.out(str(self.report.add(kind, name, "unchanged")))
            return False
        status: Status = (
            ("would update" if exists else "would create") if self.dry_run else ("updated" if exists else "created")
        )
        if not self.dry_run:
            guard(write, f"setup: write {kind} {name}", hint=privilege)
        self.out(str(self.report.add(kind, name, status, detail)))
        return True


def missing_privileges(client: Elasticsearch, settings: Settings, lifecycle: Lifecycle = "ilm") -> list[str] | None:
    """The privileges ``setup`` needs that the credentials lack; ``None`` when the cluster cannot tell
    (security disabled: ``_security`` answers 400 "no handler found").

    ``manage_ilm`` is asked for only when the lifecycle is ILM.
    """
    from elasticsearch import ApiError

    patterns = list(index_patterns(settings).values())
    cluster = [p for p in SETUP_CLUSTER_PRIVILEGES if lifecycle == "ilm" or p != "manage_ilm"]
    try:
        resp = guard(
            functools.partial(
                client.security.has_privileges,
                cluster=cluster,
                index=[{"names": patterns, "privileges": list(SETUP_INDEX_PRIVILEGES)}],
            ),
            "setup: check privileges",
            reraise=(ApiError,),
        )
    except ApiError:  # security disabled, or an old cluster: the writes below will tell
        return None
    if resp.get("has_all_requested", True):
        return []
    missing = [f"cluster:{p}" for p, ok in resp.get("cluster", {}).items() if not ok]
    for name, privileges in resp.get("index", {}).items():
        missing += [f"{name}:{p}" for p, ok in privileges.items() if not ok]
    return missing


def setup(
    settings: Settings,
    client: Elasticsearch | None = None,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
    retention_days: int | None = None,
) -> SetupReport:
    """Install or update every Elasticsearch object usage-collector needs; idempotent.

    Each object is read first and written only if it differs from what this version wants, so a second run
    changes nothing and says so. Existing data streams whose mappings changed get the new mappings applied
    (additive). Kibana saved objects are a separate step: call it with the returned report and ``dry_run``.

    Args:
        settings: connection, namespace and data stream type.
        client: an Elasticsearch client; one is built from ``settings`` when ``None``.
        dry_run: only read, and report what would be created or updated.
        out: receives one line per object (``print`` for the CLI).
        retention_days: delete backing indices this many days after rollover (default: the
            ``retention_days`` setting; unset keeps everything).

    Returns:
        The report; ``report.changed`` is empty when everything was already in place.

    Raises:
        SinkError: Elasticsearch refused an object or is unreachable; the message names the object and the
            privilege it needs, never a credential.
    """
    secrets.register(settings)  # also when called directly, not through the CLI
    owned = client is None
    es, info = connect(settings) if client is None else (client, None)
    report = SetupReport(dry_run=dry_run, server_version=info.version if info else "")
    try:
        report.lifecycle = choose_lifecycle(es, settings)
        missing = missing_privileges(es, settings, report.lifecycle)
        if missing:
            raise SinkError(
                "setup: these credentials lack " + ", ".join(missing) + "; see docs/elasticsearch.md for the setup role"
            )
        days = settings.retention_days if retention_days is None else retention_days
        keep = f"delete after {days} days" if days else "kept forever"
        out(
            f"Elasticsearch: retention by {_LIFECYCLE_NAMES[report.lifecycle]} ({keep}; lifecycle = "
            f"{settings.lifecycle})"
        )
        _install(_Setup(es, report, dry_run, out), settings, report.lifecycle, retention_days)
    finally:
        if owned:
            es.close()
    if not report.changed:
        out("Elasticsearch: nothing changed, every object is up to date")
    return report


_LIFECYCLE_NAMES: dict[Lifecycle, str] = {"ilm": f"ILM policy {ILM_POLICY}", "data_stream": "data stream lifecycle"}


def has_ilm(client: Elasticsearch) -> bool:
    """Whether the cluster has ILM.

    Where ILM is not there (Elastic Cloud Serverless manages retention with the data stream lifecycle; a
    distribution without x-pack), ``GET _ilm/policy`` is an unknown endpoint: Elasticsearch answers 400 with
    "no handler found for uri [...] and method [...]" (``RestController.handleBadRequest``), not 404.
    """
    from elasticsearch import BadRequestError

    try:
        guard(
            lambda: client.ilm.get_lifecycle(name=ILM_POLICY),
            "setup: read ILM policy",
            allow_404=True,
            hint="manage_ilm",
            reraise=(BadRequestError,),
        )
    except BadRequestError as exc:
        if "no handler found" in str(exc.body):
            return False
        raise SinkError(f"setup: read ILM policy {ILM_POLICY}: {exc}") from None
    return True


def choose_lifecycle(client: Elasticsearch, settings: Settings) -> Lifecycle:
    """The lifecycle ``setup`` installs: ``settings.lifecycle``, with ``auto`` resolved by :func:`has_ilm`.

    Raises:
        SinkError: ``lifecycle = ilm`` on a cluster without ILM (the message says to use ``auto`` or
            ``data_stream``).
    """
    if settings.lifecycle == "data_stream":
        return "data_stream"
    ilm = has_ilm(client)
    if settings.lifecycle == "ilm" and not ilm:
        raise SinkError(
            "setup: lifecycle = ilm, but this cluster has no ILM (GET _ilm answers 'no handler "
            "found'); set USAGE_COLLECTOR_LIFECYCLE=data_stream (or auto)"
        )
    return "ilm" if ilm else "data_stream"


def _install(s: _Setup, settings: Settings, lifecycle: Lifecycle, retention_days: int | None) -> None:
    es = s.es
    p = functools.partial
    if lifecycle == "ilm":
        policy = ilm_policy(settings, retention_days)["policy"]
        cur = s.get(p(es.ilm.get_lifecycle, name=ILM_POLICY), f"ILM policy {ILM_POLICY}", "manage_ilm")
        actual = (cur or {}).get(ILM_POLICY, {}).get("policy") or {}
        same = _same(actual, policy) and set(actual.get("phases", {})) == set(policy["phases"])
        s.record(
            "ILM policy",
            ILM_POLICY,
            cur is not None,
            same,
            p(es.ilm.put_lifecycle, name=ILM_POLICY, policy=policy),
            "manage_ilm",
        )

    mappings_changed = False
    for name, body in component_templates(settings, lifecycle, retention_days).items():
        cur = s.get(
            p(es.cluster.get_component_template, name=name), f"component template {name}", "manage_index_templates"
        )
        found = (cur or {}).get("component_templates") or []
        changed = s.record(
            "component template",
            name,
            bool(found),
            bool(found) and _same(found[0]["component_template"], body),
            p(es.cluster.put_component_template, name=name, **body),
            "manage_index_templates",
        )
        mappings_changed |= changed and name == MAPPINGS_COMPONENT

    templates = index_templates(settings)
    changed_templates: set[str] = set()
    for name, body in templates.items():
        cur = s.get(p(es.indices.get_index_template, name=name), f"index template {name}", "manage_index_templates")
        found = (cur or {}).get("index_templates") or []
        if s.record(
            "index template",
            name,
            bool(found),
            bool(found) and _same(found[0]["index_template"], body),
            p(es.indices.put_index_template, name=name, **body),
            "manage_index_templates",
        ):
            changed_templates.add(name)

    state = state_index(settings)
    sbody = state_index_body(settings)
    cur = s.get(p(es.indices.get_mapping, index=state), f"index {state}", "view_index_metadata")
    if cur is None:
        s.record("index", state, False, False, p(es.indices.create, index=state, **sbody), "create_index")
    else:
        props = (cur.get(state) or {}).get("mappings", {}).get("properties")
        s.record(
            "index mapping",
            state,
            True,
            _same(props, sbody["mappings"]["properties"]),
            p(es.indices.put_mapping, index=state, properties=sbody["mappings"]["properties"]),
            "manage",
        )

    runs_template = f"usage-collector-logs-{RUNS_DATASET}"
    by_stream = {data_stream_name(settings, st): index_template_name(settings, st) for st in STREAMS}
    by_stream[runs_data_stream(settings)] = runs_template
    wanted = data_stream_lifecycle(settings.retention_days if retention_days is None else retention_days)
    for ds, tname in by_stream.items():
        cur = s.get(p(es.indices.get_data_stream, name=ds), f"data stream {ds}", "view_index_metadata")
        found = (cur or {}).get("data_streams") or []
        if not found:
            s.record("data stream", ds, False, False, p(es.indices.create_data_stream, name=ds), "create_index")
            continue
        if tname in changed_templates or (mappings_changed and tname != runs_template):
            s.record(
                "data stream mapping",
                ds,
                True,
                False,
                p(es.indices.put_mapping, index=ds, **_effective_mappings(settings, ds, templates[tname])),
                "manage",
                "new fields applied to the existing backing indices",
            )
        else:
            s.record("data stream", ds, True, True, lambda: None, "")
        if lifecycle == "data_stream":
            # A template's lifecycle applies to data streams created after it; an existing one is updated with
            # PUT _data_stream/<name>/_lifecycle (DataStreamLifecycle; Elasticsearch 8.11+). The request needs a
            # body, so "enabled" (DataStreamLifecycle.ENABLED_FIELD) is always sent, also when kept forever.
            have = found[0].get("lifecycle")
            same = (
                have is not None
                and have.get("enabled", True)
                and (have.get("data_retention") == wanted.get("data_retention"))
            )
            s.record(
                "data stream lifecycle",
                ds,
                have is not None,
                bool(same),
                p(es.indices.put_data_lifecycle, name=ds, body={"enabled": True, **wanted}),
                "manage",
            )


def _effective_mappings(settings: Settings, data_stream: str, template: Mapping[str, Any]) -> dict[str, Any]:
    """The mappings ``template`` gives ``data_stream``: its components' merged with its own (later wins).

    ``data_stream.namespace`` is a ``constant_keyword`` whose value the first document set; a mapping update
    that leaves the value out is a conflict ("Cannot update parameter [value] from [x] to [null]",
    ``ConstantKeywordFieldMapper``), so it carries the data stream's own namespace.
    """
    comps = component_templates(settings)
    merged: dict[str, Any] = {}
    for part in [comps[c]["template"] for c in template.get("composed_of", [])] + [template.get("template", {})]:
        m = part.get("mappings") or {}
        if "dynamic" in m:
            merged["dynamic"] = m["dynamic"]
        _merge(merged.setdefault("properties", {}), m.get("properties") or {})
    ds_fields = merged["properties"].setdefault("data_stream", {"properties": {}})["properties"]
    ds_fields["namespace"] = {"type": "constant_keyword", "value": data_stream.rsplit("-", 1)[1]}
    return merged


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
