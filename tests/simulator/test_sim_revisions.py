"""Late revisions: recent buckets under-report and grow monotonically to the truth (ref §4.9)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from usage_collector.simulator import revision_factor

DAY = 86400
HOUR = 3600
MINUTE = 60


def _measure(call: Callable[..., Any], stream: str, params: list[tuple[str, int | str]], field: str) -> list[int]:
    data = call(stream, params).json["data"]
    return [sum(r[field] for r in b["results"]) for b in data]


@pytest.mark.parametrize(
    ("stream", "width", "field"),
    [
        ("completions", "1h", "input_tokens"),
        ("completions", "1m", "num_model_requests"),
        ("embeddings", "1h", "input_tokens"),
        ("vector_stores", "1h", "usage_bytes"),
    ],
    ids=["completions-1h", "completions-1m", "embeddings-1h", "vector_stores-gauge"],
)
def test_recent_bucket_grows_to_truth_as_the_clock_advances(call, org, clock, stream, width, field):
    w = {"1h": HOUR, "1m": MINUTE}[width]
    bucket = org.start + 3 * DAY + 15 * HOUR  # a busy afternoon hour (UTC)
    params = [("start_time", bucket), ("end_time", bucket + w), ("bucket_width", width)]
    truth = sum(r[field] for r in org.truth(stream, bucket, bucket + w, width)[0]["results"])
    assert truth > 0
    seen = []
    for age in (0, 60, 600, 1800, 3600, 5400, 7199, 7200, 7260, 10 * HOUR):
        clock.now = bucket + w + age
        (value,) = _measure(call, stream, params, field)
        seen.append(value)
    assert seen == sorted(seen), "revisions must be monotone"
    assert seen[0] < truth
    assert seen[-1] == seen[-2] == truth  # past the 2 h horizon


def test_bucket_in_progress_grows_with_now(call, org, clock):
    bucket = org.start + 4 * DAY + 14 * HOUR
    seen = []
    for t in range(0, HOUR, 600):
        clock.now = bucket + t + 30
        data = call("completions", [("start_time", bucket), ("bucket_width", "1h")]).json["data"]
        assert data[-1]["end_time"] == int(clock.now)
        seen.append(sum(r["num_model_requests"] for r in data[-1]["results"]))
    assert seen == sorted(seen) and seen[0] < seen[-1]


def test_revised_values_stay_consistent_across_widths_and_groups(call, org, clock):
    clock.now = org.start + 5 * DAY + 16 * HOUR + 1234
    start = org.start + 5 * DAY + 12 * HOUR
    base = [("start_time", start)]
    minutes = call("completions", [*base, ("bucket_width", "1m"), ("limit", 1440)]).json["data"]
    hours = call("completions", [*base, ("bucket_width", "1h")]).json["data"]
    grouped = call("completions", [*base, ("bucket_width", "1h"), ("group_by", "model,api_key_id")]).json["data"]

    def total(data: list[dict[str, Any]]) -> int:
        return sum(r["output_tokens"] for b in data for r in b["results"])

    assert total(minutes) == total(hours) == total(grouped)
    truth = sum(r["output_tokens"] for b in org.truth("completions", start, int(clock.now), "1h") for r in b["results"])
    assert total(hours) < truth


def test_zero_horizon_is_final_as_soon_as_a_bucket_closes(call, make_api, org, clock):
    api = make_api(revision_horizon=0)
    bucket = org.start + 2 * DAY + 15 * HOUR
    clock.now = bucket + HOUR
    data = call(
        "completions", [("start_time", bucket), ("end_time", bucket + HOUR), ("bucket_width", "1h")], on=api
    ).json["data"]
    assert (
        data[0]["results"][0]["input_tokens"]
        == org.truth("completions", bucket, bucket + HOUR, "1h")[0]["results"][0]["input_tokens"]
    )


def test_costs_are_revised_for_two_days(call, org, clock):
    day = org.start + 6 * DAY
    params = [("start_time", day), ("end_time", day + DAY)]
    truth = org.truth("costs", day, day + DAY, "1d")[0]["results"][0]["amount"]["value"]
    seen = []
    for age in (-12 * HOUR, 0, 6 * HOUR, DAY, 2 * DAY - 1, 2 * DAY, 3 * DAY):
        clock.now = day + DAY + age
        seen.append(Decimal(str(call("costs", params).json["data"][0]["results"][0]["amount"]["value"])))
    assert seen == sorted(seen)
    assert seen[0] < seen[1] < truth
    assert seen[-2] == seen[-1] == truth


@pytest.mark.parametrize(
    ("age", "horizon", "period", "expected"),
    [
        (7200, 7200, 60, (1, 1)),
        (0, 7200, 60, (7200, 14400)),
        (3600, 7200, 60, (10800, 14400)),
        (-30, 7200, 60, (30, 120)),
        (-60, 7200, 60, (0, 1)),
        (-30, 0, 60, (30, 60)),
        (0, 0, 60, (1, 1)),
    ],
    ids=[
        "final",
        "just-closed-half",
        "half-way",
        "in-progress",
        "not-started",
        "no-horizon-in-progress",
        "no-horizon-closed",
    ],
)
def test_revision_factor(age, horizon, period, expected):
    assert revision_factor(age, horizon, period) == expected
