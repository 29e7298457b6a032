"""A small in-memory Elasticsearch for tests: exactly the REST subset the sink and ``setup`` use.

Rules it models, each with its source (``R:`` = ``/work/shared/reference/delivery-semantics.md``):

* compatibility headers: a server of major N accepts ``compatible-with`` N or N-1 on ``Accept`` and, with a
  body, on ``Content-Type``; both versioned or neither, and equal (elastic/elasticsearch
  ``server/src/main/java/org/elasticsearch/rest/RestCompatibleVersionHelper.java``). So an 8.x server refuses
  elasticsearch-py 9's ``compatible-with=9`` with 400 ``media_type_header_exception``
  (elastic/elasticsearch-py#2923, elastic/mcp-server-elasticsearch#171);
* data streams accept only ``create``; ``index`` on a data stream name is an item 400 (R §2,
  https://elastic.co/guide/reference/api/bulk);
* a duplicate ``_id`` gives 409 ``version_conflict_engine_exception`` only within one backing index, so
  after a rollover the same ``_id`` can be created again (R §2, elastic/elasticsearch#44794);
* a backing index takes ``index`` only with ``if_seq_no``/``if_primary_term`` and never ``create``
  (``TransportBulkAction.prohibitAppendWritesInBackingIndices``); a stale pair is a 409;
* auto-creating a data stream needs a matching index template with ``data_stream`` (``no matching index
  template found for data stream``); a name no template matches is a 404, as with
  ``action.auto_create_index: false``; same-priority overlapping templates are refused;
* search is near-real-time: it sees only refreshed documents (``_refresh`` or ``?refresh=true``); GET and
  mget by ``_id`` are real-time;
* mapped fields are type-checked (``document_parsing_exception`` naming the field, as ES 8.x/9.x), and
  ``dynamic: strict`` refuses unknown fields (``strict_dynamic_mapping_exception``).

Fault hooks: :meth:`EsServer.reject_next_items` (item-level 429, R §3), :meth:`EsServer.fail_item`
(item-level 400), :meth:`EsServer.stop`/:meth:`EsServer.start` (down and back on the same port, data kept)
and :meth:`EsServer.die_after_bulks` (the server dies in the middle of a run).

Tests reach it through ``tests/conftest_es.py`` (``es_target``), which picks a live cluster instead when
``ELASTICSEARCH_URL`` is set.
"""

from __future__ import annotations

import base64
import fnmatch
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class EsError(Exception):
    """An Elasticsearch error response (or bulk item error)."""

    def __init__(self, status: int, type_: str, reason: str, caused_by: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.type, self.reason, self.caused_by = status, type_, reason, caused_by

    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "reason": self.reason}
        if self.caused_by:
            err["caused_by"] = self.caused_by
        return err

    def body(self) -> dict[str, Any]:
        return {"error": {**self.error(), "root_cause": [self.error()]}, "status": self.status}


def _no_index(name: str) -> EsError:
    return EsError(404, "index_not_found_exception", f"no such index [{name}]")


@dataclass
class Doc:
    source: dict[str, Any]
    seq_no: int
    primary_term: int = 1
    version: int = 1


@dataclass
class Index:
    name: str
    mappings: dict[str, Any]
    data_stream: str | None = None
    docs: dict[str, Doc] = field(default_factory=dict)
    visible: dict[str, Doc] = field(default_factory=dict)  # what search sees: docs as of the last refresh
    seq: int = -1

    def refresh(self) -> None:
        self.visible = dict(self.docs)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


def _merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = json.loads(json.dumps(v))
    return into


def _get(source: dict[str, Any], dotted: str) -> Any:
    node: Any = source
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _overlap(a: str, b: str) -> bool:
    return fnmatch.fnmatchcase(a.replace("*", "x"), b) or fnmatch.fnmatchcase(b.replace("*", "x"), a)


class EsState:
    """Everything the server stores; survives :meth:`EsServer.stop`/:meth:`EsServer.start`."""

    def __init__(self, version: str, builtin_templates: bool) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.lock = threading.RLock()
        self.component_templates: dict[str, dict[str, Any]] = {}
        self.index_templates: dict[str, dict[str, Any]] = {}
        self.ilm: dict[str, dict[str, Any]] = {}
        self.indices: dict[str, Index] = {}
        self.data_streams: dict[str, dict[str, Any]] = {}
        self.scrolls: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self.ids = itertools.count(1)
        if builtin_templates:  # Elasticsearch's own logs/metrics templates, priority 100 (elastic.objects docstring)
            for kind in ("logs", "metrics"):
                self.index_templates[kind] = {"index_patterns": [f"{kind}-*-*"], "priority": 100, "data_stream": {},
                                              "composed_of": [], "template": {"mappings": {"dynamic": True}}}

    # --- templates ----------------------------------------------------------------------------------
    def template_for(self, name: str) -> tuple[str, dict[str, Any]] | None:
        found = [(t.get("priority", 0), n, t) for n, t in self.index_templates.items()
                 if any(fnmatch.fnmatchcase(name, p) for p in t["index_patterns"])]
        if not found:
            return None
        _, tname, template = max(found, key=lambda f: f[0])
        return tname, template

    def mappings_of(self, template: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {"properties": {}}
        for part in [self.component_templates[c]["template"] for c in template.get("composed_of", [])] + [
                template.get("template", {})]:
            _merge(merged, json.loads(json.dumps(part.get("mappings") or {})))
        return merged

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        missing = [c for c in body.get("composed_of", []) if c not in self.component_templates]
        if missing:
            raise EsError(400, "invalid_index_template_exception",
                          f"index_template [{name}] invalid, cause [index template [{name}] specifies component "
                          f"templates {missing} that do not exist]")
        for other, t in self.index_templates.items():  # MetadataIndexTemplateService: same-priority overlap
            if other != name and t.get("priority", 0) == body.get("priority", 0) and any(
                    _overlap(a, b) for a in t["index_patterns"] for b in body["index_patterns"]):
                raise EsError(400, "illegal_argument_exception",
                              f"index template [{name}] has index patterns {body['index_patterns']} matching "
                              f"patterns from existing templates [{other}] that have the same priority "
                              f"[{body.get('priority', 0)}], multiple index templates may not match during "
                              "index creation, please use a different priority")
        self.index_templates[name] = body

    # --- indices and data streams ----------------------------------------------------------------------
    def create_data_stream(self, name: str) -> dict[str, Any]:
        if name in self.data_streams or name in self.indices:
            raise EsError(400, "resource_already_exists_exception", f"data_stream [{name}] already exists")
        found = self.template_for(name)
        if found is None or "data_stream" not in found[1]:
            raise EsError(400, "illegal_argument_exception",
                          f"no matching index template found for data stream [{name}]")
        ds = {"name": name, "template": found[0], "indices": [], "generation": 0}
        self.data_streams[name] = ds
        self.rollover(name)
        return ds

    def rollover(self, name: str) -> tuple[str, str]:
        ds = self.data_streams[name]
        tname, template = self.template_for(name) or (ds["template"], self.index_templates[ds["template"]])
        ds["generation"] += 1
        backing = f".ds-{name}-{time.strftime('%Y.%m.%d', time.gmtime())}-{ds['generation']:06d}"
        mappings = _merge(self.mappings_of(template), {"properties": {"@timestamp": {"type": "date"}}})
        self.indices[backing] = Index(backing, mappings, data_stream=name)
        old = ds["indices"][-1] if ds["indices"] else ""
        ds["indices"].append(backing)
        ds["template"] = tname
        return old, backing

    def resolve(self, expr: str, ignore_unavailable: bool = False) -> list[Index]:
        """Comma-separated names/wildcards -> concrete indices (data streams expand to backing indices)."""
        out: list[Index] = []
        for part in expr.split(","):
            if "*" in part:
                names = [n for n in self.data_streams if fnmatch.fnmatchcase(n, part)]
                names += [n for n in self.indices if fnmatch.fnmatchcase(n, part) and not n.startswith(".")]
            elif part in self.data_streams or part in self.indices:
                names = [part]
            elif ignore_unavailable:
                names = []
            else:
                raise _no_index(part)
            for n in names:
                out += [self.indices[i] for i in self.data_streams[n]["indices"]] if n in self.data_streams \
                    else [self.indices[n]]
        return out

    # --- writes ---------------------------------------------------------------------------------------
    def write(self, op: str, target: str, doc_id: str | None, source: dict[str, Any] | None,
              if_seq_no: int | None = None, if_primary_term: int | None = None) -> dict[str, Any]:
        """One document operation, as a bulk item result (raises :class:`EsError` for an item error)."""
        if target in self.data_streams:
            if op != "create":  # R §2: "Data streams support only the create action"
                raise EsError(400, "illegal_argument_exception",
                              "only write ops with an op_type of create are allowed in data streams")
            index = self.indices[self.data_streams[target]["indices"][-1]]
        elif target in self.indices:
            index = self.indices[target]
            if index.data_stream and op == "create":  # TransportBulkAction.prohibitAppendWritesInBackingIndices
                raise EsError(400, "illegal_argument_exception",
                              "index request with op_type=create targeting backing indices is disallowed, target "
                              f"corresponding data stream [{index.data_stream}] instead")
            if index.data_stream and op == "index" and if_seq_no is None:
                raise EsError(400, "illegal_argument_exception",
                              "index request with op_type=index and no if_primary_term and if_seq_no set targeting "
                              f"backing indices is disallowed, target corresponding data stream [{index.data_stream}]"
                              " instead")
        elif op == "delete":
            raise _no_index(target)
        else:
            found = self.template_for(target)
            if found is None:
                raise _no_index(target)
            if "data_stream" in found[1]:
                self.create_data_stream(target)
                return self.write(op, target, doc_id, source, if_seq_no, if_primary_term)
            index = self.indices[target] = Index(target, self.mappings_of(found[1]))
        doc_id = doc_id or base64.urlsafe_b64encode(next(self.ids).to_bytes(8, "big")).decode().rstrip("=")
        cur = index.docs.get(doc_id)
        if if_seq_no is not None:
            if cur is None:
                raise EsError(409, "version_conflict_engine_exception",
                              f"[{doc_id}]: version conflict, required seqNo [{if_seq_no}], primary term "
                              f"[{if_primary_term}]. but no document was found")
            if (cur.seq_no, cur.primary_term) != (if_seq_no, if_primary_term):
                raise EsError(409, "version_conflict_engine_exception",
                              f"[{doc_id}]: version conflict, required seqNo [{if_seq_no}], primary term "
                              f"[{if_primary_term}]. current document has seqNo [{cur.seq_no}] and primary "
                              f"term [{cur.primary_term}]")
        item = {"_index": index.name, "_id": doc_id}
        if op == "delete":
            if cur is None:
                return {**item, "result": "not_found", "status": 404}
            index.seq += 1
            del index.docs[doc_id]
            return {**item, "result": "deleted", "status": 200, "_seq_no": index.seq, "_primary_term": 1}
        if op == "create" and cur is not None:
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, document already exists (current version [{cur.version}])")
        assert source is not None
        if index.data_stream and "@timestamp" not in source:
            raise EsError(400, "illegal_argument_exception", "data stream timestamp field [@timestamp] is missing")
        _check(index.mappings, source, doc_id)
        index.seq += 1
        version = cur.version + 1 if cur else 1
        index.docs[doc_id] = Doc(json.loads(json.dumps(source)), index.seq, 1, version)
        return {**item, "_version": version, "result": "updated" if cur else "created", "_seq_no": index.seq,
                "_primary_term": 1, "status": 200 if cur else 201,
                "_shards": {"total": 1, "successful": 1, "failed": 0}}

    # --- search ---------------------------------------------------------------------------------------
    def search(self, indices: list[Index], body: dict[str, Any], params: dict[str, str]) -> list[dict[str, Any]]:
        query = body.get("query") or {"match_all": {}}
        want_seq = body.get("seq_no_primary_term") or params.get("seq_no_primary_term") == "true"
        includes = params.get("_source_includes")
        src_filter = body.get("_source", includes.split(",") if includes else True)
        hits = []
        for index in indices:
            for doc_id, doc in index.visible.items():
                if not _matches(query, doc_id, doc.source):
                    continue
                hit: dict[str, Any] = {"_index": index.name, "_id": doc_id, "_score": 1.0,
                                       "_source": _filter_source(doc.source, src_filter)}
                if want_seq:
                    hit.update(_seq_no=doc.seq_no, _primary_term=doc.primary_term)
                hits.append(hit)
        sort = body.get("sort") or params.get("sort")
        for key, order in reversed(_sort_keys(sort)):
            hits.sort(key=lambda h, k=key: _sort_value(h, k), reverse=order == "desc")
        return hits


def _sort_keys(sort: Any) -> list[tuple[str, str]]:
    if not sort:
        return []
    keys = []
    for entry in sort if isinstance(sort, list) else [sort]:
        if isinstance(entry, str):
            name, _, order = entry.partition(":")
            keys.append((name, order or "asc"))
        else:
            (name, spec), = entry.items()
            keys.append((name, spec.get("order", "asc") if isinstance(spec, dict) else spec))
    return keys


def _sort_value(hit: dict[str, Any], key: str) -> Any:
    if key in ("_doc", "_shard_doc"):
        return 0  # stable sort keeps index/insertion order
    value = hit["_index"] if key == "_index" else _get(hit["_source"], key)
    return (value is None, str(value))


def _matches(query: dict[str, Any], doc_id: str, source: dict[str, Any]) -> bool:
    (kind, arg), = query.items()
    if kind == "match_all":
        return True
    if kind == "ids":
        return doc_id in arg["values"]
    if kind in ("term", "terms"):
        (fname, value), = arg.items()
        values = value if kind == "terms" else [value["value"] if isinstance(value, dict) else value]
        actual = doc_id if fname == "_id" else _get(source, fname)
        return actual in values
    if kind == "bool":
        def listed(key: str) -> list[dict[str, Any]]:
            value = arg.get(key) or []
            return value if isinstance(value, list) else [value]

        return all(_matches(c, doc_id, source) for c in listed("must") + listed("filter")) and not any(
            _matches(c, doc_id, source) for c in listed("must_not"))
    raise EsError(400, "parsing_exception", f"unknown query [{kind}] (not modelled by the test server)")


def _filter_source(source: dict[str, Any], spec: Any) -> dict[str, Any]:
    if spec is True or spec is None:
        return source
    if spec is False:
        return {}
    paths = spec if isinstance(spec, list) else spec.get("includes", []) if isinstance(spec, dict) else [spec]
    out: dict[str, Any] = {}
    for p in paths:
        value = _get(source, p)
        if value is not None:
            node = out
            *head, leaf = p.split(".")
            for part in head:
                node = node.setdefault(part, {})
            node[leaf] = value
    return out


_NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}


def _check(mappings: dict[str, Any], source: dict[str, Any], doc_id: str) -> None:
    """Enforce mapped types and ``dynamic: strict`` like Elasticsearch's document parser."""
    def walk(props: dict[str, Any], dynamic: Any, obj: dict[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            path = prefix + key
            m = props.get(key)
            if m is None:
                if str(dynamic).lower() == "strict":
                    raise EsError(400, "strict_dynamic_mapping_exception",
                                  f"[1:2] mapping set to strict, dynamic introduction of [{key}] within "
                                  f"[{prefix[:-1] or '_doc'}] is not allowed")
                if str(dynamic).lower() == "true":
                    props[key] = {"properties": {}} if isinstance(value, dict) else {"type": "keyword"}
                    m = props[key]
                else:
                    continue  # dynamic false / runtime: kept in _source, not indexed
            if "properties" in m or m.get("type") == "object":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise EsError(400, "document_parsing_exception",
                                  f"[1:2] object mapping for [{path}] tried to parse field [{key}] as object, "
                                  "but found a concrete value")
                walk(m.setdefault("properties", {}), m.get("dynamic", dynamic), value, path + ".")
            else:
                for v in value if isinstance(value, list) else [value]:
                    _check_leaf(m, v, path, doc_id)
    walk(mappings.setdefault("properties", {}), mappings.get("dynamic", True), source, "")


def _check_leaf(m: dict[str, Any], value: Any, path: str, doc_id: str) -> None:
    kind = m.get("type", "object")
    ok = True
    if value is None:
        return
    if kind in _NUMERIC:
        ok = not isinstance(value, bool | dict | list)
        if ok and isinstance(value, str):
            ok = re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value.strip()) is not None
    elif kind == "date":
        ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value) is not None)
    elif kind == "boolean":
        ok = value in (True, False, "true", "false", "")
    elif kind == "constant_keyword":
        if "value" not in m:
            m["value"] = value
        elif m["value"] != value:
            raise EsError(400, "document_parsing_exception",
                          f"[1:2] failed to parse field [{path}] of type [constant_keyword] in document with id "
                          f"'{doc_id}'. Preview of field's value: '{value}'",
                          {"type": "illegal_argument_exception", "reason": f"[constant_keyword] field [{path}] only "
                           f"accepts values that are equal to the value defined in the mappings [{m['value']}], "
                           f"but got [{value}]"})
    elif kind in ("keyword", "text", "match_only_text", "wildcard"):
        ok = not isinstance(value, dict)
    if not ok:
        raise EsError(400, "document_parsing_exception",
                      f"[1:2] failed to parse field [{path}] of type [{kind}] in document with id '{doc_id}'. "
                      f"Preview of field's value: '{value}'")


class EsServer:
    """An Elasticsearch-protocol server on 127.0.0.1 (ephemeral port); use as a context manager.

    Args:
        version: the version banner, e.g. ``"8.15.0"`` or ``"9.1.0"``.
        api_key: when set, requests must carry ``Authorization: ApiKey <api_key>``.
        basic: when set, requests must carry HTTP basic ``(user, password)``.
        builtin_templates: model Elasticsearch's built-in ``logs``/``metrics`` templates (priority 100).
    """

    def __init__(self, version: str = "9.1.0", *, api_key: str | None = None,
                 basic: tuple[str, str] | None = None, builtin_templates: bool = True) -> None:
        self.state = EsState(version, builtin_templates)
        self.api_key, self.basic = api_key, basic
        self.requests: list[Recorded] = []
        self.denied_privileges: set[str] = set()
        self._reject: list[tuple[int, int]] = []  # (items left, status)
        self._fail_ids: dict[str, EsError] = {}
        self._bulks_left: int | None = None
        self.down = False
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`); the stored data is kept."""
        server = self

        class Handler(_Handler):
            es = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.down, self._bulks_left = False, None
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Go down: refuse new connections and drop requests on open ones."""
        self.down = True
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()

    # --- fault hooks ------------------------------------------------------------------------------------
    def reject_next_items(self, n: int, status: int = 429) -> None:
        """The next ``n`` bulk items get an item-level ``status`` (``es_rejected_execution_exception``)."""
        self._reject.append((n, status))

    def fail_item(self, doc_id: str, reason: str = "injected failure", type_: str = "illegal_argument_exception",
                  status: int = 400) -> None:
        """Every bulk item for ``doc_id`` fails with this error until :meth:`heal`."""
        self._fail_ids[doc_id] = EsError(status, type_, reason)

    def heal(self) -> None:
        self._fail_ids.clear()
        self._reject.clear()

    def die_after_bulks(self, n: int) -> None:
        """Serve ``n`` more bulk requests, then drop every request and stop, as a crashed node would."""
        self._bulks_left = n

    # --- test helpers ---------------------------------------------------------------------------------
    def rollover(self, data_stream: str) -> str:
        with self.state.lock:
            return self.state.rollover(data_stream)[1]

    def copies(self, doc_id: str) -> list[str]:
        """The indices holding ``doc_id`` (real time)."""
        return [i.name for i in self.state.indices.values() if doc_id in i.docs]

    def source(self, index: str, doc_id: str) -> dict[str, Any]:
        return self.state.indices[index].docs[doc_id].source

    def headers_of(self, path_suffix: str) -> list[dict[str, str]]:
        return [r.headers for r in self.requests if r.path.split("?")[0].endswith(path_suffix)]

    def take_item_fault(self, doc_id: str | None) -> EsError | None:
        if doc_id in self._fail_ids:
            return self._fail_ids[doc_id]
        if self._reject:
            n, status = self._reject[0]
            self._reject[0] = (n - 1, status)
            if n - 1 <= 0:
                self._reject.pop(0)
            return EsError(status, "es_rejected_execution_exception",
                           "rejected execution of coordinating operation [injected by the test server]")
        return None


class _Handler(BaseHTTPRequestHandler):
    es: EsServer
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # one buffered write per response (flushed by handle_one_request) ...
    disable_nagle_algorithm = True  # ... and no 40 ms delayed-ACK stall per request

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        es = self.es
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if es.down or (es._bulks_left == 0 and self.path.split("?")[0].endswith("_bulk")):
            es.down = True
            threading.Thread(target=es.stop, daemon=True).start()
            self.close_connection = True  # no response at all: the client sees a dropped connection
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        es.requests.append(Recorded(self.command, self.path, headers))
        accept, ctype = headers.get("accept", ""), headers.get("content-type", "")
        try:
            self._check_media(accept, ctype, bool(raw))
            self._check_auth(headers.get("authorization", ""))
            with es.state.lock:
                status, body = self._route(raw)
        except EsError as exc:
            status, body = exc.status, exc.body()
        compat = re.search(r"compatible-with=(\d+)", accept)
        out = b"" if self.command == "HEAD" else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", f"application/vnd.elasticsearch+json;compatible-with={compat.group(1)}"
                         if compat else "application/json")
        self.send_header("Content-Length", str(len(out) if self.command != "HEAD" else len(json.dumps(body))))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def _check_media(self, accept: str, ctype: str, has_body: bool) -> None:
        """RestCompatibleVersionHelper.getCompatibleVersion (see the module docstring)."""
        major = self.es.state.major

        def version(header: str) -> int | None:
            m = re.search(r"compatible-with=(\d+)", header)
            return int(m.group(1)) if m else None

        def fail(reason: str) -> EsError:
            return EsError(400, "media_type_header_exception", "Invalid media-type value on headers [Accept, "
                           "Content-Type]", {"type": "status_exception", "reason": reason})

        a, c = version(accept), version(ctype)
        av, cv = (major if a is None else a), (major if c is None else c)
        if not major - 1 <= av <= major:
            raise fail(f"Accept version must be either version {major} or {major - 1}, but found {av}. "
                       f"Accept={accept}")
        if has_body:
            if not major - 1 <= cv <= major:
                raise fail(f"Content-Type version must be either version {major} or {major - 1}, but found {cv}. "
                           f"Content-Type={ctype}")
            if av != cv or (a is None) != (c is None):
                raise fail("A compatible version is required on both Content-Type and Accept headers if either "
                           f"one has requested a compatible version. Accept={accept}, Content-Type={ctype}")

    def _check_auth(self, header: str) -> None:
        es = self.es
        if es.api_key is None and es.basic is None:
            return
        ok = (es.api_key is not None and header == f"ApiKey {es.api_key}") or (
            es.basic is not None and header == "Basic " + base64.b64encode(":".join(es.basic).encode()).decode())
        if not ok:
            raise EsError(401, "security_exception", f"unable to authenticate user for REST request [{self.path}]")

    # --- routing --------------------------------------------------------------------------------------
    def _route(self, raw: bytes) -> tuple[int, Any]:
        st = self.es.state
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        body = json.loads(raw) if raw and parts[-1:] != ["_bulk"] else {}
        m, n = self.command, len(parts)
        if n == 0:
            return 200, {"name": "test", "cluster_name": "es-test-server", "tagline": "You Know, for Search",
                         "version": {"number": st.version, "build_flavor": "default"}}
        head = parts[0]
        if head == "_bulk":
            return 200, self._bulk(raw, params)
        if head == "_component_template" and n == 2:
            if m == "PUT":
                st.component_templates[parts[1]] = body
                return 200, {"acknowledged": True}
            if parts[1] not in st.component_templates:
                raise EsError(404, "resource_not_found_exception",
                              f"component template matching [{parts[1]}] not found")
            body = st.component_templates[parts[1]]
            return 200, {"component_templates": [{"name": parts[1], "component_template": body}]}
        if head == "_index_template" and n == 2:
            if m == "PUT":
                st.put_index_template(parts[1], body)
                return 200, {"acknowledged": True}
            if parts[1] not in st.index_templates:
                raise EsError(404, "resource_not_found_exception", f"index template matching [{parts[1]}] not found")
            t = json.loads(json.dumps(st.index_templates[parts[1]]))
            if "data_stream" in t:  # Elasticsearch fills in defaults
                t["data_stream"] = {"hidden": False, "allow_custom_routing": False, **t["data_stream"]}
            return 200, {"index_templates": [{"name": parts[1], "index_template": t}]}
        if head == "_ilm" and n == 3:
            if m == "PUT":
                prev = st.ilm.get(parts[2], {"version": 0})
                st.ilm[parts[2]] = {"version": prev["version"] + 1, "policy": body["policy"]}
                return 200, {"acknowledged": True}
            if parts[2] not in st.ilm:
                raise EsError(404, "resource_not_found_exception", f"Lifecycle policy not found: {parts[2]}")
            p = json.loads(json.dumps(st.ilm[parts[2]]))
            for phase in p["policy"]["phases"].values():
                phase.setdefault("min_age", "0ms")
            return 200, {parts[2]: {**p, "modified_date": "2026-01-01T00:00:00.000Z"}}
        if head == "_data_stream" and n == 2:
            if m == "PUT":
                st.create_data_stream(parts[1])
                return 200, {"acknowledged": True}
            return 200, self._get_data_streams(parts[1])
        if head == "_security":
            return 200, self._has_privileges(body)
        if head == "_mget":
            return 200, {"docs": [self._get_doc(d["_index"], d["_id"]) for d in body["docs"]]}
        if head == "_search" and n == 2 and parts[1] == "scroll":
            return 200, self._scroll(body, m)
        if head in ("_search", "_refresh"):
            parts, n = ["*", *parts], n + 1
        target = parts[0]
        if n == 1:
            if m == "PUT":
                if target in st.indices:
                    raise EsError(400, "resource_already_exists_exception", f"index [{target}] already exists")
                st.indices[target] = Index(target, json.loads(json.dumps(body.get("mappings") or {})))
                return 200, {"acknowledged": True, "index": target}
            if target not in st.indices:
                raise _no_index(target)
            return 200, {target: {"mappings": st.indices[target].mappings}}
        op = parts[1]
        if op == "_search":
            return 200, self._search(target, body, params)
        if op == "_refresh":
            for index in st.resolve(target, ignore_unavailable=True):
                index.refresh()
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_rollover":
            old, new = st.rollover(target)
            return 200, {"acknowledged": True, "old_index": old, "new_index": new, "rolled_over": True}
        if op == "_mapping":
            if m == "GET":
                return 200, {i.name: {"mappings": i.mappings} for i in st.resolve(target)}
            for index in st.resolve(target):
                _merge(index.mappings, {k: v for k, v in body.items() if k in ("properties", "dynamic")})
            return 200, {"acknowledged": True}
        if op in ("_doc", "_create"):
            return self._doc(target, op, parts[2] if n > 2 else None, body, params)
        raise EsError(400, "illegal_argument_exception", f"{m} {url.path} is not modelled by the test server")

    def _doc(self, target: str, op: str, doc_id: str | None, body: Any, params: dict[str, str]) -> tuple[int, Any]:
        st = self.es.state
        if self.command in ("GET", "HEAD"):
            found = self._get_doc(target, doc_id or "")
            return (200 if found["found"] else 404), found
        kind = "delete" if self.command == "DELETE" else "create" if op == "_create" or params.get(
            "op_type") == "create" else "index"
        seq = params.get("if_seq_no")
        item = st.write(kind, target, doc_id, body, int(seq) if seq is not None else None,
                        int(params["if_primary_term"]) if "if_primary_term" in params else None)
        if params.get("refresh") in ("true", ""):
            st.indices[item["_index"]].refresh()
        return item.pop("status"), item

    def _get_doc(self, index: str, doc_id: str) -> dict[str, Any]:
        idx = self.es.state.indices.get(index)
        if idx is None:
            raise _no_index(index)
        doc = idx.docs.get(doc_id)
        if doc is None:
            return {"_index": index, "_id": doc_id, "found": False}
        return {"_index": index, "_id": doc_id, "_version": doc.version, "_seq_no": doc.seq_no,
                "_primary_term": doc.primary_term, "found": True, "_source": doc.source}

    def _bulk(self, raw: bytes, params: dict[str, str]) -> dict[str, Any]:
        es, st = self.es, self.es.state
        if es._bulks_left is not None:
            es._bulks_left -= 1
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        items, touched = [], set()
        while lines:
            (op, meta), = lines.pop(0).items()
            source = None if op == "delete" else lines.pop(0)
            doc_id = meta.get("_id")
            try:
                fault = es.take_item_fault(doc_id)
                if fault:
                    raise fault
                result = st.write(op, meta["_index"], doc_id, source, meta.get("if_seq_no"),
                                  meta.get("if_primary_term"))
                touched.add(result["_index"])
            except EsError as exc:
                result = {"_index": meta.get("_index"), "_id": doc_id, "status": exc.status, "error": exc.error()}
            items.append({op: result})
        if params.get("refresh") in ("true", ""):
            for name in touched:
                st.indices[name].refresh()
        return {"took": 1, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}

    def _search(self, target: str, body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        st = self.es.state
        ignore = params.get("ignore_unavailable") == "true"
        hits = st.search(st.resolve(target, ignore_unavailable=ignore), body, params)
        size = int(body.get("size", params.get("size", 10)))
        resp: dict[str, Any] = {"took": 1, "timed_out": False,
                                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                                "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": None,
                                         "hits": hits[:size]}}
        if "scroll" in params:
            scroll_id = f"scroll-{next(st.ids)}"
            st.scrolls[scroll_id] = (hits[size:], size)
            resp["_scroll_id"] = scroll_id
        return resp

    def _scroll(self, body: dict[str, Any], method: str) -> dict[str, Any]:
        st = self.es.state
        if method == "DELETE":
            ids = body.get("scroll_id")
            ids = ids if isinstance(ids, list) else [ids]
            freed = sum(1 for i in ids if st.scrolls.pop(i, None) is not None)
            return {"succeeded": True, "num_freed": freed}
        rest, size = st.scrolls[body["scroll_id"]]
        st.scrolls[body["scroll_id"]] = (rest[size:], size)
        return {"_scroll_id": body["scroll_id"], "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": len(rest), "relation": "eq"}, "hits": rest[:size]}}

    def _get_data_streams(self, expr: str) -> dict[str, Any]:
        st = self.es.state
        out = []
        for part in expr.split(","):
            names = [n for n in st.data_streams if fnmatch.fnmatchcase(n, part)] if "*" in part else [part]
            for name in names:
                if name not in st.data_streams:
                    raise _no_index(name)
                ds = st.data_streams[name]
                out.append({"name": name, "timestamp_field": {"name": "@timestamp"}, "generation": ds["generation"],
                            "indices": [{"index_name": i, "index_uuid": i} for i in ds["indices"]],
                            "status": "GREEN", "template": ds["template"], "hidden": False})
        return {"data_streams": out}

    def _has_privileges(self, body: dict[str, Any]) -> dict[str, Any]:
        denied = self.es.denied_privileges
        cluster = {p: p not in denied for p in body.get("cluster", [])}
        index = {n: {p: p not in denied for p in entry["privileges"]}
                 for entry in body.get("index", []) for n in entry["names"]}
        ok = all(cluster.values()) and all(all(v.values()) for v in index.values())
        return {"username": "test", "has_all_requested": ok, "cluster": cluster, "index": index, "application": {}}
