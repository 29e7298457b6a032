"""The HTTP edge: one ``httpx.Client`` per organization, retries, rate limit, pagination.

Failures are classified in one place (:func:`classify`), STYLE.md principle 3:

* **retried** (tenacity): 429 (honouring ``retry-after-ms``, ``Retry-After`` seconds or HTTP date, capped),
  5xx, timeouts, connection errors, a body that is not JSON (truncated);
* **fatal**: 401/403 (an Admin key is required), every other 4xx with the API's own message, a page of
  the wrong shape, a repeated cursor, ``has_more`` without ``next_page``.

Nothing here logs or raises the Admin key; URLs are logged without their query at INFO.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from . import __version__
from .catalogue import StreamSpec
from .clock import Clock, SystemClock
from .documents import Names
from .errors import (
    ApiError,
    AuthError,
    CollectorError,
    FatalApiError,
    PaginationError,
    RetriableApiError,
    StoppedError,
    UnreachableError,
)
from .failpoints import failpoint
from .models import Page, parse_page_lazily
from .planning import Window
from .secrets import bearer, redact, register_secret

log = logging.getLogger(__name__)

Params = list[tuple[str, str | int | float | bool | None]]


@dataclass
class RequestStats:
    """Requests and retries made on behalf of one stream, and the size of the last body read."""

    requests: int = 0
    retries: int = 0
    #: bytes of the last successful answer's body (decoded)
    body_bytes: int = 0


@dataclass(frozen=True)
class _Answer:
    """A successful response and its body (a page's body is not on the response: :meth:`OpenAIClient._once`)."""

    response: httpx.Response
    body: bytes | bytearray


def _read_body(response: httpx.Response) -> bytearray:
    """The body of an open streamed ``response`` in one buffer grown as the chunks arrive. ``response.read()``
    keeps every chunk until it joins them, so a page is held twice while it is read (a 60-day costs page is
    ~1.4 MB in ``bench/p4_memory.py``, a 7-day 1h page up to ~2 MB); past the allocator's mmap threshold
    (:mod:`.memory`) the buffer is its own mapping, grown by the kernel without copying what it holds and returned
    to the system whole when freed."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
    return body


class RateLimiter:
    """At most ``rate`` request starts per second across threads, after an initial ``burst``.

    A token bucket in its GCRA form: ``burst`` requests may start at once, then one every ``1/rate`` s.
    """

    def __init__(self, rate: float, clock: Clock, burst: int = 1) -> None:
        self._interval = 1.0 / rate
        self._tolerance = (max(1, burst) - 1) * self._interval
        self._clock = clock
        self._tat = 0.0  # theoretical arrival time of the next request
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock.now()
            tat = max(self._tat, now)
            wait = tat - self._tolerance - now
            self._tat = tat + self._interval
        if wait > 0:
            self._clock.sleep(wait)


def parse_retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds) or ``Retry-After`` (HTTP date).

    The order follows openai-python's ``_base_client.py`` (ref ``delivery-semantics.md`` §6).

    >>> parse_retry_after(httpx.Headers({"retry-after-ms": "1500"}), 0)
    1.5
    >>> parse_retry_after(httpx.Headers({"Retry-After": "7"}), 0)
    7.0
    >>> parse_retry_after(httpx.Headers({"Retry-After": "Thu, 01 Jan 1970 00:00:30 GMT"}), 10)
    20.0
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _api_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return redact(str(err["message"]))[:500]  # an API may echo the key it refused
    except ValueError:
        pass
    return response.reason_phrase or f"HTTP {response.status_code}"


def _safe_url(request: httpx.Request) -> str:
    return str(request.url.copy_with(query=None))


def classify(response: httpx.Response, now: float) -> ApiError | None:
    """Map a response to ``None`` (success) or the error to raise.

    Args:
        response: the HTTP response.
        now: the current time (for ``Retry-After`` HTTP dates).
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    url = _safe_url(response.request)
    msg = _api_message(response)
    if status == 429 or status >= 500 or status == 408:
        return RetriableApiError(
            f"HTTP {status} from {url}: {msg}",
            status_code=status,
            url=url,
            retry_after=parse_retry_after(response.headers, now),
        )
    if status in (401, 403):
        return AuthError(
            f"HTTP {status} from {url}: {msg} -- the Usage and Costs APIs need an organization Admin key "
            "(OPENAI_ADMIN_KEY / OPENAI_ADMIN_KEY_FILE), not a project key",
            status_code=status,
            url=url,
        )
    return FatalApiError(f"HTTP {status} from {url}: {msg}", status_code=status, url=url)


class OpenAIClient:
    """Talks to one organization's admin API.

    Args:
        base_url: ``https://api.openai.com/v1`` or a proxy / the simulator.
        admin_key: the Admin key.
        clock: time source for retries and the rate limit (tests pass a fake clock: nothing sleeps).
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
        rate_limit: requests per second (shared by every thread using this client).
        rate_limit_burst: requests that may start at once before the rate applies.
        timeout: per-request timeout in seconds.
        max_attempts: attempts per request including the first.
        max_retry_time: give up retrying a request after this many seconds.
        retry_after_cap: a ``Retry-After`` above this is not waited out: the request fails and the next
            run resumes from the checkpoint (ref ``delivery-semantics.md`` §6).
        initial_backoff: first backoff for 5xx/timeouts (exponential with jitter after that).
        max_backoff: longest backoff.
        connect_attempts: attempts of a request whose connection itself fails (refused, no such host, connect
            timeout): a wrong ``OPENAI_BASE_URL`` or a network down is the same for every request, so it is
            reported within seconds as :class:`UnreachableError` instead of using the 429/5xx budget.
        stop: when set (SIGTERM, the run deadline), no further request starts and a retry wait ends at once
            with :class:`StoppedError`; a request in flight ends within ``timeout``.
        deadline: an instant (clock seconds) after which no request starts, as if ``stop`` were set.
    """

    def __init__(
        self,
        base_url: str,
        admin_key: SecretStr,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        rate_limit: float = 5.0,
        rate_limit_burst: int = 30,
        timeout: float = 60.0,
        max_attempts: int = 8,
        max_retry_time: float = 600.0,
        retry_after_cap: float = 120.0,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        connect_attempts: int = 3,
        stop: threading.Event | None = None,
        deadline: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        register_secret(admin_key)  # redacted from log records and errors, however the client was built
        self._clock = clock or SystemClock()
        self._limiter = RateLimiter(rate_limit, self._clock, rate_limit_burst)
        self._max_attempts = max_attempts
        self._max_retry_time = max_retry_time
        self._retry_after_cap = retry_after_cap
        self._connect_attempts = connect_attempts
        self._stop_event = stop or threading.Event()
        self._deadline = deadline
        self._expo = wait_exponential_jitter(multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff)
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers={
                **bearer(admin_key),
                "User-Agent": f"usage-collector/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            # TLS verification stays on for https; a plain http:// base URL (the simulator, a local proxy)
            # has no TLS to verify, so skip building an SSL context for it.
            verify=not self.base_url.startswith("http://"),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request, retried -------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self._stop_event.is_set():
            raise StoppedError("stop requested: no further request")
        if self._deadline is not None and self._clock.now() >= self._deadline:
            raise StoppedError("the run's deadline passed: no further request")

    def _sleep(self, seconds: float) -> None:
        """A retry wait that a stop ends at once."""
        self._clock.wait(self._stop_event, seconds)
        self._check_stop()

    def _once(self, path: str, params: Params, stats: RequestStats, *, buffer: bool = False) -> _Answer:
        """One GET. With ``buffer``, a successful answer's body is read into one buffer as it arrives
        (:func:`_read_body`) and left off the response (``response.content`` is not set); otherwise it is read
        as httpx reads it."""
        self._check_stop()
        self._limiter.acquire()
        stats.requests += 1
        body: bytes | bytearray
        try:
            response = self._http.send(self._http.build_request("GET", path, params=params), stream=True)
            try:
                body = _read_body(response) if buffer and response.is_success else response.read()
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RetriableApiError(f"cannot connect to {self.base_url}: {type(exc).__name__}", connect=True) from None
        except httpx.TimeoutException as exc:
            raise RetriableApiError(f"timeout calling {self.base_url}/{path}: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise RetriableApiError(f"cannot reach {self.base_url}/{path}: {type(exc).__name__}") from None
        # httpx binds a response's stream back to the response (BoundSyncStream, to set ``elapsed`` on close):
        # a reference cycle, so the response and its body would wait for the cyclic garbage collector (which
        # documents.paused_gc holds off while other streams shape and write). The body is read and the stream
        # closed: unbound, the response is freed as soon as it is unused.
        response.stream = httpx.ByteStream(b"")
        error = classify(response, self._clock.now())
        if error is not None:
            raise error
        log.debug("GET %s -> %s (%d bytes)", response.request.url, response.status_code, len(body))
        stats.body_bytes = len(body)
        return _Answer(response, body)

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, RetriableApiError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._expo(rs))

    def _stop(self, started: float, max_attempts: int) -> Any:
        def stop(rs: RetryCallState) -> bool:
            if rs.attempt_number >= max_attempts:
                return True
            exc = rs.outcome.exception() if rs.outcome else None
            if isinstance(exc, RetriableApiError) and exc.connect and rs.attempt_number >= self._connect_attempts:
                return True
            if (
                isinstance(exc, RetriableApiError)
                and exc.retry_after is not None
                and (exc.retry_after > self._retry_after_cap)
            ):
                return True
            return self._clock.now() - started >= self._max_retry_time

        return stop

    def call(
        self, path: str, params: Params, stats: RequestStats, parse: Any = None, max_attempts: int | None = None
    ) -> Any:
        """GET ``path`` with retries; ``parse(body)`` runs inside the retry so a truncated body is retried.

        Raises:
            RetriableApiError: still failing after the retry budget (message says how many attempts).
            FatalApiError: a non-retriable failure.
        """
        started = self._clock.now()
        budget = self._max_attempts if max_attempts is None else max_attempts

        def before_sleep(rs: RetryCallState) -> None:
            stats.retries += 1
            exc = rs.outcome.exception() if rs.outcome else None
            wait = rs.next_action.sleep if rs.next_action else 0.0
            log.warning("retrying %s in %.1fs (attempt %d): %s", path, wait, rs.attempt_number, exc)

        retrying = Retrying(
            retry=retry_if_exception_type(RetriableApiError),
            stop=self._stop(started, budget),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    answer = self._once(path, params, stats, buffer=parse is not None)
                    return parse(answer.body) if parse else answer.response
        except RetriableApiError as exc:
            if exc.connect:
                raise UnreachableError(
                    f"{exc} after {attempts} attempt(s): check OPENAI_BASE_URL ({self.base_url}) and the network",
                    url=exc.url,
                ) from None
            extra = ""
            if exc.retry_after is not None and exc.retry_after > self._retry_after_cap:
                extra = f"; the server asked to wait {exc.retry_after:.0f}s, above retry_after_cap"
            raise RetriableApiError(
                f"gave up after {attempts} attempt(s){extra}: {exc}",
                status_code=exc.status_code,
                url=exc.url,
                retry_after=exc.retry_after,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # --- usage / costs pages ------------------------------------------------------------------------
    def iter_pages(
        self,
        spec: StreamSpec,
        window: Window,
        width: str,
        group_by: Sequence[str],
        stats: RequestStats,
        first: Future[Page] | None = None,
    ) -> Iterator[Page]:
        """Every page of ``spec`` for ``window``, following ``next_page`` with the same parameters.

        Arrays are encoded as the official SDKs do: ``group_by[]=a&group_by[]=b`` (ref §1.4). ``first``: the first
        page, already asked for (:meth:`first_page` on another thread: a window fetched ahead); its errors are
        raised here.

        Raises:
            PaginationError: a cursor repeats, or ``has_more`` is true without ``next_page`` (ref §4.4).
        """
        params = self._page_params(spec, window, width, group_by)
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            if cursor is None and first is not None:
                page: Page = first.result()
            else:
                page_params = params if cursor is None else [*params, ("page", cursor)]
                page = self.call(spec.path, page_params, stats, parse=lambda body: parse_page_lazily(spec, body))
            failpoint("page.parsed")
            nxt = page.get("next_page") if page["has_more"] else None
            if page["has_more"]:
                # Checked before the page is used: a page reached through a cursor that points back to it
                # is the same page again, not new data.
                if not nxt:
                    raise PaginationError(f"{spec.name}: has_more is true but next_page is missing ({window})")
                if nxt in seen or nxt == cursor:
                    raise PaginationError(f"{spec.name}: loop detected in pagination: cursor repeated ({window})")
            yield page
            if nxt is None:
                return
            seen.add(nxt)
            cursor = nxt

    @staticmethod
    def _page_params(spec: StreamSpec, window: Window, width: str, group_by: Sequence[str]) -> Params:
        params: Params = [
            ("start_time", str(window.start)),
            ("end_time", str(window.end)),
            ("bucket_width", width),
            ("limit", str(spec.limit_max(width))),
        ]
        return params + [("group_by[]", g) for g in group_by]

    def first_page(
        self, spec: StreamSpec, window: Window, width: str, group_by: Sequence[str], stats: RequestStats
    ) -> Page:
        """The first page of ``spec`` for ``window`` (what :meth:`iter_pages` asks for first), for ``first``."""
        params = self._page_params(spec, window, width, group_by)
        page: Page = self.call(spec.path, params, stats, parse=lambda body: parse_page_lazily(spec, body))
        return page

    # --- admin lists (names) ----------------------------------------------------------------------
    def iter_list(
        self, path: str, stats: RequestStats, params: Params | None = None, max_attempts: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Objects of a cursor-paginated Admin list (``limit``/``after``; ref §3)."""
        after: str | None = None
        seen: set[str] = set()
        while True:
            p: Params = [*(params or []), ("limit", "100")]
            if after:
                p.append(("after", after))
            body = self.call(path, p, stats, max_attempts=max_attempts).json()
            data = body.get("data") or []
            yield from data
            if not body.get("has_more") or not data:
                return
            after = body.get("last_id") or data[-1].get("id")
            if not after or after in seen:
                raise PaginationError(f"{path}: loop detected in list pagination")
            seen.add(after)


#: Names are a nicety: a list endpoint that keeps failing must not hold up the usage itself.
NAME_ATTEMPTS = 2
#: Threads reading the Admin lists at once, and how long fetched names are reused (seconds).
NAME_WORKERS = 16
NAMES_TTL = 600.0


class NameCache:
    """Names per (API base URL, Admin key), kept ``ttl`` seconds (on the client's clock).

    ``serve`` collects every few minutes; names change rarely, so a cycle within ``ttl`` of the last fetch uses
    the names it got then (a project created since shows its ID only until the next refresh; names are not part
    of ``event.hash``). A failed fetch is not cached: the next cycle tries again, and meanwhile the names last
    fetched are used. Thread-safe; the key holds a digest, never the key itself.
    """

    def __init__(self, ttl: float = NAMES_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, Names]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(client: OpenAIClient) -> tuple[str, str]:
        auth = client._http.headers.get("Authorization", "")
        return client.base_url, hashlib.sha256(auth.encode()).hexdigest()

    def get(self, client: OpenAIClient, now: float, *, stale: bool = False) -> Names | None:
        """The names fetched less than ``ttl`` seconds ago; with ``stale``, the last fetched however old."""
        with self._lock:
            hit = self._entries.get(self.key(client))
        return hit[1] if hit is not None and (stale or 0 <= now - hit[0] < self.ttl) else None

    def put(self, client: OpenAIClient, now: float, names: Names) -> None:
        with self._lock:
            self._entries[self.key(client)] = (now, names)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def fetch_names(client: OpenAIClient, cache: NameCache | None = None, workers: int = NAME_WORKERS) -> Names | None:
    """Project, API key, user and service-account names from the Admin list endpoints; ``None`` if they cannot
    be read.

    Usage by a service-account key reports the service account as ``user_id``: service accounts get their own
    table (``openai.base.service_account_name``), never a user's e-mail. A project whose key or service-account
    list is refused (archived projects answer 400 on some sub-lists) only costs those names. A refused key
    (:class:`AuthError` on the first list), an unreachable host and a stop are not swallowed: they are the same
    for every stream, which then stop at once instead of each finding out on its own.

    The lists are read concurrently (``workers`` threads sharing the client and its rate limit): projects and
    users together, then every project's keys and service accounts. With ``cache`` (``serve`` keeps one across
    its cycles), names fetched less than ``cache.ttl`` seconds ago are returned without a request, and a refresh
    that fails returns the names fetched before.
    """
    now = client._clock.now()
    if cache is not None:
        hit = cache.get(client, now)
        if hit is not None:
            return hit

    def listing(path: str, params: Params | None) -> list[dict[str, Any]]:
        return list(client.iter_list(path, RequestStats(), params, NAME_ATTEMPTS))

    def optional(path: str, params: Params | None) -> list[dict[str, Any]]:
        try:
            return listing(path, params)
        except UnreachableError:
            raise
        except FatalApiError as exc:
            log.debug("no names from %s: %s", path, exc)
            return []

    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="names") as pool:
            projects_f = pool.submit(listing, "organization/projects", [("include_archived", "true")])
            users_f = pool.submit(listing, "organization/users", None)
            projects: dict[str, str] = {p["id"]: p.get("name") or p["id"] for p in projects_f.result()}
            # owner_project_access=any lists every enabled key, not only those visible by membership (ref §4.17)
            keys_f = [
                pool.submit(optional, f"organization/projects/{pid}/api_keys", [("owner_project_access", "any")])
                for pid in projects
            ]
            accounts_f = [
                pool.submit(optional, f"organization/projects/{pid}/service_accounts", None) for pid in projects
            ]
            users: dict[str, str] = {u["id"]: u.get("email") or u.get("name") or u["id"] for u in users_f.result()}
            keys: dict[str, str] = {}
            for f in keys_f:
                for k in f.result():
                    keys[k["id"]] = k.get("name") or k.get("redacted_value") or k["id"]
            service_accounts: dict[str, str] = {}
            for f in accounts_f:  # in project order: the first project's name for an account wins
                for sa in f.result():
                    service_accounts.setdefault(sa["id"], sa.get("name") or sa["id"])
        names = Names(projects, keys, users, service_accounts)
    except (AuthError, UnreachableError, StoppedError):
        raise
    except CollectorError as exc:
        last = cache.get(client, now, stale=True) if cache is not None else None
        if last is not None:
            log.warning("names not refreshed, those read before are used: %s", exc)
            return last
        log.warning("names unavailable, documents carry IDs only: %s", exc)
        return None
    if cache is not None:
        cache.put(client, now, names)
    return names
