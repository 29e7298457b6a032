"""The simulated OpenAI Admin API as a pure request handler (no sockets).

:meth:`SimulatedAPI.handle` maps ``(method, path, query pairs, headers)`` to ``(status, headers, body)``; the HTTP
server in :mod:`.server` is a thin shell around it. Behaviour follows ``shared/reference/openai-usage-api.md``
(*ref*) and the OpenAPI excerpt next to it; each rule cites its section where it is implemented.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .faults import PAGE_FAULTS, FaultKind, FaultPlan
from .org import ApiKey, Organization
from .rand import mix64
from .streams import COSTS_LIMITS, STREAMS_BY_PATH, USAGE_LIMITS, WIDTH_SECONDS, StreamDef

#: Admin key accepted by default (override with ``admin_key=``).
DEFAULT_ADMIN_KEY = "sk-admin-simulated-0123456789abcdef"
#: Default late-revision horizons (seconds): usage buckets 2 hours, cost days 2 days (ref §4.9: unknown upstream;
#: DESIGN asks to re-read at least the last 2 UTC days of costs).
DEFAULT_REVISION_HORIZON = 2 * 3600
DEFAULT_COSTS_REVISION_HORIZON = 2 * 86400

Headers = list[tuple[str, str]]
Response = tuple[int, Headers, bytes]
QueryInput = str | Iterable[tuple[str, str]]
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]

_ARRAY_SUFFIX = re.compile(r"\[\d*\]$")
_PROJECT_SUB = re.compile(
    r"^/v1/organization/projects/([^/]+)(?:/(api_keys|service_accounts|users|spend_limit|spend_alerts|rate_limits))?$"
)
#: A numeric result field no documentation names (``undocumented_fields=True``), per stream: what a collector
#: must keep as reported when OpenAI adds a measure without notice.
UNDOCUMENTED_FIELDS = {"completions": "output_reasoning_tokens", "decisions": "output_reasoning_tokens"}


def undocumented_value(stream: str, result: Mapping[str, Any]) -> int | None:
    """The value of the undocumented field on a result (the ground truth of ``undocumented_fields``)."""
    if stream not in UNDOCUMENTED_FIELDS or result.get("output_text_tokens") is None:
        return None
    return int(result["output_text_tokens"]) * 2 // 5


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """An error response in OpenAI's shape (ref §2.2: ``{"error": {message, type, param, code}}``)."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> bytes:
        """The JSON error body."""
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


class RequestCounters:
    """Thread-safe request counters, for benchmarks and tests.

    Attributes:
        total: requests handled.
        by_path: requests per path (without query).
        by_status: responses per HTTP status.
        by_fault: injected faults per kind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_fault: Counter[str] = Counter()

    def begin(self, path: str) -> int:
        """Count a request; returns its 1-based number."""
        with self._lock:
            self.total += 1
            self.by_path[path] += 1
            return self.total

    def finish(self, status: int, fault: FaultKind | None) -> None:
        """Count a response status and the fault injected, if any."""
        with self._lock:
            self.by_status[status] += 1
            if fault is not None:
                self.by_fault[fault.value] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy: ``{"total", "by_path", "by_status", "by_fault"}``."""
        with self._lock:
            return {
                "total": self.total,
                "by_path": dict(self.by_path),
                "by_status": dict(self.by_status),
                "by_fault": dict(self.by_fault),
            }

    def reset(self) -> None:
        """Zero every counter (request numbering for faults restarts at 1)."""
        with self._lock:
            self.total = 0
            self.by_path.clear()
            self.by_status.clear()
            self.by_fault.clear()


def _redact(key: str) -> str:
    return key[:8] + "*" * 8 + key[-4:] if len(key) > 12 else "*" * len(key)


def _bool(value: str, param: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ApiError(400, f"Invalid value for '{param}': expected a boolean, got {value!r}.", param, "invalid_value")


class _Query:
    """Query parameters, normalising the three array encodings (ref §1.4): ``k=a&k=b``, ``k[]=a&k[]=b`` and
    ``k=a,b`` (also ``k[0]=a``)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.raw: dict[str, list[str]] = {}
        for k, v in pairs:
            self.raw.setdefault(_ARRAY_SUFFIX.sub("", k), []).append(v)

    def one(self, name: str) -> str | None:
        vals = self.raw.get(name)
        return vals[0] if vals else None

    def many(self, name: str) -> list[str] | None:
        vals = self.raw.get(name)
        if vals is None:
            return None
        return [p.strip() for v in vals for p in v.split(",") if p.strip()]

    def integer(self, name: str, required: bool = False) -> int | None:
        v = self.one(name)
        if v is None or v == "":
            if required:
                raise ApiError(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
            return None
        try:
            return int(v)
        except ValueError:
            raise ApiError(
                400,
                f"Invalid type for '{name}': expected an integer, but got a string instead.",
                name,
                "invalid_type",
            ) from None


class SimulatedAPI:
    """Request handler of the simulated OpenAI organization.

    Example:
        >>> api = SimulatedAPI(Organization(seed=1), clock=lambda: 1_740_000_000)
        >>> status, headers, body = api.handle(
        ...     "GET", "/v1/organization/usage/completions", [("start_time", "1739900000")],
        ...     {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"})
    """

    def __init__(
        self,
        org: Organization,
        *,
        admin_key: str = DEFAULT_ADMIN_KEY,
        clock: Callable[[], float] = time.time,
        revision_horizon: int = DEFAULT_REVISION_HORIZON,
        costs_revision_horizon: int = DEFAULT_COSTS_REVISION_HORIZON,
        faults: FaultPlan | None = None,
        sleep: Callable[[float], None] = time.sleep,
        extra_fields: bool = True,
        undocumented_fields: bool = False,
        missing_endpoints: Iterable[str] = (),
        refuse_group_by: Mapping[str, str] | None = None,
    ) -> None:
        """Create the handler.

        Args:
            org: the organization served.
            admin_key: the only bearer token accepted.
            clock: "now" in unix seconds; buckets are clipped to it and recent ones are provisional.
            revision_horizon: seconds after which a usage minute reports its final value (0 = immediately).
            costs_revision_horizon: seconds after a UTC day ends until its costs are final (0 = immediately).
            faults: fault injection plan (``None``: no faults).
            sleep: called for ``latency`` faults (tests pass a recorder so they never sleep).
            extra_fields: add unknown text fields to results (``organization_id``; ref §4.7).
            undocumented_fields: add a numeric field no documentation names (:data:`UNDOCUMENTED_FIELDS`,
                value :func:`undocumented_value`).
            missing_endpoints: stream names (``decisions``) or paths that answer 404 for this organization
                (ref-11: "an organization without the feature may answer 404").
            refuse_group_by: stream name -> a ``group_by`` value it answers 400 for, naming it (an organization
                whose API does not accept a newer dimension).
        """
        self.org = org
        self.admin_key = admin_key
        self.clock = clock
        self.revision_horizon = revision_horizon
        self.costs_revision_horizon = costs_revision_horizon
        self.faults = faults
        self.sleep = sleep
        self.extra_fields = extra_fields
        self.undocumented_fields = undocumented_fields
        self.missing_endpoints = frozenset(missing_endpoints)
        self.refuse_group_by = dict(refuse_group_by or {})
        self.counters = RequestCounters()

    # -- entry point ---------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: QueryInput = (), headers: HeaderInput = ()) -> Response:
        """Handle one request.

        Args:
            method: HTTP method.
            path: request path, e.g. ``/v1/organization/usage/completions`` (a ``?query`` suffix is parsed too).
            query: query pairs (repeated keys allowed) or a raw query string.
            headers: request headers (names case-insensitive).

        Returns:
            ``(status, response headers, body bytes)``.
        """
        path, _, qs = path.partition("?")
        pairs: list[tuple[str, str]] = parse_qsl(qs, keep_blank_values=True) if qs else []
        if isinstance(query, str):
            pairs += parse_qsl(query.lstrip("?"), keep_blank_values=True)
        else:
            pairs += list(query)
        hdrs = {k.lower(): v for k, v in (headers.items() if isinstance(headers, Mapping) else headers)}
        n = self.counters.begin(path)
        t0 = time.perf_counter()
        fault = self.faults.decide(n, path) if self.faults else None
        status, extra_headers, body = self._dispatch(method, path, pairs, hdrs, n, fault)
        if fault is FaultKind.TRUNCATED and status == 200:
            body = body[: max(1, len(body) // 2)]
        self.counters.finish(status, fault)
        out: Headers = [
            ("content-type", "text/html" if body.startswith(b"<html>") else "application/json"),
            ("openai-version", "2020-10-01"),
            ("openai-organization", "simulated-org"),
            ("openai-processing-ms", str(int((time.perf_counter() - t0) * 1000))),
            ("x-request-id", f"req_{mix64(n):016x}"),
            *extra_headers,
        ]
        return status, out, body

    def _dispatch(
        self,
        method: str,
        path: str,
        pairs: list[tuple[str, str]],
        hdrs: dict[str, str],
        n: int,
        fault: FaultKind | None,
    ) -> Response:
        now = self.clock()
        try:
            if fault is not None and fault not in PAGE_FAULTS and fault is not FaultKind.TRUNCATED:
                early = self._pre_fault(fault, n, now)
                if early is not None:
                    return early
            self._authenticate(hdrs)
            q = _Query(pairs)
            sdef = STREAMS_BY_PATH.get(path)
            if method != "GET":
                raise ApiError(404, f"Invalid URL ({method} {path})")
            if path in self.missing_endpoints or (sdef is not None and sdef.name in self.missing_endpoints):
                raise ApiError(404, f"Invalid URL (GET {path})")
            if sdef is not None:
                return 200, [], self._page(sdef, q, int(now), fault)
            return 200, [], self._admin(path, q)
        except ApiError as e:
            return e.status, [], e.body()

    # -- faults and auth -----------------------------------------------------------------------------------------

    def _pre_fault(self, fault: FaultKind, n: int, now: float) -> Response | None:
        plan = self.faults
        assert plan is not None
        if fault is FaultKind.LATENCY:
            self.sleep(plan.latency_seconds)
            return None
        if fault is FaultKind.RATE_LIMIT:
            # ref §2.3: SPEC TooManyRequests + Retry-After (seconds); the SDK also reads HTTP dates and
            # retry-after-ms.
            headers: Headers = []
            if plan.retry_after_format != "none":
                if plan.uses_http_date(n):
                    headers.append(("retry-after", formatdate(now + plan.retry_after, usegmt=True)))
                else:
                    secs = plan.retry_after
                    headers.append(("retry-after", str(int(secs)) if secs == int(secs) else str(secs)))
            if plan.retry_after_ms:
                headers.append(("retry-after-ms", str(int(plan.retry_after * 1000))))
            err = ApiError(
                429,
                f"Rate limit reached for requests in organization {self.org.id} on requests per min (RPM): "
                f"Limit 60, Used 60, Requested 1. Please try again in {plan.retry_after:g}s.",
                code="rate_limit_exceeded",
                type="requests",
            )
            return 429, headers, err.body()
        if fault is FaultKind.NON_JSON:
            return 502, [], _HTML_502
        if fault is FaultKind.UNAUTHORIZED:
            raise ApiError(401, "Your authentication token has been revoked.", code="invalid_api_key")
        messages = {
            FaultKind.SERVER_ERROR: "The server had an error while processing your request. Sorry about that!",
            FaultKind.BAD_GATEWAY: "Bad gateway.",
            FaultKind.UNAVAILABLE: "The server is overloaded or not ready yet.",
        }
        status = {FaultKind.SERVER_ERROR: 500, FaultKind.BAD_GATEWAY: 502, FaultKind.UNAVAILABLE: 503}[fault]
        raise ApiError(status, messages[fault], type="server_error")

    def _authenticate(self, hdrs: dict[str, str]) -> None:
        # ref §2.1: Authorization: Bearer <admin key>; errors in the §2.2 shape.
        auth = hdrs.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
                "https://platform.openai.com/account/api-keys.",
            )
        if token != self.admin_key:
            raise ApiError(
                401,
                f"Incorrect API key provided: {_redact(token)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # -- usage and costs pages -----------------------------------------------------------------------------------

    @staticmethod
    def _fingerprint(
        sdef: StreamDef,
        start: int,
        end: int | None,
        width: str,
        gb: Sequence[str],
        filters: Mapping[str, frozenset[Any]],
    ) -> int:
        canon = repr(
            (sdef.name, start, end, width, sorted(gb), sorted((k, sorted(map(str, v))) for k, v in filters.items()))
        )
        return zlib.crc32(canon.encode())

    @staticmethod
    def encode_cursor(position: int, fingerprint: int, loop: bool = False) -> str:
        """An opaque ``next_page`` cursor (ref §4.4: ``"page_AAAAAGdGxdEiJdKOAAAAAGcqsYA="`` — 20 bytes, standard
        base64 with padding, so clients must URL-encode it)."""
        raw = struct.pack(">IIIII", 0, fingerprint, 1 if loop else 0, 0, position)
        return "page_" + base64.b64encode(raw).decode()

    @staticmethod
    def decode_cursor(cursor: str) -> tuple[int, int, bool]:
        """``(position, fingerprint, loop)`` of a cursor; raises :class:`ApiError` 400 if malformed."""
        s = cursor[5:] if cursor.startswith("page_") else cursor
        try:
            raw = base64.b64decode(s.replace("-", "+").replace("_", "/") + "=" * (-len(s) % 4), validate=True)
            _, fp, flags, _, pos = struct.unpack(">IIIII", raw)
        except (binascii.Error, struct.error, ValueError):
            raise ApiError(400, "Invalid page cursor.", "page", "invalid_page") from None
        return pos, fp, bool(flags & 1)

    def _page(self, sdef: StreamDef, q: _Query, now: int, fault: FaultKind | None) -> bytes:
        # ref §1.1 / §1.3 parameters.
        start = q.integer("start_time", required=True)
        assert start is not None
        end = q.integer("end_time")
        width = q.one("bucket_width") or "1d"
        if width not in sdef.widths:
            allowed = ", ".join(f"'{w}'" for w in sdef.widths)
            raise ApiError(
                400, f"Invalid value for 'bucket_width': must be one of {allowed}.", "bucket_width", "invalid_value"
            )
        if sdef.kind == "costs":
            default, lo, hi = COSTS_LIMITS[0], 1, COSTS_LIMITS[1]  # ref §1.3: default 7, range 1..180
        else:
            default, hi = USAGE_LIMITS[width]  # ref §0: 1d 7/31, 1h 24/168, 1m 60/1440
            lo = 1
        limit = q.integer("limit")
        if limit is None:
            limit = default
        elif not lo <= limit <= hi:
            raise ApiError(
                400,
                f"Invalid value for 'limit': must be between {lo} and {hi} for bucket_width={width}.",
                "limit",
                "invalid_value",
            )
        gb = q.many("group_by") or []
        for g in gb:
            if g not in sdef.group_by:
                allowed = ", ".join(sdef.group_by)
                raise ApiError(
                    400, f"Invalid value for 'group_by': {g!r} is not one of {allowed}.", "group_by", "invalid_value"
                )
            if self.refuse_group_by.get(sdef.name) == g:
                raise ApiError(
                    400, f"group_by value '{g}' is not supported for this organization.", "group_by", "invalid_value"
                )
        if sdef.kind == "costs" and "user_id" in gb and ("project_id" in gb or q.many("project_ids")):
            # ref-11 "Costs" (SDK 3.57 usage_costs_params.py): "Support for combining user_id with project_id
            # grouping or the project_ids filter depends on the organization ... Unsupported combinations return
            # HTTP 400." Modelled as unsupported.
            raise ApiError(
                400,
                "Grouping costs by 'user_id' together with 'project_id' (group_by or project_ids) is not supported "
                "for this organization and time range.",
                "group_by",
                "invalid_value",
            )
        filters: dict[str, frozenset[Any]] = {}
        for f in sdef.filters:  # ref §1.2 filters, in any of the three array encodings (§1.4)
            if f.kind == "bool":
                v = q.one(f.param)
                if v is not None and v != "":
                    filters[f.dimension] = frozenset({_bool(v, f.param)})
                continue
            vals = q.many(f.param)
            if vals is None:
                continue
            if f.enum is not None:
                bad = [v for v in vals if v not in f.enum]
                if bad:
                    raise ApiError(
                        400,
                        f"Invalid value for '{f.param}': {bad[0]!r} is not one of {', '.join(f.enum)}.",
                        f.param,
                        "invalid_value",
                    )
            filters[f.dimension] = frozenset(vals)

        fp = self._fingerprint(sdef, start, end, width, gb, filters)
        floor_start = start - start % 60  # ref §4.1: the first bucket starts at start_time floored to the minute
        first = floor_start
        loop = False
        cursor = q.one("page")
        if cursor:
            first, cfp, loop = self.decode_cursor(cursor)
            if cfp != fp:
                raise ApiError(
                    400,
                    "The page cursor does not match the other query parameters; send the same parameters with 'page'.",
                    "page",
                    "invalid_page",
                )
            if first < floor_start:
                raise ApiError(400, "Invalid page cursor.", "page", "invalid_page")
        # ref §4.1: buckets are clipped to [start_time, min(end_time, now)); nothing at or after now is returned.
        eff_end = now if end is None else min(end, now)
        edges = self.org.engine.edges(start, eff_end, WIDTH_SECONDS[width], limit, first)
        horizon = self.costs_revision_horizon if sdef.kind == "costs" else self.revision_horizon
        results = self.org.engine.results(sdef, edges, gb, filters, now, horizon)
        has_more = bool(edges) and edges[-1][1] < eff_end
        next_page = self.encode_cursor(edges[-1][1], fp) if has_more else None
        if loop or fault is FaultKind.REPEAT_CURSOR:
            has_more, next_page = True, self.encode_cursor(first, fp, loop=True)
        elif fault is FaultKind.HAS_MORE_NO_CURSOR:
            has_more, next_page = True, None
        data = [
            {"object": "bucket", "start_time": bs, "end_time": be, "results": self._render(sdef, bs, rs)}
            for (bs, be), rs in zip(edges, results, strict=True)
        ]
        # ref §1.5 envelope.
        return orjson.dumps({"object": "page", "data": data, "has_more": has_more, "next_page": next_page})

    def _render(self, sdef: StreamDef, bucket_start: int, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if sdef.kind == "costs":
            out = []
            for i, r in enumerate(results):
                value: Decimal = r["amount"]["value"]
                # ref §4.6: amount.value is sometimes a numeric string; the choice is deterministic per result.
                as_string = mix64((self.org.seed << 40) ^ (bucket_start * 131 + i)) & 1
                r = dict(r)
                r["amount"] = {"value": f"{value:f}" if as_string else float(value), "currency": "usd"}
                qty: Decimal | None = r["quantity"]
                if qty is not None:
                    r["quantity"] = int(qty) if qty == qty.to_integral_value() else float(qty)
                if self.extra_fields:  # ref §4.7: MOZ reads organization_id
                    r["organization_id"] = self.org.id
                out.append(r)
            return out
        if self.extra_fields:  # ref §4.7: accept and ignore unknown keys
            org_id = self.org.id
            for r in results:
                r["organization_id"] = org_id
        extra = UNDOCUMENTED_FIELDS.get(sdef.name) if self.undocumented_fields else None
        if extra is not None:
            for r in results:
                reasoning = undocumented_value(sdef.name, r)
                if reasoning is not None:
                    r[extra] = reasoning
        return results

    # -- admin lists ---------------------------------------------------------------------------------------------

    @staticmethod
    def _list(items: list[dict[str, Any]], q: _Query) -> bytes:
        # ref §3: limit 1..100 (default 20), after = object id; list envelope.
        limit = q.integer("limit")
        if limit is None:
            limit = 20
        if not 1 <= limit <= 100:
            raise ApiError(400, "Invalid value for 'limit': must be between 1 and 100.", "limit", "invalid_value")
        after = q.one("after")
        i = 0
        if after:
            ids = [it["id"] for it in items]
            if after not in ids:
                raise ApiError(
                    400, f"Invalid value for 'after': no object with id {after!r}.", "after", "invalid_value"
                )
            i = ids.index(after) + 1
        page = items[i : i + limit]
        return orjson.dumps(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": i + limit < len(items),
            }
        )

    def _key_object(self, k: ApiKey) -> dict[str, Any]:
        org = self.org
        if k.owner_type == "user":
            u = org.user_by_id[k.owner_id]
            owner: dict[str, Any] = {
                "type": "user",
                "user": {"id": u.id, "name": u.name, "email": u.email, "role": u.role, "created_at": u.added_at},
            }
        else:
            sa = next(s for s in org.service_accounts if s.id == k.owner_id)
            owner = {
                "type": "service_account",
                "service_account": {"id": sa.id, "name": sa.name, "role": sa.role, "created_at": sa.created_at},
            }
        return {
            "object": "organization.project.api_key",
            "redacted_value": k.redacted_value,
            "name": k.name,
            "created_at": k.created_at,
            "last_used_at": k.last_used_at,
            "id": k.id,
            "owner_project_access": k.owner_project_access,
            "owner": owner,
        }

    def _admin(self, path: str, q: _Query) -> bytes:
        org = self.org
        if path == "/v1/organization/spend_limit":
            return orjson.dumps(org.spend_limit())
        if path == "/v1/organization/spend_alerts":
            return self._list(org.spend_alerts(), q)
        if path == "/v1/organization/projects":
            inc = q.one("include_archived")
            include = _bool(inc, "include_archived") if inc else False  # ref §3/§4.17: archived hidden by default
            items = [p.to_api() for p in org.projects if include or p.archived_at is None]
            return self._list(items, q)
        if path == "/v1/organization/users":
            emails = set(q.many("emails") or [])
            return self._list([u.to_api() for u in org.users if not emails or u.email in emails], q)
        if path == "/v1/organization/admin_api_keys":
            owner = org.users[0]
            key = {
                "object": "organization.admin_api_key",
                "id": "key_" + org.id[4:20],
                "name": "simulator admin key",
                "redacted_value": _redact(self.admin_key),
                "created_at": org.start - 30 * 86400,
                "expires_at": None,
                "last_used_at": None,
                "owner": {
                    "type": "user",
                    "object": "organization.user",
                    "id": owner.id,
                    "name": owner.name,
                    "created_at": owner.added_at,
                    "role": owner.role,
                },
            }
            return self._list([key], q)
        m = _PROJECT_SUB.match(path)
        if m is None:
            raise ApiError(404, f"Invalid URL (GET {path})")
        project = org.project_by_id.get(m.group(1))
        if project is None:
            raise ApiError(404, f"No project found with id '{m.group(1)}'.", code="not_found")
        sub = m.group(2)
        if sub is None:
            return orjson.dumps(project.to_api())
        if sub == "spend_limit":
            limit = org.spend_limit(project.id)
            if limit is None:
                raise ApiError(404, f"No spend limit configured for project '{project.id}'.", code="not_found")
            return orjson.dumps(limit)
        if sub == "spend_alerts":
            return self._list(org.spend_alerts(project.id), q)
        if sub == "rate_limits":
            return self._list(org.rate_limits(project.id), q)
        if sub == "api_keys":
            access = q.one("owner_project_access")
            if access not in (None, "active", "inactive", "any"):
                raise ApiError(
                    400, "Invalid value for 'owner_project_access'.", "owner_project_access", "invalid_value"
                )
            # ref §4.17: without owner_project_access the membership-based visibility rules "may exclude some
            # enabled keys" -> modelled as: only keys whose owner still has access.
            want = {"active"} if access is None else {"active", "inactive"} if access == "any" else {access}
            keys = [self._key_object(k) for k in org.api_keys_of(project.id) if k.owner_project_access in want]
            return self._list(keys, q)
        if project.archived_at is not None:  # ref §3/§4.17: 400 for archived projects' users/service accounts
            raise ApiError(400, f"Project {project.id} is archived.", code="project_archived")
        if sub == "service_accounts":
            return self._list([s.to_api() for s in org.service_accounts_of(project.id)], q)
        members = [
            {
                "object": "organization.project.user",
                "id": u.id,
                "name": u.name,
                "email": u.email,
                "role": role,
                "added_at": u.added_at,
            }
            for u, role in org.users_of(project.id)
        ]
        return self._list(members, q)


__all__ = [
    "DEFAULT_ADMIN_KEY",
    "DEFAULT_COSTS_REVISION_HORIZON",
    "DEFAULT_REVISION_HORIZON",
    "UNDOCUMENTED_FIELDS",
    "ApiError",
    "RequestCounters",
    "SimulatedAPI",
    "undocumented_value",
]
