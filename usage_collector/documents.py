"""Shape API results into ECS documents.

One document per result row (one group combination in one bucket). Layout (see README "Documents")::

    @timestamp                bucket start
    event.kind/dataset/module metric / openai.<stream> / openai
    event.hash                content hash of the measures (changes when OpenAI revises the bucket)
    data_stream.*             type, dataset openai.<stream>, namespace
    organization.id/name      the organization the Admin key belongs to
    openai.base.*             project_id, user_id, api_key_id, model, num_model_requests, usage_object_type,
                              start_time, end_time, bucket_width (+ project_name, api_key_name, user_email)
    openai.<stream>.*         the stream's own measures and dimensions, under their API names
    gen_ai.*                  OpenTelemetry GenAI names where they exist

The ``_id`` is a hash of (organization, stream, bucket width, bucket start, group_by set, every dimension
value) and never of a measure (ref ``delivery-semantics.md`` §2: mutable values must stay out of ``_id``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from .catalogue import StreamSpec
from .clock import iso

ECS_VERSION = "8.11.0"


@dataclass(frozen=True)
class Target:
    """Where a stream's documents go and whose they are."""

    org_id: str
    org_name: str | None = None
    namespace: str = "default"
    data_stream_type: str = "metrics"

    def data_stream(self, stream: str) -> str:
        return f"{self.data_stream_type}-openai.{stream}-{self.namespace}"


@dataclass(frozen=True)
class Names:
    """Display names for IDs (from the Admin list endpoints); empty when unknown."""

    projects: Mapping[str, str] = field(default_factory=dict)
    api_keys: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Document:
    """A document ready for any sink.

    Attributes:
        id: the deterministic ``_id``.
        index: the target data stream.
        stream: the catalogue stream name.
        timestamp: bucket start, Unix seconds.
        hash: content hash of the measures (also at ``event.hash`` in ``source``).
        source: the ``_source`` exactly as it is sent to Elasticsearch.
    """

    id: str
    index: str
    stream: str
    timestamp: int
    hash: str
    source: dict[str, Any]

    def action(self) -> dict[str, Any]:
        """The NDJSON/bulk form: ``{"_id", "_index", "_source"}``."""
        return {"_id": self.id, "_index": self.index, "_source": self.source}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # float's shortest repr gives back the same digits for up to 15 significant digits, which
        # covers every amount OpenAI reports (at most 6 decimals); sinks that can keep Decimal do.
        return float(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(obj: Any) -> bytes:
    """Serialize a document (Decimal-aware, compact, no key sorting)."""
    return orjson.dumps(obj, default=_json_default)


def document_id(target: Target, stream: str, width: str, start: int, group_by: Iterable[str],
                dims: Iterable[tuple[str, Any]]) -> str:
    """The deterministic ``_id``: stable across runs, revisions and collector versions.

    >>> document_id(Target("org-1"), "completions", "1h", 1730419200, ["model"], [("model", "gpt-4o")])
    'FTyp0XTdqXxUGURnmyuntTn0uY0'
    """
    parts = [target.org_id, stream, width, str(start), ",".join(sorted(group_by))]
    parts.extend(f"{k}={_dim_text(v)}" for k, v in sorted(dims))
    digest = hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _dim_text(value: Any) -> str:
    if value is None:
        return "\x00"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def measure_hash(values: Mapping[str, Any]) -> str:
    """Content hash of a row's measures and attributes (16 hex chars)."""
    canon = "\x1f".join(f"{k}={_canon(values[k])}" for k in sorted(values))
    return hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()


def _canon(value: Any) -> str:
    # "12.50" and 12.5 are the same amount: a change of JSON type must not look like a revision.
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    node = doc
    *head, leaf = dotted.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[leaf] = value


def shape(
    spec: StreamSpec,
    target: Target,
    width: str,
    start: int,
    end: int,
    group_by: tuple[str, ...],
    result: Mapping[str, Any],
    names: Names | None = None,
) -> Document:
    """Turn one API result row into a :class:`Document`.

    Args:
        spec: the stream.
        target: organization and data stream naming.
        width: bucket width of the request (``1m``/``1h``/``1d``).
        start: bucket ``start_time``.
        end: bucket ``end_time``.
        group_by: the ``group_by`` set the request used (part of the identity, ref §4.13).
        result: the parsed result row.
        names: optional display names for project, API key and user IDs.
    """
    dataset = f"openai.{spec.name}"
    index = target.data_stream(spec.name)
    base: dict[str, Any] = {
        "usage_object_type": result.get("object") or spec.object_type,
        "start_time": iso(start),
        "end_time": iso(end),
        "bucket_width": width,
    }
    own: dict[str, Any] = {}
    doc: dict[str, Any] = {
        "@timestamp": iso(start),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "metric", "dataset": dataset, "module": "openai"},
        "data_stream": {"type": target.data_stream_type, "dataset": dataset, "namespace": target.namespace},
        "organization": {"id": target.org_id} if target.org_name is None
        else {"id": target.org_id, "name": target.org_name},
        "openai": {"base": base, spec.name: own},
    }
    dims: list[tuple[str, Any]] = []
    for dim in spec.group_by:
        value = result.get(dim)
        dims.append((dim, value))
        if value is not None:
            (base if dim in ("project_id", "user_id", "api_key_id", "model") else own)[dim] = value
    hashed: dict[str, Any] = {}
    gen_ai: dict[str, Any] = {}
    for m in spec.measures:
        if "." in m.name:  # costs amount.value
            amount = result.get("amount") or {}
            value = amount.get("value")
        else:
            value = result.get(m.name)
        if value is None:
            continue
        hashed[m.name] = value
        if m.name == "num_model_requests":
            base[m.name] = value
        else:
            _set(own, m.name, value)
        if m.gen_ai:
            _set(gen_ai, m.gen_ai.removeprefix("gen_ai."), value)
    for attr in spec.attributes:
        value = (result.get("amount") or {}).get("currency") if attr == "amount.currency" else result.get(attr)
        if value is not None:
            hashed[attr] = value
            _set(own, attr, value)
    if gen_ai or "model" in base:
        if "model" in base:
            gen_ai.setdefault("request", {})["model"] = base["model"]
        gen_ai["provider"] = {"name": "openai"}
        doc["gen_ai"] = gen_ai
    if names is not None:
        _add_names(base, names)
    if not own:
        del doc["openai"][spec.name]
    digest = measure_hash(hashed)
    doc["event"]["hash"] = digest
    doc_id = document_id(target, spec.name, width, start, group_by, dims)
    return Document(doc_id, index, spec.name, start, digest, doc)


def _add_names(base: dict[str, Any], names: Names) -> None:
    for key, table, out in (
        ("project_id", names.projects, "project_name"),
        ("api_key_id", names.api_keys, "api_key_name"),
        ("user_id", names.users, "user_email"),
    ):
        ident = base.get(key)
        if ident is not None and ident in table:
            base[out] = table[ident]
