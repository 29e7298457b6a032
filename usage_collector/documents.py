"""Shape API results into ECS documents.

One document per result row (one group combination in one bucket). Layout (see README "Documents")::

    @timestamp                bucket start
    event.kind/dataset/module metric / openai.<stream> / openai
    event.hash                content hash of the measures (changes when OpenAI revises the bucket)
    data_stream.*             type, dataset openai.<stream>, namespace
    organization.id/name      the organization the Admin key belongs to
    openai.base.*             project_id, user_id, api_key_id, model, num_model_requests, usage_object_type,
                              start_time, end_time, bucket_width (+ project_name, api_key_name, user_email)
    openai.<stream>.*         the stream's own measures and dimensions, under their API names, and any
                              numeric result field the catalogue does not know (a measure OpenAI added later),
                              kept as reported under its own name
    gen_ai.*                  OpenTelemetry GenAI names where they exist

The ``_id`` is a hash of (organization, stream, bucket width, bucket start, group_by set, every dimension
value) and never of a measure (ref ``delivery-semantics.md`` §2: mutable values must stay out of ``_id``). An
optional dimension (``api_source``) takes part only when it is in the group_by set, so the ``_id`` of a series
that never requested it is the same as before the dimension existed. When the group_by set of a bucket changes
(a dimension added or dropped), the bucket's documents get new ``_id`` s: the collector then replaces every
document of each bucket it re-read (see ``docs/architecture.md``, "Superseded documents").
"""

from __future__ import annotations

import gc
import hashlib
import re
import threading
from binascii import b2a_base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import CodeType
from typing import Any

import orjson

from .catalogue import StreamSpec
from .clock import iso

ECS_VERSION = "8.11.0"
#: ``event.dataset`` of run documents (one per stream per cycle), in ``logs-usage_collector.runs-<namespace>``.
RUNS_DATASET = "usage_collector.runs"


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
    #: service accounts by id: their usage carries the service account as ``user_id``
    service_accounts: Mapping[str, str] = field(default_factory=dict)


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
    _json: bytes | None = field(default=None, repr=False, compare=False)

    def action(self) -> dict[str, Any]:
        """The NDJSON/bulk form: ``{"_id", "_index", "_source"}``."""
        return {"_id": self.id, "_index": self.index, "_source": self.source}

    @property
    def source_json(self) -> bytes:
        """``source`` serialized by :func:`dumps`, once: every sink writes these bytes (DuckDB's ``source``
        column, the NDJSON line, the bulk source line). Computed on first use, so ``source`` must not be
        changed after a sink has read it."""
        raw = self._json
        if raw is None:
            raw = self._json = dumps(self.source)
        return raw

    def action_json(self) -> bytes:
        """:meth:`action` serialized (the same bytes as ``dumps(self.action())``), reusing :attr:`source_json`."""
        return (
            b'{"_id":'
            + _str_json(self.id)
            + b',"_index":'
            + _str_json(self.index)
            + b',"_source":'
            + (self.source_json + b"}")
        )


_str_json = orjson.dumps


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # float's shortest repr gives back the same digits for up to 15 significant digits, which
        # covers every amount OpenAI reports (at most 6 decimals); sinks that can keep Decimal do.
        return float(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(obj: Any) -> bytes:
    """Serialize a document (Decimal-aware, compact, no key sorting)."""
    return orjson.dumps(obj, default=_json_default)


def _digest_id(key: str) -> str:
    """The ``_id`` of an identity key: url-safe base64 of its SHA-1, unpadded (27 characters)."""
    sha1 = _SHA1.copy()
    sha1.update(key.encode())
    # 20 bytes: 28 characters, the last one "="; "+/" -> "-_" (base64.urlsafe_b64encode, without its wrapper)
    return b2a_base64(sha1.digest(), newline=False)[:27].translate(_URLSAFE).decode()


#: Hash objects copied per use: a copy costs a tenth of building one (argument parsing, initialization).
_SHA1 = hashlib.sha1(usedforsecurity=False)
_BLAKE2B_8 = hashlib.blake2b(digest_size=8)
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _where(in_base: bool) -> str:
    return "base" if in_base else "own"


def _dim_text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return "\x00"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def measure_hash(values: Mapping[str, Any]) -> str:
    """Content hash of a row's measures and attributes, in catalogue order (16 hex chars).

    ``values`` must be filled in catalogue order (measures, then attributes), as :class:`Shaper` does, so the
    JSON needs no sorting. Decimals are normalized: ``"12.50"`` and ``12.5`` hash alike, a change of JSON
    type is not a revision.
    """
    blake2b = _BLAKE2B_8.copy()
    blake2b.update(orjson.dumps(values, default=_canon_default))
    return blake2b.hexdigest()


def _canon_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _canon_text(value)
    raise TypeError(f"cannot hash {type(value).__name__}")


def _canon_text(value: Decimal) -> str:
    """The text :func:`measure_hash` writes for a Decimal: ``format(value.normalize(), "f")``."""
    text = str(value)  # exact: sign, digits, exponent
    # Already canonical (what normalize() then "f" give) when it is plain digits (no exponent, no NaN or
    # Infinity), at most 28 characters (normalize() rounds nothing), and no trailing zero after a point (an
    # integer's zeros normalize() moves into the exponent, "f" writes back): most amounts and quantities.
    last = text[-1]
    if (
        len(text) <= 28
        and (last in _NONZERO or (last == "0" and "." not in text))
        and "E" not in text
        and "e" not in text
    ):
        return text
    return format(value.normalize(), "f")


def _canon(value: Any) -> Any:
    """``value`` as :func:`measure_hash` hashes it, for a value the generated row functions know may be a Decimal:
    a Decimal's canonical text (the JSON string its ``default`` would give), anything else unchanged (a Decimal
    subclass too: the ``default`` still sees it). Called in the row, it spares orjson a ``default`` call; the
    shortcut of :func:`_canon_text` applies."""
    return _canon_text(value) if type(value) is Decimal else value


_NONZERO = frozenset("123456789")


#: Names an unknown result field may have to be kept (it becomes part of a field path).
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _numbers(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric leaves of an unknown object, nested as they came (keys that are not field names dropped)."""
    out: dict[str, Any] = {}
    for key in sorted(obj):
        value = obj[key]
        if _FIELD_NAME.fullmatch(key) is None:
            continue
        if isinstance(value, Mapping):
            value = _numbers(value)
            if value:
                out[key] = value
        elif _is_number(value):
            out[key] = value
    return out


class Shaper:
    """Shapes the results of one (stream, target, width, group_by) into documents, fast.

    Everything that does not depend on the row is compiled once: the measures split by where they land
    (``openai.base``, ``openai.<stream>``, ``gen_ai.usage``), the ``_id`` key's fixed parts and each dimension's
    ``name=`` prefix, the data stream names; timestamps are formatted once per bucket. A row then costs a few
    dict comprehensions, one ``orjson.dumps`` + BLAKE2b for ``event.hash`` and one SHA-1 for the ``_id``.
    ``shape()`` is the one-row convenience form.

    A numeric result field the catalogue does not know is kept under ``openai.<stream>.<name>`` (and hashed, so
    its revisions are written); its name is added to :attr:`new_fields`. Unknown non-numeric fields are ignored.
    """

    def __init__(
        self,
        spec: StreamSpec,
        target: Target,
        width: str,
        group_by: tuple[str, ...],
        names: Names | None = None,
        price: Pricer | None = None,
    ) -> None:
        self.spec = spec
        self.width = width
        # the collector shapes without names and adds them before writing (collector._NamesLater)
        self.names = names
        self.dataset = f"openai.{spec.name}"
        self.index = target.data_stream(spec.name)
        self._stream = spec.name
        self._object_type = spec.object_type
        self._costs = spec.is_costs
        self._org = {"id": target.org_id} if target.org_name is None else {"id": target.org_id, "name": target.org_name}
        self._ds = {"type": target.data_stream_type, "dataset": self.dataset, "namespace": target.namespace}
        self._id_prefix = "\x1f".join([target.org_id, spec.name, width])
        self._group_key = ",".join(sorted(group_by))
        # dims: (name, goes under openai.base) in the order of the API; id parts sorted by name
        self._dims = [(d, _in_base(spec, d)) for d in spec.group_by]
        grouped = set(group_by)
        # an optional dimension is part of the identity only when requested (older _ids stay as they were)
        id_dims = sorted(d for d, _ in self._dims if d in grouped or not spec.optional(d))
        self._id_names = tuple(id_dims)
        self._id_prefixes = tuple(d + "=" for d in id_dims)
        self._id_head = self._id_prefix + "\x1f"
        self._id_group = "\x1f" + self._group_key + ("\x1f" if id_dims else "")
        self._known = frozenset(
            {"object", *spec.group_by, *(m.name.split(".")[0] for m in spec.measures)}
            | {a.split(".")[0] for a in spec.attributes}
        )
        #: unknown numeric fields seen (kept) and unknown fields that could not be kept (name not a field name)
        self.new_fields: set[str] = set()
        self.skipped_fields: set[str] = set()
        self._price = price
        self._unpriced = [0]  # see unpriced
        # the general row function, compiled when a row first needs it: rows of the shapes seen so far all take
        # a fast function (a no-op run compiled twelve general functions it never called, P3)
        self._row: Callable[[int, str, str, Mapping[str, Any]], Document] = self._compile_row
        # the fast row function of the last row shape seen, and every shape compiled so far (see _fast_row)
        self._fast: FastRow = _no_fast
        self._fast_by_shape: dict[tuple[Any, ...], FastRow | None] = {}
        self._recent: list[FastRow] = []  # the fast functions used last, tried before a row's shape is computed

    def bucket(self, start: int, end: int, results: list[Mapping[str, Any]]) -> list[Document]:
        """Documents of one bucket's results. Callers pause the cyclic garbage collector around their buckets
        (:data:`paused_gc`; the collector per page): pausing it for each bucket here cost 0.2 us a document at 1m
        (3.4 documents to a bucket)."""
        ts, te = _iso(start), _iso(end)
        fast = self._fast
        out = []
        for r in results:
            doc = fast(start, ts, te, r)
            if doc is None:
                doc = self._other_shape(start, ts, te, r)
                fast = self._fast
            out.append(doc)
        return out

    def row(self, start: int, ts: str, te: str, result: Mapping[str, Any]) -> Document:
        """The document of one result row (``ts``/``te``: the bucket's start and end, formatted)."""
        doc = self._fast(start, ts, te, result)
        return doc if doc is not None else self._other_shape(start, ts, te, result)

    def _other_shape(self, start: int, ts: str, te: str, result: Mapping[str, Any]) -> Document:
        """A row the current fast function does not take: the fast function of its shape (compiled on first
        sight), or the general one when its shape has none."""
        for recent in self._recent:  # rows of a few shapes interleave (models that report different measures)
            if recent is not self._fast:
                doc = recent(start, ts, te, result)
                if doc is not None:
                    self._fast = recent
                    return doc
        shape = _shape_of(result)
        if shape in self._fast_by_shape:
            fast = self._fast_by_shape[shape]
        else:
            fast = self._compile_fast(result) if len(self._fast_by_shape) < _MAX_SHAPES else None
            self._fast_by_shape[shape] = fast
        if fast is not None:
            self._fast = fast
            if fast not in self._recent:
                self._recent = [fast, *self._recent[:3]]
            doc = fast(start, ts, te, result)
            if doc is not None:
                return doc
        return self._row(start, ts, te, result)

    def _compile_row(self, start: int, ts: str, te: str, result: Mapping[str, Any]) -> Document:
        """The general row function's first call: compile it (:meth:`_compile`), keep it, and call it."""
        self._row = self._compile()
        return self._row(start, ts, te, result)

    def _compile(self) -> Callable[[int, str, str, Mapping[str, Any]], Document]:
        """The row function of this shaper, generated once from the catalogue: straight-line code, one local per
        field, no loop over the catalogue and no path splitting per value.

        The generated code only ever names catalogue fields (``repr`` literals) and this shaper's constants; the
        document it builds is the one the catalogue rule (``StreamSpec.field_name``) describes: dimensions and
        measures under ``openai.base`` or ``openai.<stream>`` in API order, ``event.hash`` over the measures and
        attributes in catalogue order (then kept unknown fields, sorted), ``gen_ai.*``, names, the ``_id``.
        """
        spec = self.spec
        lines = [
            "def row(start, ts, te, result):",
            "    get = result.get",
            "    base = {'usage_object_type': get('object') or OBJECT, 'start_time': ts, 'end_time': te,"
            " 'bucket_width': WIDTH}",
            "    own = {}",
            "    hashed = {}",
            "    usage = {}",
        ]
        var: dict[str, str] = {}
        for n, (name, in_base) in enumerate(self._dims):
            var[name] = v = f"d{n}"
            put = f"        {_where(in_base)}[{name!r}] = {v}"
            lines += [f"    {v} = get({name!r})", f"    if {v} is not None:", put]
        if self._costs:
            lines += ["    amount = get('amount') or EMPTY"]
        fields: list[tuple[str, bool, str | None]] = [(m.name, True, m.gen_ai) for m in spec.measures]
        fields += [(a, False, None) for a in spec.attributes]
        for name, is_measure, gen in fields:
            get = f"amount.get({name.split('.', 1)[1]!r})" if "." in name else f"get({name!r})"
            lines += [f"    v = {get}", "    if v is not None:", f"        hashed[{name!r}] = v"]
            if is_measure and _in_base(spec, name):
                lines.append(f"        base[{name!r}] = v")
            elif "." in name:
                head, leaf = name.split(".", 1)
                lines.append(f"        own.setdefault({head!r}, {{}})[{leaf!r}] = v")
            else:
                lines.append(f"        own[{name!r}] = v")
            if gen is not None:
                parent, _, leaf = gen.removeprefix("gen_ai.usage.").rpartition(".")
                target = f"usage.setdefault({parent!r}, {{}})" if parent else "usage"
                lines.append(f"        {target}[{leaf!r}] = v")
        model = var.get("model")
        lines += [
            # most rows hold no unknown field but the text organization_id: one set test, no allocation
            "    if not KNOWN_TEXT.issuperset(result) or type(get('organization_id', '')) is not str:",
            "        extra = result.keys() - KNOWN",
            "        if extra:",
            "            keep_extra(result, sorted(extra), own, hashed)",
            "    digest = measure_hash(hashed)",
            *self._price_lines("    ", var.get("model")),
            "    doc = {'@timestamp': ts, 'ecs': ECS, 'event': {'kind': 'metric', 'dataset': DATASET,"
            " 'module': 'openai', 'hash': digest}, 'data_stream': DS, 'organization': ORG,"
            " 'openai': {'base': base, STREAM: own} if own else {'base': base}}",
            f"    if usage{f' or {model} is not None' if model else ''}:",
            "        gen_ai = {}",
            "        if usage:",
            "            gen_ai['usage'] = usage",
        ]
        if model:
            lines += [f"        if {model} is not None:", f"            gen_ai['request'] = {{'model': {model}}}"]
        lines += ["        gen_ai['provider'] = PROVIDER", "        doc['gen_ai'] = gen_ai"]
        if self.names is not None:
            lines.append("    add_names(base, NAMES)")
        # identity: org, stream, width, bucket start, group_by set, every dimension value (sorted by name)
        pieces: list[tuple[bool, str]] = [(True, "ID_HEAD"), (True, "start"), (True, "ID_GROUP")]
        for n, (name, prefix) in enumerate(zip(self._id_names, self._id_prefixes, strict=True)):
            pieces += [(False, "\x1f" + prefix if n else prefix), (True, f"_t({var[name]})")]
        lines += [
            f"    key = {_joined(pieces)}",
            "    return Document(digest_id(key), INDEX, STREAM, start, digest, doc)",
        ]
        env: dict[str, Any] = {
            **self._env(),
            "EMPTY": {},
            "KNOWN": self._known,
            "KNOWN_TEXT": self._known | _TEXT_FIELDS,
            "keep_extra": self._keep_extra,
            "_t": _dim_text,
        }
        exec(_code("\n".join(lines), f"<Shaper {spec.name} {self.width}>"), env)
        fn: Callable[[int, str, str, Mapping[str, Any]], Document] = env["row"]
        return fn

    def _env(self) -> dict[str, Any]:
        """The names both generated row functions use: this shaper's constants and the helpers they call."""
        env: dict[str, Any] = {
            "OBJECT": self._object_type,
            "WIDTH": self.width,
            "measure_hash": measure_hash,
            "CANON": _canon,
            "ECS": _ECS,
            "DATASET": self.dataset,
            "DS": self._ds,
            "ORG": self._org,
            "STREAM": self._stream,
            "PROVIDER": _PROVIDER,
            "add_names": _add_names,
            "NAMES": self.names,
            "ID_HEAD": self._id_head,
            "ID_GROUP": self._id_group,
            "Document": Document,
            "digest_id": _digest_id,
            "INDEX": self.index,
            "BLAKE2B_8": _BLAKE2B_8.copy,
            "DUMPS": orjson.dumps,
            "CANON_DEFAULT": _canon_default,
            "CANON_TEXT": _canon_text,
            "DECIMAL": Decimal,
        }
        if self._price is not None:
            env.update(PRICE=self._price, UNPRICED=self._unpriced)
        return env

    def _price_lines(self, indent: str, model: str | None) -> list[str]:
        """Generated lines that set ``openai.<stream>.estimated_cost`` (the ``price`` hook), exactly as
        :func:`usage_collector.estimate.annotate` would after shaping: the cost last in ``own``, and ``event.hash``
        over the measures' hash and the cost."""
        if self._price is None:
            return []
        i = indent
        return [
            f"{i}cost = PRICE(own, {model or 'None'}, ts)",
            f"{i}if cost is None:",
            f"{i}    UNPRICED[0] += 1",
            f"{i}else:",
            f"{i}    own['estimated_cost'] = cost",
            # measure_hash and _canon spelled out (two calls fewer)
            f"{i}    h = BLAKE2B_8()",
            f"{i}    h.update(DUMPS({{'measures': digest, 'estimated_cost': CANON_TEXT(cost) if type(cost) is DECIMAL"
            " else cost}, default=CANON_DEFAULT))",
            f"{i}    digest = h.hexdigest()",
        ]

    @property
    def unpriced(self) -> int:
        """Usage documents shaped without an estimated cost (the ``price`` hook said ``None``)."""
        return self._unpriced[0]

    def _compile_fast(self, sample: Mapping[str, Any]) -> FastRow | None:
        """The row function of rows shaped like ``sample``: the same keys, the same keys ``null``, dimensions of
        the same types, no unknown field but text ones. It reads each field once by subscript and builds every
        dict as one literal (no ``get``/``None`` test per field: the shape says which fields are there); a row
        of another shape returns ``None`` from it at the first test. ``None`` when rows of this shape need the
        general function (an unknown numeric field, a dimension of an unexpected type, a ``null`` inside
        ``amount``). Its documents equal the general function's, key order included
        (``tests/test_documents.py``)."""
        spec = self.spec
        keys = list(sample)
        present = [k for k in keys if sample[k] is not None]
        nones = [k for k in keys if sample[k] is None]
        unknown = set(keys) - self._known
        if unknown - _TEXT_FIELDS or any(type(sample[k]) is not str for k in unknown if k in present):
            return None
        var = {k: f"v{n}" for n, k in enumerate(present)}
        checks = [f"type({var[k]}) is not str" for k in unknown if k in present]
        dim_text: dict[str, str] = {}
        for name, _ in self._dims:
            if name not in var:
                continue
            kind = type(sample[name])
            if kind is str:
                dim_text[name] = var[name]
            elif kind is bool:
                dim_text[name] = f"('true' if {var[name]} else 'false')"
            else:
                return None
            checks.append(f"type({var[name]}) is not {kind.__name__}")
        leaf_var: dict[str, str] = {}
        amount_keys: list[str] = []
        if self._costs and "amount" in var:
            amount = sample["amount"]
            if type(amount) is not dict or any(v is None for v in amount.values()):
                return None
            amount_keys = list(amount)
            leaf_var = {k: f"a{n}" for n, k in enumerate(amount_keys)}
        lines = [
            "def fast(start, ts, te, result):",
            # the same keys: as many, and each one there (a missing one raises KeyError); no set built or compared
            f"    if type(result) is not dict or len(result) != {len(keys)}:",
            "        return None",
            "    try:",
            *(f"        {var[k]} = result[{k!r}]" for k in present),
            *(f"        result[{k!r}]" for k in nones),
        ]
        if amount_keys:
            lines += [
                f"        if type({var['amount']}) is not dict or len({var['amount']}) != {len(amount_keys)}:",
                "            return None",
                *(f"        {leaf_var[k]} = {var['amount']}[{k!r}]" for k in amount_keys),
            ]
        lines += ["    except KeyError:", "        return None"]
        # each value not null (an `is None` test per value: no comparison call), the null ones null, types
        typed = {var[k] for k in dim_text} | {var[k] for k in unknown if k in present}
        tests = [f"{v} is None" for v in [*var.values(), *leaf_var.values()] if v not in typed]
        tests += [f"result[{k!r}] is not None" for k in nones] + checks
        if tests:
            lines += [f"    if {' or '.join(tests)}:", "        return None"]
        obj = f"({var['object']} or OBJECT)" if "object" in var else "OBJECT"
        base: list[tuple[str, Any]] = [
            ("usage_object_type", obj),
            ("start_time", "ts"),
            ("end_time", "te"),
            ("bucket_width", "WIDTH"),
        ]
        own: list[tuple[str, Any]] = []
        for name, in_base in self._dims:
            if name in var:
                (base if in_base else own).append((name, var[name]))
        hashed: list[tuple[str, Any]] = []
        usage: list[tuple[str, Any]] = []
        decimals = {m.name for m in spec.measures if m.value_type == "decimal"}
        fields: list[tuple[str, bool, str | None]] = [(m.name, True, m.gen_ai) for m in spec.measures]
        fields += [(a, False, None) for a in spec.attributes]
        for name, is_measure, gen in fields:
            if "." in name:
                head, leaf = name.split(".", 1)
                if head != "amount" or leaf not in leaf_var:
                    continue
                v = leaf_var[leaf]
            elif name in var:
                v = var[name]
            else:
                continue
            # a Decimal measure hashed as its canonical text, rendered here (the same JSON string)
            hashed.append((name, f"CANON({v})" if name in decimals else v))
            if is_measure and _in_base(spec, name):
                base.append((name, v))
            elif "." in name:
                _nested(own, head).append((leaf, v))
            else:
                own.append((name, v))
            if gen is not None:
                parent, _, leaf = gen.removeprefix("gen_ai.usage.").rpartition(".")
                (_nested(usage, parent) if parent else usage).append((leaf, v))
        model = var.get("model") if any(d == "model" for d, _ in self._dims) else None
        lines += [
            f"    base = {_literal(base)}",
            f"    own = {_literal(own)}",
            # measure_hash and digest_id spelled out here (one call fewer each)
            "    h = BLAKE2B_8()",
            f"    h.update(DUMPS({_literal(hashed)}, default=CANON_DEFAULT))",
            "    digest = h.hexdigest()",
            *self._price_lines("    ", model),
            "    doc = {'@timestamp': ts, 'ecs': ECS, 'event': {'kind': 'metric', 'dataset': DATASET,"
            " 'module': 'openai', 'hash': digest}, 'data_stream': DS, 'organization': ORG,"
            " 'openai': {'base': base, STREAM: own} if own else {'base': base}}",
        ]
        gen_ai: list[tuple[str, Any]] = []
        if usage:
            gen_ai.append(("usage", usage))
        if model is not None:
            gen_ai.append(("request", [("model", model)]))
        if gen_ai:
            gen_ai.append(("provider", "PROVIDER"))
            lines.append(f"    doc['gen_ai'] = {_literal(gen_ai)}")
        if self.names is not None:
            lines.append("    add_names(base, NAMES)")
        # the _id key: the general function's, with absent dimensions' text ("\x00") folded into the constants
        pieces = [(True, "ID_HEAD"), (True, "start"), (True, "ID_GROUP")]
        for n, (name, prefix) in enumerate(zip(self._id_names, self._id_prefixes, strict=True)):
            sep = "\x1f" if n else ""
            if name in dim_text:
                pieces += [(False, sep + prefix), (True, dim_text[name])]
            else:
                pieces.append((False, sep + prefix + "\x00"))
        lines += [
            "    h = SHA1()",
            f"    h.update(({_joined(pieces)}).encode())",
            "    return Document(B64(h.digest(), newline=False)[:27].translate(URLSAFE).decode(), INDEX, STREAM, start,"
            " digest, doc)",
        ]
        env = self._env()
        env.update(SHA1=_SHA1.copy, B64=b2a_base64, URLSAFE=_URLSAFE)
        exec(_code("\n".join(lines), f"<Shaper {spec.name} {self.width} fast>"), env)
        fn: FastRow = env["fast"]
        return fn

    def _keep_extra(
        self, result: Mapping[str, Any], names: list[str], own: dict[str, Any], hashed: dict[str, Any]
    ) -> None:
        for name in names:
            value = result[name]
            if isinstance(value, Mapping):
                value = _numbers(value)  # an object of numbers (``..._details``): its numeric leaves
                if not value:
                    continue
            elif not _is_number(value):
                continue  # organization_id and other unknown text: not a measure
            if _FIELD_NAME.fullmatch(name) is None:
                self.skipped_fields.add(name)
                continue
            own[name] = value
            hashed[name] = value
            self.new_fields.add(name)


class _PausedGC:
    """See :data:`paused_gc`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


#: ``with paused_gc:`` the cyclic garbage collector paused while documents are built and written.
#:
#: A page's or a window's documents are thousands of small dicts, none in a reference cycle: the collector would
#: scan them over and over as they pile up and free nothing (``bench/p8_cpu.py``: 20 % of the CPU of a 1m
#: backfill). Reference counting still frees everything; a cycle made meanwhile waits for the next collection,
#: so it is not held across an HTTP request (a response in a cycle would keep its body: +50 MB peak in a
#: 120-day backfill, ``bench/p4_memory.py``). Nests and spans threads: the collector is paused from the first
#: entry to the last exit, and left as it was found (disabled stays disabled).
paused_gc = _PausedGC()


def _nested(items: list[tuple[str, Any]], key: str) -> list[tuple[str, Any]]:
    """The items of the nested object ``key`` in ``items`` (added, empty, where it first appears)."""
    for k, v in items:
        if k == key and isinstance(v, list):
            return v
    inner: list[tuple[str, Any]] = []
    items.append((key, inner))
    return inner


def _code(source: str, filename: str) -> CodeType:
    """``source`` compiled, once per process: the generated source names this shaper's constants (in its globals,
    given to ``exec``), never their values, so every shaper of a stream and row shape shares it; the collector
    makes a shaper per window, and compiling is what a short window's rows would otherwise pay most for."""
    key = (source, filename)
    code = _CODE.get(key)
    if code is None:
        if len(_CODE) >= 256:
            _CODE.clear()
        code = _CODE[key] = compile(source, filename, "exec")
    return code


_CODE: dict[tuple[str, str], CodeType] = {}


def _joined(pieces: list[tuple[bool, str]]) -> str:
    """Python source of the text made of ``pieces``, each ``(is an expression, its source or the text)``: adjacent
    literals and f-strings, which compile to one join (no intermediate string per ``+``). An expression's value
    must be text or an ``int`` (formatted as ``str()`` does); its source must not contain a double quote."""
    return " ".join(f'f"{{{text}}}"' if is_expr else repr(text) for is_expr, text in pieces)


def _literal(items: list[tuple[str, Any]]) -> str:
    """Python source of a dict literal: keys as ``repr``, values as expressions or nested item lists."""
    return "{" + ", ".join(f"{k!r}: {_literal(v) if isinstance(v, list) else v}" for k, v in items) + "}"


def _shape_of(result: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a fast row function depends on: the keys in order, which are ``null``, and the value types (flat: the
    keys, then the types; the fewest calls)."""
    return (*result, *map(type, result.values()))


def _no_fast(start: int, ts: str, te: str, result: Mapping[str, Any]) -> Document | None:
    return None


#: Row shapes compiled per shaper at most (a page whose rows all differ falls back to the general function).
_MAX_SHAPES = 64

_ISO: dict[int, str] = {}
_DAYS: dict[int, str] = {}


def _iso(ts: int) -> str:
    """:func:`~usage_collector.clock.iso` of a bucket edge, remembered (a 1-minute page has 1,440 buckets). An
    ``int`` edge is its day's text (:func:`~usage_collector.clock.iso`'s, remembered) and the time of day, formatted
    here: a third of the CPU of formatting it all (0.7 vs 2.2 us; a 1m backfill's documents, 3.4 to a bucket)."""
    text = _ISO.get(ts)
    if text is None:
        if len(_ISO) >= 4096:  # a 1-minute page has 1,441 edges; a long backfill must not keep them all
            _ISO.clear()
            _DAYS.clear()
        if type(ts) is int:
            day, sec = divmod(ts, 86400)
            date = _DAYS.get(day)
            if date is None:
                date = _DAYS[day] = iso(ts - sec)[:11]  # "YYYY-MM-DDT"
            hour, rest = divmod(sec, 3600)
            text = _ISO[ts] = f"{date}{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"
        else:
            text = _ISO[ts] = iso(ts)
    return text


#: Display names, or a function that returns them (called when they are first needed: a stream's first write, a
#: limits document), or none.
NamesSource = Names | Callable[[], Names | None] | None

#: A fast row function (:meth:`Shaper._compile_fast`): the document, or ``None`` for a row of another shape.
FastRow = Callable[[int, str, str, Mapping[str, Any]], "Document | None"]

#: The ``price`` hook of a :class:`Shaper`: ``(openai.<stream> object, model, bucket start formatted)`` -> the
#: estimated cost (exact), or ``None`` when unpriced (:meth:`usage_collector.estimate.PriceBook.pricer`).
Pricer = Callable[[Mapping[str, Any], Any, str], Decimal | None]


_ECS = {"version": ECS_VERSION}  # shared, never mutated
#: Unknown fields every result carries as text (never a measure); a row whose only unknown field is one of these,
#: as text, skips the unknown-field pass.
_TEXT_FIELDS = frozenset({"organization_id"})
_PROVIDER = {"name": "openai"}


def _in_base(spec: StreamSpec, api_field: str) -> bool:
    """Whether ``api_field`` is written under ``openai.base`` (the catalogue's one rule, ``field_name``)."""
    return spec.field_name(api_field).startswith("openai.base.")


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
    """Turn one API result row into a :class:`Document` (see :class:`Shaper` for many rows).

    The ``_id`` is stable across runs, revisions and collector versions:

    >>> from .catalogue import STREAMS
    >>> row = {"model": "gpt-4o", "input_tokens": 1, "output_tokens": 2, "num_model_requests": 1}
    >>> shape(STREAMS["completions"], Target("org-1"), "1h", 1730419200, 1730422800, ("model",), row).id
    'u-VuSS2pbm_XfgPZwxjmKXpZ38c'

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
    return Shaper(spec, target, width, group_by, names).row(start, iso(start), iso(end), result)


def _add_names(base: dict[str, Any], names: Names) -> None:
    for key, table, out in (
        ("project_id", names.projects, "project_name"),
        ("api_key_id", names.api_keys, "api_key_name"),
        ("user_id", names.users, "user_email"),
        ("user_id", names.service_accounts, "service_account_name"),
    ):
        ident = base.get(key)
        if ident is not None and ident in table:
            base[out] = table[ident]


def run_document(
    *,
    run_id: str,
    org_id: str,
    stream: str,
    bucket_width: str,
    mode: str,
    window: tuple[int, int],
    windows: int,
    requests: int,
    retries: int,
    created: int,
    updated: int,
    unchanged: int,
    position: int | None,
    started_at: float,
    finished_at: float,
    duration: float,
    final_edge: int,
    error: str | None,
    deleted: int = 0,
    new_fields: Sequence[str] = (),
    dropped_dimensions: Sequence[str] = (),
    group_by: Sequence[str] | None = None,
    unavailable: str | None = None,
    unpriced: int | None = None,
) -> dict[str, Any]:
    """The run document of one stream in one cycle or backfill (``event.dataset`` :data:`RUNS_DATASET`).

    ``usage-collector status`` and the Collector health dashboard read it; its mapping is
    ``usage_collector.elastic.objects`` ``runs_fields``.

    ``new_fields`` counts the unknown numeric result fields kept in this run (``new_field_names`` names them);
    ``dropped_dimensions`` lists the optional dimensions the API refused for this stream; ``unavailable`` is the
    reason the endpoint is unavailable to the organization (404), when it is (the outcome is then ``unknown``);
    ``unpriced`` counts the usage documents written without an estimated cost (:mod:`usage_collector.estimate`).
    """
    run: dict[str, Any] = {
        "@timestamp": iso(started_at),
        "event": {
            "kind": "event",
            "dataset": RUNS_DATASET,
            "outcome": "success" if error is None else "failure",
            "duration": int(duration * 1e9),
        },
        "organization": {"id": org_id},
        "usage_collector": {
            "run_id": run_id,
            "mode": mode,
            "stream": stream,
            "bucket_width": bucket_width,
            "window": {"start": iso(window[0]), "end": iso(window[1])},
            "windows": windows,
            "requests": requests,
            "retries": retries,
            "documents": {"created": created, "updated": updated, "unchanged": unchanged, "deleted": deleted},
            "position": iso(position) if position is not None else None,
            "lag_seconds": int(finished_at - position) if position is not None else None,
            "final_edge": iso(final_edge),
            "new_fields": len(new_fields),
        },
    }
    uc = run["usage_collector"]
    if new_fields:
        uc["new_field_names"] = sorted(new_fields)
    if dropped_dimensions:
        uc["dropped_dimensions"] = sorted(dropped_dimensions)
    if group_by is not None:
        uc["group_by"] = list(group_by)
    if unavailable is not None:
        uc["unavailable"] = unavailable
        run["event"]["outcome"] = "unknown"
    if unpriced is not None:
        uc["unpriced"] = unpriced
    if error is not None:
        run["error"] = {"message": error}
    return run
