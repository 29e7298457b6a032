"""The HTTP layer: request shape, pagination, retries, Retry-After, fatal errors (pytest-httpx)."""

from __future__ import annotations

import re
from contextlib import nullcontext
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr
from pytest_httpx import HTTPXMock

from tests.helpers import CANARY_KEY, T0, bucket, page
from usage_collector.catalogue import STREAMS
from usage_collector.client import OpenAIClient, RequestStats
from usage_collector.clock import FakeClock
from usage_collector.errors import AuthError, FatalApiError, PaginationError, RetriableApiError
from usage_collector.planning import Window

BASE = "http://testserver/v1"
URL = re.compile(r"http://testserver/v1/organization/(usage/\w+|costs)\?.*")


def make_client(clock: FakeClock, **kw) -> OpenAIClient:
    opts = {"rate_limit": 1000.0, "initial_backoff": 0.0, "max_backoff": 0.0}
    opts.update(kw)
    return OpenAIClient(BASE, SecretStr(CANARY_KEY), clock=clock, **opts)


def pages(client: OpenAIClient, stream: str, width: str = "1h", window: Window | None = None):
    spec = STREAMS[stream]
    return list(client.iter_pages(spec, window or Window(T0, T0 + 3600), width, spec.group_by, RequestStats()))


@pytest.mark.parametrize(
    "stream,width,limit",
    [("completions", "1m", 1440), ("completions", "1h", 168), ("embeddings", "1d", 31), ("costs", "1d", 180)],
    ids=["usage-1m", "usage-1h", "usage-1d", "costs"],
)
def test_request_sends_max_limit_end_time_and_sdk_array_encoding(httpx_mock: HTTPXMock, clock, stream, width, limit):
    httpx_mock.add_response(url=URL, json=page([]))
    pages(make_client(clock), stream, width)
    req = httpx_mock.get_request()
    q = req.url.params
    assert q["limit"] == str(limit)
    assert q["end_time"] == str(T0 + 3600) and q["start_time"] == str(T0)
    assert q["bucket_width"] == width
    assert q.get_list("group_by[]") == list(STREAMS[stream].group_by)
    assert req.headers["authorization"] == f"Bearer {CANARY_KEY}"


def test_pagination_follows_next_page_with_the_same_parameters(httpx_mock: HTTPXMock, clock):
    httpx_mock.add_response(url=URL, json=page([bucket(T0, T0 + 60, [])], True, "page_A"))
    httpx_mock.add_response(url=URL, json=page([bucket(T0 + 60, T0 + 120, [])], True, "page_B"))
    httpx_mock.add_response(url=URL, json=page([bucket(T0 + 120, T0 + 180, [])]))
    got = pages(make_client(clock), "completions", "1m")
    assert [b["start_time"] for p in got for b in p["data"]] == [T0, T0 + 60, T0 + 120]
    reqs = httpx_mock.get_requests()
    assert [r.url.params.get("page") for r in reqs] == [None, "page_A", "page_B"]
    base = [(k, v) for k, v in reqs[0].url.params.multi_items()]
    for r in reqs[1:]:
        assert [(k, v) for k, v in r.url.params.multi_items() if k != "page"] == base


@pytest.mark.parametrize(
    "second,expectation",
    [
        (page([], True, "page_A"), pytest.raises(PaginationError, match="loop detected")),
        (page([], True, None), pytest.raises(PaginationError, match="next_page is missing")),
        (page([], False, None), nullcontext()),
    ],
    ids=["repeated-cursor", "has-more-without-next-page", "clean-end"],
)
def test_pagination_contract_violations_are_errors(httpx_mock: HTTPXMock, clock, second, expectation):
    httpx_mock.add_response(url=URL, json=page([], True, "page_A"))
    httpx_mock.add_response(url=URL, json=second)
    with expectation:
        pages(make_client(clock), "completions")


def _http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


@pytest.mark.parametrize(
    "headers_for_now,expected_sleep",
    [
        (lambda now: {"Retry-After": "7"}, 7.0),
        (lambda now: {"Retry-After": _http_date(now + 30)}, 30.0),
        (lambda now: {"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
    ],
    ids=["seconds", "http-date", "retry-after-ms-wins"],
)
def test_429_honours_retry_after_in_all_three_forms(httpx_mock: HTTPXMock, clock, headers_for_now, expected_sleep):
    httpx_mock.add_response(
        url=URL,
        status_code=429,
        headers=headers_for_now(clock.now()),
        json={"error": {"message": "Rate limit reached"}},
    )
    httpx_mock.add_response(url=URL, json=page([]))
    stats = RequestStats()
    spec = STREAMS["completions"]
    list(make_client(clock).iter_pages(spec, Window(T0, T0 + 3600), "1h", (), stats))
    assert clock.slept and abs(clock.slept[-1] - expected_sleep) < 1.0
    assert stats.requests == 2 and stats.retries == 1


def test_retry_after_above_the_cap_is_not_waited_out(httpx_mock: HTTPXMock, clock):
    httpx_mock.add_response(url=URL, status_code=429, headers={"Retry-After": "3600"})
    with pytest.raises(RetriableApiError, match="above retry_after_cap"):
        pages(make_client(clock, retry_after_cap=120), "completions")
    assert clock.slept == []


@pytest.mark.parametrize(
    "failure",
    [
        {"status_code": 500},
        {"status_code": 502, "text": "<html>bad gateway</html>"},
        {"status_code": 503},
        {"status_code": 200, "content": b'{"object":"page","data":[{"start_ti'},
        {"exc": httpx.ReadTimeout("timed out")},
        {"exc": httpx.ConnectError("refused")},
    ],
    ids=["500", "502-html", "503", "truncated-200", "timeout", "connection-error"],
)
def test_transient_failures_are_retried_with_backoff(httpx_mock: HTTPXMock, clock, failure):
    if "exc" in failure:
        httpx_mock.add_exception(failure["exc"], url=URL)
    else:
        httpx_mock.add_response(url=URL, **failure)
    httpx_mock.add_response(url=URL, json=page([bucket(T0, T0 + 3600, [])]))
    got = pages(make_client(clock), "completions")
    assert got[0]["data"][0]["start_time"] == T0


def test_retries_stop_after_max_attempts_with_a_clear_error(httpx_mock: HTTPXMock, clock):
    for _ in range(3):
        httpx_mock.add_response(url=URL, status_code=503)
    with pytest.raises(RetriableApiError, match=r"gave up after 3 attempt\(s\).*HTTP 503"):
        pages(make_client(clock, max_attempts=3), "completions")


@pytest.mark.parametrize(
    "status,error,match",
    [
        (401, AuthError, "Admin key"),
        (403, AuthError, "Admin key"),
        (400, FatalApiError, "limit must be"),
        (404, FatalApiError, "HTTP 404"),
    ],
    ids=["401", "403", "400", "404"],
)
def test_client_errors_are_fatal_with_the_api_message(httpx_mock: HTTPXMock, clock, status, error, match):
    httpx_mock.add_response(
        url=URL,
        status_code=status,
        json={"error": {"message": "limit must be <= 168", "type": "invalid_request_error"}},
    )
    with pytest.raises(error, match=match) as info:
        pages(make_client(clock), "completions")
    assert CANARY_KEY not in str(info.value)
    assert clock.slept == []  # not retried


def test_rate_limit_spaces_requests_on_the_clock(httpx_mock: HTTPXMock, clock):
    for _ in range(5):
        httpx_mock.add_response(url=URL, json=page([]))
    client = make_client(clock, rate_limit=2.0, rate_limit_burst=1)
    start = clock.now()
    for _ in range(5):
        pages(client, "embeddings")
    assert clock.now() - start == pytest.approx(2.0)  # 5 requests at 2/s: 4 gaps of 0.5 s


def test_rate_limit_lets_a_burst_through_then_keeps_the_rate(httpx_mock: HTTPXMock, clock):
    for _ in range(8):
        httpx_mock.add_response(url=URL, json=page([]))
    client = make_client(clock, rate_limit=2.0, rate_limit_burst=4)
    start = clock.now()
    for _ in range(4):
        pages(client, "embeddings")
    assert clock.now() == start  # the burst starts at once
    for _ in range(4):
        pages(client, "embeddings")
    assert clock.now() - start == pytest.approx(2.0)  # then 2/s


def test_names_are_read_concurrently_and_cached_until_their_ttl():
    """The Admin lists go out together (not one after another), a second cycle within the TTL reuses them, and a
    refresh that fails keeps the names read before."""
    import threading

    from usage_collector.client import NameCache, fetch_names
    from usage_collector.clock import FakeClock

    in_flight, peak, lock = [0], [0], threading.Lock()
    gate = threading.Barrier(2, timeout=5)
    down = [False]

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if down[0]:
            return httpx.Response(500, json={"error": {"message": "down"}})
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            if path.endswith(("/organization/projects", "/organization/users")):
                gate.wait()  # both lists must be in flight at once, or this times out
            if path.endswith("/organization/projects"):
                data = [{"id": "proj_1", "name": "One"}, {"id": "proj_2", "name": "Two"}]
            elif path.endswith("/organization/users"):
                data = [{"id": "user_1", "email": "a@example.com"}]
            elif path.endswith("/api_keys"):
                pid = path.split("/")[-2]
                data = [{"id": f"key_{pid}", "name": f"key of {pid}"}]
            else:
                data = [{"id": "svc_1", "name": "robot"}]
            return httpx.Response(200, json={"object": "list", "data": data, "has_more": False})
        finally:
            with lock:
                in_flight[0] -= 1

    clock = FakeClock(1_000_000.0)
    client = OpenAIClient(
        "https://api.example.test/v1", SecretStr("sk-admin-test"), clock=clock, transport=httpx.MockTransport(handler)
    )
    cache = NameCache(ttl=600)
    names = fetch_names(client, cache)
    assert names is not None and peak[0] >= 2
    assert dict(names.projects) == {"proj_1": "One", "proj_2": "Two"}
    assert dict(names.api_keys) == {"key_proj_1": "key of proj_1", "key_proj_2": "key of proj_2"}
    assert dict(names.users) == {"user_1": "a@example.com"}
    assert dict(names.service_accounts) == {"svc_1": "robot"}  # never among the users' e-mails
    assert fetch_names(client, cache) is names  # within the TTL: no request
    clock.advance(601)
    refreshed = fetch_names(client, cache)
    assert refreshed is not None and refreshed is not names  # refreshed
    clock.advance(601)
    down[0] = True  # the lists answer 500: the refresh fails, the names read before are kept
    assert fetch_names(client, cache) is refreshed
    down[0] = False
    assert fetch_names(client, cache) is not refreshed  # not cached as a success: tried again the next time


class _Chunks(httpx.SyncByteStream):
    """A body sent in 64 KiB chunks, as a socket delivers it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self):
        for i in range(0, len(self.body), 1 << 16):
            yield self.body[i : i + (1 << 16)]


def test_a_page_body_is_read_into_one_buffer_not_held_twice(clock):
    """A page of a few MB is read into one buffer as its chunks arrive: httpx's ``read()`` keeps every chunk until
    it joins them, so the body was held twice (bench/p4_memory.py); a 4 MB page now peaks at about its own size."""
    import tracemalloc

    import orjson

    results = [
        {"object": "organization.usage.completions.result", "input_tokens": i, "model": "m" * 200}
        for i in range(15_000)
    ]
    body = orjson.dumps(page([bucket(T0, T0 + 3600, results)]))
    assert len(body) > 4_000_000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_Chunks(body))

    client = make_client(clock, transport=httpx.MockTransport(handler))
    spec = STREAMS["completions"]
    stats = RequestStats()
    tracemalloc.start()
    try:
        got = client.first_page(spec, Window(T0, T0 + 3600), "1h", spec.group_by, stats)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stats.body_bytes == len(body)
    assert [b["start_time"] for b in got["data"]] == [T0]
    assert peak < 1.4 * len(body), peak / len(body)
