"""Fault injection: each kind by exact schedule, 401 from request N, probabilities, determinism."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

import pytest

from usage_collector.simulator import FaultKind, FaultPlan, Organization

DAY = 86400


def _page_params(org: Organization) -> list[tuple[str, int]]:
    return [("start_time", org.start), ("end_time", org.end), ("limit", 2)]


@pytest.mark.parametrize(
    ("kind", "status", "json_ok"),
    [
        (FaultKind.RATE_LIMIT, 429, True),
        (FaultKind.SERVER_ERROR, 500, True),
        (FaultKind.BAD_GATEWAY, 502, True),
        (FaultKind.UNAVAILABLE, 503, True),
        (FaultKind.NON_JSON, 502, False),
        (FaultKind.TRUNCATED, 200, False),
        (FaultKind.UNAUTHORIZED, 401, True),
    ],
    ids=["429", "500", "502", "503", "html-502", "truncated", "401"],
)
def test_scheduled_fault_hits_exactly_that_request(call, make_api, org, kind, status, json_ok):
    api = make_api(FaultPlan(schedule={2: kind}))
    replies = [call("completions", _page_params(org), on=api) for _ in range(3)]
    assert [r.status for r in replies] == [200, status, 200]
    if json_ok:
        body = replies[1].json
        assert set(body.get("error", {})) == {"message", "type", "param", "code"}
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(replies[1].body)
    if kind is FaultKind.NON_JSON:
        assert replies[1].headers["content-type"] == "text/html"
    assert api.counters.by_fault == {kind.value: 1}


@pytest.mark.parametrize(
    ("fmt", "with_ms", "check"),
    [("seconds", False, "seconds"), ("http-date", False, "date"), ("seconds", True, "ms"), ("none", False, "absent")],
    ids=["seconds", "http-date", "retry-after-ms", "no-header"],
)
def test_429_retry_after_forms(call, make_api, org, clock, fmt, with_ms, check):
    api = make_api(
        FaultPlan(schedule={1: FaultKind.RATE_LIMIT}, retry_after=7, retry_after_format=fmt, retry_after_ms=with_ms)
    )
    reply = call("completions", _page_params(org), on=api)
    assert reply.status == 429
    assert reply.json["error"]["code"] == "rate_limit_exceeded"
    h = reply.headers
    if check == "seconds":
        assert h["retry-after"] == "7"
    elif check == "date":
        assert parsedate_to_datetime(h["retry-after"]).timestamp() == int(clock.now) + 7
    elif check == "ms":
        assert h["retry-after-ms"] == "7000" and h["retry-after"] == "7"
    else:
        assert "retry-after" not in h


def test_latency_fault_sleeps_through_the_injected_sleep(call, make_api, org):
    slept: list[float] = []
    api = make_api(FaultPlan(schedule={1: FaultKind.LATENCY}, latency_seconds=2.5), sleep=slept.append)
    assert call("completions", _page_params(org), on=api).status == 200
    assert slept == [2.5]


def test_repeat_cursor_repeats_forever(call, make_api, org):
    api = make_api(FaultPlan(schedule={2: FaultKind.REPEAT_CURSOR}))
    first = call("embeddings", _page_params(org), on=api).json
    second = call("embeddings", [*_page_params(org), ("page", first["next_page"])], on=api).json
    looping = second["next_page"]
    assert second["has_more"] is True
    for _ in range(3):
        again = call("embeddings", [*_page_params(org), ("page", looping)], on=api).json
        assert again["next_page"] == looping and again["has_more"] is True
        assert again["data"] == second["data"]


def test_has_more_without_next_page(call, make_api, org):
    api = make_api(FaultPlan(schedule={1: FaultKind.HAS_MORE_NO_CURSOR}))
    body = call("embeddings", _page_params(org), on=api).json
    assert body["has_more"] is True and body["next_page"] is None


def test_401_from_request_n(call, make_api, org):
    api = make_api(FaultPlan(unauthorized_from=4))
    statuses = [call("moderations", _page_params(org), on=api).status for _ in range(6)]
    assert statuses == [200, 200, 200, 401, 401, 401]


def test_probabilistic_faults_are_deterministic_and_roughly_as_configured(call, make_api, org):
    plan = FaultPlan(seed=3, rate_limit=0.2, server_error=0.1, truncated=0.05)

    def run() -> list[int]:
        api = make_api(plan)
        return [call("moderations", [("start_time", org.start)], on=api).status for _ in range(400)]

    a, b = run(), run()
    assert a == b
    assert 50 <= a.count(429) <= 110
    assert 20 <= sum(a.count(s) for s in (500, 502, 503)) <= 65
    assert {500, 502, 503} <= set(a)


def test_faults_only_apply_under_the_configured_paths(call, make_api, org):
    api = make_api(FaultPlan(rate_limit=1.0, path_prefixes=("/v1/organization/costs",)))
    assert call("completions", [("start_time", org.start)], on=api).status == 200
    assert call("costs", [("start_time", org.start)], on=api).status == 429


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["3:429"], {3: FaultKind.RATE_LIMIT}),
        (["1:truncated,2:503"], {1: FaultKind.TRUNCATED, 2: FaultKind.UNAVAILABLE}),
        (["5-7:non_json"], {5: FaultKind.NON_JSON, 6: FaultKind.NON_JSON, 7: FaultKind.NON_JSON}),
    ],
    ids=["single", "comma-list", "range"],
)
def test_parse_schedule(items, expected):
    assert FaultPlan.parse_schedule(items) == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"rate_limit": -0.1}, {"rate_limit": 0.7, "server_error": 0.5}],
    ids=["negative", "sum-over-one"],
)
def test_invalid_probabilities_are_rejected(kwargs):
    with pytest.raises(ValueError):
        FaultPlan(**kwargs)


def test_unknown_schedule_kind_is_rejected():
    with pytest.raises(ValueError):
        FaultPlan.parse_schedule(["1:teapot"])
