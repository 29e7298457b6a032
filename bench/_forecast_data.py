"""Daily billed-cost series for the forecast backtest (``bench/p7_forecast.py``); not a benchmark itself.

* :func:`simulator_daily`: the simulated organization's billed cost per UTC day (``usage_collector.simulator``:
  weekday/weekend traffic, diurnal curves, hourly noise, per-series spikes, the ``legacy`` project archived
  half-way through, so one downward step). Exact ``Decimal`` amounts, as the Costs API bills them.
* :func:`synthetic_daily`: a harder, seeded series: a level that drifts upward (about +4 % a month) as a random
  walk, a weekly cycle, multiplicative day noise, occasional spikes, rare level steps (up or down) and rare
  zero-spend days. Its parameters were fixed when it was written, before any backtest ran.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

#: Synthetic weekday factors, Monday first.
WEEKLY = (1.0, 1.1, 1.15, 1.1, 0.95, 0.45, 0.35)


def simulator_daily(seed: int, start: date, days: int) -> dict[date, Decimal]:
    """Billed cost per day of ``Organization(seed, start, days)`` (all line items, projects and keys)."""
    from usage_collector.simulator import Organization

    org = Organization(seed=seed, start=start, days=days)
    out: dict[date, Decimal] = {}
    for bucket in org.truth("costs", org.start, org.end, "1d"):
        day = datetime.fromtimestamp(bucket["start_time"], UTC).date()
        out[day] = sum((r["amount"]["value"] for r in bucket["results"]), Decimal(0))
    return out


def synthetic_daily(seed: int, start: date, days: int, base: float = 200.0) -> dict[date, Decimal]:
    """A seeded synthetic daily cost series (see the module docstring), amounts with 6 decimals."""
    rng = random.Random(seed)
    log_level = math.log(base)
    drift = math.log(1.04) / 30
    out: dict[date, Decimal] = {}
    for i in range(days):
        day = start + timedelta(days=i)
        log_level += drift + rng.gauss(0.0, 0.01)
        if rng.random() < 1 / 90:  # a launch or a shutdown: a lasting step
            log_level += math.log(rng.uniform(0.7, 1.4))
        value = math.exp(log_level) * WEEKLY[day.weekday()] * math.exp(rng.gauss(0.0, 0.12))
        if rng.random() < 0.03:  # a one-day burst (a batch job, a runaway loop)
            value *= rng.uniform(1.5, 4.0)
        if rng.random() < 0.005:  # nothing billed that day
            value = 0.0
        out[day] = Decimal(f"{value:.6f}")
    return out
