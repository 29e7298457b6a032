"""Bucket edges, clipping, empty and future buckets, pagination cursors (ref §1.5, §4.1, §4.2, §4.4)."""

from __future__ import annotations

import base64
from itertools import pairwise
from typing import Any

import pytest

from usage_collector.simulator import DEFAULT_ADMIN_KEY

DAY = 86400
HOUR = 3600
WIDTHS = {"1m": 60, "1h": HOUR, "1d": DAY}


@pytest.mark.parametrize(
    ("width", "offset", "now_offset", "limit"),
    [
        ("1d", 17 * HOUR + 31 * 60 + 7, 5 * DAY + 3 * HOUR + 3, 31),
        ("1h", 1234, 20 * HOUR + 77, 168),
        ("1m", 95, 3 * HOUR + 17, 1440),
    ],
    ids=["1d", "1h", "1m"],
)
def test_first_and_last_buckets_are_clipped_and_the_rest_aligned(call, org, clock, width, offset, now_offset, limit):
    # ref §4.1: first bucket starts at start_time floored to the minute, last ends at now (end_time omitted).
    start = org.start + DAY + offset
    clock.now = org.start + DAY + now_offset
    data = call("completions", [("start_time", start), ("bucket_width", width), ("limit", limit)]).json["data"]
    w = WIDTHS[width]
    assert data[0]["start_time"] == start - start % 60
    assert data[-1]["end_time"] == int(clock.now)
    for a, b in pairwise(data):
        assert a["end_time"] == b["start_time"]
        assert b["start_time"] % w == 0
    for bucket in data[:-1]:
        assert bucket["end_time"] % w == 0
        assert bucket["object"] == "bucket"


def test_end_time_is_exclusive_and_clips_the_last_bucket(call, org):
    end = org.start + 2 * DAY + 5 * HOUR
    data = call("embeddings", [("start_time", org.start), ("end_time", end)]).json["data"]
    assert [(b["start_time"] - org.start, b["end_time"] - org.start) for b in data] == [
        (0, DAY),
        (DAY, 2 * DAY),
        (2 * DAY, 2 * DAY + 5 * HOUR),
    ]


def test_empty_buckets_are_returned_in_sequence(call, org):
    # ref §4.2: empty buckets come back with results [] and take part in paging.
    start = org.start - 10 * DAY
    body = call("completions", [("start_time", start), ("end_time", org.start + DAY), ("limit", 31)]).json
    assert len(body["data"]) == 11
    assert all(b["results"] == [] for b in body["data"][:10])
    assert body["data"][10]["results"]


def test_nothing_outside_the_window_has_usage(call, org, clock):
    clock.now = org.end + 30 * DAY
    for start, end in ((org.start - 7 * DAY, org.start), (org.end, org.end + 7 * DAY)):
        data = call(
            "completions", [("start_time", start), ("end_time", end), ("bucket_width", "1h"), ("limit", 168)]
        ).json["data"]
        assert len(data) == 168 and all(b["results"] == [] for b in data)


@pytest.mark.parametrize(
    ("start_offset", "end_offset", "expect_buckets"),
    [(3 * DAY, None, 0), (DAY, 9 * DAY, 2), (DAY, None, 2)],
    ids=["start-in-future", "end-in-future-clipped-to-now", "no-end-means-now"],
)
def test_future_buckets_are_not_returned(call, org, clock, start_offset, end_offset, expect_buckets):
    clock.now = org.start + 2 * DAY + 600
    params = [("start_time", org.start + start_offset)]
    if end_offset is not None:
        params.append(("end_time", org.start + end_offset))
    body = call("moderations", params).json
    assert len(body["data"]) == expect_buckets
    assert body["has_more"] is False and body["next_page"] is None
    if expect_buckets:
        assert body["data"][-1]["end_time"] == int(clock.now)


@pytest.mark.parametrize(
    ("stream", "width", "limit", "group_by"),
    [
        ("completions", "1d", 3, ["model"]),
        ("images", "1h", 50, ["size", "source"]),
        ("costs", "1d", 4, ["line_item"]),
        ("vector_stores", "1h", 100, ["project_id"]),
    ],
    ids=["completions-1d", "images-1h", "costs", "vector_stores-1h"],
)
def test_pages_concatenate_to_the_unpaged_answer(call, walk, org, stream, width, limit, group_by):
    base = [("start_time", org.start - DAY), ("end_time", org.end), ("bucket_width", width)]
    base += [("group_by", g) for g in group_by]
    paged = walk(stream, [*base, ("limit", limit)])
    bucket_count = len(paged)
    whole: list[dict[str, Any]] = []
    max_limit = {"1d": 180 if stream == "costs" else 31, "1h": 168}[width]
    whole = walk(stream, [*base, ("limit", max_limit)])
    assert bucket_count == len(whole) == (org.end - org.start + DAY) // {"1d": DAY, "1h": HOUR}[width]
    assert [b["start_time"] for b in paged] == [b["start_time"] for b in whole]
    if stream != "costs":  # costs amounts alternate string/number by position; compared elsewhere
        assert paged == whole


def test_cursor_is_opaque_and_reproducible(call, org):
    params = [("start_time", org.start), ("end_time", org.end), ("group_by", "model")]
    first = call("embeddings", params).json
    cursor = first["next_page"]
    assert cursor.startswith("page_")
    assert str(first["data"][-1]["end_time"]) not in cursor
    base64.b64decode(cursor[5:], validate=True)  # standard base64 (clients must URL-encode it)
    second = call("embeddings", [*params, ("page", cursor)])
    again = call("embeddings", [*params, ("page", cursor)])
    assert second.body == again.body
    assert second.json["data"][0]["start_time"] == first["data"][-1]["end_time"]


def test_cursor_with_different_parameters_is_rejected(call, org):
    params = [("start_time", org.start), ("end_time", org.end)]
    cursor = call("embeddings", params).json["next_page"]
    reply = call("embeddings", [("start_time", org.start), ("end_time", org.end - DAY), ("page", cursor)])
    assert reply.status == 400
    assert reply.json["error"]["param"] == "page"
    # a different limit and another group_by encoding are still "the same parameters"
    ok = call("embeddings", [*params, ("limit", 2), ("page", cursor)])
    assert ok.status == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, None),
        ({"Authorization": "Bearer "}, None),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer sk-admin-wrong-key-000000000"}, "invalid_api_key"),
    ],
    ids=["missing", "empty-bearer", "not-bearer", "wrong-key"],
)
def test_authentication_errors_are_401(call, headers, code):
    reply = call("completions", [("start_time", 0)], headers=headers)
    assert reply.status == 401
    err = reply.json["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert "sk-admin-wrong-key-000000000" not in err["message"]


def test_configured_admin_key_is_the_only_one_accepted(call, make_api):
    api = make_api(admin_key="sk-admin-custom")
    assert (
        call("completions", [("start_time", 0)], headers={"authorization": "Bearer sk-admin-custom"}, on=api).status
        == 200
    )
    assert (
        call(
            "completions", [("start_time", 0)], headers={"authorization": f"Bearer {DEFAULT_ADMIN_KEY}"}, on=api
        ).status
        == 401
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/organization/usage/chats"), ("GET", "/v2/organization/costs"), ("POST", "/v1/organization/costs")],
    ids=["unknown-stream", "wrong-version", "wrong-method"],
)
def test_unknown_urls_are_404(api, method, path):
    status, _, body = api.handle(method, path, [("start_time", "0")], {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"})
    assert status == 404
    assert b"Invalid URL" in body


def test_response_headers(api):
    status, headers, _ = api.handle(
        "GET", "/v1/organization/usage/completions?start_time=0", (), [("authorization", f"Bearer {DEFAULT_ADMIN_KEY}")]
    )
    h = dict(headers)
    assert status == 200
    assert h["content-type"] == "application/json"
    assert h["x-request-id"].startswith("req_")
