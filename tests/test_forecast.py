"""Month-end forecast: exact cases (flat, weekday pattern, month lengths, zero and missing days, today's
estimate), interval sanity, the naive baseline, and a small backtest in which ours beats the naive run rate."""

from __future__ import annotations

import doctest
import math
import random
from collections.abc import Callable
from contextlib import nullcontext
from datetime import date, timedelta
from decimal import Decimal

import pytest

import usage_collector.forecast as forecast_module
from usage_collector.forecast import (
    InsufficientHistory,
    cents,
    days_in_month,
    forecast_month,
    naive_linear,
)

#: Weekday pattern (Monday first): busy weekdays, quiet weekends.
PATTERN = (Decimal("100"), Decimal("110"), Decimal("120"), Decimal("110"), Decimal("90"), Decimal("30"), Decimal("20"))


def series(first: date, last: date, amount: Callable[[date], Decimal]) -> dict[date, Decimal]:
    """``{day: amount(day)}`` for every day of ``[first, last]``."""
    return {first + timedelta(days=i): amount(first + timedelta(days=i)) for i in range((last - first).days + 1)}


def flat(value: str) -> Callable[[date], Decimal]:
    return lambda _d: Decimal(value)


def weekly(d: date) -> Decimal:
    return PATTERN[d.weekday()]


def month_days(month: date) -> list[date]:
    return [month + timedelta(days=i) for i in range(days_in_month(month))]


def test_module_docstring_example_runs():
    assert doctest.testmod(forecast_module).failed == 0


def test_a_flat_series_forecasts_flat_times_days():
    daily = series(date(2025, 1, 1), date(2025, 3, 31), flat("10"))
    f = forecast_month(daily, date(2025, 3, 11))
    assert f.month == date(2025, 3, 1) and f.days_in_month == 31
    assert f.month_to_date == Decimal("100")
    assert f.point == f.lower == f.upper == Decimal("310.00")
    assert f.method == "weekday_run_rate" and f.interval_method == "empirical"
    assert f.closed_days == 10 and f.forecast_days == 21 and f.missing_days == ()
    assert f.daily_rate == Decimal("10.00") and f.daily_spread == Decimal("0.00")
    assert f.weekday_factors == pytest.approx((1.0,) * 7)


@pytest.mark.parametrize(
    "month,length",
    [(date(2025, 2, 1), 28), (date(2024, 2, 1), 29), (date(2025, 4, 1), 30), (date(2025, 1, 1), 31)],
    ids=["february", "leap-february", "thirty", "thirty-one"],
)
def test_month_lengths(month, length):
    daily = series(month - timedelta(days=70), month + timedelta(days=9), flat("2.5"))
    f = forecast_month(daily, month + timedelta(days=10))
    assert days_in_month(month) == f.days_in_month == length
    assert f.point == Decimal("2.5") * length
    assert f.forecast_days == length - 10


def test_the_weekday_pattern_is_recovered():
    # 10 weeks of an exact weekly cycle: the factors are the pattern over its mean, the rest of the month is
    # forecast day by day, so the point is the month's true total.
    month = date(2025, 6, 1)
    daily = series(date(2025, 3, 24), date(2025, 6, 12), weekly)
    f = forecast_month(daily, date(2025, 6, 13))
    mean = sum(PATTERN) / 7
    assert f.weekday_factors == pytest.approx(tuple(float(p / mean) for p in PATTERN))
    assert f.daily_rate == Decimal("82.86")  # 580 / 7
    assert f.point == sum(weekly(d) for d in month_days(month))
    assert f.lower == f.upper == f.point


def test_a_weekday_blind_run_rate_would_be_wrong_here():
    # The same cycle, forecast from a Monday: the naive rate over 14 days (2 whole weeks) is right only because
    # the remaining 16 days hold a different mix of weekdays; ours follows the mix exactly.
    month = date(2025, 6, 1)
    daily = series(date(2025, 3, 24), date(2025, 6, 14), weekly)
    truth = sum(weekly(d) for d in month_days(month))
    mtd = sum(weekly(d) for d in month_days(month)[:14])
    assert forecast_month(daily, date(2025, 6, 15)).point == truth
    assert naive_linear(mtd, 14, 30) != truth


def test_month_to_date_is_exact_not_rounded():
    amounts = [Decimal("0.000001"), Decimal("12.345678"), Decimal("0.1"), Decimal("0.2"), Decimal("7.999999")]
    history = series(date(2025, 4, 1), date(2025, 4, 30), flat("3.333333"))
    daily = history | {date(2025, 5, 1) + timedelta(days=i): a for i, a in enumerate(amounts)}
    f = forecast_month(daily, date(2025, 5, 6), today_estimate=Decimal("0.0000005"))
    assert f.month_to_date == sum(amounts) + Decimal("0.0000005") == Decimal("20.6456785")
    assert f.closed_days == 5
    assert f.point.as_tuple().exponent == -2  # estimates are in cents
    assert f.lower.as_tuple().exponent == f.upper.as_tuple().exponent == -2


def test_zero_spend_days_are_zero_not_unknown():
    # Nothing is spent at weekends: their factor is 0, they are forecast at 0, and the level is set by weekdays.
    def weekdays_only(d: date) -> Decimal:
        return Decimal("50") if d.weekday() < 5 else Decimal("0")

    month = date(2025, 7, 1)
    daily = series(date(2025, 5, 1), date(2025, 7, 9), weekdays_only)
    f = forecast_month(daily, date(2025, 7, 10))
    assert f.weekday_factors[5] == f.weekday_factors[6] == 0.0
    assert f.point == sum(weekdays_only(d) for d in month_days(month)) == Decimal("1150.00")


def test_a_spike_counts_over_the_window_not_in_the_recent_level(monkeypatch):
    # Flat 10 a day, then 100 on the last closed day (a Monday). Spread over the 56-day window the spike is worth
    # 90 / 56 a day: 190 + 21 * (10 + 90 / 56) = 433.75. Cut at twice the median day, it moves the forecast
    # little beyond that and leaves Mondays alone; uncut, it makes every Monday 1.8 times the others.
    daily = series(date(2025, 1, 1), date(2025, 3, 10), flat("10")) | {date(2025, 3, 10): Decimal("100")}
    f = forecast_month(daily, date(2025, 3, 11))
    assert f.month_to_date == Decimal("190")
    assert Decimal("420") < f.point < Decimal("450")
    assert f.weekday_factors[0] < 1.2
    monkeypatch.setattr(forecast_module, "SPIKE", math.inf)
    uncut = forecast_month(daily, date(2025, 3, 11))
    assert uncut.point > Decimal("500") and uncut.weekday_factors[0] > 1.8


def test_nothing_ever_spent_forecasts_the_month_to_date():
    daily = series(date(2025, 5, 1), date(2025, 7, 9), flat("0"))
    f = forecast_month(daily, date(2025, 7, 10))
    assert f.method == "run_rate"
    assert f.month_to_date == 0 and f.point == f.lower == f.upper == Decimal("0.00")


def test_a_missing_day_is_forecast_not_counted_as_zero():
    daily = series(date(2025, 6, 1), date(2025, 8, 11), flat("10"))
    del daily[date(2025, 8, 5)]
    f = forecast_month(daily, date(2025, 8, 12))
    assert f.missing_days == (date(2025, 8, 5),)
    assert f.closed_days == 10 and f.month_to_date == Decimal("100")
    assert f.forecast_days == 21  # the missing day plus days 12..31
    assert f.point == Decimal("310.00")


def test_the_first_days_of_a_month_stand_on_the_previous_month():
    daily = series(date(2025, 7, 1), date(2025, 9, 1), weekly)
    f = forecast_month(daily, date(2025, 9, 2))
    assert f.closed_days == 1 and f.history_first == date(2025, 7, 8) and f.history_last == date(2025, 9, 1)
    assert f.history_days == 56 and f.method == "weekday_run_rate"
    assert f.point == sum(weekly(d) for d in month_days(date(2025, 9, 1)))


def test_on_the_first_of_the_month_everything_is_forecast():
    daily = series(date(2025, 7, 1), date(2025, 8, 31), flat("4"))
    f = forecast_month(daily, date(2025, 9, 1))
    assert f.month == date(2025, 9, 1) and f.closed_days == 0 and f.month_to_date == 0
    assert f.point == Decimal("120.00")


def test_short_history_falls_back_to_an_overall_mean_and_a_normal_interval():
    daily = {date(2025, 3, 1) + timedelta(days=i): Decimal(v) for i, v in enumerate(["8", "12", "9", "11", "10"])}
    f = forecast_month(daily, date(2025, 3, 6))
    assert f.method == "run_rate" and f.interval_method == "normal" and f.interval_samples == 0
    assert f.weekday_factors == (1.0,) * 7
    assert f.month_to_date == Decimal("50")
    assert f.lower < f.point < f.upper


@pytest.mark.parametrize(
    "daily,as_of,expectation",
    [
        ({}, date(2025, 3, 10), pytest.raises(InsufficientHistory, match="no closed day")),
        ({date(2025, 3, 10): Decimal("5")}, date(2025, 3, 10), pytest.raises(InsufficientHistory)),
        ({date(2024, 12, 1): Decimal("5")}, date(2025, 3, 10), pytest.raises(InsufficientHistory)),
        ({date(2025, 3, 9): Decimal("5")}, date(2025, 3, 10), nullcontext()),  # days 1..8 missing: forecast
    ],
    ids=["empty", "only-today-and-later", "only-older-than-the-window", "one-closed-day"],
)
def test_no_history_raises_a_clear_error(daily, as_of, expectation):
    with expectation:
        f = forecast_month(daily, as_of)
        assert f.point == Decimal("5") * 31 and f.method == "run_rate" and len(f.missing_days) == 8


def test_a_partial_today_is_spent_and_the_rest_of_the_day_forecast():
    daily = series(date(2025, 1, 1), date(2025, 3, 10), flat("10"))
    below = forecast_month(daily, date(2025, 3, 11), today_estimate=Decimal("4"))
    assert below.month_to_date == Decimal("104") and below.point == Decimal("310.00")
    assert below.forecast_days == 21 and below.today_estimate == Decimal("4")
    above = forecast_month(daily, date(2025, 3, 11), today_estimate=Decimal("25"))
    assert above.month_to_date == Decimal("125") and above.point == Decimal("325.00")  # today is already past 10


def test_days_on_or_after_as_of_are_ignored():
    history = series(date(2025, 1, 1), date(2025, 3, 10), weekly)
    future = series(date(2025, 3, 11), date(2025, 4, 30), flat("9999"))
    assert forecast_month(history | future, date(2025, 3, 11)) == forecast_month(history, date(2025, 3, 11))


def test_a_month_already_over_is_its_total():
    daily = series(date(2025, 1, 1), date(2025, 3, 10), flat("1.234567"))
    f = forecast_month(daily, date(2025, 3, 11), month=date(2025, 2, 14))
    assert f.method == "complete" and f.interval_method == "none" and f.forecast_days == 0
    assert f.month_to_date == Decimal("1.234567") * 28
    assert f.point == f.lower == f.upper == Decimal("34.57")


@pytest.mark.parametrize("coverage", [0.0, 1.0, -0.5, 80])
def test_coverage_must_be_a_probability(coverage):
    with pytest.raises(ValueError, match="coverage"):
        forecast_month({date(2025, 3, 9): Decimal("5")}, date(2025, 3, 10), coverage=coverage)


def noisy(seed: int, first: date, days: int) -> dict[date, Decimal]:
    """Weekly cycle, slow growth, lognormal day noise and rare spikes: a fixed test series."""
    rng = random.Random(seed)
    out = {}
    for i in range(days):
        d = first + timedelta(days=i)
        v = 100 * 1.001**i * float(PATTERN[d.weekday()]) / 100 * math.exp(rng.gauss(0, 0.15))
        if rng.random() < 0.03:
            v *= 3
        out[d] = Decimal(f"{v:.6f}")
    return out


def test_intervals_contain_the_point_and_never_refund():
    daily = noisy(3, date(2024, 10, 1), 300)
    for offset in range(0, 300, 9):
        as_of = date(2024, 10, 2) + timedelta(days=offset)
        for coverage in (0.5, 0.8, 0.95):
            f = forecast_month(daily, as_of, coverage=coverage, today_estimate=Decimal("1") if offset % 2 else None)
            assert cents(f.month_to_date) <= f.lower <= f.point <= f.upper, (as_of, coverage)


def test_a_wider_coverage_gives_a_wider_interval():
    daily = noisy(4, date(2024, 10, 1), 200)
    f80 = forecast_month(daily, date(2025, 4, 8))
    f95 = forecast_month(daily, date(2025, 4, 8), coverage=0.95)
    assert f80.interval_method == "empirical" and f80.interval_samples >= 20
    assert f95.lower < f80.lower < f80.point < f80.upper < f95.upper


@pytest.mark.parametrize(
    "mtd,day,length,expected",
    [
        (Decimal("70"), 7, 31, Decimal("310.00")),
        (Decimal("10"), 3, 28, Decimal("93.33")),
        (Decimal("0.005"), 1, 30, Decimal("0.15")),
        (Decimal("123.456789"), 30, 30, Decimal("123.46")),
    ],
    ids=["whole", "repeating", "tiny", "last-day"],
)
def test_naive_linear(mtd, day, length, expected):
    assert naive_linear(mtd, day, length) == expected


@pytest.mark.parametrize("day,length", [(0, 30), (31, 30), (5, 27), (5, 32)])
def test_naive_linear_rejects_impossible_days(day, length):
    with pytest.raises(ValueError):
        naive_linear(Decimal("1"), day, length)


def test_backtest_ours_beats_the_naive_run_rate():
    # 12 months forecast at days 7, 14 and 21 from everything before, on a fixed seeded series.
    first = date(2024, 11, 1)
    daily = noisy(16, first, 426)
    ours, naive = [], []
    for m in range(12):
        month = date(2025 + m // 12, m % 12 + 1, 1)
        n = days_in_month(month)
        actual = sum(daily[d] for d in month_days(month))
        for day in (7, 14, 21):
            f = forecast_month(daily, month + timedelta(days=day))
            ours.append(abs(f.point - actual) / actual)
            naive.append(abs(naive_linear(f.month_to_date, day, n) - actual) / actual)
    assert sum(ours) / len(ours) < sum(naive) / len(naive)
