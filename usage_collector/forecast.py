"""Month-end forecast of billed cost: a weekday-aware run rate with a prediction interval.

Pure functions, no I/O and no clock: the caller passes the days it knows and the day it stands on.

Input
    ``daily``: UTC date -> billed cost (``Decimal``) of **closed** days, as the Costs API reports them once a
    day is over. A day with ``Decimal(0)`` is a zero-spend day; a day *absent* from the mapping is unknown
    (not collected yet). Days on or after ``as_of`` are ignored, so a caller can pass its whole history with
    any ``as_of`` and get what the forecast said that day. ``as_of`` is "today" (the first day not closed);
    ``today_estimate`` is today's spend so far (from usage, fresh within the hour), if known.

Point forecast (method ``weekday_run_rate``)
    1. History: the closed days among the :data:`WINDOW_DAYS` (56) days before ``as_of``, across month
       boundaries, so on the 2nd of a month the forecast still stands on the previous month's days.
    2. Weekday factors: a first estimate from each weekday's median spend over the mean of the seven medians
       (robust to a spike). With fewer than :data:`MIN_WEEKDAY_DAYS` (14) history days, a weekday seen fewer
       than twice, or no spend at all, every factor is 1 and the method is ``run_rate`` (an overall mean).
    3. Spikes: a day whose deseasonalized spend (spend / weekday factor) exceeds :data:`SPIKE` (2) times the
       median day is cut to that cap; the final factors are each weekday's mean of the cut days over the mean of
       the seven. What was cut comes back as a flat *spike allowance* per day, averaged over the whole window:
       spikes are rare, their rate is best estimated over 8 weeks, and one of them must not inflate the recent
       level or its weekday.
    4. Level: the cut deseasonalized days averaged with weights ``DECAY ** age_in_days`` (:data:`DECAY` = 0.9:
       a day a week older weighs half as much), plus the spike allowance; so the level follows a drift or a
       step within a couple of weeks.
    5. Each day of the month still to come (today, the rest of the month, and any day of the month before
       ``as_of`` missing from ``daily``) is forecast as ``level * factor[weekday]``. Today counts as
       ``max(0, that - today_estimate)`` on top of the estimate already spent.
    6. Point forecast = month to date + the sum of those days.

Prediction interval (``interval_method``)
    ``empirical``: the method's own past errors on this series. For each origin ``o`` of the last
    :data:`ORIGIN_DAYS` (182) days at which the ``h`` days to forecast would have been closed by ``as_of``, the
    model is fitted on the days before ``o`` only (origins where it would have been of another method, e.g. a
    ``run_rate`` on a few days, are left out) and forecasts the sum of days ``o .. o+h-1``. With at least
    :data:`MIN_ORIGINS` (20) such relative errors ``actual / forecast - 1``, their root mean square ``r`` (bias
    included) sets the interval: the forecast of the remaining days times ``1 -/+ z * r`` (``z`` = 1.28 for
    80 %). This captures what independent daily noise would not: weeks that run high or low together, drift,
    steps. (Empirical 10 %/90 % quantiles of the same errors were tried first: the errors of overlapping origins
    are strongly correlated, and those quantiles held the actual in only 61 to 81 % of the development forecasts.)
    ``normal`` (too little history for that): a normal approximation. Daily residuals
    ``x - level * factor[weekday]`` give a spread ``s``; ``k`` remaining days whose factors add up to ``F`` have
    a sum with variance ``s^2 * (k + F^2 / n_eff)``: each day's own error plus the level's, shared by every
    remaining day (``n_eff`` is the effective number of days in the weighted level). With fewer than
    :data:`MIN_SPREAD_DAYS` history days ``s`` is the level itself (an honest "very unsure").
    In both, the lower bound is never below the month to date in cents (remaining days do not refund).

Assumptions: spend follows a weekly cycle stable over 8 weeks; its level for the rest of the month is its recent
level (no trend is extrapolated: steady growth makes the forecast a little low, a trend term was tried and made the
backtest worse); the recent past's forecast errors are representative of the next ones. Known launches, price
changes or planned batch jobs are not modelled.

Money: ``month_to_date`` is exact (the sum of the inputs, never rounded). The statistics run in ``float``;
``point``, ``lower``, ``upper`` (and the diagnostics ``daily_rate``, ``daily_spread``) are rounded to cents
(half-even) once, at the edge. :func:`naive_linear` is the baseline of the backtest (``bench/p7_forecast.py``).
See ``docs/forecast.md``.
"""

from __future__ import annotations

import calendar
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from statistics import NormalDist

#: Days of history (before ``as_of``) the model is fitted on: 8 weeks.
WINDOW_DAYS = 56
#: Weight of a history day in the level per day of age (0.9: a week older weighs half as much).
DECAY = 0.9
#: A deseasonalized day above this many times the median day is a spike (cut, and spread over the window).
SPIKE = 2.0
#: Fewer history days than this (or a weekday seen fewer than twice): no weekday factors, an overall mean.
MIN_WEEKDAY_DAYS = 14
#: Fewer history days than this: the daily spread of the normal interval is taken as the level itself.
MIN_SPREAD_DAYS = 3
#: Origins (days) looked back over for the empirical interval.
ORIGIN_DAYS = 182
#: Fewer past forecasts than this: the normal interval instead of the empirical one.
MIN_ORIGINS = 20
#: Default coverage of the prediction interval.
COVERAGE = 0.8

CENT = Decimal("0.01")


class InsufficientHistory(ValueError):
    """No closed day in the window before ``as_of`` to forecast from."""


@dataclass(frozen=True)
class Forecast:
    """A month-end forecast of billed cost.

    Attributes:
        month: first day of the forecast month.
        as_of: the first day not closed ("today"); days from it on are forecast.
        days_in_month: 28 to 31.
        month_to_date: exact sum of the month's closed days before ``as_of`` plus ``today_estimate`` if given.
        point: forecast month-end total, rounded to cents.
        lower: lower bound of the prediction interval, rounded to cents (never below ``month_to_date`` in cents).
        upper: upper bound of the prediction interval, rounded to cents.
        coverage: nominal coverage of ``[lower, upper]`` (0.8 = 80 %).
        method: ``weekday_run_rate``, ``run_rate`` (too little history for weekday factors) or ``complete``
            (every day of the month closed: nothing is forecast).
        closed_days: days of the month with a closed amount in ``month_to_date``.
        forecast_days: days of the month forecast (today, the rest of the month, missing days).
        missing_days: days of the month before ``as_of`` absent from the input (forecast, not counted as zero).
        today_estimate: today's partial spend as given, or ``None``.
        history_first, history_last: the first and last closed day the model was fitted on (``None`` if none).
        history_days: number of closed days the model was fitted on.
        daily_rate: the deseasonalized level (forecast spend of an average day), rounded to cents.
        weekday_factors: seven factors, Monday first (all 1.0 for ``run_rate``).
        daily_spread: standard deviation of the daily residuals, rounded to cents.
        interval_method: ``empirical`` (past errors of the method), ``normal`` (too few of them) or ``none``
            (nothing forecast).
        interval_samples: number of past forecasts behind an ``empirical`` interval (0 otherwise).
    """

    month: date
    as_of: date
    days_in_month: int
    month_to_date: Decimal
    point: Decimal
    lower: Decimal
    upper: Decimal
    coverage: float
    method: str
    closed_days: int
    forecast_days: int
    missing_days: tuple[date, ...]
    today_estimate: Decimal | None
    history_first: date | None
    history_last: date | None
    history_days: int
    daily_rate: Decimal
    weekday_factors: tuple[float, ...]
    daily_spread: Decimal
    interval_method: str
    interval_samples: int


@dataclass(frozen=True)
class _Model:
    """A fitted weekday run rate: ``level * factors[weekday]`` per day."""

    method: str
    factors: tuple[float, ...]
    level: float
    spread: float
    n_eff: float
    days: tuple[date, ...]

    def expect(self, day: date) -> float:
        return self.level * self.factors[day.weekday()]


def cents(value: Decimal) -> Decimal:
    """``value`` rounded to cents, half to even."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def days_in_month(day: date) -> int:
    """Number of days (28 to 31) of the month ``day`` is in."""
    return calendar.monthrange(day.year, day.month)[1]


def naive_linear(mtd: Decimal, day: int, days_in_month: int) -> Decimal:
    """The naive baseline: month to date extrapolated linearly, ``mtd / day * days_in_month``, in cents.

    Args:
        mtd: spend of the first ``day`` days of the month.
        day: number of days ``mtd`` covers (1 to ``days_in_month``).
        days_in_month: 28 to 31.

    Returns:
        The extrapolated month-end total, rounded to cents (half-even).

    Raises:
        ValueError: if ``day`` is not within ``1..days_in_month`` or ``days_in_month`` not within 28..31.
    """
    if not 28 <= days_in_month <= 31:
        raise ValueError(f"days_in_month must be 28..31, not {days_in_month}")
    if not 1 <= day <= days_in_month:
        raise ValueError(f"day must be 1..{days_in_month}, not {day}")
    return cents(mtd * days_in_month / day)


def forecast_month(
    daily: Mapping[date, Decimal],
    as_of: date,
    *,
    month: date | None = None,
    today_estimate: Decimal | None = None,
    coverage: float = COVERAGE,
) -> Forecast:
    """Forecast the month-end billed total of a month (see the module docstring for the method).

    Example:
        >>> from datetime import date
        >>> from decimal import Decimal
        >>> daily = {date(2025, 2, 1) + timedelta(d): Decimal("10") for d in range(37)}
        >>> f = forecast_month(daily, date(2025, 3, 10))
        >>> f.month_to_date, f.point, f.method
        (Decimal('90'), Decimal('310.00'), 'weekday_run_rate')

    Args:
        daily: UTC date -> billed cost of closed days (any span; days on or after ``as_of`` are ignored).
            Absent days are unknown, zero-spend days must be given as 0.
        as_of: "today": the first day that is not closed.
        month: any day of the month to forecast (default: the month of ``as_of``). A month already over is
            its closed total (method ``complete`` when no day of it is missing).
        today_estimate: spend of ``as_of`` so far (partial day), counted in the month to date when ``as_of``
            is in the month.
        coverage: nominal coverage of the prediction interval, in (0, 1).

    Returns:
        The :class:`Forecast`.

    Raises:
        InsufficientHistory: some day of the month must be forecast and there is no closed day in the
            :data:`WINDOW_DAYS` days before ``as_of`` to forecast it from (a partial today alone is not a rate).
        ValueError: ``coverage`` outside (0, 1).
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be between 0 and 1 (exclusive), not {coverage}")
    first = (month or as_of).replace(day=1)
    n_days = days_in_month(first)
    end = first + timedelta(days=n_days)
    closed = {d: v for d, v in daily.items() if d < as_of}

    mtd = Decimal(0)
    closed_days = 0
    missing: list[date] = []
    todo: list[date] = []  # days to forecast, whole
    today_in_month = first <= as_of < end
    for i in range(n_days):
        d = first + timedelta(days=i)
        if d < as_of:
            if d in closed:
                mtd += closed[d]
                closed_days += 1
            else:
                missing.append(d)
                todo.append(d)
        elif d > as_of or today_estimate is None:
            todo.append(d)
    spent_today = today_estimate if today_in_month and today_estimate is not None else None
    if spent_today is not None:
        mtd += spent_today

    model = _fit(closed, as_of)
    samples = 0
    if not todo and spent_today is None:
        method, interval_method, total, lo, hi = "complete", "none", 0.0, 0.0, 0.0
    else:
        if model is None:
            raise InsufficientHistory(
                f"no closed day in the {WINDOW_DAYS} days before {as_of.isoformat()} to forecast "
                f"{first.strftime('%Y-%m')} from"
            )
        method = model.method
        total = sum(model.expect(d) for d in todo)
        k, f_sum = len(todo), sum(model.factors[d.weekday()] for d in todo)
        if spent_today is not None:
            total += max(0.0, model.expect(as_of) - float(spent_today))
            k += 1
            f_sum += model.factors[as_of.weekday()]
        errors = _past_errors(closed, as_of, k, model.method)
        z = NormalDist().inv_cdf(0.5 + coverage / 2)
        if len(errors) >= MIN_ORIGINS:
            interval_method, samples = "empirical", len(errors)
            half = total * z * math.sqrt(sum(e * e for e in errors) / len(errors))
        else:
            interval_method = "normal"
            half = z * model.spread * math.sqrt(k + f_sum**2 / model.n_eff)
        lo, hi = total - half, total + half

    point = cents(mtd + Decimal(total))
    lower = min(point, cents(mtd + Decimal(max(0.0, lo))))
    upper = max(point, cents(mtd + Decimal(hi)))
    return Forecast(
        month=first,
        as_of=as_of,
        days_in_month=n_days,
        month_to_date=mtd,
        point=point,
        lower=lower,
        upper=upper,
        coverage=coverage,
        method=method,
        closed_days=closed_days,
        forecast_days=len(todo) + (spent_today is not None),
        missing_days=tuple(missing),
        today_estimate=today_estimate,
        history_first=model.days[0] if model else None,
        history_last=model.days[-1] if model else None,
        history_days=len(model.days) if model else 0,
        daily_rate=cents(Decimal(model.level)) if model else Decimal("0.00"),
        weekday_factors=model.factors if model else (1.0,) * 7,
        daily_spread=cents(Decimal(model.spread)) if model else Decimal("0.00"),
        interval_method=interval_method,
        interval_samples=samples,
    )


def _fit(closed: Mapping[date, Decimal], as_of: date) -> _Model | None:
    """Weekday factors, level and residual spread from the closed days of the window before ``as_of``."""
    days = tuple(d for i in range(WINDOW_DAYS, 0, -1) if (d := as_of - timedelta(days=i)) in closed)
    if not days:
        return None
    x = [float(closed[d]) for d in days]
    weekdays = [d.weekday() for d in days]
    factors = _weekday_factors(weekdays, x, statistics.median) or _weekday_factors(weekdays, x, statistics.fmean)
    method, n_params = ("weekday_run_rate", 7) if factors else ("run_rate", 1)
    factors = factors or (1.0,) * 7
    # Spikes: a deseasonalized day above SPIKE times the median day is cut to that cap for the factors and the
    # level; what was cut comes back as a flat allowance averaged over the whole window.
    typical = statistics.median([v / factors[w] for w, v in zip(weekdays, x, strict=True) if factors[w] > 0])
    cap = SPIKE * typical if typical > 0 else math.inf
    if method == "weekday_run_rate":
        cut = [min(v, cap * factors[w]) for w, v in zip(weekdays, x, strict=True)]
        factors = _weekday_factors(weekdays, cut, statistics.fmean) or factors
    # Days of a weekday that never spends carry no level information.
    deseasonalized = [(d, v / factors[d.weekday()]) for d, v in zip(days, x, strict=True) if factors[d.weekday()] > 0]
    allowance = sum(max(0.0, v - cap) for _, v in deseasonalized) / len(deseasonalized)
    weighted = [(DECAY ** (as_of - d).days, min(v, cap)) for d, v in deseasonalized]
    w_sum = sum(w for w, _ in weighted)
    level = sum(w * v for w, v in weighted) / w_sum + allowance
    n_eff = w_sum**2 / sum(w * w for w, _ in weighted)
    if len(days) < MIN_SPREAD_DAYS:
        spread = level
    else:
        resid = [v - level * factors[w] for w, v in zip(weekdays, x, strict=True)]
        spread = math.sqrt(sum(r * r for r in resid) / max(1, len(days) - n_params))
    return _Model(method, factors, level, spread, n_eff, days)


def _weekday_factors(
    weekdays: list[int], x: list[float], average: Callable[[list[float]], float]
) -> tuple[float, ...] | None:
    """Each weekday's average over the mean of the seven; ``None`` when the days cannot support them."""
    by_weekday: list[list[float]] = [[] for _ in range(7)]
    for w, v in zip(weekdays, x, strict=True):
        by_weekday[w].append(v)
    if len(x) < MIN_WEEKDAY_DAYS or min(len(vs) for vs in by_weekday) < 2:
        return None
    averages = [average(vs) for vs in by_weekday]
    mean = sum(averages) / 7
    if mean <= 0:
        return None
    return tuple(a / mean for a in averages)


def _past_errors(closed: Mapping[date, Decimal], as_of: date, horizon: int, method: str) -> list[float]:
    """Relative errors of the model's past forecasts of ``horizon`` consecutive days, all closed before ``as_of``.

    One per origin ``o`` in the last :data:`ORIGIN_DAYS` days with ``o + horizon <= as_of``: the model fitted on
    the days before ``o`` forecasts days ``o .. o+horizon-1``; the error is ``actual / forecast - 1``. Origins
    with a missing day, a zero forecast, or a model of another ``method`` than today's (a run rate fitted on a
    few days is not the model whose errors today's interval should reflect) are skipped.
    """
    errors: list[float] = []
    if horizon < 1:
        return errors
    last = as_of - timedelta(days=horizon)
    for back in range(ORIGIN_DAYS):
        origin = last - timedelta(days=back)
        span = [origin + timedelta(days=i) for i in range(horizon)]
        if any(d not in closed for d in span):
            continue
        model = _fit(closed, origin)
        if model is None or model.method != method:
            continue
        expected = sum(model.expect(d) for d in span)
        if expected > 0:
            errors.append(sum(float(closed[d]) for d in span) / expected - 1.0)
    return errors


__all__ = [
    "COVERAGE",
    "DECAY",
    "MIN_ORIGINS",
    "MIN_SPREAD_DAYS",
    "MIN_WEEKDAY_DAYS",
    "ORIGIN_DAYS",
    "SPIKE",
    "WINDOW_DAYS",
    "Forecast",
    "InsufficientHistory",
    "cents",
    "days_in_month",
    "forecast_month",
    "naive_linear",
]
