"""Planning: alignment, final edge (grace), restatement window, window splitting."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers import T0
from usage_collector.catalogue import COSTS_LIMIT_MAX, STREAMS
from usage_collector.planning import (
    COSTS_WINDOW_DAYS,
    BackfillRange,
    Window,
    align_down,
    align_up,
    count_windows,
    final_edge,
    plan_run,
    plan_stream,
    split,
)

H = 3600
D = 86400


@pytest.mark.parametrize(
    "ts,width,down,up",
    [
        (T0 + 59, "1m", T0, T0 + 60),
        (T0 + H + 1, "1h", T0 + H, T0 + 2 * H),
        (T0 + D - 1, "1d", T0, T0 + D),
        (T0, "1d", T0, T0),
    ],
    ids=["minute", "hour", "day", "already-aligned"],
)
def test_alignment_is_utc(ts, width, down, up):
    assert align_down(ts, width) == down
    assert align_up(ts, width) == up


@pytest.mark.parametrize(
    "now,width,grace,edge",
    [
        (T0 + 3 * H + 10 * 60, "1h", 900, T0 + 2 * H),  # 03:10 - 15m = 02:55 -> 02:00
        (T0 + 3 * H + 20 * 60, "1h", 900, T0 + 3 * H),  # 03:20 - 15m = 03:05 -> 03:00
        (T0 + 3 * H + 20 * 60, "1m", 900, T0 + 3 * H + 5 * 60),
        (T0 + 5 * H, "1d", 0, T0),  # costs: only closed UTC days
    ],
    ids=["hour-inside-grace", "hour-past-grace", "minute", "day-closed-only"],
)
def test_only_buckets_ending_before_now_minus_grace_are_final(now, width, grace, edge):
    assert final_edge(now, width, grace) == edge


def test_first_run_starts_at_initial_lookback():
    w = plan_run(position=None, now=T0 + 10 * H, width="1h", grace=900, restatement=D, initial_lookback=2 * D)
    assert w == Window(T0 + 10 * H - 2 * D, T0 + 9 * H)


def test_run_rereads_the_restatement_window_even_when_checkpoint_is_current():
    w = plan_run(position=T0 + 9 * H, now=T0 + 10 * H, width="1h", grace=900, restatement=D, initial_lookback=D)
    assert w == Window(T0 + 9 * H - D, T0 + 9 * H)


def test_run_resumes_from_an_old_checkpoint():
    w = plan_run(position=T0 - 5 * D, now=T0 + 10 * H, width="1h", grace=900, restatement=D, initial_lookback=D)
    assert w.start == T0 - 5 * D


def test_nothing_final_yet_gives_an_empty_window():
    w = plan_run(position=T0, now=T0 + 10, width="1d", grace=0, restatement=0, initial_lookback=0)
    assert w.start == w.end == T0


@pytest.mark.parametrize(
    "width,limit,span,expected_windows",
    [("1m", 1440, 3 * D, 3), ("1h", 168, 8 * D, 2), ("1d", 31, 62 * D, 2), ("1d", 180, 90 * D, 1)],
    ids=["1m-one-day-per-window", "1h-one-week", "1d-31-days", "costs-180-days"],
)
def test_windows_hold_at_most_limit_buckets(width, limit, span, expected_windows):
    wins = list(split(Window(T0, T0 + span), width, limit))
    assert len(wins) == expected_windows == count_windows(Window(T0, T0 + span), width, limit)
    assert wins[0].start == T0 and wins[-1].end == T0 + span
    assert all(a.end == b.start for a, b in itertools.pairwise(wins))


def test_a_costs_backfill_is_read_in_windows_of_costs_window_days():
    """Costs windows hold COSTS_WINDOW_DAYS buckets, not the API's 180: a window's page is held while it is
    shaped (the 365-day backfill's peak RSS, bench/p4_memory.py); usage streams keep the API maximum."""
    assert COSTS_WINDOW_DAYS < COSTS_LIMIT_MAX

    def windows(name: str, width: str) -> list[Window]:
        plan = plan_stream(
            STREAMS[name],
            org_id="org",
            width=width,
            now=T0 + 366 * D,
            grace=0,
            restatement=0,
            initial_lookback=0,
            stored=None,
            backfill=BackfillRange(T0, T0 + 365 * D),
        )
        wins = list(plan.windows())
        assert len(wins) == plan.count()
        assert wins[0].start == T0 and wins[-1].end == T0 + 365 * D
        assert all(a.end == b.start for a, b in itertools.pairwise(wins))
        return wins

    costs = windows("costs", "1d")
    assert len(costs) == 7 and all(w.end - w.start <= COSTS_WINDOW_DAYS * D for w in costs)
    assert max(w.end - w.start for w in windows("completions", "1d")) == 31 * D
