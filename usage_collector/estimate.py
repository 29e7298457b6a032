"""Estimated cost of usage documents: what the usage says it cost, minutes after it happened.

:func:`annotate` sets ``openai.<stream>.estimated_cost`` (USD, an exact :class:`~decimal.Decimal`, rounded only
where it is displayed) on each shaped usage document, from the price table in force on the bucket's UTC day
(:class:`~usage_collector.pricing.PriceTable`, the shipped files plus the user file named by
``USAGE_COLLECTOR_PRICES_FILE``). A document the table cannot price gets no field and is counted (the run
document's ``usage_collector.unpriced``): an estimate is never guessed. The bill (Costs API) stays the truth;
:mod:`usage_collector.reconcile` compares the two per closed day.

Measures and the price unit each is charged as (``openai.<stream>.<measure>``; a unit with quantity 0 needs no
price, any other unit without one leaves the whole document unpriced):

==========================  ==================================  ===================================================
stream                      measure                             price unit (``->`` fallback when the model has no
                                                                price of its own for the unit)
==========================  ==================================  ===================================================
completions, decisions      ``input_text_tokens``               ``input`` (uncached text)
                            ``input_cached_text_tokens``        ``cached_input``
                            ``input_audio_tokens``              ``audio_input`` (uncached audio; no fallback)
                            ``input_cached_audio_tokens``       ``cached_audio_input`` -> ``cached_input``
                            ``input_image_tokens``              ``image_input`` -> ``input``
                            ``input_cached_image_tokens``       ``cached_image_input`` -> ``cached_input``
                            ``input_cache_write_30m_tokens``    ``cache_write_30m`` -> ``input``
                            ``input_cache_write_12h_tokens``    ``cache_write_12h`` -> ``input``
                            ``output_text_tokens``              ``output``
                            ``output_audio_tokens``             ``audio_output`` (no fallback)
                            ``output_image_tokens``             ``image_output`` -> ``output``
embeddings, moderations     ``input_tokens``                    ``input``
images                      ``images``                          ``image:<size>:<quality>``; without a quality on
                                                                the document, the price every quality of that size
                                                                shares (none if they differ)
audio_speeches              ``characters``                      ``speech_characters``
audio_transcriptions        ``seconds``                         ``transcription_seconds``
web_search_calls            ``num_requests``                    ``web_search_calls``
file_search_calls           ``num_requests``                    ``file_search_calls``
code_interpreter_sessions   ``num_sessions``                    ``code_interpreter_sessions``
vector_stores               ``usage_bytes`` x bucket / 1 day    ``vector_storage_gb_day`` (GB = 2**30 bytes, as the
                                                                table says; a 1h bucket is 1/24 of a day)
==========================  ==================================  ===================================================

Older completions shapes lack the modality splits; what is missing is taken from the totals, never counted twice:
without ``input_text_tokens``, ``input`` is ``input_tokens`` less cached, cache-write and (when reported) audio
input; without ``input_cached_text_tokens``, ``cached_input`` is ``input_cached_tokens``; without the two retention
parts, ``input_cache_write_tokens`` is charged as ``input`` when the model has neither cache-write price (else the
document is unpriced: the retention decides the price); without ``output_text_tokens``, ``output`` is
``output_tokens`` less audio (and image) output.

The fallbacks say how usage is billed when the table lists no separate rate [inf]: image tokens of a text model
are input tokens, and a cache write without its own rate is billed as input (OpenAI's prompt caching has no
write surcharge); the simulator bills the same way (``simulator/truth.py``).

Batch and service tier come from the document (``batch``, ``service_tier``) through
:meth:`~usage_collector.pricing.PriceTable.price_for`: batch and flex at the model's own tier price or the tier's
multiplier, priority at the model's own price only, ``scale`` never (Scale Tier is billed as organization-level
units): such documents are unpriced. Model-independent units (tools, storage) use the table's ``"*"`` prices.

Everything is exact ``Decimal`` except one quotient: vector storage in a bucket shorter than a day divides by 24 or
1440, which need not terminate; it is then rounded to :data:`STORAGE_QUANTUM` USD (1e-12), far below display.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow, localcontext
from pathlib import Path
from typing import Any

from .catalogue import STREAMS, WIDTH_SECONDS
from .documents import Document, Pricer, measure_hash
from .pricing import ANY_MODEL, NoPriceTableError, Price, PriceTable, PriceTableError, unit_of, user_file_from_env

log = logging.getLogger(__name__)

__all__ = [
    "ESTIMATED_COST",
    "FALLBACK",
    "STORAGE_QUANTUM",
    "USAGE_STREAMS",
    "Estimate",
    "PriceBook",
    "annotate",
    "estimate_source",
    "tier_of",
    "usage_estimate",
]

#: The field set on each priced usage document, under ``openai.<stream>``.
ESTIMATED_COST = "estimated_cost"
#: Streams whose documents are estimated: every usage stream (not costs).
USAGE_STREAMS: tuple[str, ...] = tuple(name for name, spec in STREAMS.items() if not spec.is_costs)
#: A unit the model has no price for is charged as this one (see the module docstring).
FALLBACK: dict[str, str] = {
    "cached_audio_input": "cached_input",
    "image_input": "input",
    "cached_image_input": "cached_input",
    "cache_write_30m": "input",
    "cache_write_12h": "input",
    "image_output": "output",
}
#: Vector storage of a bucket shorter than a day is rounded to this (the one non-terminating quotient).
STORAGE_QUANTUM = Decimal("1e-12")
_GIB = Decimal(1 << 30)
_DAY = Decimal(86400)
_TOKEN_STREAMS = frozenset({"completions", "decisions"})
_SIMPLE: dict[str, tuple[str, str]] = {  # stream -> (measure, unit)
    "embeddings": ("input_tokens", "input"),
    "moderations": ("input_tokens", "input"),
    "audio_speeches": ("characters", "speech_characters"),
    "audio_transcriptions": ("seconds", "transcription_seconds"),
    "web_search_calls": ("num_requests", "web_search_calls"),
    "file_search_calls": ("num_requests", "file_search_calls"),
    "code_interpreter_sessions": ("num_sessions", "code_interpreter_sessions"),
}


@dataclass(frozen=True)
class Estimate:
    """The estimate of one document.

    Attributes:
        cost: USD, exact; ``None`` when the document is unpriced.
        quantities: ``(unit charged, tier)`` -> quantity, the unit being the one the price was found for (after a
            fallback), so it names the line item the usage would be billed under; tier ``None`` is standard.
            Allocation weighs billed lines by these. Filled for unpriced documents too (without fallbacks).
        missing: the units that had no price (why it is unpriced).
    """

    cost: Decimal | None
    quantities: dict[tuple[str, str | None], Decimal] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


def tier_of(own: Mapping[str, Any]) -> str | None:
    """The billing tier of a usage row: ``batch``, ``flex``, ``priority``, ``scale`` or ``None`` (standard)."""
    if own.get("batch") is True:
        return "batch"
    value = own.get("service_tier")
    if value is None:
        return None
    if type(value) is str:  # the API's few names, remembered
        tier = _TIERS.get(value, _TIER_UNSEEN)
        if tier is not _TIER_UNSEEN:
            return tier  # type: ignore[no-any-return]
        tier = _tier(value)
        if len(_TIERS) < 256:
            _TIERS[value] = tier
        return tier
    return _tier(value)


def _tier(value: Any) -> str | None:
    tier = str(value or "default").strip().lower()
    return None if tier in ("default", "auto", "standard") else tier


#: ``service_tier`` text -> its tier (:func:`tier_of`), at most 256 names.
_TIERS: dict[str, str | None] = {}
_TIER_UNSEEN: Any = object()


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _token_units(own: Mapping[str, Any], table: PriceTable | None, model: str | None) -> dict[str, int]:
    """Completions/decisions measures -> quantity per price unit, before fallbacks (see the module docstring).

    Each measure is read once into a local: ``None`` when absent, ``null`` or not a whole number, else an int
    (the shaper's values already are: one type test each)."""
    values = [*map(own.get, _TOKEN_READ)]
    if not _INT_OR_NONE.issuperset(map(type, values)):  # rare: a value to convert (a float, text)
        values = [x if type(x) is int or x is None else _int(x) for x in values]
    (
        input_tokens,
        cached,
        write,
        write_30m,
        write_12h,
        output_tokens,
        text_in,
        text_out,
        cached_text,
        audio_in,
        cached_audio,
        audio_out,
        image_in,
        cached_image,
        image_out,
    ) = values
    out: dict[str, int] = {}
    # cache writes
    if write_30m is not None or write_12h is not None:
        out["cache_write_30m"] = write_30m or 0
        out["cache_write_12h"] = write_12h or 0
        writes = (write_30m or 0) + (write_12h or 0)
    else:
        writes = write or 0
        if writes:
            priced = table is not None and any(
                table.lookup(model, u) is not None for u in ("cache_write_30m", "cache_write_12h")
            )
            out["cache_write_unknown_retention" if priced else "input"] = writes
    # cached input
    if cached_text is not None:
        out["cached_input"] = cached_text
        out["cached_audio_input"] = cached_audio or 0
        out["cached_image_input"] = cached_image or 0
    else:
        out["cached_input"] = cached or 0
    # uncached input
    if text_in is not None:
        out["input"] = out.get("input", 0) + text_in
        out["audio_input"] = audio_in or 0
        out["image_input"] = image_in or 0
    else:
        rest = (input_tokens or 0) - (cached or 0) - writes - (audio_in or 0) - (image_in or 0)
        out["input"] = out.get("input", 0) + rest
        out["audio_input"] = audio_in or 0
        out["image_input"] = image_in or 0
    # output
    if text_out is not None:
        out["output"] = text_out
    else:
        out["output"] = (output_tokens or 0) - (audio_out or 0) - (image_out or 0)
    out["audio_output"] = audio_out or 0
    out["image_output"] = image_out or 0
    return {u: q for u, q in out.items() if q}


_INT_OR_NONE = frozenset({int, type(None)})
#: The measures :func:`_token_units` reads, in the order it unpacks them.
_TOKEN_READ = (
    "input_tokens",
    "input_cached_tokens",
    "input_cache_write_tokens",
    "input_cache_write_30m_tokens",
    "input_cache_write_12h_tokens",
    "output_tokens",
    "input_text_tokens",
    "output_text_tokens",
    "input_cached_text_tokens",
    "input_audio_tokens",
    "input_cached_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "input_cached_image_tokens",
    "output_image_tokens",
)


def _image_price(table: PriceTable, model: str | None, size: str, quality: str | None) -> Price | None:
    """The price of one image of ``size`` (and ``quality``); without a quality, the one all qualities share."""
    if quality is not None:
        return table.lookup(model, f"image:{size}:{quality}")
    key = table.resolve_model(model) if model is not None else None
    found = {
        p.usd: p
        for (m, tier, unit), p in table.prices.items()
        if m in (key, ANY_MODEL) and tier is None and unit.startswith(f"image:{size}:")
    }
    return next(iter(found.values())) if len(found) == 1 else None


def estimate_source(stream: str, source: Mapping[str, Any], table: PriceTable | None) -> Estimate:
    """The estimate of one usage document's ``_source`` (``None`` table: nothing is priced).

    >>> t = PriceTable.load("2026-11-30")
    >>> src = {"openai": {"base": {"model": "gpt-4o-2024-08-06", "bucket_width": "1h"},
    ...        "completions": {"input_text_tokens": 1000, "output_text_tokens": 100, "service_tier": "default"}}}
    >>> estimate_source("completions", src, t).cost
    Decimal('0.0035')
    """
    openai = source.get("openai", {})
    base = openai.get("base", {})
    own = openai.get(stream, {})
    model = base.get("model")
    tier = tier_of(own)
    width = base.get("bucket_width", "1d")
    units: dict[str, Decimal] = {}
    storage = False
    if stream in _TOKEN_STREAMS:
        units = {u: Decimal(q) for u, q in _token_units(own, table, model).items()}
    elif stream in _SIMPLE:
        measure, unit = _SIMPLE[stream]
        q = _int(own.get(measure))
        if q:
            units[unit] = Decimal(q)
    elif stream == "images":
        q = _int(own.get("images"))
        if q:
            units[f"image:{own.get('size')}:{own.get('quality') or '*'}"] = Decimal(q)
    elif stream == "vector_stores":
        q = _int(own.get("usage_bytes"))
        if q:
            units["vector_storage_gb_day"] = Decimal(q)  # bytes; converted with the price below
            storage = True
    else:
        return Estimate(None)
    if table is None:
        return Estimate(None, {(u, tier): q for u, q in units.items()}, tuple(units))
    total = Decimal(0)
    quantities: dict[tuple[str, str | None], Decimal] = {}
    missing: list[str] = []
    with localcontext() as ctx:
        ctx.prec = 80
        ctx.traps[Inexact] = True
        for unit, qty in units.items():
            charged, found = _price(table, model, unit, tier)
            key = (charged, tier)
            quantities[key] = quantities.get(key, Decimal(0)) + qty
            if found is None:
                missing.append(unit)
                continue
            price, factor = found
            if storage:
                total += _storage_cost(qty, price.usd * factor, WIDTH_SECONDS.get(width, 86400))
            else:
                total += qty * price.usd * factor / price.unit.per  # Price.cost, in this exact context
    if missing:
        return Estimate(None, quantities, tuple(missing))
    return Estimate(total, quantities)


def _price(
    table: PriceTable, model: str | None, unit: str, tier: str | None
) -> tuple[str, tuple[Price, Decimal] | None]:
    """``(unit charged, (price, factor))`` for one unit, trying its fallback when the model has no own price.

    A function of the table and ``(model, unit, tier)`` only (an image's size and quality are in ``unit``):
    answered once per table (:attr:`PriceTable.memo`)."""
    memo = table.memo
    key = ("estimate._price", model, unit, tier)
    if key in memo:
        return memo[key]  # type: ignore[no-any-return]
    found = memo[key] = _find_price(table, model, unit, tier)
    return found


def _find_price(
    table: PriceTable, model: str | None, unit: str, tier: str | None
) -> tuple[str, tuple[Price, Decimal] | None]:
    if unit.startswith("image:"):
        _, size, quality = unit.split(":")
        if tier is not None:
            return unit, None
        image = _image_price(table, model, size, None if quality == "*" else quality)
        return f"image:{size}", (None if image is None else (image, Decimal(1)))
    batch = tier == "batch"
    service_tier = None if batch else tier
    found = table.price_for(model, unit, batch=batch, service_tier=service_tier) if unit_of(unit) is not None else None
    if found is None and unit in FALLBACK and table.lookup(model, unit) is None:
        fallback = FALLBACK[unit]
        again = table.price_for(model, fallback, batch=batch, service_tier=service_tier)
        if again is not None:
            return fallback, again
    return unit, found


def _storage_cost(usage_bytes: Decimal, usd_per_gb_day: Decimal, seconds: int) -> Decimal:
    """``bytes / 2**30 x seconds / 86400 x price``: exact when it terminates, else to :data:`STORAGE_QUANTUM`."""
    try:
        return usage_bytes * usd_per_gb_day * seconds / (_GIB * _DAY)
    except Inexact:
        with localcontext() as ctx:
            ctx.prec = 80
            ctx.traps[Inexact] = False
            value = usage_bytes * usd_per_gb_day * seconds / (_GIB * _DAY)
            return value.quantize(STORAGE_QUANTUM, ROUND_HALF_EVEN)


class PriceBook:
    """The price table in force on each UTC day, loaded once per day and shared by threads.

    Days whose table comes from the same files (the same shipped file and user file, :attr:`PriceTable.effective`
    and :attr:`PriceTable.origins`) share one table object, its :attr:`~PriceTable.memo` included: a year's backfill
    holds a table per price file, not per day (``bench/p4_memory.py``). A shared table's ``as_of`` is the first day
    it was loaded for; the book itself never reads it.

    Args:
        user_file: a user price file (overrides and extensions); default: ``USAGE_COLLECTOR_PRICES_FILE``.
        directory: the dated files (default: the ones shipped in the package).
    """

    def __init__(self, user_file: Path | str | None = None, *, directory: Path | None = None) -> None:
        self.user_file = Path(user_file) if user_file is not None else None
        self.directory = directory
        self._tables: dict[date, PriceTable | None] = {}
        self._distinct: dict[tuple[date, tuple[str, ...]], PriceTable] = {}  # (effective, origins) -> the table
        self._lock = threading.Lock()
        self.error: str | None = None  # a malformed file: logged once, every document then unpriced
        self._before_earliest = False  # a day before the earliest table was asked for (logged once)

    def table(self, day: date) -> PriceTable | None:
        """The table in force on ``day``, or ``None`` (none in force, or the files are malformed)."""
        with self._lock:
            if day in self._tables:
                return self._tables[day]
            table: PriceTable | None
            try:
                loaded = PriceTable.load(day, self.user_file, directory=self.directory)
            except NoPriceTableError as exc:  # a day before the earliest table: said once, not once a day
                if not self._before_earliest:
                    log.warning(
                        "estimated cost: %s; documents of that day and of every day before the earliest "
                        "table are left unpriced",
                        exc,
                    )
                self._before_earliest = True
                table = None
            except PriceTableError as exc:
                if self.error is None or str(exc) != self.error:
                    log.warning("estimated cost: %s; documents of %s are left unpriced", exc, day)
                self.error = str(exc)
                table = None
            else:
                table = self._distinct.setdefault((loaded.effective, loaded.origins), loaded)
            self._tables[day] = table
            return table

    def estimate(self, stream: str, source: Mapping[str, Any]) -> Estimate:
        """The estimate of one document, with the table of its bucket's day."""
        return estimate_source(stream, source, self.table(day_of(source)))

    def pricer(self, stream: str, width: str) -> Pricer | None:
        """The :class:`~usage_collector.documents.Shaper`'s ``price`` hook for ``stream`` at ``width``: the cost
        :func:`annotate` would set (``None``: unpriced), computed while the row is shaped; ``None`` for a stream
        that is not usage (costs)."""
        if stream not in USAGE_STREAMS:
            return None

        last: list[Any] = [None, None]  # the bucket start formatted and its day's table, of the row before
        cost = _cost_function(stream, width)

        def price(own: Mapping[str, Any], model: Any, stamp: str) -> Decimal | None:
            if stamp is last[0]:
                table = last[1]
            else:
                table = self.table(day_of({"@timestamp": stamp}))
                last[0], last[1] = stamp, table
            if table is None:
                return None
            return cost(own, model, table)

        return price


#: Exact arithmetic for the fast path: 80 digits, and an inexact result is an error, never rounded away.
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_SLOW: Any = object()


def cost_of(stream: str, own: Mapping[str, Any], model: Any, width: str, table: PriceTable) -> Decimal | None:
    """:func:`estimate_source`'s ``cost`` for the document whose ``openai.<stream>`` object is ``own``, by a
    faster path for the token, single-measure and image streams: each unit's price per unit (``usd x factor /
    per``, exact) is found once per table, model and tier (:attr:`PriceTable.memo`), then the cost is the sum of
    quantity x rate (:func:`_rates_sum`). Equal in value to :func:`estimate_source` (``tests/test_fast_path.py``
    checks every row of a simulated organization); vector storage takes the general path."""
    return _cost_function(stream, width)(own, model, table)


def usage_estimate(
    stream: str, own: Mapping[str, Any], model: Any, width: str, table: PriceTable | None
) -> tuple[Decimal | None, dict[tuple[str, str | None], Decimal]]:
    """:func:`estimate_source`'s ``cost`` and ``quantities`` for the document whose ``openai.<stream>`` object is
    ``own`` (what reconciliation reads of every stored usage document), by :func:`cost_of`'s paths: the cost is
    equal in value (its exponent may differ: :func:`_rates_sum` scales each unit's rate, :func:`estimate_source`
    each product), the quantities are the same. Vector storage takes the general path."""
    tier = tier_of(own)
    units: dict[str, int]
    if stream in _TOKEN_STREAMS:
        units = _token_units(own, table, model)
    elif stream in _SIMPLE:
        measure, unit = _SIMPLE[stream]
        q = own.get(measure)
        if type(q) is not int:
            q = _int(q)
        units = {unit: q} if q else {}
    elif stream == "images":
        q = own.get("images")
        if type(q) is not int:
            q = _int(q)
        units = {f"image:{own.get('size')}:{own.get('quality') or '*'}": q} if q else {}
    else:
        est = estimate_source(stream, _source(own, model, width, stream), table)
        return est.cost, est.quantities
    quantities: dict[tuple[str, str | None], Decimal] = {}
    for unit, q in units.items():
        key = (unit if table is None else _price(table, model, unit, tier)[0], tier)
        quantities[key] = _EXACT.add(quantities[key], q) if key in quantities else Decimal(q)
    if table is None:
        return None, quantities
    if stream == "images":
        return _image_cost(own, model, table), quantities
    return _rates_sum(stream, width, own, model, table, tier, units), quantities


def _cost_function(stream: str, width: str) -> Callable[[Mapping[str, Any], Any, PriceTable], Decimal | None]:
    """:func:`cost_of` for one stream and width: ``(own, model, table) -> cost``."""
    if stream in _TOKEN_STREAMS:
        return functools.partial(_token_cost, stream, width)
    if stream in _SIMPLE:
        return functools.partial(_simple_cost, stream, width)
    if stream == "images":
        return _image_cost
    return functools.partial(_general_cost, stream, width)


def _token_cost(stream: str, width: str, own: Mapping[str, Any], model: Any, table: PriceTable) -> Decimal | None:
    """:func:`_rates_sum` of :func:`_token_units`. For the shape the API reports today (the modality splits and a
    cache-write retention part present, as whole numbers) the units are read straight from their measures, in
    :func:`_token_units`' order, and summed as :func:`_rates_sum` sums them; a value :func:`_token_units` would
    convert (text, a float), a negative one, or a rate that is not plain, and :func:`_rates_sum` does it all."""
    quantities = [*map(own.get, _TODAY_MEASURES)]
    write_30m, write_12h, cached_text, _, _, text_in, _, _, text_out, _, _ = quantities
    if (
        type(text_in) is not int
        or type(text_out) is not int
        or type(cached_text) is not int
        or (type(write_30m) is not int and type(write_12h) is not int)
    ):
        return _rates_sum(stream, width, own, model, table, tier_of(own), _token_units(own, table, model))
    tier = tier_of(own)
    memo = table.memo
    rates = memo.get(("estimate.rates", model, tier))
    if rates is None:
        rates = memo[("estimate.rates", model, tier)] = {}
    total = 0
    exp = 0
    for unit, q in zip(_TODAY_UNITS, quantities, strict=True):
        if not q:
            continue  # 0 or absent (or what _int makes None or 0): no unit
        if type(q) is not int or q < 0:
            return _rates_sum(stream, width, own, model, table, tier, _token_units(own, table, model))
        rate = rates.get(unit)
        if rate is None:
            rate = rates[unit] = _rate(table, model, unit, tier)
        if rate is False:
            return None  # as _rates_sum: the units before this one are the same
        if rate is _SLOW or rate[0] is None:
            return _rates_sum(stream, width, own, model, table, tier, _token_units(own, table, model))
        coefficient, e = rate[0], rate[1]
        if e >= exp:
            total += q * coefficient * _POW10[e - exp]
        else:
            total = total * _POW10[exp - e] + q * coefficient
            exp = e
    if total >= _DIGITS_80:
        return _decimal_sum(stream, width, own, model, table, tier, _token_units(own, table, model))
    return Decimal(total).scaleb(exp, _EXACT)


#: The measures of :data:`_TODAY_UNITS`, in their order.
_TODAY_MEASURES = (
    "input_cache_write_30m_tokens",
    "input_cache_write_12h_tokens",
    "input_cached_text_tokens",
    "input_cached_audio_tokens",
    "input_cached_image_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "input_image_tokens",
    "output_text_tokens",
    "output_audio_tokens",
    "output_image_tokens",
)
#: The units of :func:`_token_units` for today's shape, in its order.
_TODAY_UNITS = (
    "cache_write_30m",
    "cache_write_12h",
    "cached_input",
    "cached_audio_input",
    "cached_image_input",
    "input",
    "audio_input",
    "image_input",
    "output",
    "audio_output",
    "image_output",
)


def _simple_cost(stream: str, width: str, own: Mapping[str, Any], model: Any, table: PriceTable) -> Decimal | None:
    measure, unit = _SIMPLE[stream]
    q = own.get(measure)
    if type(q) is not int:
        q = _int(q)
    return _rates_sum(stream, width, own, model, table, tier_of(own), {unit: q} if q else {})


def _image_cost(own: Mapping[str, Any], model: Any, table: PriceTable) -> Decimal | None:
    """:func:`estimate_source`'s images branch: the same operations in the same order (so the same ``Decimal``,
    exponent included), without building a ``_source``; its one unit priced once per table, model, unit and tier
    (:func:`_price`)."""
    q = own.get("images")
    if type(q) is not int:
        q = _int(q)
    if not q:
        return Decimal(0)
    _charged, found = _price(table, model, f"image:{own.get('size')}:{own.get('quality') or '*'}", tier_of(own))
    if found is None:
        return None
    price, factor = found
    exact = _EXACT
    return exact.add(_ZERO, exact.divide(exact.multiply(exact.multiply(Decimal(q), price.usd), factor), price.unit.per))


def _general_cost(stream: str, width: str, own: Mapping[str, Any], model: Any, table: PriceTable) -> Decimal | None:
    return estimate_source(stream, _source(own, model, width, stream), table).cost


def _rates_sum(
    stream: str,
    width: str,
    own: Mapping[str, Any],
    model: Any,
    table: PriceTable,
    tier: str | None,
    units: Mapping[str, int],
) -> Decimal | None:
    """The cost of ``units``: the ``Decimal`` that ``total = Decimal(0)``, then ``total += rate x q`` per unit in
    :data:`_EXACT` gives (:func:`_decimal_sum`), computed in integers. A product's exponent is the rate's, a sum's
    the smallest of its terms' (and 0, the start's), and nothing is rounded, so the total's coefficient is
    ``sum(q x coefficient)``, each term brought to the smallest exponent. Used when every term
    is >= 0 and the total fits :data:`_EXACT`'s 80 digits (no step could then have been inexact); otherwise the
    ``Decimal`` steps themselves. ``None`` when a unit has no price."""
    memo = table.memo
    rates = memo.get(("estimate.rates", model, tier))
    if rates is None:
        rates = memo[("estimate.rates", model, tier)] = {}
    total = 0
    exp = 0
    for unit, q in units.items():
        rate = rates.get(unit)
        if rate is None:
            rate = rates[unit] = _rate(table, model, unit, tier)
        if rate is False:
            return None  # a unit without a price: the document is unpriced
        if rate is _SLOW:
            return _general_cost(stream, width, own, model, table)
        coefficient, e = rate[0], rate[1]
        if coefficient is None or q < 0:
            return _decimal_sum(stream, width, own, model, table, tier, units)
        if e >= exp:
            total += q * coefficient * _POW10[e - exp]
        else:
            total = total * _POW10[exp - e] + q * coefficient
            exp = e
    if total >= _DIGITS_80:
        return _decimal_sum(stream, width, own, model, table, tier, units)
    return Decimal(total).scaleb(exp, _EXACT)


def _decimal_sum(
    stream: str,
    width: str,
    own: Mapping[str, Any],
    model: Any,
    table: PriceTable,
    tier: str | None,
    units: Mapping[str, int],
) -> Decimal | None:
    """:func:`_rates_sum` in ``Decimal`` steps (a step that does not fit 80 digits raises ``Inexact``)."""
    rates = table.memo[("estimate.rates", model, tier)]
    total = Decimal(0)
    for unit, q in units.items():
        rate = rates.get(unit)
        if rate is None:
            rate = rates[unit] = _rate(table, model, unit, tier)
        if rate is False:
            return None
        if rate is _SLOW:
            return _general_cost(stream, width, own, model, table)
        total = _EXACT.add(total, _EXACT.multiply(rate[2], q))
    return total


def _source(own: Mapping[str, Any], model: Any, width: str, stream: str) -> dict[str, Any]:
    """The part of a ``_source`` :func:`estimate_source` reads."""
    return {"openai": {"base": {"model": model, "bucket_width": width}, stream: own}}


def _rate(table: PriceTable, model: Any, unit: str, tier: str | None) -> Any:
    """``(coefficient, exponent, rate)``: USD per unit of quantity (exact), as its integer coefficient and exponent
    (``None`` coefficient when it is negative or its exponent outside +-:data:`_EXPONENTS`: :func:`_rates_sum`
    then takes ``Decimal`` steps); ``False`` when unpriced, ``_SLOW`` when ``usd x factor / per`` does not terminate
    (the general path then computes each row in full)."""
    _charged, found = _price(table, model, unit, tier)
    if found is None:
        return False
    price, factor = found
    try:
        rate = _EXACT.divide(_EXACT.multiply(price.usd, factor), price.unit.per)
    except Inexact:
        return _SLOW
    sign, digits, exponent = rate.as_tuple()
    if sign or not isinstance(exponent, int) or not -_EXPONENTS <= exponent <= _EXPONENTS:
        return (None, 0, rate)
    return (int("".join(map(str, digits))), exponent, rate)


#: The rate exponents :func:`_rates_sum` sums in integers (+-), and the powers of ten it aligns terms with.
_EXPONENTS = 40
_POW10 = tuple(10**k for k in range(2 * _EXPONENTS + 1))
#: A coefficient of 81 digits: more than :data:`_EXACT` holds.
_DIGITS_80 = 10**80
_ZERO = Decimal(0)


def day_of(source: Mapping[str, Any]) -> date:
    """The UTC day of a document's ``@timestamp`` (remembered per day for a UTC ``...Z`` stamp, else per stamp)."""
    stamp = str(source["@timestamp"])
    key = stamp[:10] if len(stamp) == 20 and stamp[10] == "T" and stamp[19] == "Z" else stamp
    day = _DAYS.get(key)
    if day is None:
        day = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).date()
        if len(_DAYS) > 4096:
            _DAYS.clear()
        _DAYS[key] = day
    return day


#: ``@timestamp`` (its ``YYYY-MM-DD`` when it is UTC) -> its UTC day: one entry per day, not per bucket start (a
#: year of 1h buckets is 8,760 of those).
_DAYS: dict[str, date] = {}


_shared: dict[tuple[str, int], PriceBook] = {}
_shared_lock = threading.Lock()


def shared_book() -> PriceBook:
    """The process's price book for the user file named now by ``USAGE_COLLECTOR_PRICES_FILE`` (a changed file,
    by modification time, gives a new book, so ``serve`` picks up an edited price file)."""
    path = user_file_from_env()
    try:
        mtime = path.stat().st_mtime_ns if path is not None else 0
    except OSError:
        mtime = -1
    key = (str(path) if path is not None else "", mtime)
    with _shared_lock:
        book = _shared.get(key)
        if book is None:
            book = _shared[key] = PriceBook(path)
        return book


def annotate(docs: Iterable[Document], book: PriceBook | None = None) -> int:
    """Set ``openai.<stream>.estimated_cost`` on every priceable usage document; returns how many were unpriced.

    The document's ``event.hash`` then covers the estimate too, so a price that changes (a user file) rewrites
    the documents re-read afterwards. Costs and other documents are left as they are and not counted.

    Args:
        docs: shaped documents (changed in place).
        book: the price tables (default: :func:`shared_book`).
    """
    unpriced = 0
    book = book or shared_book()
    for doc in docs:
        if doc.stream not in USAGE_STREAMS:
            continue
        est = book.estimate(doc.stream, doc.source)
        if est.cost is None:
            unpriced += 1
            continue
        openai = doc.source["openai"]
        own = openai.get(doc.stream)
        if own is None:
            own = openai[doc.stream] = {}
        own[ESTIMATED_COST] = est.cost
        doc.hash = measure_hash({"measures": doc.hash, ESTIMATED_COST: est.cost})
        doc.source["event"]["hash"] = doc.hash
    return unpriced
