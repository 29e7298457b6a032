"""Fixtures for the simulator tests: one small organization, a handler with a controllable clock, and helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
import pytest

from usage_collector.simulator import DEFAULT_ADMIN_KEY, FaultPlan, Organization, SimulatedAPI

DAY = 86400
HOUR = 3600
AUTH = {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"}

Params = Sequence[tuple[str, Any]]


class Clock:
    """A settable clock for the API."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Reply:
    """A decoded response."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def usage_path(stream: str) -> str:
    return "/v1/organization/costs" if stream == "costs" else f"/v1/organization/usage/{stream}"


@pytest.fixture(scope="session")
def org() -> Organization:
    # 2025-03-03 is a Monday; 14 days cover two weekends; the legacy project is archived on day 7.
    return Organization(seed=11, start="2025-03-03", days=14)


@pytest.fixture
def clock(org: Organization) -> Clock:
    """Long after the window: every bucket is final (usage horizon 2 h, costs 2 days)."""
    return Clock(org.end + 5 * DAY + 1234)


@pytest.fixture
def api(org: Organization, clock: Clock) -> SimulatedAPI:
    return SimulatedAPI(org, clock=clock)


@pytest.fixture
def make_api(org: Organization, clock: Clock) -> Callable[..., SimulatedAPI]:
    def make(faults: FaultPlan | None = None, **kw: Any) -> SimulatedAPI:
        kw.setdefault("clock", clock)
        return SimulatedAPI(org, faults=faults, **kw)

    return make


@pytest.fixture
def call(api: SimulatedAPI) -> Callable[..., Reply]:
    """``call(path_or_stream, params, headers=AUTH, on=api)`` -> :class:`Reply`."""

    def do(target: str, params: Params = (), headers: Any = None, on: SimulatedAPI | None = None) -> Reply:
        path = target if target.startswith("/") else usage_path(target)
        pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params]
        return Reply(*(on or api).handle("GET", path, pairs, AUTH if headers is None else headers))

    return do


def _strip_extras(result: dict[str, Any]) -> dict[str, Any]:
    """An API result in truth form: no unknown fields, money and quantities as Decimal."""
    r = {k: v for k, v in result.items() if k not in ("organization_id", "output_reasoning_tokens")}
    if "amount" in r:
        r["amount"] = {"value": Decimal(str(r["amount"]["value"])), "currency": r["amount"]["currency"]}
        if r["quantity"] is not None:
            r["quantity"] = Decimal(str(r["quantity"]))
    return r


def _walk(
    call: Callable[..., Reply], stream: str, params: Params, on: SimulatedAPI | None = None
) -> list[dict[str, Any]]:
    """Follow ``next_page`` to the end; returns all buckets."""
    buckets: list[dict[str, Any]] = []
    page: str | None = None
    for _ in range(1000):
        reply = call(stream, [*params, *([("page", page)] if page else [])], on=on)
        assert reply.status == 200, reply.body
        body = reply.json
        buckets += body["data"]
        if not body["has_more"]:
            assert body["next_page"] is None
            return buckets
        page = body["next_page"]
    raise AssertionError("pagination did not end")


@pytest.fixture
def strip() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``strip(result)``: an API result in truth form (no unknown fields, Decimal money)."""
    return _strip_extras


@pytest.fixture
def walk(call: Callable[..., Reply]) -> Callable[..., list[dict[str, Any]]]:
    """``walk(stream, params, on=api)``: every bucket, following ``next_page``."""

    def do(stream: str, params: Params, on: SimulatedAPI | None = None) -> list[dict[str, Any]]:
        return _walk(call, stream, params, on)

    return do
