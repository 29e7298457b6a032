"""The versioned price table: what a unit of usage costs, by model, in force on a date.

The table is data, not code: ``usage_collector/prices/<YYYY-MM-DD>.toml``, one file per effective date. The file in
force on a date is the newest whose date is on or before it; before the first file no table is in force. A user file
(TOML or JSON, same layout; ``--file`` or ``USAGE_COLLECTOR_PRICES_FILE``) overrides or extends single prices and
multipliers; it applies from its own ``effective`` date when it has one, else always.

Layout of a file (see the shipped one for every unit)::

    effective = 2026-08-21
    [sources.genai-prices]                 # a name, with where the figures were read
    url = "https://..."
    [multipliers.batch]                    # factor on token prices of every model without its own tier price
    factor = "0.5"
    [models."gpt-4o"]
    snapshots = ["gpt-4o-2024-08-06"]      # names billed at this entry's prices
    source = "genai-prices"                # defaults of every price below: source, checked, verified, note
    checked = 2025-07-04
    verified = false
    input = "2.50"                         # USD per 1M tokens
    "image:1024x1024:high" = { price = "0.167", source = "...", checked = 2026-11-30 }
    [models."gpt-4o".priority]             # explicit prices of a service tier (also "batch", "flex")
    input = "4.25"

Model names are normalised as follows, first match wins, and nothing else is tried (so a model with no price
returns ``None``, never a neighbour's price):

1. the name as given, lower-cased and stripped (``GPT-4o `` -> ``gpt-4o``);
2. an entry listing it under ``snapshots`` (``gpt-4o-2024-08-06`` -> ``gpt-4o``);
3. with a trailing date (``-YYYY-MM-DD``) removed, an entry that says ``dated_snapshots = true``
   (``gpt-5-nano-2025-08-07`` -> ``gpt-5-nano``). A dated snapshot is *not* priced as its alias otherwise:
   snapshots of one alias have been priced differently (``gpt-4o-2024-05-13``).

Model-independent units (tool calls, vector storage) live under the model ``"*"``, used for every model.

Arithmetic is exact :class:`~decimal.Decimal`: ``quantity x price / per`` where ``per`` is a power of ten, times a
multiplier given as a decimal string; nothing is rounded (display rounds). Floats are refused.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "ANY_MODEL",
    "TOKEN_UNITS",
    "USER_FILE_ENV",
    "LineItem",
    "Multiplier",
    "Price",
    "PriceTable",
    "PriceTableError",
    "Unit",
    "normalise_model",
    "parse_line_item",
    "unit_of",
    "user_file_from_env",
]

#: Environment variable naming a user price file (``prices --file`` wins over it).
USER_FILE_ENV = "USAGE_COLLECTOR_PRICES_FILE"
#: The model key of prices that are the same for every model (tools, storage).
ANY_MODEL = "*"

_FILE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(toml|json)$")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_IMAGE_UNIT = re.compile(r"^image:(\d+x\d+):([a-z]+)$")
_META = frozenset({"snapshots", "dated_snapshots", "source", "checked", "verified", "note"})
_TIERS = ("batch", "flex", "priority")


class PriceTableError(ConfigError):
    """A price file is malformed, or no table is in force on the date asked for."""


class NoPriceTableError(PriceTableError):
    """No price file is in force on the date asked for (it is before the earliest one)."""


@dataclass(frozen=True)
class Unit:
    """A priced unit: the price in a file is USD per ``per`` of ``measure``."""

    name: str
    per: int
    measure: str

    @property
    def is_tokens(self) -> bool:
        return self.measure == "tokens"


TOKEN_UNITS: tuple[str, ...] = (
    "input",
    "cached_input",
    "cache_write_30m",
    "cache_write_12h",
    "output",
    "audio_input",
    "cached_audio_input",
    "audio_output",
    "image_input",
    "cached_image_input",
    "image_output",
)
_UNITS: dict[str, Unit] = {
    **{u: Unit(u, 1_000_000, "tokens") for u in TOKEN_UNITS},
    "transcription_seconds": Unit("transcription_seconds", 1, "seconds"),
    "speech_characters": Unit("speech_characters", 1_000_000, "characters"),
    "web_search_calls": Unit("web_search_calls", 1000, "calls"),
    "file_search_calls": Unit("file_search_calls", 1000, "calls"),
    "code_interpreter_sessions": Unit("code_interpreter_sessions", 1, "sessions"),
    "vector_storage_gb_day": Unit("vector_storage_gb_day", 1, "GB-days"),
}


def unit_of(name: str) -> Unit | None:
    """The :class:`Unit` called ``name`` (``input``, ``image:1024x1024:high``, ...), or ``None`` if unknown."""
    unit = _UNITS.get(name)
    if unit is None and _IMAGE_UNIT.match(name):
        return Unit(name, 1, "images")
    return unit


@dataclass(frozen=True)
class Price:
    """One price: USD per ``unit.per`` of the unit's measure, and where it came from.

    Attributes:
        model: the table's model key (after normalisation; ``"*"`` for model-independent units).
        unit: the unit.
        usd: the price, exact.
        tier: ``None`` for the standard price, else ``batch``, ``flex`` or ``priority``.
        source: the name of the source in the file's ``[sources]``.
        source_url: that source's address, when the file gives one.
        checked: the date the figure was checked (by the source when it says so, else when it was read).
        verified: whether someone checked it against OpenAI's own price list.
        note: a caveat, if any.
        origin: the file it came from (a shipped file name or the user file's path).
    """

    model: str
    unit: Unit
    usd: Decimal
    tier: str | None = None
    source: str | None = None
    source_url: str | None = None
    checked: date | None = None
    verified: bool = False
    note: str | None = None
    origin: str = ""

    def cost(self, quantity: Decimal, factor: Decimal = Decimal(1)) -> Decimal:
        """``quantity x usd / per x factor``, exact (raises :class:`decimal.Inexact` if it cannot be)."""
        with localcontext() as ctx:
            ctx.prec = 80
            ctx.traps[Inexact] = True
            return quantity * self.usd * factor / self.unit.per


@dataclass(frozen=True)
class Multiplier:
    """A factor on the token prices of a tier (``batch``, ``flex``) for models without their own tier price."""

    tier: str
    factor: Decimal
    source: str | None = None
    checked: date | None = None
    verified: bool = False
    note: str | None = None
    origin: str = ""


def normalise_model(name: str) -> str:
    """Lower-case, stripped model name (the first normalisation step)."""
    return name.strip().lower()


def user_file_from_env() -> Path | None:
    """The user price file named by :data:`USER_FILE_ENV`, if set."""
    value = os.environ.get(USER_FILE_ENV, "").strip()
    return Path(value) if value else None


# --- parsing ----------------------------------------------------------------------------------------------------------


def _as_date(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise PriceTableError(f"{where}: {value!r} is not a date (YYYY-MM-DD)")


def _as_decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool | float):
        raise PriceTableError(f'{where}: {value!r} is a float; write prices as strings such as "2.50"')
    if isinstance(value, int | Decimal):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise PriceTableError(f"{where}: {value!r} is not a decimal number") from None
    else:
        raise PriceTableError(f"{where}: {value!r} is not a price")
    if not result.is_finite() or result < 0:
        raise PriceTableError(f"{where}: {value!r} must be a finite price >= 0")
    return result


def _read(path: Path, text: str) -> dict[str, Any]:
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, parse_float=Decimal)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text, parse_float=Decimal)
        else:
            raise PriceTableError(f"price file {path}: use a .toml or .json file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PriceTableError(f"price file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PriceTableError(f"price file {path}: the top level must be a table")
    return data


@dataclass
class _File:
    origin: str
    effective: date | None
    prices: dict[tuple[str, str | None, str], Price]  # (model, tier, unit) -> price
    snapshots: dict[str, str]  # snapshot -> model
    dated: set[str]
    multipliers: dict[str, Multiplier]


def _parse(origin: str, data: Mapping[str, Any]) -> _File:
    effective = _as_date(data["effective"], f"{origin}: effective") if "effective" in data else None
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise PriceTableError(f"{origin}: [sources] must be a table")

    def meta(table: Mapping[str, Any], inherited: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(inherited)
        if "source" in table:
            out["source"] = str(table["source"])
        if "checked" in table:
            out["checked"] = _as_date(table["checked"], f"{where}.checked")
        if "verified" in table:
            out["verified"] = bool(table["verified"])
        if "note" in table:
            out["note"] = str(table["note"])
        return out

    def url(source: str | None) -> str | None:
        entry = sources.get(source) if source else None
        return str(entry["url"]) if isinstance(entry, dict) and "url" in entry else None

    prices: dict[tuple[str, str | None, str], Price] = {}
    snapshots: dict[str, str] = {}
    dated: set[str] = set()
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise PriceTableError(f"{origin}: [models] must be a table")
    for raw_model, entry in models.items():
        model = normalise_model(raw_model)
        where = f"{origin}: models.{raw_model}"
        if not isinstance(entry, dict):
            raise PriceTableError(f"{where} must be a table")
        base = meta(entry, {"verified": False}, where)
        for snap in entry.get("snapshots", []):
            snapshots[normalise_model(str(snap))] = model
        if entry.get("dated_snapshots"):
            dated.add(model)
        for key, value in entry.items():
            if key in _META:
                continue
            if key in _TIERS and isinstance(value, dict) and unit_of(key) is None:
                tier_meta = meta(value, base, f"{where}.{key}")
                for ukey, uvalue in value.items():
                    if ukey not in _META:
                        _add(prices, model, key, ukey, uvalue, tier_meta, f"{where}.{key}.{ukey}", origin, url)
                continue
            _add(prices, model, None, key, value, base, f"{where}.{key}", origin, url)
    multipliers: dict[str, Multiplier] = {}
    for tier, entry in data.get("multipliers", {}).items():
        where = f"{origin}: multipliers.{tier}"
        if tier not in _TIERS or not isinstance(entry, dict) or "factor" not in entry:
            raise PriceTableError(f"{where}: expected a table with a factor, for one of {', '.join(_TIERS)}")
        m = meta(entry, {"verified": False}, where)
        multipliers[tier] = Multiplier(tier, _as_decimal(entry["factor"], f"{where}.factor"), origin=origin, **m)
    return _File(origin, effective, prices, snapshots, dated, multipliers)


def _add(
    prices: dict[tuple[str, str | None, str], Price],
    model: str,
    tier: str | None,
    unit_name: str,
    value: Any,
    inherited: dict[str, Any],
    where: str,
    origin: str,
    url: Any,
) -> None:
    unit = unit_of(unit_name)
    if unit is None:
        known = ", ".join([*_UNITS, "image:<size>:<quality>"])
        raise PriceTableError(f"{where}: unknown unit {unit_name!r}; known units: {known}")
    m = inherited
    if isinstance(value, dict):
        if "price" not in value:
            raise PriceTableError(f"{where}: a table needs a price")
        m = {**inherited, **{k: v for k, v in value.items() if k != "price"}}
        if "checked" in value:
            m["checked"] = _as_date(value["checked"], f"{where}.checked")
        value = value["price"]
    prices[(model, tier, unit_name)] = Price(
        model=model,
        unit=unit,
        usd=_as_decimal(value, where),
        tier=tier,
        source=m.get("source"),
        source_url=url(m.get("source")),
        checked=m.get("checked"),
        verified=bool(m.get("verified", False)),
        note=m.get("note"),
        origin=origin,
    )


#: Files parsed so far, by origin and text. A table is loaded per UTC day (``estimate.PriceBook``) and the days of
#: one run share their files (a reconciliation reads three days): parsing the same TOML again for each day took
#: about 8 ms a day (P3). Keyed by the text, so a file that changed is parsed again; :meth:`PriceTable.load`
#: copies what it takes, so a parsed file is never modified. Threads may race to fill it: both parse, one wins.
_PARSED: dict[tuple[str, str], _File] = {}


def _parsed(origin: str, path: Path, text: str) -> _File:
    """``_parse(origin, _read(path, text))``, once per origin and text (:data:`_PARSED`)."""
    key = (origin, text)
    found = _PARSED.get(key)
    if found is None:
        found = _PARSED[key] = _parse(origin, _read(path, text))
    return found


def _shipped(directory: Path | None) -> list[tuple[date, str, str]]:
    """``(effective, origin, text)`` of every shipped file, oldest first."""
    out: list[tuple[date, str, str]] = []
    if directory is not None:
        entries: list[tuple[str, Any]] = [(p.name, p) for p in directory.iterdir()]
    else:
        entries = [(p.name, p) for p in (resources.files("usage_collector") / "prices").iterdir()]
    for name, handle in entries:
        m = _FILE_NAME.match(name)
        if m:
            out.append((date.fromisoformat(m.group(1)), name, handle.read_text(encoding="utf-8")))
    return sorted(out)


# --- the table --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTable:
    """The prices in force on one date (a shipped file, plus a user file's overrides)."""

    as_of: date
    effective: date
    origins: tuple[str, ...]
    prices: Mapping[tuple[str, str | None, str], Price]
    snapshots: Mapping[str, str]
    dated: frozenset[str]
    multipliers: Mapping[str, Multiplier]

    @classmethod
    def load(
        cls,
        as_of: date | str | None = None,
        user_file: Path | str | None = None,
        *,
        directory: Path | None = None,
    ) -> PriceTable:
        """The table in force on ``as_of`` (default: today, UTC).

        Args:
            as_of: the date the prices are wanted for (a ``date`` or ``YYYY-MM-DD``).
            user_file: a TOML or JSON file overriding or extending single prices and multipliers.
            directory: where the dated files are (default: the ones shipped in the package; tests use their own).

        Raises:
            PriceTableError: no file is in force on ``as_of``, or a file is malformed (the message names it).
        """
        day = datetime.now(UTC).date() if as_of is None else _as_date(as_of, "as_of")
        files = [f for f in _shipped(directory) if f[0] <= day]
        if not files:
            first = _shipped(directory)
            hint = f"; the earliest starts {first[0][0]}" if first else ""
            raise NoPriceTableError(f"no price table is in force on {day}{hint}")
        effective, origin, text = files[-1]
        base = _parsed(origin, Path(origin), text)
        if base.effective is not None and base.effective != effective:
            raise PriceTableError(f"{origin}: effective = {base.effective} differs from the file name")
        prices = dict(base.prices)
        snapshots = dict(base.snapshots)
        dated = set(base.dated)
        multipliers = dict(base.multipliers)
        origins = [origin]
        if user_file is not None:
            path = Path(user_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise PriceTableError(f"price file {path}: {exc.strerror or exc}") from None
            user = _parsed(str(path), path, text)
            if user.effective is None or user.effective <= day:
                prices.update(user.prices)
                snapshots.update(user.snapshots)
                dated |= user.dated
                multipliers.update(user.multipliers)
                origins.append(str(path))
        return cls(day, effective, tuple(origins), prices, snapshots, frozenset(dated), multipliers)

    # --- lookup -------------------------------------------------------------------------------------------------------

    @cached_property
    def _models(self) -> frozenset[str]:
        return frozenset(m for (m, _t, _u) in self.prices)

    @cached_property
    def memo(self) -> dict[tuple[Any, ...], Any]:
        """Answers already given by pure functions of this table (:meth:`resolve_model`, :meth:`price_for`,
        ``estimate``'s price per unit), keyed by the function's name and arguments: the table never changes,
        and a backfill asks the same few questions for every document (``bench/p8_cpu.py``: rebuilding the
        model set per question was half of the collector's CPU). Filled by concurrent threads: a lost race
        only repeats a pure computation."""
        return {}

    def resolve_model(self, model: str) -> str | None:
        """The table's key for ``model`` by the rules in the module docstring, or ``None`` if it has no entry."""
        memo = self.memo
        key = ("model", model)
        if key in memo:
            return memo[key]  # type: ignore[no-any-return]
        found = memo[key] = self._resolve_model(model)
        return found

    def _resolve_model(self, model: str) -> str | None:
        name = normalise_model(model)
        known = self._models
        if name in known:
            return name
        if name in self.snapshots:
            return self.snapshots[name]
        alias = _DATE_SUFFIX.sub("", name)
        if alias != name and alias in self.dated:
            return alias
        return None

    def lookup(self, model: str | None, unit: str, tier: str | None = None) -> Price | None:
        """The price of ``unit`` for ``model`` (standard tier unless ``tier``), or ``None``; never a guess.

        A tier price is only one the table states for that model; see :meth:`price_for` for multipliers.
        """
        if model is not None:
            key = self.resolve_model(model)
            if key is not None:
                found = self.prices.get((key, tier, unit))
                if found is not None:
                    return found
        return self.prices.get((ANY_MODEL, tier, unit))

    def price_for(
        self, model: str | None, unit: str, *, batch: bool = False, service_tier: str | None = None
    ) -> tuple[Price, Decimal] | None:
        """The price and the factor on it for a usage row, or ``None`` when the table does not say.

        ``service_tier`` ``None``, ``default`` or ``auto`` is the standard price. ``batch=True`` (the Batch API)
        and ``flex``/``priority`` use the model's own tier price if the table has one, else the tier's multiplier
        on a token price; a non-token unit, a tier without either, or batch combined with another tier is ``None``.
        ``scale`` is ``None``: Scale Tier is billed as organization-level units, not per token.
        """
        memo = self.memo
        key = ("price", model, unit, batch, service_tier)
        if key in memo:
            return memo[key]  # type: ignore[no-any-return]
        found = memo[key] = self._price_for(model, unit, batch, service_tier)
        return found

    def _price_for(
        self, model: str | None, unit: str, batch: bool, service_tier: str | None
    ) -> tuple[Price, Decimal] | None:
        tier = (service_tier or "default").strip().lower()
        if tier in ("default", "auto", "standard"):
            tier = "default"
        if batch:
            if tier != "default":
                return None
            tier = "batch"
        if tier == "default":
            standard = self.lookup(model, unit)
            return (standard, Decimal(1)) if standard is not None else None
        if tier not in _TIERS:
            return None
        own = self.lookup(model, unit, tier)
        if own is not None:
            return own, Decimal(1)
        multiplier = self.multipliers.get(tier)
        standard = self.lookup(model, unit)
        if multiplier is None or standard is None or not standard.unit.is_tokens:
            return None
        return standard, multiplier.factor

    def estimate(
        self,
        model: str | None,
        unit: str,
        quantity: int | Decimal | str,
        batch: bool = False,
        service_tier: str | None = None,
    ) -> Decimal | None:
        """Estimated USD for ``quantity`` of ``unit`` (tokens, images, seconds, ...), exact; ``None`` if unpriced.

        >>> t = PriceTable.load("2026-11-30")
        >>> t.estimate("gpt-4o-2024-08-06", "input", 1_000_000)
        Decimal('2.50')
        >>> t.estimate("gpt-4o", "output", 1234, batch=True)
        Decimal('0.00617')
        >>> t.estimate("a-model-nobody-priced", "input", 1000) is None
        True
        """
        if isinstance(quantity, float | bool):
            raise TypeError("quantity must be an int, a Decimal or a decimal string, not a float")
        found = self.price_for(model, unit, batch=batch, service_tier=service_tier)
        if found is None:
            return None
        price, factor = found
        return price.cost(Decimal(quantity), factor)

    def __iter__(self) -> Iterator[Price]:
        """Every price, by model, tier and unit."""
        for key in sorted(self.prices, key=lambda k: (k[0] == ANY_MODEL, k[0], k[1] or "", k[2])):
            yield self.prices[key]

    def rows(self, model: str | None = None) -> list[Price]:
        """Every price, or those of one model (its snapshots and dated names resolve to it; ``*`` included)."""
        if model is None:
            return list(self)
        key = self.resolve_model(model)
        return [p for p in self if p.model in (key, ANY_MODEL)]

    def with_price(self, price: Price) -> PriceTable:
        """A copy with one more (or a replaced) price, for tests and callers building a table."""
        prices = dict(self.prices)
        prices[(price.model, price.tier, price.unit.name)] = price
        return replace(self, prices=prices)


# --- line items -------------------------------------------------------------------------------------------------------

#: Costs API line-item unit text -> the price table's unit. The strings are the format the simulator and third-party
#: mocks use ("gpt-4o-2024-08-06, input"); OpenAI's full set of live strings is unknown (openai-usage-api.md §6).
LINE_ITEM_UNITS: dict[str, str] = {
    "input": "input",
    "cached input": "cached_input",
    "output": "output",
    "audio input": "audio_input",
    "cached audio input": "cached_audio_input",
    "audio output": "audio_output",
    "image input": "image_input",
    "cached image input": "cached_image_input",
    "image output": "image_output",
    "cache write 30m": "cache_write_30m",
    "cache write 12h": "cache_write_12h",
}


@dataclass(frozen=True)
class LineItem:
    """A Costs API line item, split. ``model`` and ``unit`` are ``None`` when the text has no known shape."""

    raw: str | None
    model: str | None = None
    unit: str | None = None
    tier: str | None = None

    @property
    def parsed(self) -> bool:
        return self.model is not None


def parse_line_item(text: str | None) -> LineItem:
    """Split ``"<model>, [<tier> ]<unit>"`` into model, unit and tier.

    >>> parse_line_item("gpt-4o-2024-08-06, input")
    LineItem(raw='gpt-4o-2024-08-06, input', model='gpt-4o-2024-08-06', unit='input', tier=None)
    >>> parse_line_item("gpt-4o-mini-2024-07-18, batch cached input").tier
    'batch'
    >>> parse_line_item("web search tool calls").parsed
    False

    Only a known unit text (:data:`LINE_ITEM_UNITS`) after the last comma counts; anything else (``"Text tokens"``,
    ``"scale tier units, gpt-4o"``) keeps ``model`` and ``unit`` ``None`` and only the raw text.
    """
    if text is None:
        return LineItem(None)
    head, sep, tail = text.rpartition(",")
    if not sep or not head.strip():
        return LineItem(text)
    words = tail.strip().lower()
    tier = None
    first, _, rest = words.partition(" ")
    if first in _TIERS and rest:
        tier, words = first, rest
    unit = LINE_ITEM_UNITS.get(words)
    if unit is None:
        return LineItem(text)
    return LineItem(text, head.strip(), unit, tier)
