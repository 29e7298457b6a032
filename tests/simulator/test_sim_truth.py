"""Ground truth: 1m/1h/1d agree, grouped sums equal ungrouped totals, identities, gauge rule, API == truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from usage_collector.simulator import STREAMS, Organization

DAY = 86400
HOUR = 3600
COUNTERS = [s for s, d in STREAMS.items() if d.kind == "counter"]
OPTIONAL_COMPLETIONS = [
    m for m in STREAMS["completions"].measures if m not in ("input_tokens", "output_tokens", "num_model_requests")
]


def _sum(buckets: Sequence[Any], by: Sequence[str], measures: Sequence[str]) -> dict[tuple[Any, ...], dict[str, int]]:
    out: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    for b in buckets:
        for r in b["results"]:
            key = tuple(r[g] for g in by)
            for m in measures:
                if m in r:
                    out[key][m] += r[m]
    return {k: dict(v) for k, v in out.items()}


@pytest.mark.parametrize("stream", COUNTERS)
def test_minutes_hours_and_days_agree_exactly(org, stream):
    day = org.start + 3 * DAY  # includes the legacy project (archived on day 7)
    dims = list(STREAMS[stream].group_by)
    measures = STREAMS[stream].measures
    d = _sum(org.truth(stream, day, day + DAY, "1d", dims), dims, measures)
    h = _sum(org.truth(stream, day, day + DAY, "1h", dims), dims, measures)
    m = _sum(org.truth(stream, day, day + DAY, "1m", dims), dims, measures)
    assert d and d == h == m


@pytest.mark.parametrize("stream", COUNTERS)
def test_days_are_sums_of_hours_over_the_window(org, stream):
    measures = STREAMS[stream].measures
    days = org.truth(stream, org.start, org.end, "1d")
    hours = org.truth(stream, org.start, org.end, "1h")
    for i, b in enumerate(days):
        hs = hours[24 * i : 24 * i + 24]
        day = _sum([b], (), measures).get((), {})
        summed = _sum(hs, (), [m for m in measures if m not in OPTIONAL_COMPLETIONS or m in day]).get((), {})
        # optional completions fields: present in the day only if every contributor reports them (then in every hour)
        assert day == summed


@pytest.mark.parametrize("stream", COUNTERS)
@pytest.mark.parametrize("width", ["1h", "1d"])
def test_grouped_sums_equal_ungrouped_totals(org, stream, width):
    dims = list(STREAMS[stream].group_by)
    required = [m for m in STREAMS[stream].measures if m not in OPTIONAL_COMPLETIONS]
    end = org.start + 3 * DAY
    grouped = org.truth(stream, org.start, end, width, dims)
    flat = org.truth(stream, org.start, end, width)
    for g, f in zip(grouped, flat, strict=True):
        assert (not g["results"]) == (not f["results"])
        if not f["results"]:
            continue
        total = _sum([g], (), STREAMS[stream].measures)[()]
        (ungrouped,) = f["results"]
        for m in required:
            assert total[m] == ungrouped[m]
        for m in OPTIONAL_COMPLETIONS:  # present only if every contributor reports it: then the sums agree
            if m in ungrouped:
                assert all(m in r for r in g["results"])
                assert total[m] == ungrouped[m]


def test_completions_identities_hold_whenever_fields_are_present(org):
    results = [
        r for b in org.truth("completions", org.start, org.end, "1h", ["model", "project_id"]) for r in b["results"]
    ]
    full = [r for r in results if "input_uncached_tokens" in r]
    assert full
    for r in full:
        assert (
            r["input_tokens"] == r["input_cached_tokens"] + r["input_cache_write_tokens"] + r["input_uncached_tokens"]
        )
        assert r["input_uncached_tokens"] == r["input_text_tokens"] + r["input_audio_tokens"] + r["input_image_tokens"]
        assert r["input_cached_tokens"] == (
            r["input_cached_text_tokens"] + r["input_cached_audio_tokens"] + r["input_cached_image_tokens"]
        )
        assert r["output_tokens"] == r["output_text_tokens"] + r["output_audio_tokens"] + r["output_image_tokens"]
    # every modality and the cache are exercised somewhere
    for field in (
        "input_cached_tokens",
        "input_cache_write_tokens",
        "input_audio_tokens",
        "input_image_tokens",
        "output_audio_tokens",
        "output_image_tokens",
        "input_cached_image_tokens",
    ):
        assert any(r[field] > 0 for r in full), field


def test_older_series_omit_newer_fields_instead_of_zero(org):
    results = [r for b in org.truth("completions", org.start, org.start + DAY, "1d", ["model"]) for r in b["results"]]
    by_model = {r["model"]: r for r in results}
    spec_2024 = by_model["gpt-3.5-turbo-0125"]
    assert set(spec_2024) >= {"input_tokens", "output_tokens", "input_cached_tokens", "num_model_requests"}
    assert "input_audio_tokens" not in spec_2024 and "input_cache_write_tokens" not in spec_2024
    assert "input_uncached_tokens" in by_model["o3-mini-2025-01-31"]
    # grouping by project separates the 2025-shape series too
    legacy = org.project("legacy").id
    by_project = {
        r["project_id"]: r
        for b in org.truth("completions", org.start, org.start + DAY, "1d", ["project_id"])
        for r in b["results"]
    }
    assert "input_audio_tokens" not in by_project[legacy]
    assert "input_uncached_tokens" in by_project[org.project("support").id]


def test_archived_project_stops_using_the_api(org):
    legacy = org.project("legacy")
    assert legacy.archived_at is not None
    after = org.totals("completions", legacy.archived_at + HOUR, org.end, by=("project_id",))
    before = org.totals("completions", org.start, legacy.archived_at - 13 * HOUR, by=("project_id",))
    assert (legacy.id,) in before and (legacy.id,) not in after


def test_traffic_has_daily_and_weekly_rhythm(org):
    support = org.api_key("support-prod").id
    hours = org.truth("completions", org.start, org.end, "1h", filters={"api_key_id": [support]})
    by_hour: Counter[int] = Counter()
    for b in hours:
        for r in b["results"]:
            by_hour[(b["start_time"] // HOUR) % 24] += r["num_model_requests"]
    assert by_hour[19] > 2 * by_hour[8]  # afternoon in UTC-5 vs 3 am local (support has a damped swing)
    days = [sum(r["num_model_requests"] for r in b["results"]) for b in org.truth("completions", org.start, org.end)]
    weekdays = [n for i, n in enumerate(days) if i % 7 < 5]  # the window starts on a Monday
    weekends = [n for i, n in enumerate(days) if i % 7 >= 5]
    assert min(weekdays) > max(weekends)


@pytest.mark.parametrize("stream", [*COUNTERS, "vector_stores"])
def test_active_combinations_per_hour_stay_modest(org, stream):
    hours = org.truth(stream, org.start, org.start + 7 * DAY, "1h", list(STREAMS[stream].group_by))
    counts = [len(b["results"]) for b in hours]
    assert max(counts) <= 25
    assert sum(counts) > 0


def test_gauge_rule_bytes_at_the_last_minute_of_the_bucket(org):
    day = org.start + 2 * DAY
    by = ["project_id"]
    d = org.truth("vector_stores", day, day + DAY, "1d", by)[0]["results"]
    h = org.truth("vector_stores", day, day + DAY, "1h", by)[-1]["results"]
    m = org.truth("vector_stores", day, day + DAY, "1m", by)[-1]["results"]
    assert d == h == m and len(d) >= 3
    total = org.truth("vector_stores", day, day + DAY, "1d")[0]["results"][0]["usage_bytes"]
    assert total == sum(r["usage_bytes"] for r in d)
    # it is a gauge: it moves up and down over the window
    series = [
        b["results"][0]["usage_bytes"]
        for b in org.truth("vector_stores", org.start, org.end, "1h", filters={"project_id": [org.project("rag").id]})
    ]
    steps = [b - a for a, b in pairwise(series)]
    assert any(s > 0 for s in steps) and any(s < 0 for s in steps)


def test_totals_match_bucket_sums(org):
    t = org.totals("embeddings", by=("model",))
    buckets = org.truth("embeddings", org.start, org.end, "1d", ["model"])
    assert t == _sum(buckets, ("model",), ("input_tokens", "num_model_requests"))
    costs = org.totals("costs", by=("project_id",))
    per_day = org.truth("costs", org.start, org.end, "1d", ["project_id"])
    summed: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for b in per_day:
        for r in b["results"]:
            summed[(r["project_id"],)] += r["amount"]["value"]
    assert {k: v["amount"] for k, v in costs.items()} == summed
    assert org.total_cost() == sum(summed.values())


def test_generation_is_deterministic():
    a = Organization(seed=5, start="2025-01-06", days=3)
    b = Organization(seed=5, start="2025-01-06", days=3)
    c = Organization(seed=6, start="2025-01-06", days=3)
    ta = a.truth("completions", a.start, a.end, "1h", ["model"])
    assert ta == b.truth("completions", b.start, b.end, "1h", ["model"])
    assert [p.id for p in a.projects] == [p.id for p in b.projects] != [p.id for p in c.projects]
    assert ta != c.truth("completions", c.start, c.end, "1h", ["model"])


@pytest.mark.parametrize(
    ("stream", "width", "group_by"),
    [
        ("completions", "1h", ["project_id", "model", "batch", "service_tier"]),
        ("images", "1d", ["size", "source"]),
        ("vector_stores", "1h", ["project_id"]),
        ("web_search_calls", "1d", ["context_level", "model"]),
        ("file_search_calls", "1h", ["vector_store_id"]),
        ("costs", "1d", ["project_id", "line_item", "api_key_id"]),
        ("costs", "1d", []),
    ],
    ids=["completions", "images", "vector_stores", "web_search", "file_search", "costs-full", "costs-total"],
)
def test_api_equals_truth_once_final(walk, strip, org, stream, width, group_by):
    params = [
        ("start_time", org.start),
        ("end_time", org.end),
        ("bucket_width", width),
        ("limit", {"1h": 168, "1d": 31}[width]),
    ] + [("group_by[]", g) for g in group_by]
    api = walk(stream, params)
    truth = org.truth(stream, org.start, org.end, width, group_by)
    assert [(b["start_time"], b["end_time"]) for b in api] == [(b["start_time"], b["end_time"]) for b in truth]
    assert [[strip(r) for r in b["results"]] for b in api] == [b["results"] for b in truth]
