"""Deterministic fault injection for the simulated API.

A :class:`FaultPlan` decides, for request number ``n`` (1-based, counted over every request the API handles), which
fault (if any) to inject: first the exact ``schedule``, then ``unauthorized_from``, then the probabilities, drawn
from ``mix64(seed, n)`` so the same plan and request order give the same faults.

Fault kinds and what they model (ref = ``shared/reference/openai-usage-api.md``):

====================== ==========================================================================================
``429``                rate limited; ``Retry-After`` in seconds or as an HTTP date, optional ``retry-after-ms``
                       (ref §2.3: SPEC TooManyRequests and the SDK's header parsing)
``500``/``502``/``503`` server errors with OpenAI's error body (ref §2.2)
``latency``            the response is delayed by ``latency_seconds`` (slow responses)
``truncated``          a 200 whose JSON body is cut in half
``non_json``           a 502 with an HTML body (a proxy error page)
``repeat_cursor``      a page whose ``next_page`` is the cursor of the page itself, forever (ref §4.4: clients
                       should guard against a repeated cursor)
``has_more_no_cursor`` ``has_more: true`` with ``next_page: null`` (ref §4.4)
``401``                invalid key (e.g. the admin key was revoked); ``unauthorized_from=N`` makes every request
                       from the N-th on fail this way
====================== ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from .rand import MASK64, mix64


class FaultKind(StrEnum):
    """The kinds of injected fault."""

    RATE_LIMIT = "429"
    SERVER_ERROR = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    LATENCY = "latency"
    TRUNCATED = "truncated"
    NON_JSON = "non_json"
    REPEAT_CURSOR = "repeat_cursor"
    HAS_MORE_NO_CURSOR = "has_more_no_cursor"
    UNAUTHORIZED = "401"


#: Faults that alter an otherwise successful page (applied after the handler ran).
PAGE_FAULTS = frozenset({FaultKind.REPEAT_CURSOR, FaultKind.HAS_MORE_NO_CURSOR})

RetryAfterFormat = Literal["seconds", "http-date", "mixed", "none"]


@dataclass(frozen=True)
class FaultPlan:
    """What to break, and when.

    Example:
        >>> FaultPlan(seed=1, rate_limit=0.1, server_error=0.05)             # 10% 429s, 5% 5xx
        >>> FaultPlan(schedule={1: FaultKind.RATE_LIMIT, 3: FaultKind.TRUNCATED})
        >>> FaultPlan(unauthorized_from=50)                                   # key revoked at request 50

    Attributes:
        seed: seed of the probabilistic draws.
        rate_limit: probability of a 429.
        server_error: probability of a 5xx (500, 502 and 503 in turn).
        latency: probability of a delayed response.
        truncated: probability of a truncated 200 JSON body.
        non_json: probability of an HTML 502 page.
        repeat_cursor: probability that a page's ``next_page`` repeats its own cursor (forever).
        has_more_without_cursor: probability of ``has_more: true`` with ``next_page: null`` on a page.
        latency_seconds: delay of a ``latency`` fault.
        retry_after: seconds announced by a 429 (``Retry-After``; the SDK caps honoured values at 120 s, ref §2.3).
        retry_after_format: ``seconds`` (``Retry-After: 2``), ``http-date`` (``Retry-After: Wed, 21 Oct ...``),
            ``mixed`` (alternating by request number) or ``none`` (no header: a 429 needing "user action").
        retry_after_ms: also send ``retry-after-ms`` (milliseconds), which the SDK reads first.
        unauthorized_from: every request numbered >= this gets a 401.
        schedule: exact faults by request number (takes precedence over everything else).
        path_prefixes: only requests whose path starts with one of these are eligible for faults.
    """

    seed: int = 0
    rate_limit: float = 0.0
    server_error: float = 0.0
    latency: float = 0.0
    truncated: float = 0.0
    non_json: float = 0.0
    repeat_cursor: float = 0.0
    has_more_without_cursor: float = 0.0
    latency_seconds: float = 0.5
    retry_after: float = 1.0
    retry_after_format: RetryAfterFormat = "seconds"
    retry_after_ms: bool = False
    unauthorized_from: int | None = None
    schedule: Mapping[int, FaultKind] = field(default_factory=dict)
    path_prefixes: tuple[str, ...] = ("/v1/organization/",)

    def __post_init__(self) -> None:
        probs = self._probabilities()
        if any(p < 0 for _, p in probs) or sum(p for _, p in probs) > 1.0 + 1e-9:
            raise ValueError("fault probabilities must be >= 0 and sum to at most 1")
        object.__setattr__(self, "schedule", {int(k): FaultKind(v) for k, v in self.schedule.items()})

    def _probabilities(self) -> list[tuple[str, float]]:
        return [
            ("429", self.rate_limit),
            ("5xx", self.server_error),
            (FaultKind.LATENCY, self.latency),
            (FaultKind.TRUNCATED, self.truncated),
            (FaultKind.NON_JSON, self.non_json),
            (FaultKind.REPEAT_CURSOR, self.repeat_cursor),
            (FaultKind.HAS_MORE_NO_CURSOR, self.has_more_without_cursor),
        ]

    def decide(self, n: int, path: str) -> FaultKind | None:
        """The fault for request number ``n`` (1-based) on ``path``, or ``None``.

        Args:
            n: request number.
            path: request path (faults only apply under :attr:`path_prefixes`).

        Returns:
            The fault kind to inject.
        """
        if not path.startswith(self.path_prefixes):
            return None
        if n in self.schedule:
            return self.schedule[n]
        if self.unauthorized_from is not None and n >= self.unauthorized_from:
            return FaultKind.UNAUTHORIZED
        x = mix64((self.seed * 0x9E3779B97F4A7C15 + n) & MASK64)
        u = (x >> 11) / 9007199254740992.0
        acc = 0.0
        for kind, p in self._probabilities():
            acc += p
            if u < acc:
                if kind == "5xx":
                    return (FaultKind.SERVER_ERROR, FaultKind.BAD_GATEWAY, FaultKind.UNAVAILABLE)[(x >> 3) % 3]
                return FaultKind(kind)
        return None

    def uses_http_date(self, n: int) -> bool:
        """Whether the 429 of request ``n`` announces ``Retry-After`` as an HTTP date."""
        return self.retry_after_format == "http-date" or (self.retry_after_format == "mixed" and n % 2 == 0)

    @staticmethod
    def parse_schedule(items: list[str] | tuple[str, ...]) -> dict[int, FaultKind]:
        """Parse ``["3:429", "5:truncated", "7-9:503"]`` (request number or inclusive range, then kind).

        Raises:
            ValueError: malformed item or unknown kind.
        """
        out: dict[int, FaultKind] = {}
        for item in items:
            for part in item.split(","):
                if not part.strip():
                    continue
                where, _, kind = part.strip().partition(":")
                lo, _, hi = where.partition("-")
                fk = FaultKind(kind.strip())
                for n in range(int(lo), int(hi or lo) + 1):
                    out[n] = fk
        return out


__all__ = ["PAGE_FAULTS", "FaultKind", "FaultPlan", "RetryAfterFormat"]
