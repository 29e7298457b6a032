"""Helpers shared by the test modules: constants, settings, API page builders, documents, a Kibana stand-in.

One definition each; fixtures that wrap them live in ``tests/conftest.py``.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from usage_collector.catalogue import STREAMS
from usage_collector.config import Settings, load_settings
from usage_collector.documents import RUNS_DATASET, Document, Target, shape
from usage_collector.simulator import prices as P
from usage_collector.sinks.base import Checkpoint, Sink

#: 2026-10-15T00:00:00Z
T0 = 1760486400
CANARY_KEY = "sk-admin-CANARY-7f3a9c1e5b"


# --- prices -------------------------------------------------------------------------------------------------
def simulator_price_file(path: Path, effective: str = "2026-01-01") -> Path:
    """The simulator's price table as a dated price file (``<directory>/<effective>.toml``)."""
    m = Decimal(1_000_000)
    lines = [
        f"effective = {effective}",
        '[multipliers.batch]\nfactor = "0.5"',
        '[multipliers.flex]\nfactor = "0.5"',
        f'[multipliers.priority]\nfactor = "{P.TIER_MULTIPLIER["priority"]}"',
    ]
    models: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for model, tp in P.TOKEN_PRICES.items():
        models[model].update(input=tp.input, cached_input=tp.cached_input, output=tp.output)
        if tp.audio_input is not None and tp.audio_output is not None:
            models[model].update(audio_input=tp.audio_input, audio_output=tp.audio_output)
    for free in P.FREE_MODELS:
        models[free]["input"] = Decimal(0)
    for (model, size), usd in P.IMAGE_PRICES.items():
        models[model][f"image:{size}:standard"] = usd
    for model, usd in P.SPEECH_PRICE_PER_CHAR.items():
        models[model]["speech_characters"] = usd * m
    for model, usd in P.TRANSCRIPTION_PRICE_PER_SECOND.items():
        models[model]["transcription_seconds"] = usd
    models["*"].update(
        web_search_calls=P.WEB_SEARCH_PRICE_PER_CALL["medium"] * 1000,
        file_search_calls=P.FILE_SEARCH_PRICE_PER_CALL * 1000,
        code_interpreter_sessions=P.CODE_INTERPRETER_PRICE_PER_SESSION,
        vector_storage_gb_day=P.VECTOR_STORE_PRICE_PER_GIB_HOUR * 24,
    )
    for model, units in models.items():
        lines.append(f'[models."{model}"]')
        lines += [f'"{unit}" = "{usd}"' for unit, usd in units.items()]
    path.mkdir(parents=True, exist_ok=True)
    out = path / f"{effective}.toml"
    out.write_text("\n".join(lines) + "\n")
    return out


# --- settings ------------------------------------------------------------------------------------------------
def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: the canary key, no real backoff, a generous rate limit, no spend-control snapshots
    (tests of those ask for them: ``spend_controls=True``)."""
    base: dict[str, Any] = {
        "spend_controls": False,
        "openai_admin_key": CANARY_KEY,
        "openai_base_url": "http://testserver/v1",
        "rate_limit": 1000.0,
        "initial_backoff": 0.0,
        "max_backoff": 0.0,
        "enrich_names": False,
        "concurrency": 1,
    }
    base.update(overrides)
    return load_settings(None, **base)


# --- API responses -------------------------------------------------------------------------------------------
def page(buckets: list[dict[str, Any]], has_more: bool = False, next_page: str | None = None) -> dict[str, Any]:
    """A ``UsageResponse`` envelope (ref §1.5)."""
    return {"object": "page", "data": buckets, "has_more": has_more, "next_page": next_page}


def bucket(start: int, end: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "bucket", "start_time": start, "end_time": end, "results": results}


# --- documents and checkpoints (one embeddings window) -------------------------------------------------------
EMBEDDINGS = STREAMS["embeddings"]


def docs(tokens: tuple[int, ...] = (10, 20, 30), start: int = T0, namespace: str = "default") -> list[Document]:
    """One 1h embeddings window of organization ``org``: a document per project ``p<i>`` with ``tokens[i]``."""
    out = []
    for i, t in enumerate(tokens):
        row = {
            "object": EMBEDDINGS.object_type,
            "input_tokens": t,
            "num_model_requests": 1,
            "project_id": f"p{i}",
            "user_id": None,
            "api_key_id": None,
            "model": "text-embedding-3-small",
        }
        out.append(
            shape(EMBEDDINGS, Target("org", namespace=namespace), "1h", start, start + 3600, EMBEDDINGS.group_by, row)
        )
    return out


def image_doc(namespace: str = "default", images: int = 3) -> Document:
    """One 1h images document of organization ``org``, project ``p``, gpt-image-1 1024x1024 generations."""
    spec = STREAMS["images"]
    row = {
        "object": spec.object_type,
        "images": images,
        "num_model_requests": 1,
        "project_id": "p",
        "user_id": None,
        "api_key_id": None,
        "model": "gpt-image-1",
        "size": "1024x1024",
        "source": "image.generation",
    }
    return shape(spec, Target("org", namespace=namespace), "1h", T0, T0 + 3600, spec.group_by, row)


def cp(pos: int = T0 + 3600) -> Checkpoint:
    """The run checkpoint of ``org``/embeddings/1h at ``pos``."""
    return Checkpoint("org", "embeddings", "1h", position=pos)


def current(sink: Sink) -> dict[str, int]:
    """``_id`` -> input tokens of every current embeddings document in ``sink``."""
    return {d["_id"]: d["_source"]["openai"]["embeddings"]["input_tokens"] for d in sink.iter_documents("embeddings")}


# --- index templates -----------------------------------------------------------------------------------------
def flatten(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Mapping ``properties`` -> ``{dotted field: type}``."""
    out: dict[str, str] = {}
    for name, spec in props.items():
        if "properties" in spec:
            out.update(flatten(spec["properties"], f"{prefix}{name}."))
        else:
            out[prefix + name] = spec["type"]
    return out


def effective_mappings(settings: Settings) -> dict[str, dict[str, str]]:
    """Index template name -> {field: type}: components merged with the template's own mappings."""
    from usage_collector.elastic import objects as es_objects

    comps = es_objects.component_templates(settings)
    out = {}
    for name, body in es_objects.index_templates(settings).items():
        fields: dict[str, str] = {}
        for comp in body.get("composed_of", []):
            fields.update(flatten(comps[comp]["template"].get("mappings", {}).get("properties", {})))
        fields.update(flatten(body["template"]["mappings"]["properties"]))
        out[name] = fields
    return out


def templates_of(settings: Settings, data_view_id: str) -> dict[str, dict[str, str]]:
    """The templates whose data a data view reads: every usage stream's, or the runs template."""
    from usage_collector.elastic import kibana

    maps = effective_mappings(settings)
    runs = f"usage-collector-logs-{RUNS_DATASET}"
    if data_view_id == kibana.RUNS_DATA_VIEW:
        return {runs: maps[runs]}
    return {n: m for n, m in maps.items() if n != runs}


# --- a Kibana stand-in ---------------------------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes


#: Saved-object types that are ``multiple-isolated`` since 8.0 (``namespaceType`` in each type's registration,
#: e.g. ``dashboard_saved_object.ts``; data views and saved searches likewise): an id lives in one space.
MULTIPLE_ISOLATED = {"dashboard", "index-pattern", "search", "lens", "visualization"}


@dataclass
class StoredObject:
    """A saved object as the stand-in keeps it: the space it lives in and where it came from."""

    type: str
    id: str
    space: str
    origin_id: str | None
    attributes: dict[str, Any]
    references: list[dict[str, str]]


@dataclass
class KibanaStandIn:
    """A tiny Kibana: spaces, the saved-objects import with its conflict rules, rules, ``/api/status``.

    The import follows ``import_saved_objects.ts`` (packages/core/saved-objects/core-saved-objects-import-export-
    server-internal/src/import/), for ``overwrite=true`` and objects of ``multiple-isolated`` types:

    * ``validate_references.ts``: a reference neither in the file nor in the target space is a
      ``missing_references`` error for the object;
    * ``check_conflicts.ts``: an id that exists in the target space is an exact conflict, overwritten in place;
      an id that exists only in *another* space is an unresolvable conflict: the object gets a new random id
      (``destinationId``) and keeps its origin (``originId`` = the id in the file);
    * ``check_origin_conflicts.ts``: otherwise, one object in the target space whose id or ``originId`` equals
      the imported object's origin is an inexact match, overwritten (``destinationId`` = that object's id); more
      than one is an ``ambiguous_conflict`` error;
    * references inside the imported objects are rewritten to the destination ids
      (``create_saved_objects.ts``); ``successResults`` carry ``destinationId`` where it differs and
      ``overwrite: true`` where an object was replaced.

    An unknown space answers 404, as Kibana does for ``/s/<id>`` of a space that does not exist.
    """

    requests: list[Recorded] = field(default_factory=list)
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    spaces: set[str] | None = None  # None: every space exists; else the ids that do
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: str = "9.1.0"
    override: Callable[[Recorded], tuple[int, Any] | None] | None = None
    url: str = ""

    def in_space(self, space: str) -> dict[tuple[str, str], StoredObject]:
        """The objects of one space, by (type, id)."""
        return {k: o for k, o in self.objects.items() if o.space == space}

    def handle(self, req: Recorded) -> tuple[int, Any]:
        if self.override is not None and (answer := self.override(req)) is not None:
            return answer
        m = re.fullmatch(r"(?:/s/([a-z0-9_\-]+))?(/api/.*)", req.path)
        if not m:
            return 404, {"statusCode": 404, "error": "Not Found"}
        space, path = m.group(1) or "default", m.group(2)
        if self.spaces is not None and space not in self.spaces:
            return 404, {"statusCode": 404, "error": "Not Found", "message": f"space {space} not found"}
        if req.method == "GET" and path == "/api/status":
            return 200, {"name": "kibana", "version": {"number": self.version, "build_snapshot": False}}
        if req.method == "POST" and path == "/api/saved_objects/_import":
            return 200, self._import(space, import_file(req), req.query.get("overwrite") == ["true"])
        rm = re.fullmatch(r"/api/alerting/rule/([0-9a-f\-]+)", path)
        if rm:
            rid, body = rm.group(1), json.loads(req.body)
            key = rid  # rule ids are unique across spaces
            if req.method == "POST":
                if key in self.rules:
                    return 409, {"statusCode": 409, "error": "Conflict", "message": f"rule {rid} exists"}
                self.rules[key] = body
                return 200, {"id": rid, **body}
            if req.method == "PUT":
                if key not in self.rules:
                    return 404, {"statusCode": 404}
                self.rules[key].update(body)
                return 200, {"id": rid, **self.rules[key]}
        return 404, {"statusCode": 404, "error": "Not Found"}

    def _import(self, space: str, incoming: list[dict[str, Any]], overwrite: bool) -> dict[str, Any]:
        here = self.in_space(space)
        in_file = {(o["type"], o["id"]) for o in incoming}
        errors: list[dict[str, Any]] = []
        dest: dict[tuple[str, str], str] = {}
        replaced: set[tuple[str, str]] = set()
        for o in incoming:
            key = (o["type"], o["id"])
            missing = [
                {"type": r["type"], "id": r["id"]}
                for r in o.get("references", [])
                if (r["type"], r["id"]) not in in_file and (r["type"], r["id"]) not in here
            ]
            if missing:
                errors.append(
                    {
                        "type": o["type"],
                        "id": o["id"],
                        "meta": {"title": o["attributes"].get("title")},
                        "error": {"type": "missing_references", "references": missing},
                    }
                )
                continue
            if key in here:  # check_conflicts.ts: exact match in this space
                if not overwrite:
                    errors.append({"type": o["type"], "id": o["id"], "error": {"type": "conflict"}})
                    continue
                dest[key], replaced = o["id"], replaced | {key}
                continue
            origin = o.get("originId") or o["id"]
            matches = [s for s in here.values() if s.type == o["type"] and origin in (s.id, s.origin_id)]
            if len(matches) > 1:  # check_origin_conflicts.ts: ambiguous
                errors.append(
                    {
                        "type": o["type"],
                        "id": o["id"],
                        "error": {"type": "ambiguous_conflict", "destinations": [{"id": s.id} for s in matches]},
                    }
                )
                continue
            if matches:  # inexact match: overwrite that object (overwrite=true)
                if not overwrite:
                    errors.append(
                        {
                            "type": o["type"],
                            "id": o["id"],
                            "error": {"type": "conflict", "destinationId": matches[0].id},
                        }
                    )
                    continue
                dest[key], replaced = matches[0].id, replaced | {key}
            elif key in self.objects and o["type"] in MULTIPLE_ISOLATED:  # lives in another space only
                dest[key] = str(uuid.uuid4())
            else:
                dest[key] = o["id"]
        failed = {(e["type"], e["id"]) for e in errors}
        results = []
        for o in incoming:
            key = (o["type"], o["id"])
            if key in failed:
                continue
            refs = [{**r, "id": dest.get((r["type"], r["id"]), r["id"])} for r in o.get("references", [])]
            origin = o.get("originId") or (o["id"] if dest[key] != o["id"] else None)
            stored = StoredObject(o["type"], dest[key], space, origin, o["attributes"], refs)
            prior = self.objects.get((o["type"], dest[key]))
            if prior is not None and prior.space == space:
                stored.origin_id = stored.origin_id or prior.origin_id
            self.objects[(o["type"], dest[key])] = stored
            entry: dict[str, Any] = {"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"].get("title")}}
            if key in replaced:
                entry["overwrite"] = True
            if dest[key] != o["id"]:
                entry["destinationId"] = dest[key]
            results.append(entry)
        answer: dict[str, Any] = {"success": not errors, "successCount": len(results)}
        if results:
            answer["successResults"] = results
        if errors:
            answer["errors"] = errors
        return answer


def import_file(req: Recorded) -> list[dict[str, Any]]:
    """The saved objects of an import request (its multipart part ``file``)."""
    part = multipart_parts(req)["file"]
    return [json.loads(line) for line in part.get_payload(decode=True).decode().splitlines()]


def multipart_parts(req: Recorded) -> dict[str, email.message.Message]:
    head = f"Content-Type: {req.headers['content-type']}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    assert msg.is_multipart()
    return {str(p.get_param("name", header="content-disposition")): p for p in msg.iter_parts()}


@contextmanager
def kibana_stand_in() -> Iterator[KibanaStandIn]:
    """A :class:`KibanaStandIn` served on 127.0.0.1 (its ``url``) until the block ends."""
    state = KibanaStandIn()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            req = Recorded(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            state.requests.append(req)
            status, body = state.handle(req)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
