"""Estimated against billed cost per closed UTC day, and the bill allocated to users and models.

Two kinds of documents, both rebuilt from what the sink holds (so a restated bill or restated usage is picked up
the next time its day is reconciled):

**Reconciliation** (``<type>-openai.reconciliation-<namespace>``): one document per closed day x project x model.

* *estimated*: the sum of the estimates of the day's usage documents (:func:`usage_collector.estimate
  .usage_estimate`, equal in value to :func:`~usage_collector.estimate.estimate_source`: recomputed exactly from
  the stored measures with the price table of the day, the same computation that set ``estimated_cost`` when they
  were collected; JSON may have carried that field as a double);
* *billed*: the sum of the day's costs documents whose line item names that model (``"gpt-4o-2024-08-06, input"``
  parsed by :func:`usage_collector.pricing.parse_line_item`, or one of :data:`LINE_ITEM_PATTERNS`);
* ``difference`` = billed - estimated; ``share_explained`` = estimated / billed (1 means usage explains the bill
  exactly, above 1 it exceeds it; rounded to 1e-6, ``None`` when nothing was billed).

Rows are keyed by ``openai.base.model`` and ``openai.reconciliation.item``: a model row has a model and no item;
tools and storage, which are billed per project and not per model, have the unit as item (``web_search_calls``;
the usage documents' own model is not used there); a line item that cannot be parsed is kept as its own row, its
raw text as item, with nothing estimated against it (Scale Tier units, for example, which the simulator and
OpenAI bill to the organization, not to a project, and whose token usage is left unpriced).

**Allocation** (``<type>-openai.allocation-<namespace>``): each billed line (day x project x line item x API key,
and x user or API source when the costs stream was grouped by them) split over the users and models whose usage
that day matches it: same project, key (and user, API source) when the line names them, same model and tier,
weighted by the quantity of the line's unit (``method`` ``usage_share:<unit>``); a line no usage matches is kept
whole (``method`` ``unallocated``). The parts are rounded to 1e-6 USD (or finer when the bill is) by the largest
remainder method, so they add up to the billed amount exactly.

Each document's ``_id`` is a hash of its identity (organization, day, project, model, item; for allocation the
line and the part's user and model), and every run rewrites the days it reconciles in full: rows that changed are
replaced, rows that vanished are deleted (the sinks' ``replaces``, as for re-read buckets), unchanged rows write
nothing.

When: :func:`after_cycle`, called once per organization at the end of
:meth:`usage_collector.collector.Collector._each_org`, reconciles the closed days of the costs restatement window
whose documents the cycle changed (a scheduled cycle; every closed day of the window while the last reconciliation's
failure stands, :data:`PENDING_STREAM`) or the backfill's days (weeks of them already during a concurrent backfill,
:class:`Ahead`), when the cycle wrote or deleted anything, reading one day at a time
(``Sink.iter_documents(stream, start=, end=)``) and writing a week at a time, so a year's backfill holds one day's
usage and a week's reconciliation documents.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from .catalogue import BUCKET_WIDTHS, STREAMS
from .clock import iso
from .documents import ECS_VERSION, Document, Target, _digest_id, measure_hash
from .errors import CollectorError
from .estimate import USAGE_STREAMS, PriceBook, day_of, shared_book, usage_estimate
from .pricing import PriceTable, normalise_model, parse_line_item
from .sinks.base import BucketSet, Checkpoint, Sink, WriteStats

if TYPE_CHECKING:
    from .config import OrgConfig, Settings
    from .planning import BackfillRange

log = logging.getLogger(__name__)

__all__ = [
    "ALLOCATION_STREAM",
    "DERIVED_STREAMS",
    "LINE_ITEM_PATTERNS",
    "MODEL_FREE_UNITS",
    "QUANTUM",
    "RECONCILIATION_STREAM",
    "Ahead",
    "Billed",
    "Outcome",
    "after_cycle",
    "allocate",
    "classify_line_item",
    "closed_days",
    "reconcile",
    "reconcile_days",
]

#: The pseudo-stream names (``event.dataset`` ``openai.<name>``) of the documents written here.
RECONCILIATION_STREAM = "reconciliation"
ALLOCATION_STREAM = "allocation"
DERIVED_STREAMS: tuple[str, ...] = (RECONCILIATION_STREAM, ALLOCATION_STREAM)
#: The coarsest unit allocated parts are rounded to (finer when a billed amount has more decimals).
QUANTUM = Decimal("0.000001")
#: Units billed per project, not per model: their rows and allocation weights ignore the usage's model.
MODEL_FREE_UNITS = frozenset(
    {"web_search_calls", "file_search_calls", "code_interpreter_sessions", "vector_storage_gb_day"}
)
#: Usage stream of each model-free unit.
_TOOL_STREAMS = {
    "web_search_calls": "web_search_calls",
    "file_search_calls": "file_search_calls",
    "code_interpreter_sessions": "code_interpreter_sessions",
    "vector_stores": "vector_storage_gb_day",
}

#: Line items that :func:`~usage_collector.pricing.parse_line_item` leaves unparsed but whose unit is known: the
#: strings the simulator and third-party mocks use (OpenAI's live strings are unknown, openai-usage-api.md §6;
#: anything else stays unparsed and is its own reconciliation row). ``(pattern, unit)``; a ``model`` group names
#: the model, a ``size`` group makes the unit ``image:<size>``.
LINE_ITEM_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?P<model>[^,]+), (?P<size>\d+x\d+)$"), "image"),
    (re.compile(r"^(?P<model>[^,]+), characters$"), "speech_characters"),
    (re.compile(r"^(?P<model>[^,]+), transcription$"), "transcription_seconds"),
    (re.compile(r"^web search tool calls$"), "web_search_calls"),
    (re.compile(r"^file search tool calls$"), "file_search_calls"),
    (re.compile(r"^code interpreter sessions$"), "code_interpreter_sessions"),
    (re.compile(r"^vector store storage$"), "vector_storage_gb_day"),
)

_DAY = 86400
#: ``event.dataset`` -> stream, for the documents reconciliation reads (usage and costs).
_STREAM_OF = {f"openai.{s}": s for s in (*USAGE_STREAMS, "costs")}
#: Days :func:`after_cycle` reconciles and writes at a time (each read one day at a time by :func:`reconcile_days`):
#: a week's rows and allocated parts, one write of each kind.
DAYS_PER_WRITE = 7
#: Decimal precision of sums: estimates have up to ~40 significant digits (storage: bytes / 2**30)
_PREC = 120
_Q6 = Decimal("0.000001")


@dataclass(frozen=True)
class Billed:
    """A line item, classified: ``model`` (normalised) and ``unit`` when known, ``tier`` ``None`` for standard."""

    raw: str | None
    model: str | None
    unit: str | None
    tier: str | None = None

    @property
    def row(self) -> tuple[str | None, str | None]:
        """``(model, item)`` of its reconciliation row."""
        if self.unit in MODEL_FREE_UNITS:
            return None, self.unit
        if self.model is not None:
            return self.model, None
        return None, self.raw or "(no line item)"


def classify_line_item(text: str | None) -> Billed:
    """Model, unit and tier of a Costs API line item.

    >>> classify_line_item("gpt-4o-2024-08-06, batch input")
    Billed(raw='gpt-4o-2024-08-06, batch input', model='gpt-4o-2024-08-06', unit='input', tier='batch')
    >>> classify_line_item("dall-e-3, 1024x1792").unit
    'image:1024x1792'
    >>> classify_line_item("scale tier units, gpt-4o-mini").row
    (None, 'scale tier units, gpt-4o-mini')
    """
    item = parse_line_item(text)
    if item.parsed and item.model is not None:
        return Billed(text, normalise_model(item.model), item.unit, item.tier)
    for pattern, unit in LINE_ITEM_PATTERNS:
        m = pattern.match(text or "")
        if m is None:
            continue
        groups = m.groupdict()
        model = normalise_model(groups["model"]) if groups.get("model") else None
        return Billed(text, model, f"image:{groups['size']}" if unit == "image" else unit)
    return Billed(text, None, None)


# --- reading the sink ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Usage:
    """One usage document's contribution: its row, estimate, and allocation weights."""

    day: date
    project: str | None
    key: str | None
    user: str | None
    api_source: str | None
    model: str | None
    row: tuple[str | None, str | None]
    cost: Decimal | None
    quantities: dict[tuple[str, str | None], Decimal]


@dataclass
class _Line:
    day: date
    project: str | None
    key: str | None
    user: str | None
    api_source: str | None
    billed: Billed
    amount: Decimal
    currency: str


def _decimal(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value)) if not isinstance(value, Decimal) else value


def _read(
    sink: Sink,
    org_id: str,
    days: Sequence[date],
    widths: Mapping[str, str],
    book: PriceBook,
    names: dict[str, dict[str, str]],
) -> tuple[list[_Usage], list[_Line]]:
    """The usage (one width per stream and day: the configured one when present, else the widest) and the bill."""
    wanted = set(days)
    start, end = _start(min(wanted)), _start(max(wanted)) + _DAY
    # one read of the days for every stream (a query or scan each, not one per stream), split by dataset; each
    # usage document's contribution is taken as it is read (of every width: which one counts is known only at
    # the end), so what is held is contributions, not documents
    by_stream: dict[str, dict[tuple[date, str], list[_Usage]]] = {s: defaultdict(list) for s in USAGE_STREAMS}
    tables: dict[date, PriceTable | None] = {}
    bill: list[tuple[date, Mapping[str, Any]]] = []
    for doc in sink.iter_documents(None, start=start, end=end):
        src = doc["_source"]
        stream = _STREAM_OF.get(src.get("event", {}).get("dataset", ""))
        if stream is None or src.get("organization", {}).get("id") != org_id:
            continue
        day = day_of(src)
        if day not in wanted:
            continue
        if stream == "costs":
            bill.append((day, src))
            continue
        if day in tables:
            table = tables[day]
        else:
            table = tables[day] = book.table(day)
        openai = src["openai"]
        base = openai["base"]
        by_stream[stream][(day, base.get("bucket_width", "1d"))].append(
            _usage(stream, day, base, openai.get(stream, {}), table)
        )
        _names(base, names)
    usage: list[_Usage] = []
    for stream in USAGE_STREAMS:
        by_width = by_stream[stream]
        order = [widths.get(stream), *reversed(BUCKET_WIDTHS)]
        for day in wanted:
            width = next((w for w in order if w is not None and (day, w) in by_width), None)
            if width is not None:
                usage += by_width[(day, width)]
    lines: list[_Line] = []
    for day, src in bill:
        base, own = src["openai"]["base"], src["openai"].get("costs", {})
        _names(base, names)  # after the usage's: the bill's names win, as they always have
        amount = own.get("amount", {})
        lines.append(
            _Line(
                day,
                base.get("project_id"),
                base.get("api_key_id"),
                base.get("user_id"),
                own.get("api_source"),
                classify_line_item(own.get("line_item")),
                _decimal(amount.get("value")),
                str(amount.get("currency") or "usd"),
            )
        )
    return usage, lines


#: ``(identifier, its display name)`` fields of ``openai.base``
_NAME_FIELDS = (("project_id", "project_name"), ("api_key_id", "api_key_name"), ("user_id", "user_email"))


def _names(base: Mapping[str, Any], names: dict[str, dict[str, str]]) -> None:
    for ident, name in _NAME_FIELDS:
        value = base.get(ident)
        if value is not None:
            text = base.get(name)
            if text:
                names[ident][value] = text


def _usage(stream: str, day: date, base: Mapping[str, Any], own: Mapping[str, Any], table: PriceTable | None) -> _Usage:
    model = base.get("model")
    cost, quantities = usage_estimate(stream, own, model, base.get("bucket_width", "1d"), table)
    model = normalise_model(model) if model else None
    row: tuple[str | None, str | None] = (None, _TOOL_STREAMS[stream]) if stream in _TOOL_STREAMS else (model, None)
    return _Usage(
        day,
        base.get("project_id"),
        base.get("api_key_id"),
        base.get("user_id"),
        own.get("api_source"),
        model,
        row,
        cost,
        quantities,
    )


# --- reconciliation -----------------------------------------------------------------------------------------------


@dataclass
class _Row:
    estimated: Decimal = Decimal(0)
    billed: Decimal = Decimal(0)
    unpriced: int = 0
    usage_documents: int = 0
    line_items: set[str] = field(default_factory=set)
    currency: str = "usd"


def _rows(
    usage: Iterable[_Usage], lines: Iterable[_Line]
) -> dict[tuple[date, str | None, str | None, str | None], _Row]:
    rows: dict[tuple[date, str | None, str | None, str | None], _Row] = defaultdict(_Row)
    for u in usage:
        r = rows[(u.day, u.project, *u.row)]
        r.usage_documents += 1
        if u.cost is None:
            r.unpriced += 1
        else:
            r.estimated += u.cost
    for line in lines:
        r = rows[(line.day, line.project, *line.billed.row)]
        r.billed += line.amount
        r.currency = line.currency
        if line.billed.raw:
            r.line_items.add(line.billed.raw)
    return rows


def _share(estimated: Decimal, billed: Decimal) -> Decimal | None:
    if not billed:
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        return (estimated / billed).quantize(_Q6, ROUND_HALF_EVEN)


@functools.lru_cache(maxsize=64)
def _day(day: date) -> tuple[int, str, str]:
    """A UTC day's start (epoch seconds), and its start and end as ``@timestamp`` text."""
    start = _start(day)
    return start, iso(start), iso(start + _DAY)


def _base(day: date, names: Mapping[str, Mapping[str, str]], **dims: str | None) -> dict[str, Any]:
    _, start, end = _day(day)
    base: dict[str, Any] = {"bucket_width": "1d", "start_time": start, "end_time": end}
    for key, value in dims.items():
        if value is not None:
            base[key] = value
            name_key = {"project_id": "project_name", "api_key_id": "api_key_name", "user_id": "user_email"}.get(key)
            if name_key and value in names.get(key, {}):
                base[name_key] = names[key][value]
    return base


def _document(
    target: Target, stream: str, day: date, identity: Sequence[Any], base: dict[str, Any], own: dict[str, Any]
) -> Document:
    start, stamp, _ = _day(day)
    digest = measure_hash({k: own[k] for k in sorted(own)} | {"base": {k: base[k] for k in sorted(base)}})
    org = {"id": target.org_id} if target.org_name is None else {"id": target.org_id, "name": target.org_name}
    source = {
        "@timestamp": stamp,
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "metric", "dataset": f"openai.{stream}", "module": "openai", "hash": digest},
        "data_stream": {"type": target.data_stream_type, "dataset": f"openai.{stream}", "namespace": target.namespace},
        "organization": org,
        "openai": {"base": base, stream: own},
    }
    key = "\x1f".join([target.org_id, stream, str(start), *("\x00" if v is None else str(v) for v in identity)])
    return Document(_digest_id(key), target.data_stream(stream), stream, start, digest, source)


def reconcile(
    target: Target,
    usage: Iterable[_Usage],
    lines: Iterable[_Line],
    names: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Document]:
    """The reconciliation documents of the given usage and bill (see the module docstring)."""
    out = []
    with localcontext() as ctx:
        ctx.prec = _PREC  # sums of exact estimates stay exact
        rows = sorted(_rows(usage, lines).items(), key=lambda kv: repr(kv[0]))
    for (day, project, model, item), r in rows:
        with localcontext() as ctx:
            ctx.prec = _PREC
            difference = r.billed - r.estimated
        own: dict[str, Any] = {
            "estimated_cost": r.estimated,
            "billed_cost": r.billed,
            "difference": difference,
            "unpriced_documents": r.unpriced,
            "usage_documents": r.usage_documents,
            "line_items": sorted(r.line_items),
            "currency": r.currency,
        }
        share = _share(r.estimated, r.billed)
        if share is not None:
            own["share_explained"] = share
        if item is not None:
            own["item"] = item
        base = _base(day, names or {}, project_id=project, model=model)
        out.append(_document(target, RECONCILIATION_STREAM, day, (project, model, item), base, own))
    return out


# --- allocation ---------------------------------------------------------------------------------------------------


def largest_remainder(total: Decimal, weights: Sequence[Fraction | Decimal | int], quantum: Decimal) -> list[Decimal]:
    """Split ``total`` by ``weights`` in multiples of ``quantum``; the parts add up to ``total`` exactly.

    Each part gets the floor of its exact share, and the units left go to the largest remainders (the earlier
    part on a tie). ``total`` must be a multiple of ``quantum``; a negative total (a credit) is split as its
    absolute value, then negated.

    >>> largest_remainder(Decimal("1.000000"), [1, 1, 1], Decimal("0.000001"))
    [Decimal('0.333334'), Decimal('0.333333'), Decimal('0.333333')]
    """
    sign = -1 if total < 0 else 1
    units = int(abs(total) / quantum)
    if Decimal(units) * quantum != abs(total):
        raise ValueError(f"{total} is not a multiple of {quantum}")
    # in integers: each weight as a multiple of 1 / the denominators' lcm, so share i is exact[i] / whole
    ratios = [w.as_integer_ratio() for w in weights]
    scale = math.lcm(*(d for _, d in ratios))
    ws = [n * (scale // d) for n, d in ratios]
    whole = sum(ws)
    if whole <= 0:
        raise ValueError("weights must add up to more than 0")
    exact = [units * w for w in ws]
    parts = [e // whole if e >= 0 else -(-e // whole) for e in exact]  # int(share): its floor when >= 0
    left = units - sum(parts)
    order = sorted(range(len(ws)), key=lambda i: (parts[i] * whole - exact[i], i))
    for i in order[:left]:
        parts[i] += 1
    return [sign * p * quantum for p in parts]


def _quantum(amount: Decimal) -> Decimal:
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        return Decimal(1).scaleb(exponent)
    return QUANTUM


def allocate(
    target: Target,
    usage: Sequence[_Usage],
    lines: Iterable[_Line],
    names: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Document]:
    """The allocation documents: every billed line split over matching usage (see the module docstring)."""
    # the usage a line may match, by (day, unit, tier, project): a line naming its project (almost every line)
    # looks only at that project's usage; by (day, unit, tier) for a line naming none, built for the first one.
    # Both in the usage's order (Decimal sums add up in the same order)
    by_project: dict[tuple[date, str, str | None, str | None], list[tuple[_Usage, Decimal]]] = defaultdict(list)
    for u in usage:
        for (unit, tier), qty in u.quantities.items():
            if qty > 0:
                by_project[(u.day, unit, tier, u.project)].append((u, qty))
    index: dict[tuple[date, str, str | None], list[tuple[_Usage, Decimal]]] | None = None
    out: list[Document] = []
    for line in lines:
        b = line.billed
        weights: dict[tuple[str | None, str | None], Decimal] = defaultdict(Decimal)
        if b.unit is not None and line.amount:
            if line.project is not None:
                candidates = by_project.get((line.day, b.unit, b.tier, line.project), [])
            else:
                if index is None:
                    index = defaultdict(list)
                    for u in usage:
                        for (unit, tier), qty in u.quantities.items():
                            if qty > 0:
                                index[(u.day, unit, tier)].append((u, qty))
                candidates = index.get((line.day, b.unit, b.tier), [])
            # the usage matches when it has the line's key, and the line's user and API source or none, and the
            # line's model (unless the unit is billed per project)
            key, user, source, model = line.key, line.user, line.api_source, b.model
            any_model = b.unit in MODEL_FREE_UNITS
            for u, qty in candidates:
                if (
                    (key is None or u.key == key)
                    and (user is None or u.user is None or u.user == user)
                    and (source is None or u.api_source is None or u.api_source == source)
                    and (any_model or u.model == model)
                ):
                    weights[(u.user, u.model)] += qty
        identity_line = (line.project, line.key, line.user, line.api_source, b.raw)
        if weights:
            keys = sorted(weights, key=lambda k: ("" if k[0] is None else k[0], "" if k[1] is None else k[1]))
            amounts = largest_remainder(line.amount, [weights[k] for k in keys], _quantum(line.amount))
            method = f"usage_share:{b.unit}"
            parts: list[tuple[tuple[str | None, str | None], Decimal, Decimal | None]] = [
                (k, amounts[i], weights[k]) for i, k in enumerate(keys)
            ]
        else:
            method = "unallocated"
            parts = [((line.user, b.model), line.amount, None)]
        for (user, model), amount, weight in parts:
            own: dict[str, Any] = {
                "line_item": b.raw,
                "amount": amount,
                "billed_amount": line.amount,
                "method": method,
                "currency": line.currency,
            }
            if b.unit is not None:
                own["unit"] = b.unit
            if b.tier is not None:
                own["tier"] = b.tier
            if line.api_source is not None:
                own["api_source"] = line.api_source
            if weight is not None:
                own["weight"] = weight
            base = _base(line.day, names or {}, project_id=line.project, api_key_id=line.key, user_id=user, model=model)
            out.append(_document(target, ALLOCATION_STREAM, line.day, (*identity_line, user, model), base, own))
    return out


# --- running it ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one reconciliation of one organization wrote: the days, the documents (money as exact ``Decimal``)
    and the write statistics of each kind."""

    days: list[date]
    reconciliation: WriteStats
    allocation: WriteStats
    rows: list[Document] = field(default_factory=list)
    parts: list[Document] = field(default_factory=list)


def reconcile_days(
    sink: Sink,
    target: Target,
    days: Sequence[date],
    *,
    widths: Mapping[str, str] | None = None,
    book: PriceBook | None = None,
) -> Outcome:
    """Rebuild the reconciliation and allocation documents of ``days`` for one organization and write them.

    Every stored document of those days is replaced: rows that vanished are deleted. The days are read one at a
    time (each is reconciled on its own; its display names come from its own documents): what is held is one day's
    usage and bill, and the documents of ``days``.
    """
    book = book or shared_book()
    rec: list[Document] = []
    alloc: list[Document] = []
    for day in days:
        names: dict[str, dict[str, str]] = {"project_id": {}, "api_key_id": {}, "user_id": {}}
        usage, lines = _read(sink, target.org_id, [day], widths or {}, book, names)
        rec += reconcile(target, usage, lines, names)
        alloc += allocate(target, usage, lines, names)
        del usage, lines
    starts = frozenset(_start(d) for d in days)
    out = Outcome(list(days), WriteStats(), WriteStats(), rec, alloc)
    for stream, docs, stats in (
        (RECONCILIATION_STREAM, rec, out.reconciliation),
        (ALLOCATION_STREAM, alloc, out.allocation),
    ):
        replaces = BucketSet(target.org_id, stream, "1d", target.data_stream(stream), starts)
        stats.add(sink.write_window(docs, None, replaces))
    return out


def _start(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp())


def _days(first: int, end: int) -> list[date]:
    """UTC days ``d`` with ``first <= start(d)`` and ``end(d) <= end``."""
    start = -(-first // _DAY) * _DAY
    return [datetime.fromtimestamp(t, UTC).date() for t in range(start, end - _DAY + 1, _DAY)]


def closed_days(settings: Settings, backfill: BackfillRange | None, now: float) -> list[date]:
    """The days :func:`after_cycle` reconciles at ``now``: the closed days of the costs restatement window (a
    scheduled cycle) or of the backfill's range; none when costs are not collected."""
    if "costs" not in settings.streams:
        return []
    edge = int(now - settings.grace_for("costs")) // _DAY * _DAY  # the end of the last closed day
    if backfill is None:
        return _days(edge - int(settings.restatement_for("costs")), edge)
    return _days(backfill.start - backfill.start % _DAY, min(edge, backfill.end or edge))


class Ahead:
    """Reconciles days while the streams still collect, as soon as every stream has acknowledged them.

    The days are those of :func:`closed_days` at the cycle's start, in groups of :data:`DAYS_PER_WRITE`. A stream
    calls :meth:`acknowledged` after each window the sink acknowledged (``end``: the window's end; windows come in
    ascending order, so nothing this cycle writes afterwards lies before it) and :meth:`finished` when it is done,
    however it ended. A group is reconciled once every stream of the cycle has acknowledged its end or finished,
    and only when the cycle has written or deleted something (the rule of :func:`after_cycle`), on ``submit``
    (a worker thread of the collector): what it reads is what the end of the cycle would read. :func:`after_cycle`
    then does the days left (the last group, a failure, days that closed during the cycle) and adds the groups'
    statistics. A failed group is not marked done: the end of the cycle tries it again.
    """

    def __init__(
        self,
        sink: Sink,
        settings: Settings,
        org: OrgConfig,
        streams: Sequence[str],
        backfill: BackfillRange | None,
        now: float,
        submit: Callable[[Callable[[], None]], Future[None]],
    ) -> None:
        self._sink, self._settings, self._submit = sink, settings, submit
        self._target = Target(org.id, org.name, settings.namespace, settings.data_stream_type)
        self._widths = {s: settings.width_for(s) for s in STREAMS if s in settings.streams}
        days = closed_days(settings, backfill, now)
        self._groups = [days[i : i + DAYS_PER_WRITE] for i in range(0, len(days), DAYS_PER_WRITE)]
        self._reached: dict[str, float] = {s: float("-inf") for s in streams}
        self._changed = False
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        #: days reconciled, and what their writes did
        self.done: set[date] = set()
        self.reconciliation = WriteStats()
        self.allocation = WriteStats()

    def acknowledged(self, stream: str, end: int, changed: bool) -> None:
        with self._lock:
            if stream in self._reached:
                self._reached[stream] = max(self._reached[stream], end)
            self._changed = self._changed or changed
            ready = self._ready()
        self._start(ready)

    def finished(self, stream: str) -> None:
        with self._lock:
            self._reached[stream] = float("inf")
            ready = self._ready()
        self._start(ready)

    def _ready(self) -> list[list[date]]:
        """The groups every stream has acknowledged, taken (under the lock)."""
        if not self._changed:
            return []
        reached = min(self._reached.values(), default=float("inf"))
        ready = []
        while self._groups and _start(self._groups[0][-1]) + _DAY <= reached:
            ready.append(self._groups.pop(0))
        return ready

    def _start(self, groups: list[list[date]]) -> None:
        for group in groups:  # not under the lock: the group may run at once
            future = self._submit(functools.partial(self._reconcile, group))
            with self._lock:
                self._futures.append(future)

    def _reconcile(self, group: list[date]) -> None:
        try:
            part = reconcile_days(self._sink, self._target, group, widths=self._widths)
        except CollectorError as exc:
            log.warning(
                "%s: reconciliation of %s..%s left to the end of the cycle: %s",
                self._target.org_id,
                group[0],
                group[-1],
                exc,
            )
            return
        except Exception:  # a bug here must not fail the streams; the end of the cycle tries again
            log.exception("%s: reconciliation of %s..%s failed unexpectedly", self._target.org_id, group[0], group[-1])
            return
        with self._lock:
            self.done.update(group)
            self.reconciliation.add(part.reconciliation)
            self.allocation.add(part.allocation)

    def wait(self) -> None:
        """Until every group started has been reconciled (or failed)."""
        with self._lock:
            futures = list(self._futures)
        for f in futures:
            f.result()


def _days_written(results: Sequence[Any]) -> set[int] | None:
    """The UTC days (start, epoch seconds) in which the streams of ``results`` changed documents, ``None`` when a
    stream does not know (its sink did not name the documents it wrote)."""
    out: set[int] = set()
    for r in results:
        days = getattr(r, "days_written", None)
        if days is None:
            return None
        out |= days
    return out


#: The checkpoint (stream, width) that says an organization's last reconciliation failed: while it carries an
#: error, a scheduled cycle rebuilds every closed day of the costs restatement window, not only the days whose
#: documents it changed (so a day that failed is not left stale until one of its documents changes). ``status``
#: shows it as a row with its error.
PENDING_STREAM, PENDING_WIDTH = "reconciliation", "1d"


def _pending(sink: Sink, org_id: str) -> Checkpoint | None:
    """The organization's failed-reconciliation checkpoint, when its last reconciliation failed."""
    try:
        cp = sink.load_checkpoint(org_id, PENDING_STREAM, PENDING_WIDTH)
    except Exception:  # the sink may be what fails: then rebuild every day, as after a failure
        return Checkpoint(org_id, PENDING_STREAM, PENDING_WIDTH, last_error="unknown (not readable)")
    return cp if cp is not None and cp.last_error else None


def _note_pending(sink: Sink, org_id: str, error: str | None, now: float) -> None:
    """Store that the reconciliation failed (``error``) or succeeded again (``None``); never raises."""
    cp = Checkpoint(org_id, PENDING_STREAM, PENDING_WIDTH, updated_at=now)
    cp = replace(cp, last_error=error[:2000], last_error_at=now) if error else replace(cp, last_success_at=now)
    try:
        sink.save_checkpoint(cp)
    except Exception as exc:  # the sink itself may be what failed (a full disk)
        log.warning("%s: could not record the reconciliation's outcome: %s", org_id, exc)


def after_cycle(
    sink: Sink,
    settings: Settings,
    org: OrgConfig,
    results: Sequence[Any],
    backfill: BackfillRange | None,
    now: float,
    ahead: Ahead | None = None,
) -> Outcome | None:
    """Reconcile one organization after its cycle or backfill; never raises (a failure is logged, the cycle's
    result stands).

    Days: those of the costs restatement window that are closed and in which the cycle created, replaced or
    deleted a document (a scheduled cycle: a day none of whose documents changed keeps the reconciliation it has;
    every closed day of the window when a sink did not name the documents it wrote), or the closed days of the
    backfill's range. Nothing is done when the cycle wrote and deleted nothing (nothing can have changed), or
    when costs are not collected. The days are read one at a time and written :data:`DAYS_PER_WRITE` at a time,
    so what is held does not grow with the backfill's range; the outcome sums their write statistics (its
    ``rows`` and ``parts`` are left empty: the documents are released once written). A day's display names come
    from that day's documents.

    Args:
        sink: the sink the cycle wrote to.
        settings: the settings (streams, widths, costs grace and restatement, namespace).
        org: the organization.
        results: its :class:`~usage_collector.collector.StreamResult` s of this cycle.
        backfill: the backfill's range, or ``None`` for a scheduled cycle.
        now: the time.
        ahead: the days already reconciled during the cycle (:class:`Ahead`, finished): not read again, their
            statistics added to the outcome.
    """
    if "costs" not in settings.streams:
        return None
    mine = [r for r in results if r.org_id == org.id]
    if not any(r.stats.written or r.stats.deleted for r in mine):
        return None
    days = closed_days(settings, backfill, now)
    pending = None
    if backfill is None:
        # a day none of whose documents changed keeps the reconciliation it has, unless the last one failed
        pending = _pending(sink, org.id)
        written = _days_written(mine)
        if written is not None and pending is None:
            days = [d for d in days if _start(d) in written]
    if ahead is not None:
        days = sorted(set(days) | ahead.done)
    if not days:
        return None
    target = Target(org.id, org.name, settings.namespace, settings.data_stream_type)
    widths = {s: settings.width_for(s) for s in STREAMS if s in settings.streams}
    outcome = Outcome(days, WriteStats(), WriteStats())
    if ahead is not None:
        outcome.reconciliation.add(ahead.reconciliation)
        outcome.allocation.add(ahead.allocation)
    left = [d for d in days if ahead is None or d not in ahead.done]
    try:
        for i in range(0, len(left), DAYS_PER_WRITE):
            part = reconcile_days(sink, target, left[i : i + DAYS_PER_WRITE], widths=widths)
            outcome.reconciliation.add(part.reconciliation)
            outcome.allocation.add(part.allocation)
    except CollectorError as exc:
        log.warning("%s: reconciliation not written: %s", org.id, exc)
        _note_pending(sink, org.id, f"{type(exc).__name__}: {exc}", now)
        return None
    except Exception as exc:  # a bug here must not fail the cycle that collected the data
        log.exception("%s: reconciliation failed unexpectedly", org.id)
        _note_pending(sink, org.id, f"unexpected {type(exc).__name__}: {exc}", now)
        return None
    if pending is not None:
        _note_pending(sink, org.id, None, now)
    rec, alloc = outcome.reconciliation, outcome.allocation
    log.info(
        "%s reconciliation %s..%s: %d rows, %d allocated parts (written %d, %d)",
        org.id,
        days[0],
        days[-1],
        rec.written + rec.unchanged,
        alloc.written + alloc.unchanged,
        rec.written,
        alloc.written,
    )
    return outcome
