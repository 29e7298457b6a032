"""Aggregation engine: final values (the ground truth) and provisional values (what the API shows before late
revisions land), for every stream, bucket width and ``group_by`` set.

Rules modelled (ref = ``shared/reference/openai-usage-api.md``):

* Buckets are UTC-aligned; the first bucket starts at ``start_time`` floored to the minute and the last one ends at
  ``min(end_time, now)`` (ref §4.1 bucket clipping). Data has minute resolution: a bucket contains minute ``m`` iff
  ``bucket_start <= m < bucket_end``.
* ``group_by``: one result per combination of the grouped dimensions; the others are ``None`` (ref §1.6, §4.13).
* Counters add up over time and over groups. Grouped results sum exactly to ungrouped ones (ints; costs are sums of
  per-cell amounts already quantized to 6 decimals).
* Completions field sets (ref §1.6, §1.7 older shapes, §4.12): a series has shape 3 (SDK 3.57: the cache-write
  retention splits ``input_cache_write_30m_tokens``/``input_cache_write_12h_tokens``), 2 (SPEC 2026-08), 1
  (SPEC-2025-06:
  ``input_cached_tokens``, ``input_audio_tokens``, ``output_audio_tokens`` only) or 0 (SPEC-2024-12: only
  ``input_cached_tokens``). A result carries an optional field only if *every* series contributing to it reports
  that field, so the identities ``input_tokens = cached + cache_write + uncached`` etc. hold whenever the fields are
  present, and mixed results simply omit the newer fields (absent, not 0).
* **Gauge rule** (``vector_stores.usage_bytes``): a bucket reports the bytes stored at the *last minute of the
  bucket* (``floor((bucket_end - 1) / 60) * 60``), per project; ungrouped = sum over projects; a project with 0
  bytes has no result. 1m/1h/1d and the truth all use this rule, so e.g. a 1d bucket equals its last 1h bucket and its
  last 1m bucket.
* **Late revisions** (ref §4.9: buckets are revised after they close; no official latency): with ``now`` and a
  ``horizon`` H, a minute whose end is ``age = now - minute_end`` seconds old reports
  ``floor(v * (H + age) / 2H)`` of each base component while ``0 <= age < H``, the final ``v`` once ``age >= H``,
  and ``floor(v * elapsed / 120)`` for the minute in progress (half of the "just closed" level, scaled by how much of
  the minute has elapsed). Values are monotone in ``now`` and reach the final value at the horizon. Costs apply the
  same rule per day cell (period 86400 s) with ``Decimal`` quantized down to 6 places. The gauge applies it to the
  sampled minute.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Protocol

from . import prices as P
from .streams import StreamDef
from .traffic import Series, Values, gauge_walk, hour_values, split_minutes

DAY = 86400
HOUR = 3600
Q6 = Decimal("0.000001")
_INF = 1 << 62

Key = tuple[Any, ...]
Filters = Mapping[str, frozenset[Any]]


class OrgTraffic(Protocol):
    """What the engine reads of an organization: its traffic series and calendar.

    :class:`.org.Organization` provides it; this module does not import ``org``, which builds its engine from here.
    """

    @property
    def series(self) -> Mapping[str, Sequence[Series]]: ...
    @property
    def start(self) -> int: ...
    @property
    def hours(self) -> int: ...
    @property
    def days(self) -> int: ...
    @property
    def start_weekday(self) -> int: ...


#: Completions optional fields reported by older series shapes (ref §1.7 SPEC-2025-06 / SPEC-2024-12 examples;
#: shape 2 is SPEC 2026-08, before the cache-write retention splits: "may be absent or null for older responses").
_SHAPE_FIELDS: dict[int, frozenset[str]] = {
    0: frozenset({"input_tokens", "output_tokens", "input_cached_tokens", "num_model_requests"}),
    1: frozenset(
        {
            "input_tokens",
            "output_tokens",
            "input_cached_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
            "num_model_requests",
        }
    ),
}


def revision_factor(age: int, horizon: int, period: int) -> tuple[int, int]:
    """Share ``(num, den)`` of its final value that a period (minute or day) reports at a given age.

    Args:
        age: ``now - period_end`` in seconds (negative while the period is in progress).
        horizon: seconds after which a period is final (0: final as soon as it closes).
        period: period length in seconds (60 for usage minutes, 86400 for cost days).

    Returns:
        ``(1, 1)`` when final; ``(0, 1)`` for periods that have not started.
    """
    if age >= horizon:
        return 1, 1
    if age >= 0:
        return horizon + age, 2 * horizon
    if age > -period:
        elapsed = period + age
        return (elapsed, 2 * period) if horizon > 0 else (elapsed, period)
    return 0, 1


def _sort_key(key: Key) -> tuple[tuple[int, str], ...]:
    return tuple((0, "") if v is None else (1, str(v)) for v in key)


def derive(stream: str, t: Sequence[int], shape: int = 3) -> dict[str, int]:
    """Published measures from summed base components (see :func:`.traffic.hour_values` for layouts)."""
    if stream in ("completions", "decisions"):
        n, ct, ca, ci, cw30, ut, ua, ui, ot, oa, oi, cw12 = t
        cached, unc, cw = ct + ca + ci, ut + ua + ui, cw30 + cw12
        full = {
            "input_tokens": cached + cw + unc,
            "input_cached_tokens": cached,
            "input_cache_write_tokens": cw,
            "input_cache_write_30m_tokens": cw30,
            "input_cache_write_12h_tokens": cw12,
            "input_uncached_tokens": unc,
            "output_tokens": ot + oa + oi,
            "input_text_tokens": ut,
            "output_text_tokens": ot,
            "input_cached_text_tokens": ct,
            "input_audio_tokens": ua,
            "input_cached_audio_tokens": ca,
            "output_audio_tokens": oa,
            "input_image_tokens": ui,
            "input_cached_image_tokens": ci,
            "output_image_tokens": oi,
            "num_model_requests": n,
        }
        if shape >= 3:
            return full
        if shape == 2:
            del full["input_cache_write_30m_tokens"], full["input_cache_write_12h_tokens"]
            return full
        keep = _SHAPE_FIELDS[shape]
        return {k: v for k, v in full.items() if k in keep}
    if stream in ("embeddings", "moderations"):
        return {"input_tokens": t[1], "num_model_requests": t[0]}
    if stream == "images":
        return {"images": t[0] + t[1], "num_model_requests": t[0]}
    if stream == "audio_speeches":
        return {"characters": t[1], "num_model_requests": t[0]}
    if stream == "audio_transcriptions":
        return {"seconds": t[1], "num_model_requests": t[0]}
    if stream == "code_interpreter_sessions":
        return {"num_sessions": t[0]}
    if stream == "file_search_calls":
        return {"num_requests": t[0]}
    if stream == "web_search_calls":
        return {"num_model_requests": t[0], "num_requests": t[0] + t[1]}
    raise ValueError(f"not a counter stream: {stream}")


@dataclass(frozen=True)
class _Day:
    hours: list[list[tuple[int, Values]]]  # per hour of the day: (series index, components) of active series
    totals: list[tuple[int, Values]]  # per active series: the day's components


@dataclass(frozen=True)
class CostCell:
    """One costs atom: a (day, line item, project, API key, user, api_source) with its final quantity and amount."""

    quantity: Decimal
    amount: Decimal
    unit: str | None


CellKey = tuple[str, str | None, str | None, str | None, str]  # (line_item, project, api key, user, api_source)
#: Where each costs dimension sits in a :data:`CellKey`.
_CELL_POS = {"line_item": 0, "project_id": 1, "api_key_id": 2, "user_id": 3, "api_source": 4}


class _CounterData:
    """Lazily computed, cached hourly/daily/minute components of one counter stream."""

    def __init__(self, org: OrgTraffic, stream: str) -> None:
        self.org = org
        self.stream = stream
        self.series = org.series.get(stream, [])
        self._days: dict[int, _Day] = {}
        self._minutes: dict[tuple[int, int], list[Values | None]] = {}

    def day(self, d: int) -> _Day:
        got = self._days.get(d)
        if got is None:
            got = self._make_day(d)
            self._days[d] = got
        return got

    def _make_day(self, d: int) -> _Day:
        wd = self.org.start_weekday
        hours: list[list[tuple[int, Values]]] = []
        totals: dict[int, list[int]] = {}
        for hh in range(24):
            h = d * 24 + hh
            row: list[tuple[int, Values]] = []
            for s in self.series:
                v = hour_values(s, h, wd)
                if v is None:
                    continue
                row.append((s.index, v))
                acc = totals.get(s.index)
                if acc is None:
                    totals[s.index] = list(v)
                else:
                    for i, x in enumerate(v):
                        acc[i] += x
            hours.append(row)
        return _Day(hours, [(i, tuple(t)) for i, t in sorted(totals.items())])

    def minutes(self, idx: int, h: int, values: Values) -> list[Values | None]:
        key = (idx, h)
        got = self._minutes.get(key)
        if got is None:
            got = split_minutes(self.series[idx], h, values)
            if len(self._minutes) > 8192:  # a 1m page touches <= 24 h x ~16 series; bound memory
                self._minutes.clear()
            self._minutes[key] = got
        return got


class _GaugeData:
    """Per-project vector store bytes, minute resolution (see :func:`.traffic.gauge_walk`)."""

    def __init__(self, org: OrgTraffic) -> None:
        self.org = org
        self.series = org.series.get("vector_stores", [])
        self.walks = [gauge_walk(s.key, org.hours, s.end_hour, s.profile.size) for s in self.series]

    def at(self, idx: int, t: int) -> int:
        """Bytes of series ``idx`` during the minute starting at ``t``."""
        rel = t - self.org.start
        if rel < 0 or rel >= self.org.hours * HOUR:
            return 0
        h, r = divmod(rel, HOUR)
        values, change = self.walks[idx]
        if r // 60 >= change[h]:
            return values[h]
        return values[h - 1] if h else 0


class TruthEngine:
    """Answers bucketed, grouped, filtered queries for an :class:`~.org.Organization` at a given ``now``."""

    def __init__(self, org: OrgTraffic) -> None:
        self.org = org
        self._counters: dict[str, _CounterData] = {}
        self._gauge: _GaugeData | None = None
        self._cost_days: dict[int, dict[CellKey, CostCell]] = {}
        self._lock = threading.Lock()

    # -- buckets -------------------------------------------------------------------------------------------------

    @staticmethod
    def edges(
        start: int, end: int, width: int, limit: int | None = None, first: int | None = None
    ) -> list[tuple[int, int]]:
        """UTC-aligned bucket edges covering ``[floor_minute(start), end)`` (ref §4.1).

        Args:
            start: range start (floored to the minute for the first bucket).
            end: range end (the last bucket is clipped to it).
            width: bucket width in seconds.
            limit: at most this many buckets.
            first: start of the first bucket to return (a page cursor position); default ``start``.

        Returns:
            ``[(bucket_start, bucket_end), ...]``.
        """
        t = start - start % 60 if first is None else first
        out: list[tuple[int, int]] = []
        while t < end and (limit is None or len(out) < limit):
            be = min(t - t % width + width, end)
            out.append((t, be))
            t = be
        return out

    # -- data access ---------------------------------------------------------------------------------------------

    def counter(self, stream: str) -> _CounterData:
        """The lazily-filled cache of a counter stream."""
        got = self._counters.get(stream)
        if got is None:
            with self._lock:
                got = self._counters.get(stream)
                if got is None:
                    got = _CounterData(self.org, stream)
                    self._counters[stream] = got
        return got

    def gauge(self) -> _GaugeData:
        """The vector store gauge."""
        if self._gauge is None:
            with self._lock:
                if self._gauge is None:
                    self._gauge = _GaugeData(self.org)
        return self._gauge

    # -- queries -------------------------------------------------------------------------------------------------

    def results(
        self,
        sdef: StreamDef,
        edges: Sequence[tuple[int, int]],
        group_by: Sequence[str],
        filters: Filters,
        now: int | None,
        horizon: int,
    ) -> list[list[dict[str, Any]]]:
        """Result dicts per bucket.

        Args:
            sdef: the stream.
            edges: bucket edges (from :meth:`edges`), already clipped to ``now`` by the caller.
            group_by: grouped dimensions.
            filters: dimension -> allowed values.
            now: the API's clock (unix seconds) for provisional values, or ``None`` for final values.
            horizon: revision horizon in seconds (ignored when ``now`` is ``None``).

        Returns:
            One list of result dicts per bucket (API shape without unknown extra fields; money as Decimal).
        """
        gb = tuple(g for g in sdef.group_by if g in set(group_by))
        if sdef.kind == "costs":
            return [self._costs_bucket(bs, be, gb, filters, now, horizon) for bs, be in edges]
        series = self.org.series.get(sdef.name, [])
        keymap: dict[int, Key] = {}
        for s in series:
            if all(s.dims.get(dim) in vals for dim, vals in filters.items()):
                keymap[s.index] = tuple(s.dims[g] for g in gb)
        if sdef.kind == "gauge":
            return [self._gauge_bucket(sdef, bs, be, gb, keymap, now, horizon) for bs, be in edges]
        return self._counter_page(sdef, self.counter(sdef.name), edges, gb, keymap, now, horizon)

    def _dims(self, sdef: StreamDef, gb: tuple[str, ...], key: Key) -> dict[str, Any]:
        if not gb:
            return dict.fromkeys(sdef.group_by)
        got = dict(zip(gb, key, strict=True))
        return {g: got.get(g) for g in sdef.group_by}

    def _counter_page(
        self,
        sdef: StreamDef,
        data: _CounterData,
        edges: Sequence[tuple[int, int]],
        gb: tuple[str, ...],
        keymap: dict[int, Key],
        now: int | None,
        horizon: int,
    ) -> list[list[dict[str, Any]]]:
        """One sweep over the page's time range: whole final days and hours come from the cached day/hour sums,
        everything else (partial hours, provisional minutes) minute by minute, each minute routed to its bucket."""
        if not edges:
            return []
        org = self.org
        start, span = org.start, org.hours * HOUR
        # Minutes starting at or after `final_before` are still being revised.
        final_before = _INF if now is None else (now - horizon - 60) // 60 * 60 + 60
        accs: list[dict[Key, list[int]]] = [{} for _ in edges]
        shapes: list[dict[Key, int]] = [{} for _ in edges]
        starts = [bs for bs, _ in edges]
        series = data.series

        def add(i: int, k: Key, v: Values, sh: int) -> None:
            acc = accs[i]
            a = acc.get(k)
            if a is None:
                acc[k] = list(v)
                shapes[i][k] = sh
            else:
                for j, x in enumerate(v):
                    a[j] += x
                if sh < shapes[i][k]:
                    shapes[i][k] = sh

        t, e = edges[0][0], edges[-1][1]
        while t < e:
            rel = t - start
            if rel < 0:
                t = min(e, start)
                continue
            if rel >= span:
                break
            h = rel // HOUR
            day = data.day(h // 24)
            bi = bisect_right(starts, t) - 1
            be = edges[bi][1]
            if rel % DAY == 0 and t + DAY <= be and t + DAY <= final_before:
                for idx, v in day.totals:
                    k = keymap.get(idx)
                    if k is not None:
                        add(bi, k, v, series[idx].shape)
                t += DAY
                continue
            row = day.hours[h % 24]
            if rel % HOUR == 0 and t + HOUR <= be and t + HOUR <= final_before:
                for idx, v in row:
                    k = keymap.get(idx)
                    if k is not None:
                        add(bi, k, v, series[idx].shape)
                t += HOUR
                continue
            hour_start = start + h * HOUR
            stop = min(e, hour_start + HOUR)
            m0 = (t - hour_start) // 60
            m1 = -((hour_start - stop) // 60)  # ceil: minutes starting before `stop`
            minute_bucket = [bisect_right(starts, hour_start + i * 60) - 1 for i in range(m0, m1)]
            factors = [
                None if ms < final_before or now is None else revision_factor(now - ms - 60, horizon, 60)
                for ms in range(hour_start + m0 * 60, hour_start + m1 * 60, 60)
            ]
            for idx, v in row:
                k = keymap.get(idx)
                if k is None:
                    continue
                sh = series[idx].shape
                mins = data.minutes(idx, h, v)
                for off in range(m1 - m0):
                    mv = mins[m0 + off]
                    if mv is None:
                        continue
                    f = factors[off]
                    if f is not None and f[0] != f[1]:
                        num, den = f
                        mv = tuple(x * num // den for x in mv)
                        if not any(mv):
                            continue
                    add(minute_bucket[off], k, mv, sh)
            t = hour_start + m1 * 60
        dims_cache: dict[Key, dict[str, Any]] = {}
        order: dict[Key, tuple[tuple[int, str], ...]] = {}
        out: list[list[dict[str, Any]]] = []
        stream = sdef.name
        for acc, shape in zip(accs, shapes, strict=True):
            rs: list[dict[str, Any]] = []
            if len(acc) > 1:
                for k in acc:
                    if k not in order:
                        order[k] = _sort_key(k)
                keys: Iterable[Key] = sorted(acc, key=order.__getitem__)
            else:
                keys = acc
            for k in keys:
                dims = dims_cache.get(k)
                if dims is None:
                    dims = dims_cache[k] = self._dims(sdef, gb, k)
                r: dict[str, Any] = {"object": sdef.object}
                r.update(derive(stream, acc[k], shape[k]))
                r.update(dims)
                rs.append(r)
            out.append(rs)
        return out

    def _gauge_bucket(
        self,
        sdef: StreamDef,
        bs: int,
        e: int,
        gb: tuple[str, ...],
        keymap: dict[int, Key],
        now: int | None,
        horizon: int,
    ) -> list[dict[str, Any]]:
        g = self.gauge()
        sample = (e - 1) // 60 * 60  # gauge rule: the bucket's last minute
        num, den = (1, 1) if now is None else revision_factor(now - sample - 60, horizon, 60)
        acc: dict[Key, int] = {}
        for idx, k in keymap.items():
            v = g.at(idx, sample) * num // den
            if v:
                acc[k] = acc.get(k, 0) + v
        return [
            {"object": sdef.object, "usage_bytes": acc[k], **self._dims(sdef, gb, k)}
            for k in sorted(acc, key=_sort_key)
        ]

    # -- costs ---------------------------------------------------------------------------------------------------

    def cost_cells(self, d: int) -> dict[CellKey, CostCell]:
        """Final costs atoms of day ``d`` (relative to the org start), computed once and cached."""
        got = self._cost_days.get(d)
        if got is None:
            got = self._make_cost_day(d)
            self._cost_days[d] = got
        return got

    def _make_cost_day(self, d: int) -> dict[CellKey, CostCell]:
        org = self.org
        acc: dict[CellKey, list[Any]] = {}

        who: tuple[str | None, str] = (None, "unlabeled")  # (user_id, api_source) of the series being billed

        def bill(
            li: str, proj: str | None, key: str | None, qty: Decimal | int, price: Decimal, unit: str | None
        ) -> None:
            if not qty:
                return
            q = Decimal(qty)
            ck = (li, proj, key, *who)
            c = acc.get(ck)
            if c is None:
                acc[ck] = [q, q * price, unit]
            else:
                c[0] += q
                c[1] += q * price

        with localcontext() as ctx:
            ctx.prec = 80
            scale_models: set[str] = set()
            m = P.MILLION
            for stream in (
                "completions",
                "embeddings",
                "images",
                "audio_speeches",
                "audio_transcriptions",
                "web_search_calls",
                "file_search_calls",
                "code_interpreter_sessions",
            ):
                data = self.counter(stream)
                for idx, t in data.day(d).totals:
                    dims = data.series[idx].dims
                    proj, key = dims["project_id"], dims.get("api_key_id")
                    model = dims.get("model")
                    who = (dims.get("user_id"), dims.get("api_source") or "unlabeled")
                    if stream == "completions":
                        assert isinstance(model, str)
                        if dims["service_tier"] == "scale":
                            scale_models.add(model)
                            continue
                        tier = "batch" if dims["batch"] else dims["service_tier"]
                        mult = P.TIER_MULTIPLIER[tier]
                        pr = P.TOKEN_PRICES[model]
                        _n, ct, ca, ci, cw30, ut, ua, ui, ot, oa, oi, cw12 = t
                        cw = cw30 + cw12  # cache writes of both retention periods are billed as input
                        if pr.audio_input is not None and pr.audio_output is not None:
                            inp, out = ut + ui + cw, ot + oi
                            bill(
                                P.token_line_item(model, "audio input", tier),
                                proj,
                                key,
                                ua,
                                pr.audio_input * mult / m,
                                "tokens",
                            )
                            bill(
                                P.token_line_item(model, "audio output", tier),
                                proj,
                                key,
                                oa,
                                pr.audio_output * mult / m,
                                "tokens",
                            )
                        else:
                            inp, out = ut + ua + ui + cw, ot + oa + oi
                        bill(P.token_line_item(model, "input", tier), proj, key, inp, pr.input * mult / m, "tokens")
                        bill(
                            P.token_line_item(model, "cached input", tier),
                            proj,
                            key,
                            ct + ca + ci,
                            pr.cached_input * mult / m,
                            "tokens",
                        )
                        bill(P.token_line_item(model, "output", tier), proj, key, out, pr.output * mult / m, "tokens")
                    elif stream == "embeddings":
                        assert isinstance(model, str)
                        bill(f"{model}, input", proj, key, t[1], P.TOKEN_PRICES[model].input / m, "tokens")
                    elif stream == "images":
                        assert isinstance(model, str)
                        price = P.IMAGE_PRICES[(model, dims["size"])]
                        bill(f"{model}, {dims['size']}", proj, key, t[0] + t[1], price, "images")
                    elif stream == "audio_speeches":
                        assert isinstance(model, str)
                        bill(f"{model}, characters", proj, key, t[1], P.SPEECH_PRICE_PER_CHAR[model], "characters")
                    elif stream == "audio_transcriptions":
                        assert isinstance(model, str)
                        bill(
                            f"{model}, transcription",
                            proj,
                            key,
                            t[1],
                            P.TRANSCRIPTION_PRICE_PER_SECOND[model],
                            "duration_seconds",
                        )
                    elif stream == "web_search_calls":
                        bill(
                            P.WEB_SEARCH_LINE_ITEM,
                            proj,
                            key,
                            t[0] + t[1],
                            P.WEB_SEARCH_PRICE_PER_CALL[dims["context_level"]],
                            None,
                        )
                    elif stream == "file_search_calls":
                        bill(P.FILE_SEARCH_LINE_ITEM, proj, key, t[0], P.FILE_SEARCH_PRICE_PER_CALL, None)
                    else:  # code interpreter sessions are billed per project, no key (usage has no key either)
                        bill(P.CODE_INTERPRETER_LINE_ITEM, proj, None, t[0], P.CODE_INTERPRETER_PRICE_PER_SESSION, None)
            # Vector store storage: GiB-hours, each hour sampled at its last minute (the gauge rule); no API key.
            who = (None, "unlabeled")
            g = self.gauge()
            day_start = org.start + d * DAY
            for idx, s in enumerate(g.series):
                total = sum(g.at(idx, day_start + hh * HOUR + HOUR - 60) for hh in range(24))
                bill(
                    P.VECTOR_STORE_LINE_ITEM,
                    s.dims["project_id"],
                    None,
                    Decimal(total) / P.GIB,
                    P.VECTOR_STORE_PRICE_PER_GIB_HOUR,
                    "gibibyte_hours",
                )
            # Scale tier: org-level commitment, no project and no key (ref §4.8).
            for model in sorted(scale_models):
                bill(P.scale_tier_line_item(model), None, None, 1, P.SCALE_TIER_DAILY, None)
            return {
                k: CostCell(q.quantize(Q6, ROUND_HALF_EVEN), a.quantize(Q6, ROUND_HALF_EVEN), u)
                for k, (q, a, u) in sorted(acc.items(), key=lambda kv: _sort_key(kv[0]))
            }

    def _costs_bucket(
        self,
        bs: int,
        e: int,
        gb: tuple[str, ...],
        filters: Filters,
        now: int | None,
        horizon: int,
    ) -> list[dict[str, Any]]:
        org = self.org
        d0 = max(0, (bs - org.start) // DAY)
        d1 = min(org.days, -((org.start - e) // DAY))  # days overlapping [bs, e)
        pos = _CELL_POS
        fp = filters.get("project_id")
        fk = filters.get("api_key_id")
        fl = filters.get("line_item")
        acc: dict[Key, list[Any]] = {}
        for d in range(d0, d1):
            num, den = (1, 1) if now is None else revision_factor(now - (org.start + (d + 1) * DAY), horizon, DAY)
            if num == 0:
                continue
            for ck, cell in self.cost_cells(d).items():
                if (
                    (fp is not None and ck[1] not in fp)
                    or (fk is not None and ck[2] not in fk)
                    or (fl is not None and ck[0] not in fl)
                ):
                    continue
                amount, qty = cell.amount, cell.quantity
                if num != den:
                    amount = (amount * num / den).quantize(Q6, ROUND_DOWN)
                    qty = (qty * num / den).quantize(Q6, ROUND_DOWN)
                    if not amount and not qty:
                        continue
                k = tuple(ck[pos[g]] for g in gb)
                a = acc.get(k)
                if a is None:
                    acc[k] = [amount, qty, cell.unit]
                else:
                    a[0] += amount
                    a[1] += qty
        out: list[dict[str, Any]] = []
        by_line = "line_item" in gb
        for k in sorted(acc, key=_sort_key):
            amount, qty, unit = acc[k]
            dims = dict(zip(gb, k, strict=True))
            out.append(
                {
                    "object": "organization.costs.result",
                    "amount": {"value": amount, "currency": "usd"},
                    "line_item": dims.get("line_item"),
                    "project_id": dims.get("project_id"),
                    "api_key_id": dims.get("api_key_id"),
                    "user_id": dims.get("user_id"),
                    "api_source": dims.get("api_source"),
                    # ref §1.6 / §4.5: quantity and its unit are meant for group_by=line_item.
                    "quantity": qty if by_line else None,
                    "quantity_unit": unit if by_line else None,
                }
            )
        return out


__all__ = ["CostCell", "TruthEngine", "derive", "revision_factor"]
