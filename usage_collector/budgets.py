"""Budgets: month to date, the month-end forecast and OpenAI's own spend controls, per budget scope.

A budget (``[[budgets]]``, :class:`usage_collector.config.BudgetConfig`) is an amount in USD per calendar month
(UTC) for the whole organization or one project. For each, at an instant ``as_of``:

* **billed**: the exact sum of the costs documents of the month's closed days before ``as_of``'s UTC day (the
  Costs API's billed amounts, never rounded), of the budget's organization (``organization_id``; all documents
  when it is not set) and project;
* **today's estimate**: the sum of ``openai.<stream>.estimated_cost`` of today's usage documents before
  ``as_of``, when usage documents carry that field; otherwise there is none (the forecast then forecasts the
  whole of today). Read from DuckDB (one SQL query) and NDJSON; not yet from Elasticsearch;
* **month to date** = billed + today's estimate;
* **the forecast** of the month-end total, with its interval: :func:`usage_collector.forecast.forecast_month`
  over the scope's daily billed cost. Days from the organization's first day with a cost to the last day the
  collector read (the costs checkpoint) with no document of the scope are zero-spend days; days outside are
  unknown;
* **OpenAI's spend controls** of the same scope: the hard monthly spend limit and the spend alerts, from the
  newest UTC day of ``metrics-openai.limits-*`` snapshots at or before ``as_of`` (:mod:`usage_collector.limits`);
* **status**: ``over budget`` (month to date above the amount), ``forecast over`` (the forecast above it),
  ``at risk`` (the interval's upper bound above it), ``on track``, or ``no forecast`` (too little history).

``usage-collector budgets`` prints them (``--check`` exits 1 naming each budget whose spend or forecast passes
100 %); each ``run`` writes one **budget document** per budget (:func:`write_budget_documents`) into
``<type>-openai.budgets-<namespace>``, whose ``_id`` is a hash of (organization, budget name, UTC day): a rerun the
same day replaces it, the next day adds one, so Kibana charts a month to date and forecast per day and alerts on
the newest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .catalogue import STREAMS
from .clock import iso
from .documents import ECS_VERSION, Document, Target, _digest_id, measure_hash
from .forecast import Forecast, InsufficientHistory, cents, forecast_month

if TYPE_CHECKING:
    from .config import BudgetConfig, Settings
    from .sinks.base import Sink, WriteStats

log = logging.getLogger(__name__)

#: The pseudo-stream of budget documents (``event.dataset`` ``openai.budgets``).
BUDGETS_STREAM = "budgets"
DATASET = f"openai.{BUDGETS_STREAM}"
#: The field of usage documents that carries the estimated cost (``openai.<stream>.estimated_cost``).
ESTIMATE_FIELD = "estimated_cost"
_HUNDRED = Decimal(100)


# --- results --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpendControls:
    """OpenAI's own spend limit and spend alerts of one scope, as last snapshotted (dollars).

    Attributes:
        limit: the hard monthly spend limit, or ``None`` (none configured, or never snapshotted).
        enforcement: the limit's ``enforcement.status`` (``enforcing``, ``inactive``), if reported.
        alerts: spend alert thresholds, ascending.
        observed_day: the UTC day of the snapshot read, or ``None`` when there was none.
    """

    limit: Decimal | None = None
    enforcement: str | None = None
    alerts: tuple[Decimal, ...] = ()
    observed_day: date | None = None

    def describe(self) -> str:
        """``limit $25,000.00 (inactive); alerts $12,500.00, $20,000.00``, or ``-``."""
        parts = []
        if self.limit is not None:
            parts.append(f"limit {usd(self.limit)}" + (f" ({self.enforcement})" if self.enforcement else ""))
        if self.alerts:
            parts.append("alerts " + ", ".join(usd(a) for a in self.alerts))
        return "; ".join(parts) or "-"


@dataclass(frozen=True)
class BudgetStatus:
    """One budget at one instant (see the module docstring).

    Attributes:
        name: the budget's name.
        org_id: its ``organization_id``, ``None`` for every organization in the sink.
        project_id: its project, ``None`` for the whole organization.
        project_name: the project's display name when documents carry it.
        amount: USD per calendar month.
        alert_at: percents of ``amount`` that raise an alert once the month to date crosses them.
        as_of: the instant it stands on.
        billed: exact billed cost of the month's closed days before ``as_of``'s day.
        billed_days: how many of those days have a known amount (a document, or a zero-spend day).
        today_estimate: today's spend so far from usage (``estimated_cost``), or ``None``.
        forecast: the month-end forecast, or ``None`` (``note`` says why).
        note: why there is no forecast, or which days are unknown.
        controls: OpenAI's spend limit and alerts of the scope.
    """

    name: str
    org_id: str | None
    project_id: str | None
    project_name: str | None
    amount: Decimal
    alert_at: tuple[int, ...]
    as_of: datetime
    billed: Decimal
    billed_days: int
    today_estimate: Decimal | None
    forecast: Forecast | None
    note: str | None = None
    controls: SpendControls = field(default_factory=SpendControls)

    @property
    def month(self) -> date:
        return self.as_of.date().replace(day=1)

    @property
    def scope(self) -> str:
        """``organization`` or ``project <name> (<id>)``, with ``@ <org>`` when the budget names one."""
        if self.project_id is None:
            text = "organization"
        elif self.project_name and self.project_name != self.project_id:
            text = f"project {self.project_name} ({self.project_id})"
        else:
            text = f"project {self.project_id}"
        return f"{text} @ {self.org_id}" if self.org_id else text

    @property
    def month_to_date(self) -> Decimal:
        """Billed closed days plus today's estimate."""
        return self.billed + (self.today_estimate or Decimal(0))

    @property
    def spend_percent(self) -> Decimal:
        return self.month_to_date / self.amount * _HUNDRED

    @property
    def forecast_percent(self) -> Decimal | None:
        return None if self.forecast is None else self.forecast.point / self.amount * _HUNDRED

    @property
    def crossed(self) -> tuple[int, ...]:
        """The ``alert_at`` percents the month to date has reached."""
        return tuple(p for p in self.alert_at if self.spend_percent >= p)

    @property
    def spend_over(self) -> bool:
        return self.month_to_date > self.amount

    @property
    def forecast_over(self) -> bool:
        return self.forecast is not None and self.forecast.point > self.amount

    @property
    def status(self) -> str:
        if self.spend_over:
            return "over budget"
        if self.forecast is None:
            return "no forecast"
        if self.forecast_over:
            return "forecast over"
        if self.forecast.upper > self.amount:
            return "at risk"
        return "on track"

    def problem(self) -> str | None:
        """One line for ``--check`` when the spend or the forecast passes 100 % of the amount, else ``None``."""
        head = f"budget {self.name!r} ({self.scope}, {usd(self.amount)} a month)"
        if self.spend_over:
            return f"{head}: month to date {usd(self.month_to_date)} is {pct(self.spend_percent)} of the budget"
        if self.forecast_over and self.forecast is not None:
            return (
                f"{head}: forecast {usd(self.forecast.point)} for {self.month:%Y-%m} is "
                f"{pct(self.forecast_percent)} of the budget (month to date {usd(self.month_to_date)})"
            )
        return None


def usd(value: Decimal) -> str:
    """``$1,234.57`` (rounded half-even to cents, for display only)."""
    v = cents(value)
    return f"-${-v:,.2f}" if v < 0 else f"${v:,.2f}"


def pct(value: Decimal | None) -> str:
    """``83.4 %`` or ``-``."""
    return "-" if value is None else f"{value:.1f} %"


# --- what the sink holds ----------------------------------------------------------------------------------------
@dataclass
class Ledger:
    """What budgets need of a sink's documents, before ``as_of``.

    Attributes:
        costs: (organization, UTC day, project) -> billed cost, closed days only.
        collected_through: organization -> the last UTC day its costs were read through (costs checkpoint).
        estimates: (organization, project) -> today's ``estimated_cost`` so far; ``None`` when no usage
            document of today carries the field (or the sink cannot be asked cheaply).
        project_names: project id -> display name.
        controls: (organization, project) -> the newest day's spend-control documents' ``openai.limits``.
    """

    costs: dict[tuple[str, date, str | None], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    collected_through: dict[str, date] = field(default_factory=dict)
    estimates: dict[tuple[str, str | None], Decimal] | None = None
    project_names: dict[str, str] = field(default_factory=dict)
    controls: dict[tuple[str, str | None], list[Mapping[str, Any]]] = field(default_factory=dict)


def _decimal(value: Any) -> Decimal:
    """A document's number as Decimal: floats through their shortest repr (the digits the API sent)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, Mapping):  # {"value": ..., "currency": ...}
        return _decimal(value.get("value"))
    if isinstance(value, float):
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return Decimal(str(value))


def _instant(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def ledger(
    costs: Iterable[Mapping[str, Any]],
    limits: Iterable[Mapping[str, Any]],
    today_usage: Iterable[Mapping[str, Any]] | None,
    as_of: datetime,
    *,
    positions: Mapping[str, int] | None = None,
) -> Ledger:
    """Gather what budgets need from documents (``{"_source": ...}``), standing on ``as_of``.

    Args:
        costs: costs documents (any span; those of ``as_of``'s day or later are left out).
        limits: spend-control snapshot documents.
        today_usage: usage documents of ``as_of``'s day before ``as_of`` (others are left out), or ``None``
            when they could not be read: no estimate.
        as_of: the instant to stand on (aware, or naive UTC).
        positions: organization -> the costs checkpoint's position (Unix seconds, end-exclusive).
    """
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    today = as_of.date()
    out = Ledger()
    for d in costs:
        src = d["_source"]
        day = _instant(src["@timestamp"]).date()
        base = src.get("openai", {}).get("base", {})
        _remember_name(out, base)
        if day < today:
            org = src.get("organization", {}).get("id", "")
            out.costs[(org, day, base.get("project_id"))] += _decimal(src["openai"]["costs"].get("amount"))
    for org, pos in (positions or {}).items():
        last = min(datetime.fromtimestamp(pos, UTC).date() - timedelta(days=1), today - timedelta(days=1))
        out.collected_through[org] = last
    if today_usage is not None:
        estimates: dict[tuple[str, str | None], Decimal] = defaultdict(Decimal)
        found = False
        start = _midnight(today)
        for d in today_usage:
            src = d["_source"]
            if not start <= _instant(src["@timestamp"]) < as_of:
                continue
            stream = src.get("event", {}).get("dataset", "").removeprefix("openai.")
            own = src.get("openai", {}).get(stream, {})
            if ESTIMATE_FIELD not in own:
                continue
            found = True
            base = src.get("openai", {}).get("base", {})
            _remember_name(out, base)
            key = (src.get("organization", {}).get("id", ""), base.get("project_id"))
            estimates[key] += _decimal(own[ESTIMATE_FIELD])
        out.estimates = dict(estimates) if found else None
    # Spend controls: per organization, the newest UTC day with a snapshot at or before as_of; within it the
    # newest document of each object.
    newest: dict[str, date] = {}
    kept: dict[tuple[str, date, str | None, str, str], tuple[datetime, Mapping[str, Any]]] = {}
    for d in limits:
        src = d["_source"]
        ts = _instant(src["@timestamp"])
        lim = src.get("openai", {}).get("limits", {})
        if ts > as_of or lim.get("kind") not in ("spend_limit", "spend_alert"):
            continue
        org = src.get("organization", {}).get("id", "")
        project = src.get("openai", {}).get("base", {}).get("project_id")
        newest[org] = max(newest.get(org, ts.date()), ts.date())
        obj = (org, ts.date(), project, str(lim.get("kind")), str(lim.get("id") or ""))
        if obj not in kept or kept[obj][0] <= ts:
            kept[obj] = (ts, lim)
    for (org, day, project, _, _), (_, lim) in sorted(kept.items(), key=lambda kv: str(kv[0])):
        if day == newest[org]:
            out.controls.setdefault((org, project), []).append({**lim, "_day": day})
    return out


def _remember_name(out: Ledger, base: Mapping[str, Any]) -> None:
    pid, name = base.get("project_id"), base.get("project_name")
    if pid and name:
        out.project_names[pid] = name


def evaluate(led: Ledger, budgets: Sequence[BudgetConfig], as_of: datetime) -> list[BudgetStatus]:
    """Each budget's :class:`BudgetStatus` at ``as_of`` from a :class:`Ledger`."""
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    today = as_of.date()
    month = today.replace(day=1)
    out = []
    for b in budgets:

        def mine(org: str, org_id: str | None = b.organization_id) -> bool:
            return org_id is None or org == org_id

        daily: dict[date, Decimal] = {}
        org_days = [day for (org, day, _), _ in led.costs.items() if mine(org)]
        through = [d for org, d in led.collected_through.items() if mine(org)]
        if org_days:  # zero-fill the days the collector read: from the first with a cost to the checkpoint
            first = min(org_days)
            last = max([*org_days, *(d for d in through if d >= first)])
            for i in range((last - first).days + 1):
                daily[first + timedelta(days=i)] = Decimal(0)
        for (org, day, project), value in led.costs.items():
            if mine(org) and (b.project_id is None or project == b.project_id):
                daily[day] += value
        estimate = None
        if led.estimates is not None:
            estimate = sum(
                (v for (org, p), v in led.estimates.items() if mine(org) and b.project_id in (None, p)),
                Decimal(0),
            )
        billed_days = [d for d in daily if month <= d < today]
        billed = sum((daily[d] for d in billed_days), Decimal(0))
        forecast: Forecast | None = None
        note = None
        try:
            forecast = forecast_month(daily, today, today_estimate=estimate)
            if forecast.missing_days:
                note = f"{len(forecast.missing_days)} day(s) of the month not collected, forecast instead"
        except InsufficientHistory as exc:
            note = f"no forecast: {exc}"
        out.append(
            BudgetStatus(
                name=b.name,
                org_id=b.organization_id,
                project_id=b.project_id,
                project_name=led.project_names.get(b.project_id) if b.project_id else None,
                amount=b.amount,
                alert_at=tuple(b.alert_at),
                as_of=as_of,
                billed=billed,
                billed_days=len(billed_days),
                today_estimate=estimate,
                forecast=forecast,
                note=note,
                controls=_controls(led, b),
            )
        )
    return out


def _controls(led: Ledger, b: BudgetConfig) -> SpendControls:
    docs = [
        lim
        for (org, project), lims in led.controls.items()
        if (b.organization_id is None or org == b.organization_id) and project == b.project_id
        for lim in lims
    ]
    if not docs:
        return SpendControls()
    limit = next((lim for lim in docs if lim.get("kind") == "spend_limit"), None)
    alerts = sorted(_decimal(lim["threshold_amount"]) for lim in docs if lim.get("kind") == "spend_alert")
    return SpendControls(
        limit=_decimal(limit["threshold_amount"]) if limit and "threshold_amount" in limit else None,
        enforcement=limit.get("enforcement_status") if limit else None,
        alerts=tuple(alerts),
        observed_day=max(lim["_day"] for lim in docs),
    )


# --- reading a sink ---------------------------------------------------------------------------------------------
def _usage_streams() -> list[str]:
    return [name for name, spec in STREAMS.items() if not spec.is_costs]


def _today_usage(sink: Sink, as_of: datetime) -> list[Mapping[str, Any]] | None:
    """Usage documents of ``as_of``'s UTC day before ``as_of``, where the sink can give them cheaply: DuckDB (one
    query), NDJSON (a file read); ``None`` for Elasticsearch (a range query per cycle is left for the estimate)."""
    start = _midnight(as_of.date())
    if start >= as_of:
        return []
    query = getattr(sink, "query", None)
    if callable(query):  # DuckDB
        import orjson

        rows = query(
            "SELECT source FROM documents WHERE ts >= ? AND ts < ? AND stream IN (SELECT unnest(?))",
            [start, as_of, _usage_streams()],
        )
        return [{"_source": orjson.loads(r[0])} for r in rows]
    if sink.description.startswith("ndjson:"):
        return [d for s in _usage_streams() for d in sink.iter_documents(s)]
    log.debug("%s: today's estimated cost is not read from this sink yet", sink.description)
    return None


def evaluate_sink(sink: Sink, settings: Settings, as_of: datetime) -> list[BudgetStatus]:
    """The configured budgets at ``as_of``, from what ``sink`` holds.

    Raises:
        CollectorError: the sink could not be read.
    """
    positions: dict[str, int] = {}
    for cp in sink.list_checkpoints():
        if cp.stream == "costs" and cp.position is not None:
            positions[cp.org_id] = max(positions.get(cp.org_id, 0), cp.position)
    led = ledger(
        sink.iter_documents("costs"),
        sink.iter_documents("limits"),
        _today_usage(sink, as_of),
        as_of,
        positions=positions,
    )
    return evaluate(led, settings.budgets, as_of)


# --- budget documents -------------------------------------------------------------------------------------------
def budget_documents(statuses: Sequence[BudgetStatus], settings: Settings) -> list[Document]:
    """One document per budget, ``_id`` per (organization, budget, UTC day of ``as_of``): a rerun replaces it.

    The document's organization is the budget's ``organization_id``, else the single configured one.
    """
    orgs = {o.id: o for o in settings.orgs()}
    default = next(iter(orgs)) if orgs else "default"
    out = []
    for s in statuses:
        org_id = s.org_id or default
        org = orgs.get(org_id)
        target = Target(org_id, org.name if org else None, settings.namespace, settings.data_stream_type)
        own: dict[str, Any] = {
            "name": s.name,
            "scope": "organization" if s.project_id is None else "project",
            "month": s.month.strftime("%Y-%m"),
            "day": s.as_of.date().isoformat(),
            "currency": "usd",
            "amount": s.amount,
            "billed": s.billed,
            "month_to_date": s.month_to_date,
            "spend_percent": float(round(s.spend_percent, 2)),
            "alert_at": list(s.alert_at),
            "crossed": list(s.crossed),
            "status": s.status,
        }
        if s.today_estimate is not None:
            own["today_estimate"] = s.today_estimate
        if s.forecast is not None:
            f = s.forecast
            own["forecast"] = {
                "point": f.point,
                "lower": f.lower,
                "upper": f.upper,
                "percent": float(round(f.point / s.amount * _HUNDRED, 2)),
                "coverage": f.coverage,
                "method": f.method,
                "interval_method": f.interval_method,
            }
        c = s.controls
        if c.observed_day is not None:
            lim: dict[str, Any] = {"alerts": list(c.alerts)}
            if c.limit is not None:
                lim["spend_limit"] = c.limit
            if c.enforcement:
                lim["enforcement_status"] = c.enforcement
            own["openai_limits"] = lim
        ts = iso(s.as_of.timestamp())
        digest = measure_hash({**own, "@timestamp": ts})
        base: dict[str, Any] = {}
        if s.project_id is not None:
            base["project_id"] = s.project_id
            if s.project_name:
                base["project_name"] = s.project_name
        org_obj = {"id": org_id} if target.org_name is None else {"id": org_id, "name": target.org_name}
        source: dict[str, Any] = {
            "@timestamp": ts,
            "ecs": {"version": ECS_VERSION},
            "event": {"kind": "metric", "dataset": DATASET, "module": "openai", "hash": digest},
            "data_stream": {"type": target.data_stream_type, "dataset": DATASET, "namespace": target.namespace},
            "organization": org_obj,
            "openai": {"base": base, BUDGETS_STREAM: own} if base else {BUDGETS_STREAM: own},
        }
        key = "\x1f".join([org_id, BUDGETS_STREAM, s.name, s.as_of.date().isoformat()])
        index = target.data_stream(BUDGETS_STREAM)
        out.append(Document(_digest_id(key), index, BUDGETS_STREAM, int(s.as_of.timestamp()), digest, source))
    return out


def write_budget_documents(sink: Sink, settings: Settings, as_of: datetime) -> WriteStats | None:
    """Compute the configured budgets at ``as_of`` and write their documents (``None``: no budgets).

    Raises:
        CollectorError: the sink could not be read or written.
    """
    if not settings.budgets:
        return None
    docs = budget_documents(evaluate_sink(sink, settings, as_of), settings)
    return sink.write_window(docs, None)


__all__ = [
    "BUDGETS_STREAM",
    "DATASET",
    "ESTIMATE_FIELD",
    "BudgetStatus",
    "Ledger",
    "SpendControls",
    "budget_documents",
    "evaluate",
    "evaluate_sink",
    "ledger",
    "pct",
    "usd",
    "write_budget_documents",
]
