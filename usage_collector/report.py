"""The spend report: terminal tables, an offline HTML page with charts, and CSV files of the same tables.

Works on the documents a sink holds (``Sink.iter_documents``), so the same report reads DuckDB, NDJSON or
Elasticsearch. Money is :class:`~decimal.Decimal` end to end (the sum of the billed amounts as the API gave them)
and rounded only where it is displayed; the CSV files carry the exact sums.

What it shows, for the period ``[start, end)`` (UTC days; default: every day in the sink) as it stood at ``as_of``
(documents of buckets starting at or after ``as_of`` are left out, so a report can be re-run "as of" any day):

* billed cost per day (a chart with values on both axes);
* billed cost by project, by model (billed, by line item's model: :func:`model_of_line_item`), by line item and by
  API key; tokens by model (usage streams). Each table shows its top rows and one "other (k more)" row, so every
  table adds up to its total;
* month to date (the month of ``as_of``, closed days) against the same days of the month before;
* the month-end forecast of billed cost (:func:`usage_collector.forecast.forecast_month` over the daily billed
  series), with its interval, and per budget when budgets are given (:class:`BudgetLike`);
* top movers: projects and line items, the last 7 complete days against the 7 before, by absolute change.

A day between the first and the last closed day with billed cost that has no costs document counts as a zero-spend
day (the collector read it and OpenAI billed nothing); days before the first or after the last are unknown.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

from .estimate import ESTIMATED_COST, USAGE_STREAMS
from .forecast import COVERAGE, Forecast, InsufficientHistory, days_in_month, forecast_month
from .pricing import parse_line_item
from .sinks.base import Sink

#: Rows shown per table before the "other (k more)" row.
DEFAULT_TOP = 10
#: Days of each of the two windows top movers compare.
MOVER_DAYS = 7
#: The scope of a budget with no project.
ORGANIZATION = "organization"

Cell = str | Decimal | int | date | None
ColumnKind = Literal["text", "money", "delta", "int", "pct"]


class BudgetLike(Protocol):
    """What the report needs of a budget: a name, an amount per calendar month (UTC), and its scope.

    ``project_id`` ``None`` is the whole organization. The configuration's budgets fit this shape.
    """

    @property
    def name(self) -> str: ...

    @property
    def amount(self) -> Decimal | int | float: ...

    @property
    def project_id(self) -> str | None: ...


@dataclass(frozen=True)
class Mover:
    """A project or line item's billed cost in the recent window and the one before."""

    label: str
    recent: Decimal
    prior: Decimal

    @property
    def change(self) -> Decimal:
        return self.recent - self.prior


@dataclass(frozen=True)
class MonthToDate:
    """Billed cost of the closed days of ``month`` through ``through``, and of the same days of the month before.

    ``days`` is 0 (and ``through`` ``None``) on the first of a month. ``last`` is ``None`` when the sink holds no
    data for the month before (collection started later).
    """

    month: date
    through: date | None
    days: int
    this: Decimal
    last_month: date
    last_through: date | None
    last: Decimal | None

    @property
    def change(self) -> Decimal | None:
        return None if self.last is None else self.this - self.last


@dataclass(frozen=True)
class BudgetRow:
    """One budget with the forecast of its scope (``forecast`` ``None``: too little history, see ``note``)."""

    name: str
    scope: str
    amount: Decimal
    forecast: Forecast | None
    note: str | None = None

    @property
    def percent(self) -> Decimal | None:
        """Forecast month-end as a percentage of the budget."""
        if self.forecast is None or self.amount <= 0:
            return None
        return self.forecast.point / self.amount * 100

    @property
    def status(self) -> str:
        if self.forecast is None:
            return "no forecast"
        if self.forecast.month_to_date > self.amount:
            return "over budget"
        if self.forecast.point > self.amount:
            return "forecast over"
        if self.forecast.upper > self.amount:
            return "at risk"
        return "on track"


@dataclass
class Report:
    """Aggregates for the report. Cost tables are ``(label, cost)`` rows sorted by cost, descending, complete
    (no "other" row: :func:`with_other` adds it for display); each adds up to ``total_cost``."""

    currency: str = "usd"
    as_of: datetime | None = None
    as_of_given: bool = False
    period_start: date | None = None
    period_end: date | None = None  # the last day, inclusive
    total_cost: Decimal = Decimal(0)
    documents: int = 0
    organizations: list[str] = field(default_factory=list)
    days: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_project: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_model: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_line_item: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_api_key: list[tuple[str, Decimal]] = field(default_factory=list)
    #: billed cost by user (allocation documents; days without them are one "(not allocated)" row)
    cost_by_user: list[tuple[str, Decimal]] = field(default_factory=list)
    #: closed days whose cost by model and by user come from allocation (usage share), not line items
    allocated_days: int = 0
    #: (model or item, estimated, billed) from reconciliation documents, by billed cost
    estimated_vs_billed: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    #: usage documents of the period without an estimated cost (no price in force for them)
    unpriced_documents: int = 0
    tokens_by_model: list[tuple[str, int, int]] = field(default_factory=list)
    month: MonthToDate | None = None
    month_daily: dict[date, Decimal] = field(default_factory=dict)  # this month and the one before, for the chart
    forecast: Forecast | None = None
    forecast_note: str | None = None
    budgets: list[BudgetRow] = field(default_factory=list)
    movers_recent: tuple[date, date] | None = None  # first and last day of the recent window
    movers_note: str | None = None
    movers_by_project: list[Mover] = field(default_factory=list)
    movers_by_line_item: list[Mover] = field(default_factory=list)

    @property
    def period_days(self) -> int:
        if self.period_start is None or self.period_end is None:
            return 0
        return (self.period_end - self.period_start).days + 1


# --- aggregation ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cost:
    ts: datetime  # bucket start
    project: str | None
    line_item: str | None
    api_key: str | None
    value: Decimal

    @property
    def day(self) -> date:
        return self.ts.date()


@dataclass(frozen=True)
class _Part:
    """An allocated part of a billed line (``openai.allocation``)."""

    day: date
    model: str
    user: str
    value: Decimal


def model_of_line_item(line_item: str | None) -> str:
    """The model of a billed line item (``"gpt-4o-2024-08-06, input"`` -> ``gpt-4o-2024-08-06``).

    Line items with no model in them (``"web search tool calls"``) keep their text after ``(no model)``. This is
    "billed, by line item's model"; allocation documents, once collected, replace it.
    """
    if line_item is None:
        return "(no line item)"
    parsed = parse_line_item(line_item)
    return parsed.model if parsed.model is not None else f"(no model) {line_item}"


def cost_by_model(by_line_item: Iterable[tuple[str | None, Decimal]]) -> list[tuple[str, Decimal]]:
    """Billed cost by line item's model, from billed cost by line item (adds up to the same total)."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for item, value in by_line_item:
        out[model_of_line_item(item)] += value
    return _sorted(out)


def _amount(value: Any) -> Decimal:
    """A document's number as Decimal: floats through their shortest repr (the digits the API sent)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return Decimal(str(value))


def _label(ident: str | None, name: str | None) -> str:
    if ident is None:
        return "(organization level)"  # e.g. Scale Tier units and storage are billed to no project/key
    return f"{name} ({ident})" if name and name != ident else ident


def _sorted(d: Mapping[str, Decimal]) -> list[tuple[str, Decimal]]:
    return sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))


def _instant(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _previous_month(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


def build_report(
    sink: Sink,
    *,
    start: date | None = None,
    end: date | None = None,
    as_of: datetime | None = None,
    budgets: Sequence[BudgetLike] = (),
) -> Report:
    """The report of every document of ``sink`` (see :func:`aggregate` for the arguments)."""
    return aggregate(sink.iter_documents(), start=start, end=end, as_of=as_of, budgets=budgets)


def aggregate(
    docs: Iterable[Mapping[str, Any]],
    *,
    start: date | None = None,
    end: date | None = None,
    as_of: datetime | None = None,
    budgets: Sequence[BudgetLike] = (),
) -> Report:
    """Aggregate documents (``{"_id", "_index", "_source"}``) into a :class:`Report`.

    Args:
        docs: the sink's current documents, any streams.
        start: first UTC day of the period (default: the first day in the documents).
        end: exclusive end day of the period (default: the day after the last day in the documents).
        as_of: the instant the report stands on: buckets starting at or after it are left out; the month to
            date, the forecast and the movers are of its month and the days closed before its day. Default: the
            end of the data (midnight after its last day, or ``end`` if earlier).
        budgets: budgets to forecast against, each of the organization or of one project.

    Returns:
        The :class:`Report`.
    """
    costs: list[_Cost] = []
    usage: list[tuple[datetime, str, int, int]] = []
    stamps: list[datetime] = []  # bucket start of every document, for the period and the count
    project_names: dict[str, str] = {}
    key_names: dict[str, str] = {}
    orgs: set[str] = set()
    currency = "usd"
    parts: list[_Part] = []
    recs: list[tuple[date, str, Decimal, Decimal]] = []
    unpriced: list[datetime] = []
    for d in docs:  # one pass, keeping only what the report needs (a sink can hold millions of documents)
        src = d["_source"]
        ts = _instant(src["@timestamp"])
        base = src.get("openai", {}).get("base", {})
        stream = src["event"]["dataset"].removeprefix("openai.")
        own = src.get("openai", {}).get(stream, {})
        if _derived(stream, ts, base, own, parts, recs):
            continue
        stamps.append(ts)
        if stream in USAGE_STREAMS and ESTIMATED_COST not in own:
            unpriced.append(ts)
        if org := src.get("organization", {}).get("id"):
            orgs.add(org)
        for key, name_key, names in (
            ("project_id", "project_name", project_names),
            ("api_key_id", "api_key_name", key_names),
        ):
            if (ident := base.get(key)) is not None and (name := base.get(name_key)):
                names[ident] = name
        if stream == "costs":
            amount = own.get("amount", {})
            currency = amount.get("currency") or currency
            value = _amount(amount.get("value"))
            costs.append(_Cost(ts, base.get("project_id"), own.get("line_item"), base.get("api_key_id"), value))
        elif "input_tokens" in own:
            model = base.get("model") or "(none)"
            usage.append((ts, model, int(own.get("input_tokens") or 0), int(own.get("output_tokens") or 0)))

    as_of_given = as_of is not None
    if as_of is None:
        if not stamps:
            return Report()
        as_of = _midnight(max(stamps).date() + timedelta(days=1))
        if end is not None:
            as_of = min(as_of, _midnight(end))
    elif as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    today = as_of.date()
    costs = [c for c in costs if c.ts < as_of]
    all_days = [ts.date() for ts in stamps if ts < as_of]

    rep = Report(currency=currency, as_of=as_of, as_of_given=as_of_given, organizations=sorted(orgs))
    first = start or min(all_days, default=None)
    last_excl = end or (max(all_days) + timedelta(days=1) if all_days else None)
    if last_excl is not None:  # no day after as_of: it has not happened yet
        last_excl = min(last_excl, (as_of - timedelta(microseconds=1)).date() + timedelta(days=1))
    if first is None or last_excl is None or last_excl <= first:
        return rep
    rep.period_start, rep.period_end = first, last_excl - timedelta(days=1)
    rep.documents = sum(1 for day in all_days if first <= day < last_excl)

    in_period = [c for c in costs if first <= c.day < last_excl]
    by_day: dict[date, Decimal] = defaultdict(Decimal)
    by_project: dict[str, Decimal] = defaultdict(Decimal)
    by_item: dict[str | None, Decimal] = defaultdict(Decimal)
    by_key: dict[str, Decimal] = defaultdict(Decimal)
    for c in in_period:
        rep.total_cost += c.value
        by_day[c.day] += c.value
        by_project[_label(c.project, project_names.get(c.project or ""))] += c.value
        by_item[c.line_item] += c.value
        by_key[_label(c.api_key, key_names.get(c.api_key or ""))] += c.value
    rep.days = [
        ((first + timedelta(days=i)).isoformat(), by_day.get(first + timedelta(days=i), Decimal(0)))
        for i in range(rep.period_days)
    ]
    rep.cost_by_project = _sorted(by_project)
    rep.cost_by_line_item = _sorted({item or "(no line item)": v for item, v in by_item.items()})
    _by_allocation(rep, in_period, parts, first, last_excl)
    rep.unpriced_documents = sum(1 for ts in unpriced if ts < as_of and first <= ts.date() < last_excl)
    _reconciled(rep, recs, first, last_excl)
    rep.cost_by_api_key = _sorted(by_key)
    tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ts, model, i, o in usage:
        if ts < as_of and first <= ts.date() < last_excl:
            t = tokens[model]
            t[0] += i
            t[1] += o
    rep.tokens_by_model = sorted(((m, i, o) for m, (i, o) in tokens.items()), key=lambda r: (-(r[1] + r[2]), r[0]))

    closed = [c for c in costs if c.day < today]
    _month_and_forecast(rep, closed, [c for c in costs if c.day >= today], today, budgets, project_names)
    _movers(rep, closed, today, last_excl, project_names)
    return rep


def _derived(
    stream: str,
    ts: datetime,
    base: Mapping[str, Any],
    own: Mapping[str, Any],
    parts: list[_Part],
    recs: list[tuple[date, str, Decimal, Decimal]],
) -> bool:
    """Keep an allocation or reconciliation document (:mod:`usage_collector.reconcile`); ``False`` for others."""
    if stream == "allocation":
        model = base.get("model") or model_of_line_item(own.get("line_item"))
        user = _label(base.get("user_id"), base.get("user_email")) if base.get("user_id") else "(no user)"
        parts.append(_Part(ts.date(), model, user, _amount(own.get("amount"))))
        return True
    if stream == "reconciliation":
        label = base.get("model") or own.get("item") or "(none)"
        if base.get("project_id") is None and base.get("model") is None:
            label = f"{label} (organization level)"
        recs.append((ts.date(), label, _amount(own.get("estimated_cost")), _amount(own.get("billed_cost"))))
        return True
    return False


def _by_allocation(rep: Report, in_period: Sequence[_Cost], parts: Sequence[_Part], first: date, end: date) -> None:
    """Cost by model and by user: allocated parts on the days that have them, line items' models on the others
    (their users are "(not allocated)"), so both tables add up to the billed total."""
    days = {p.day for p in parts if first <= p.day < end}
    rep.allocated_days = len(days)
    rest: dict[str | None, Decimal] = defaultdict(Decimal)
    by_model: dict[str, Decimal] = defaultdict(Decimal)
    by_user: dict[str, Decimal] = defaultdict(Decimal)
    for c in in_period:
        if c.day not in days:
            rest[c.line_item] += c.value
            by_user["(not allocated)"] += c.value
    for label, value in cost_by_model(rest.items()):
        by_model[label] += value
    for p in parts:
        if p.day in days:
            by_model[p.model] += p.value
            by_user[p.user] += p.value
    rep.cost_by_model = _sorted(by_model)
    rep.cost_by_user = _sorted(by_user) if days else []


def _reconciled(rep: Report, recs: Sequence[tuple[date, str, Decimal, Decimal]], first: date, end: date) -> None:
    rows: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for day, label, estimated, billed in recs:
        if first <= day < end:
            rows[label][0] += estimated
            rows[label][1] += billed
    rep.estimated_vs_billed = sorted(((k, e, b) for k, (e, b) in rows.items()), key=lambda r: (-r[2], -r[1], r[0]))


def _daily(costs: Iterable[_Cost], span: tuple[date, date] | None, project: str | None = None) -> dict[date, Decimal]:
    """Closed days -> billed cost (of one project, or all when ``project`` is ``None``), zero-filled over ``span``."""
    out: dict[date, Decimal] = {}
    if span is not None:
        for i in range((span[1] - span[0]).days + 1):
            out[span[0] + timedelta(days=i)] = Decimal(0)
    for c in costs:
        if project is None or c.project == project:
            out[c.day] = out.get(c.day, Decimal(0)) + c.value
    return out


def _month_and_forecast(
    rep: Report,
    closed: list[_Cost],
    partial: list[_Cost],
    today: date,
    budgets: Sequence[BudgetLike],
    project_names: Mapping[str, str],
) -> None:
    span = (min(c.day for c in closed), max(c.day for c in closed)) if closed else None
    daily = _daily(closed, span)
    month = today.replace(day=1)
    before = _previous_month(month)
    rep.month_daily = {d: v for d, v in daily.items() if d >= before}
    through = min(today - timedelta(days=1), span[1]) if span else None
    if through is not None and through < month:
        through = None
    n = through.day if through else 0
    this = sum((daily.get(month + timedelta(days=i), Decimal(0)) for i in range(n)), Decimal(0))
    last_n = min(n, days_in_month(before))
    last_through = before + timedelta(days=last_n - 1) if last_n else None
    last: Decimal | None = None
    if span is not None and span[0] <= before:
        last = sum((daily.get(before + timedelta(days=i), Decimal(0)) for i in range(last_n)), Decimal(0))
    rep.month = MonthToDate(month, through, n, this, before, last_through, last)

    def forecast(project: str | None) -> tuple[Forecast | None, str | None]:
        estimate = None
        if partial:
            estimate = sum((c.value for c in partial if project is None or c.project == project), Decimal(0))
        try:
            return forecast_month(_daily(closed, span, project), today, today_estimate=estimate), None
        except InsufficientHistory as exc:
            return None, f"history too short: {exc}"

    rep.forecast, rep.forecast_note = forecast(None)
    for b in budgets:
        amount = b.amount if isinstance(b.amount, Decimal) else Decimal(str(b.amount))
        scope = ORGANIZATION if b.project_id is None else _label(b.project_id, project_names.get(b.project_id))
        f, note = forecast(b.project_id)
        rep.budgets.append(BudgetRow(b.name, scope, amount, f, note))


def _movers(rep: Report, closed: list[_Cost], today: date, period_end: date, project_names: Mapping[str, str]) -> None:
    if not closed:
        rep.movers_note = "no closed day with billed cost"
        return
    first_day = min(c.day for c in closed)
    last = min(today, period_end) - timedelta(days=1)
    last = min(last, max(c.day for c in closed))
    recent0 = last - timedelta(days=MOVER_DAYS - 1)
    prior0 = recent0 - timedelta(days=MOVER_DAYS)
    if prior0 < first_day:
        rep.movers_note = (
            f"needs {2 * MOVER_DAYS} complete days of billed cost; the sink has "
            f"{(last - first_day).days + 1} ({first_day.isoformat()} to {last.isoformat()})"
        )
        return
    rep.movers_recent = (recent0, last)
    projects: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    items: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for c in closed:
        if prior0 <= c.day <= last:
            slot = 0 if c.day >= recent0 else 1
            projects[_label(c.project, project_names.get(c.project or ""))][slot] += c.value
            items[c.line_item or "(no line item)"][slot] += c.value

    def ranked(d: Mapping[str, list[Decimal]]) -> list[Mover]:
        movers = [Mover(label, r, p) for label, (r, p) in d.items() if r or p]
        return sorted(movers, key=lambda m: (-abs(m.change), m.label))

    rep.movers_by_project = ranked(projects)
    rep.movers_by_line_item = ranked(items)


# --- tables --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A table column: its header and how its cells are shown (``pct`` columns are display only, not in CSV)."""

    header: str
    kind: ColumnKind = "text"


@dataclass
class Table:
    """A table of the report, rendered the same way to the terminal, HTML and CSV (``name`` is the file stem)."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[Cell, ...]]
    total: tuple[Cell, ...] | None = None
    other: bool = False  # the last row is the "other (k more)" row
    note: str = ""


def with_other(rows: Sequence[tuple[Any, ...]], top: int | None) -> list[tuple[Any, ...]]:
    """The first ``top`` rows and one ``("other (k more)", sums...)`` row for the rest; all rows if ``top`` is
    ``None`` or at most one row would be left over (an "other (1 more)" row hides nothing worth hiding)."""
    if top is None or len(rows) <= top + 1:
        return list(rows)
    rest = rows[top:]
    sums = tuple(sum((r[i] for r in rest), type(rest[0][i])(0)) for i in range(1, len(rest[0])))
    return [*rows[:top], (f"other ({len(rest)} more)", *sums)]


def _share(value: Decimal, total: Decimal) -> Decimal | None:
    return value / total * 100 if total else None


def _cost_table(
    name: str, title: str, label: str, rows: list[tuple[str, Decimal]], total: Decimal, top: int | None, note: str = ""
) -> Table:
    shown = with_other(rows, top)
    return Table(
        name,
        title,
        (Column(label), Column("billed cost", "money"), Column("share", "pct")),
        [(lbl, v, _share(v, total)) for lbl, v in shown],
        total=("total", total, _share(total, total)),
        other=len(shown) < len(rows),
        note=note,
    )


def _mover_table(name: str, title: str, label: str, movers: list[Mover], top: int | None, note: str) -> Table:
    rows = [(m.label, m.recent, m.prior, m.change) for m in movers]
    shown = with_other(rows, top)
    total = tuple(sum((r[i] for r in rows), Decimal(0)) for i in (1, 2, 3))
    return Table(
        name,
        title,
        (Column(label), Column("last 7 days", "money"), Column("7 days before", "money"), Column("change", "delta")),
        shown,
        total=("total", *total),
        other=len(shown) < len(rows),
        note=note,
    )


def _day(d: date | None) -> str:
    return d.isoformat() if d else "-"


def report_tables(rep: Report, top: int | None = DEFAULT_TOP) -> list[Table]:
    """Every table of the report, in order; ``top=None`` keeps every row (the CSV files)."""
    tables: list[Table] = []
    if rep.month is not None:
        m = rep.month
        rows: list[tuple[Cell, ...]] = [
            ("this month", m.month, m.through, m.this),
            ("same days of last month", m.last_month if m.days else None, m.last_through, m.last),
        ]
        note = "no closed day of this month yet" if not m.days else ""
        if m.last is None:
            since = min(rep.month_daily, default=None)
            note = "no data for the same days of last month" + (f": the sink starts {since}" if since else "")
        elif m.change is not None and m.days:
            pct = f" ({m.change / m.last * 100:+.1f}%)" if m.last else ""
            note = f"change: {money(m.change, rep.currency, sign=True)}{pct}"
        tables.append(
            Table(
                "month_to_date",
                "Month to date against the same days of last month (closed UTC days)",
                (Column(""), Column("first day"), Column("last day"), Column("billed cost", "money")),
                rows,
                note=note,
            )
        )
    if rep.forecast is not None or rep.forecast_note:
        tables.append(_forecast_table(rep))
    if rep.budgets:
        tables.append(_budget_table(rep))
    window = ""
    if rep.movers_recent is not None:
        r0, r1 = rep.movers_recent
        p0, p1 = r0 - timedelta(days=MOVER_DAYS), r0 - timedelta(days=1)
        window = f"{r0.isoformat()} to {r1.isoformat()} against {p0.isoformat()} to {p1.isoformat()}"
    note = window or (rep.movers_note or "")
    tables.append(
        _mover_table(
            "movers_by_project",
            "Top movers: projects (by absolute change)",
            "project",
            rep.movers_by_project,
            top,
            note,
        )
    )
    tables.append(
        _mover_table(
            "movers_by_line_item",
            "Top movers: line items (by absolute change)",
            "line item",
            rep.movers_by_line_item,
            top,
            note,
        )
    )
    t = rep.total_cost
    tables.append(_cost_table("cost_by_project", "Billed cost by project", "project", rep.cost_by_project, t, top))
    by_line = "the model named in each Costs API line item; line items without one are listed as (no model)"
    tables.append(
        _cost_table(
            "cost_by_model",
            "Billed cost by model (allocated by usage share)"
            if rep.allocated_days
            else "Billed cost by model (billed, by line item's model)",
            "model",
            rep.cost_by_model,
            t,
            top,
            note=f"{rep.allocated_days} of {rep.period_days} days allocated to users and models by usage share"
            + (f"; other days: {by_line}" if rep.allocated_days < rep.period_days else "")
            if rep.allocated_days
            else by_line,
        )
    )
    if rep.cost_by_user:
        tables.append(
            _cost_table(
                "cost_by_user",
                "Billed cost by user (allocated by usage share)",
                "user",
                rep.cost_by_user,
                t,
                top,
                note="each billed line split over the users whose usage matches it that day",
            )
        )
    tables.append(
        _cost_table("cost_by_line_item", "Billed cost by line item", "line item", rep.cost_by_line_item, t, top)
    )
    tables.append(_cost_table("cost_by_api_key", "Billed cost by API key", "API key", rep.cost_by_api_key, t, top))
    if rep.estimated_vs_billed or rep.unpriced_documents:
        tables.append(_estimate_table(rep, top))
    tok = with_other(rep.tokens_by_model, top)
    tables.append(
        Table(
            "tokens_by_model",
            "Tokens by model (usage)",
            (Column("model"), Column("input tokens", "int"), Column("output tokens", "int")),
            list(tok),
            total=(
                "total",
                sum(i for _, i, _ in rep.tokens_by_model),
                sum(o for _, _, o in rep.tokens_by_model),
            ),
            other=len(tok) < len(rep.tokens_by_model),
        )
    )
    return tables


def _estimate_table(rep: Report, top: int | None) -> Table:
    rows = [(label, e, b, b - e) for label, e, b in rep.estimated_vs_billed]
    shown = with_other(rows, top)
    total = tuple(sum((r[i] for r in rows), Decimal(0)) for i in (1, 2, 3))
    note = f"{rep.unpriced_documents} usage document(s) without a price in force are not in the estimate"
    return Table(
        "estimated_vs_billed",
        "Estimated (usage x price table) against billed, closed days",
        (
            Column("model or item"),
            Column("estimated", "money"),
            Column("billed", "money"),
            Column("difference", "delta"),
        ),
        shown,
        total=("total", *total),
        other=len(shown) < len(rows),
        note=note,
    )


def _forecast_cells(f: Forecast | None) -> tuple[Cell, ...]:
    if f is None:
        return (None, None, None, None)
    return (f.month_to_date, f.point, f.lower, f.upper)


def _forecast_table(rep: Report) -> Table:
    f = rep.forecast
    month = f.month if f else (rep.as_of or datetime.now(UTC)).date().replace(day=1)
    note = rep.forecast_note or ""
    if f is not None:
        note = f"method {f.method} ({f.interval_method} interval) on {f.history_days} closed days"
        if f.history_first and f.history_last:
            note += f" ({f.history_first.isoformat()} to {f.history_last.isoformat()})"
        if f.method == "run_rate":
            note += "; history too short for a weekday pattern: a flat run rate"
        if f.missing_days:
            note += f"; {len(f.missing_days)} day(s) of the month not in the sink yet are forecast"
    cov = f"{round((f.coverage if f else COVERAGE) * 100)}%"
    return Table(
        "forecast",
        f"Month-end forecast of billed cost, {month.strftime('%B %Y')}",
        (
            Column("scope"),
            Column("month to date", "money"),
            Column("forecast", "money"),
            Column(f"low ({cov})", "money"),
            Column(f"high ({cov})", "money"),
        ),
        [(ORGANIZATION, *_forecast_cells(f))],
        note=note,
    )


def _budget_table(rep: Report) -> Table:
    rows: list[tuple[Cell, ...]] = []
    for b in rep.budgets:
        rows.append((b.name, b.scope, b.amount, *_forecast_cells(b.forecast), b.percent, b.note or b.status))
    return Table(
        "forecast_against_budget",
        "Forecast against budget (this month)",
        (
            Column("budget"),
            Column("scope"),
            Column("budget", "money"),
            Column("month to date", "money"),
            Column("forecast", "money"),
            Column("low", "money"),
            Column("high", "money"),
            Column("forecast / budget", "pct"),
            Column("status"),
        ),
        rows,
    )


def daily_table(rep: Report) -> Table:
    """Billed cost per day of the period (the chart's data)."""
    return Table(
        "cost_by_day",
        "Billed cost per day",
        (Column("day"), Column("billed cost", "money")),
        list(rep.days),
        total=("total", rep.total_cost),
    )


# --- formatting ----------------------------------------------------------------------------------------------
def money(v: Decimal, currency: str = "usd", *, sign: bool = False) -> str:
    """``$1,234.57``: rounded to cents for display (half even); ``sign`` adds ``+`` or a minus sign."""
    sym = "$" if currency.lower() == "usd" else currency.upper() + " "
    q = v.quantize(Decimal("0.01"))
    text = f"{sym}{abs(q):,}"
    if q < 0:
        return "\u2212" + text
    return ("+" + text) if sign and q > 0 else text


def _cell(value: Cell, kind: ColumnKind, currency: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal) and kind in ("money", "delta"):
        return money(value, currency, sign=kind == "delta")
    if isinstance(value, Decimal) and kind == "pct":
        return f"{value:.1f}%"
    if isinstance(value, int) and kind == "int":
        return f"{value:,}"
    return str(value)


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _header(rep: Report) -> list[str]:
    """Period, as-of time and headline figures, one line each (plain text)."""
    if rep.period_start is None or rep.period_end is None:
        return ["No documents in the sink for this period."]
    as_of = rep.as_of.strftime("%Y-%m-%d %H:%M UTC") if rep.as_of else "-"
    lines = [
        f"Period: {rep.period_start.isoformat()} to {rep.period_end.isoformat()} inclusive "
        f"({rep.period_days} UTC day{'s' if rep.period_days != 1 else ''})",
        f"As of: {as_of}" + ("" if rep.as_of_given else " (the end of the data)"),
        f"Billed cost: {money(rep.total_cost, rep.currency)} "
        f"({rep.documents:,} documents, {len(rep.organizations)} organization"
        f"{'s' if len(rep.organizations) != 1 else ''})",
    ]
    f = rep.forecast
    if f is not None:
        lines.append(
            f"Forecast for {f.month.strftime('%B %Y')}: {money(f.point, rep.currency)} "
            f"({round(f.coverage * 100)}% interval {money(f.lower, rep.currency)} to {money(f.upper, rep.currency)}), "
            f"month to date {money(f.month_to_date, rep.currency)}"
        )
    elif rep.forecast_note:
        lines.append(f"Forecast: none, {rep.forecast_note}")
    return lines


# --- terminal ------------------------------------------------------------------------------------------------
_EIGHTHS = " \u258f\u258e\u258d\u258c\u258b\u258a\u2589\u2588"


def _text_bar(value: Decimal, top: Decimal, width: int) -> str:
    if top <= 0 or value <= 0:
        return ""
    eighths = int(value / top * width * 8)
    return "\u2588" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def daily_chart_text(rep: Report, width: int = 40, max_days: int = 31) -> list[str]:
    """The daily billed cost as text bars with a value axis (the last ``max_days`` days of the period)."""
    days = rep.days[-max_days:]
    if not days:
        return []
    ticks = nice_ticks(max(v for _, v in days))
    top = ticks[-1]
    title = "Billed cost per day (UTC)"
    if len(days) < len(rep.days):
        title += f", the last {len(days)} of {len(rep.days)} days"
    lines = [title]
    for day, v in days:
        d = date.fromisoformat(day)
        lines.append(f"{d.strftime('%a %b %d')} \u2502{_text_bar(v, top, width):<{width}} {money(v, rep.currency)}")
    axis = [" "] * (width + 1)
    labels = [" "] * (width + 12)
    for t in ticks:
        col = int(t / top * width) if top else 0
        axis[col] = "\u2534" if col else "\u2514"
        text = _tick_label(t, ticks[1] - ticks[0] if len(ticks) > 1 else t, rep.currency)
        at = max(0, min(col - len(text) // 2, len(labels) - len(text)))
        if all(c == " " for c in labels[max(0, at - 1) : at + len(text) + 1]):
            labels[at : at + len(text)] = list(text)
    lines.append(" " * 10 + "".join(c if c != " " else "\u2500" for c in axis))
    lines.append(" " * 11 + "".join(labels).rstrip())
    return lines


def render_terminal(rep: Report, *, top: int = DEFAULT_TOP) -> None:
    """Print the report: header, a daily chart and the tables (rich)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    con = Console()
    for i, line in enumerate(_header(rep)):
        con.print(line, style="bold" if i == 2 else None, markup=False, highlight=False)
    if rep.period_start is None:
        return
    con.print()
    for line in daily_chart_text(rep):
        con.print(line, highlight=False, soft_wrap=True)
    for t in report_tables(rep, top):
        rt = RichTable(title=t.title, title_justify="left", caption=t.note or None, caption_justify="left")
        for c in t.columns:
            rt.add_column(c.header, justify="left" if c.kind == "text" else "right")
        for n, row in enumerate(t.rows):
            is_other = t.other and n == len(t.rows) - 1
            cells = [_cell(v, c.kind, rep.currency) for v, c in zip(row, t.columns, strict=True)]
            rt.add_row(*cells, style="italic" if is_other else None)
        if t.total is not None:
            rt.add_section()
            rt.add_row(*(_cell(v, c.kind, rep.currency) for v, c in zip(t.total, t.columns, strict=True)), style="bold")
        con.print(rt)


# --- CSV -----------------------------------------------------------------------------------------------------
def table_csv(t: Table) -> str:
    """One table as CSV text: every row, exact Decimal text, no percentage columns, no total row."""
    keep = [i for i, c in enumerate(t.columns) if c.kind != "pct"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([re.sub(r"[^a-z0-9]+", "_", t.columns[i].header.lower()).strip("_") or "row" for i in keep])
    for row in t.rows:
        w.writerow([_csv_cell(row[i]) for i in keep])
    return buf.getvalue()


def write_csv(rep: Report, directory: Path) -> list[Path]:
    """Write each table of the report (every row) as ``<directory>/<table>.csv``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for t in [daily_table(rep), *report_tables(rep, top=None)]:
        path = directory / f"{t.name}.csv"
        path.write_text(table_csv(t), encoding="utf-8")
        written.append(path)
    return written


# --- charts (inline SVG) -------------------------------------------------------------------------------------
def nice_ticks(peak: Decimal, target: int = 5) -> list[Decimal]:
    """Axis ticks from 0 to at least ``peak`` in steps of 1, 2, 2.5 or 5 times a power of ten (exact)."""
    if peak <= 0:
        return [Decimal(0), Decimal(1)]
    raw = peak / target
    magnitude = Decimal(1).scaleb(raw.adjusted())
    step = magnitude * 10
    for m in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if magnitude * m >= raw:
            step = magnitude * m
            break
    n = int((peak / step).to_integral_value(rounding=ROUND_CEILING))
    return [step * i for i in range(n + 1)]


def _tick_label(v: Decimal, step: Decimal, currency: str) -> str:
    places = max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
    sym = "$" if currency.lower() == "usd" else currency.upper() + " "
    return f"{sym}{v:,.{places}f}"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def daily_chart_svg(rep: Report, width: int = 1000, height: int = 300) -> str:
    """Billed cost per day as bars, with a value axis (ticks and grid lines) and date labels."""
    if not rep.days:
        return "<p>No billed cost in this period.</p>"
    left, right, top_m, bottom = 78, 16, 16, 58
    pw, ph = width - left - right, height - top_m - bottom
    ticks = nice_ticks(max(v for _, v in rep.days))
    top = ticks[-1]
    step = ticks[1] - ticks[0]
    n = len(rep.days)
    slot = pw / n
    bar = max(1.0, slot * 0.78)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Billed cost per day">'
    ]
    for t in ticks:
        y = top_m + ph - float(t / top) * ph
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_esc(_tick_label(t, step, rep.currency))}</text>"
        )
    label_every = max(1, -(-70 // max(1, int(slot))))
    for i, (day, v) in enumerate(rep.days):
        x = left + i * slot + (slot - bar) / 2
        h = float(v / top) * ph
        out.append(
            f'<rect x="{x:.1f}" y="{top_m + ph - h:.1f}" width="{bar:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{day}: {_esc(money(v, rep.currency))}</title></rect>"
        )
        if i % label_every == 0:
            d = date.fromisoformat(day)
            cx = left + i * slot + slot / 2
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{top_m + ph}" y2="{top_m + ph + 4}" class="axis"/>')
            out.append(
                f'<text x="{cx:.1f}" y="{top_m + ph + 17}" text-anchor="middle" class="tick">'
                f"{d.strftime('%b')} {d.day}</text>"
            )
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top_m + ph}" y2="{top_m + ph}" class="axis"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top_m}" y2="{top_m + ph}" class="axis"/>')
    years = sorted({d[:4] for d, _ in rep.days})
    span = f"{years[0]}\u2013{years[-1]}" if len(years) > 1 else years[0]
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" class="label">UTC day ({span})</text>')
    out.append(
        f'<text x="16" y="{top_m + ph / 2}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 16 {top_m + ph / 2})">billed cost per day ({rep.currency.upper()})</text>'
    )
    out.append("</svg>")
    return "".join(out)


def month_chart_svg(rep: Report, width: int = 1000, height: int = 320) -> str:
    """This month's cumulative billed cost against last month's, the forecast to month end with its interval, and
    the organization's budgets."""
    m, f = rep.month, rep.forecast
    if m is None:
        return ""
    n_this = days_in_month(m.month)
    n_last = days_in_month(m.last_month)

    def cumulative(first: date, days: int) -> list[Decimal]:
        acc, out = Decimal(0), [Decimal(0)]
        for i in range(days):
            acc += rep.month_daily.get(first + timedelta(days=i), Decimal(0))
            out.append(acc)
        return out

    this = cumulative(m.month, m.days)
    last = cumulative(m.last_month, n_last) if m.last is not None else []
    org_budgets = [b for b in rep.budgets if b.scope == ORGANIZATION]
    data_peak = max([*this, *last, f.upper if f else Decimal(0), Decimal(0)])
    # a budget far above the spend would flatten the lines: it is named above the chart instead
    shown = [b for b in org_budgets if not data_peak or b.amount <= 2 * data_peak]
    above = [b for b in org_budgets if b not in shown]
    peak = max([data_peak, *(b.amount for b in shown)])
    ticks = nice_ticks(peak)
    top, step = ticks[-1], ticks[1] - ticks[0]
    left, right, top_m, bottom = 78, 200, 34, 46
    pw, ph = width - left - right, height - top_m - bottom
    x_days = max(n_this, n_last)

    def xy(day: float, v: Decimal) -> tuple[float, float]:
        return left + day / x_days * pw, top_m + ph - float(v / top) * ph

    def path(values: list[Decimal]) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(values)))

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Month to date and forecast">'
    ]
    for t in ticks:
        _, y = xy(0, t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_esc(_tick_label(t, step, rep.currency))}</text>"
        )
    for d in [1, *range(5, x_days + 1, 5)]:
        x, _ = xy(d, Decimal(0))
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top_m + ph}" y2="{top_m + ph + 4}" class="axis"/>')
        out.append(f'<text x="{x:.1f}" y="{top_m + ph + 17}" text-anchor="middle" class="tick">{d}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top_m + ph}" y2="{top_m + ph}" class="axis"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top_m}" y2="{top_m + ph}" class="axis"/>')
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="label">day of the month (UTC), '
        f"cumulative at the end of the day</text>"
    )
    out.append(
        f'<text x="16" y="{top_m + ph / 2}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 16 {top_m + ph / 2})">billed cost, cumulative ({rep.currency.upper()})</text>'
    )
    right_labels: list[tuple[float, str, str]] = []
    for b in above:
        right_labels.append((top_m - 4, f"\u2191 budget {b.name}: {money(b.amount, rep.currency)}", "budget-label"))
    for b in shown:
        _, y = xy(0, b.amount)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="budget"/>')
        right_labels.append((y, f"budget {b.name}: {money(b.amount, rep.currency)}", "budget-label"))
    if last:
        out.append(f'<polyline points="{path(last)}" class="last"/>')
        x, y = xy(n_last, last[-1])
        right_labels.append((y, f"{m.last_month.strftime('%B')}: {money(last[-1], rep.currency)}", "last-label"))
    if f is not None and m.days < n_this:
        x0, y0 = xy(m.days, this[-1])
        x1, y1 = xy(n_this, f.point)
        _, ylo = xy(n_this, f.lower)
        _, yhi = xy(n_this, f.upper)
        out.append(
            f'<polygon points="{x0:.1f},{y0:.1f} {x1:.1f},{ylo:.1f} {x1:.1f},{yhi:.1f}" class="band">'
            f"<title>{round(f.coverage * 100)}% interval {_esc(money(f.lower, rep.currency))} to "
            f"{_esc(money(f.upper, rep.currency))}</title></polygon>"
        )
        out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" class="forecast"/>')
        out.append(f'<line x1="{x1:.1f}" x2="{x1:.1f}" y1="{ylo:.1f}" y2="{yhi:.1f}" class="whisker"/>')
        for yy in (ylo, yhi):
            out.append(f'<line x1="{x1 - 5:.1f}" x2="{x1 + 5:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" class="whisker"/>')
        right_labels.append((y1, f"forecast: {money(f.point, rep.currency)}", "forecast-label"))
    if m.days:
        out.append(f'<polyline points="{path(this)}" class="this"/>')
        x, y = xy(m.days, this[-1])
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" class="this-dot"/>')
    # labels at the right edge, pushed apart so they never overlap
    right_labels.sort()
    placed: list[float] = []
    for y, text, cls in right_labels:
        y = max(y, placed[-1] + 15) if placed else y
        placed.append(y)
        out.append(f'<text x="{left + pw + 8}" y="{y + 4:.1f}" class="{cls}">{_esc(text)}</text>')
    legend = [("this", f"{m.month.strftime('%B %Y')}, closed days")]
    if last:
        legend.append(("last", m.last_month.strftime("%B %Y")))
    if f is not None:
        legend.append(("forecast", f"forecast, {round(f.coverage * 100)}% interval"))
    lx = left
    for cls, text in legend:
        out.append(f'<line x1="{lx}" x2="{lx + 22}" y1="14" y2="14" class="{cls}"/>')
        out.append(f'<text x="{lx + 28}" y="18" class="tick">{_esc(text)}</text>')
        lx += 40 + 7 * len(text)
    out.append("</svg>")
    return "".join(out)


# --- HTML ----------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1040px;
color:#1d2530;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin:28px 0 6px;border-bottom:1px solid #dde2e8;
padding-bottom:4px}
.meta{color:#4a5563;margin:2px 0}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #dde2e8;border-radius:6px;padding:10px 14px;min-width:200px;flex:1}
.card .k{font-size:.85em;color:#4a5563}.card .v{font-size:1.45em;font-weight:600}.card .s{font-size:.85em;color:#4a5563}
table{border-collapse:collapse;margin:6px 0 4px;font-size:.92em}
th,td{padding:3px 10px;border-bottom:1px solid #eef1f4;vertical-align:top}th{text-align:left;background:#f5f7f9}
th.num,td.num{text-align:right;white-space:nowrap}tr.other td{font-style:italic;color:#4a5563}
tfoot td{font-weight:600;border-top:2px solid #c9d0d8}
td.pct{position:relative;min-width:90px}td.pct span.b{position:absolute;left:0;top:3px;bottom:3px;
background:#dbe7f8;z-index:-1}td.pct{z-index:0}
.up{color:#b3261e}.down{color:#1e7b34}.note{font-size:.85em;color:#4a5563;margin:2px 0 10px}
svg.chart{max-width:100%;height:auto;font-family:inherit}
.grid{stroke:#e6e9ee;stroke-width:1}.axis{stroke:#6b7683;stroke-width:1}.tick{font-size:12px;fill:#38414d}
.label{font-size:12px;fill:#4a5563}.bar{fill:#3b7dd8}
.this{fill:none;stroke:#3b7dd8;stroke-width:2.5}.this-dot{fill:#3b7dd8}.last{fill:none;stroke:#9aa4b0;
stroke-width:2;stroke-dasharray:5 4}.forecast{stroke:#e07b39;stroke-width:2;stroke-dasharray:6 4;fill:none}
.band{fill:#e07b39;fill-opacity:.15}.whisker{stroke:#e07b39;stroke-width:2}
.budget{stroke:#b3261e;stroke-width:1.5;stroke-dasharray:2 3}.budget-label{font-size:12px;fill:#b3261e}
.last-label{font-size:12px;fill:#6b7683}.forecast-label{font-size:12px;fill:#b85a1c;font-weight:600}
details{margin:4px 0 8px;font-size:.9em}
"""


def _html_table(t: Table, currency: str) -> str:
    def td(v: Cell, c: Column) -> str:
        text = _esc(_cell(v, c.kind, currency))
        if c.kind == "text":
            return f"<td>{text}</td>"
        cls = "num"
        if c.kind == "delta" and isinstance(v, Decimal) and v:
            cls += " up" if v > 0 else " down"
        if c.kind == "pct" and isinstance(v, Decimal):
            width = max(Decimal(0), min(Decimal(100), v))
            return f'<td class="num pct"><span class="b" style="width:{width:.1f}%"></span>{text}</td>'
        return f'<td class="{cls}">{text}</td>'

    head = "".join(f'<th class="{"" if c.kind == "text" else "num"}">{_esc(c.header)}</th>' for c in t.columns)
    body = []
    for n, row in enumerate(t.rows):
        cls = ' class="other"' if t.other and n == len(t.rows) - 1 else ""
        body.append(f"<tr{cls}>" + "".join(td(v, c) for v, c in zip(row, t.columns, strict=True)) + "</tr>")
    if not t.rows:
        body.append(f'<tr><td colspan="{len(t.columns)}">none</td></tr>')
    foot = ""
    if t.total is not None and t.rows:
        foot = "<tfoot><tr>" + "".join(td(v, c) for v, c in zip(t.total, t.columns, strict=True)) + "</tr></tfoot>"
    note = f'<p class="note">{_esc(t.note)}</p>' if t.note else ""
    return (
        f'<h2 id="{t.name}">{_esc(t.title)}</h2><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody>{foot}</table>{note}"
    )


def _card(key: str, value: str, sub: str = "") -> str:
    s = f'<div class="s">{_esc(sub)}</div>' if sub else ""
    return f'<div class="card"><div class="k">{_esc(key)}</div><div class="v">{_esc(value)}</div>{s}</div>'


def render_html(rep: Report, title: str = "OpenAI usage and billed cost", *, top: int = DEFAULT_TOP) -> str:
    """A single self-contained HTML page: inline CSS and SVG, no script, nothing fetched from the network."""
    c = rep.currency
    header = _header(rep)
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>",
        *(f'<p class="meta" id="{k}">{_esc(line)}</p>' for k, line in zip(("period", "as-of"), header, strict=False)),
    ]
    if rep.period_start is None:
        parts.append("</body></html>\n")
        return "".join(parts)
    cards = [_card("Billed cost in the period", money(rep.total_cost, c), f"{rep.period_days} UTC days")]
    m, f = rep.month, rep.forecast
    if m is not None:
        sub = "no closed day yet" if not m.days else f"{m.days} closed day{'s' if m.days != 1 else ''}"
        if m.change is not None and m.days:
            pct = f" ({m.change / m.last * 100:+.1f}%)" if m.last else ""
            sub += f"; {money(m.change, c, sign=True)}{pct} vs same days of last month"
        cards.append(_card(f"Month to date, {m.month.strftime('%B %Y')}", money(m.this, c), sub))
    if f is not None:
        cards.append(
            _card(
                f"Forecast, end of {f.month.strftime('%B %Y')}",
                money(f.point, c),
                f"{round(f.coverage * 100)}% interval {money(f.lower, c)} to {money(f.upper, c)}",
            )
        )
    elif rep.forecast_note:
        cards.append(_card("Forecast", "none", rep.forecast_note))
    parts.append(f'<div class="cards">{"".join(cards)}</div>')
    parts.append(f'<h2 id="daily">Billed cost per day</h2>{daily_chart_svg(rep)}')
    figures = _html_table(daily_table(rep), c).replace("<h2", "<h3").replace("</h2>", "</h3>")
    parts.append(f"<details><summary>the figures</summary>{figures}</details>")
    tables = report_tables(rep, top)
    for t in tables:
        parts.append(_html_table(t, c))
        if t.name == "month_to_date" and m is not None:
            parts.append(month_chart_svg(rep))
    parts.append(
        '<p class="note">Billed cost is the Costs API amount of closed UTC days; figures are rounded to cents for '
        "display, the CSV files (<code>report --csv DIR</code>) carry the exact sums.</p></body></html>\n"
    )
    return "".join(parts)


__all__ = [
    "DEFAULT_TOP",
    "MOVER_DAYS",
    "BudgetLike",
    "BudgetRow",
    "Column",
    "MonthToDate",
    "Mover",
    "Report",
    "Table",
    "aggregate",
    "build_report",
    "cost_by_model",
    "daily_chart_svg",
    "daily_chart_text",
    "daily_table",
    "model_of_line_item",
    "money",
    "month_chart_svg",
    "nice_ticks",
    "render_html",
    "render_terminal",
    "report_tables",
    "table_csv",
    "with_other",
]
