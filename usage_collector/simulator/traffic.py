"""Traffic generation: hourly values per series, exact minute splits, and the vector-store gauge.

Model (all deterministic from the series key, see :mod:`.rand`):

* The base granularity is one hour of one *series* (one combination of every dimension of a stream). Its request
  count is ``floor(rate * diurnal(local hour) * weekly(local weekday) * spike * noise + u)`` with ``u`` uniform in
  [0, 1) (unbiased random rounding), so low-rate series are active only in some hours.
* Measures of an hour are *base components* (for completions: cached/uncached/cache-write tokens per modality,
  output tokens per modality, requests). Published measures are sums of components, so the identities of ref
  openai-usage-api.md §1.6 hold by construction at every granularity.
* Minutes: an hour's components are split over its active minutes with cumulative-floor apportioning
  (``floor(V*C_j/W) - floor(V*C_{j-1}/W)``), so the 60 minutes sum *exactly* to the hour; days are sums of hours.
  Hence 1m, 1h and 1d agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .rand import GOLDEN, MASK64, draw, mix64, unit

#: Relative activity by local hour of day (peak 1.0 in the afternoon, near-zero at night).
DIURNAL: tuple[float, ...] = (
    0.06, 0.04, 0.03, 0.03, 0.04, 0.07, 0.15, 0.30, 0.55, 0.78, 0.90, 0.96,
    0.92, 0.97, 1.00, 0.98, 0.90, 0.75, 0.55, 0.40, 0.30, 0.20, 0.13, 0.09,
)  # fmt: skip

Values = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """Traffic shape of one series.

    Attributes:
        rate: mean requests per hour at the daily peak on a weekday.
        tz: UTC offset (hours) of the people or systems driving it; shifts the diurnal curve.
        diurnal: 0 = flat (automation) .. 1 = full day/night swing.
        weekend: multiplier on Saturdays and Sundays.
        spikes: probability that a given day has a burst of 1-4 hours at 4-10x.
        size: mean input size per request (tokens, characters, seconds, bytes for the gauge).
        out: mean output tokens per request (completions).
        cached: share of input tokens read from the prompt cache.
        cache_write: share of input tokens written to the cache.
        cache_12h: share of the cache writes kept for 12 hours (the rest: 30 minutes).
        audio: share of input tokens that are audio.
        image: share of input tokens that are image.
        out_audio: share of output tokens that are audio.
        out_image: share of output tokens that are image.
        per_call: items per request (images per image request, web searches per model request).
    """

    rate: float
    tz: int = 0
    diurnal: float = 0.85
    weekend: float = 0.3
    spikes: float = 0.05
    size: float = 1.0
    out: float = 0.0
    cached: float = 0.0
    cache_write: float = 0.0
    cache_12h: float = 0.4
    audio: float = 0.0
    image: float = 0.0
    out_audio: float = 0.0
    out_image: float = 0.0
    per_call: float = 1.0


@dataclass(frozen=True)
class Series:
    """One combination of all the dimensions of a stream, with its traffic profile.

    Attributes:
        stream: stream name.
        index: position in the stream's series list.
        dims: value of every ``group_by`` dimension of the stream.
        profile: traffic shape.
        shape: completions field set: 3 = SDK 3.57 (cache-write retention splits), 2 = SPEC 2026-08, 1 =
            SPEC-2025-06 fields, 0 = SPEC-2024-12 fields (ref §1.6, §1.7 older shapes, §4.12). Older series omit
            newer optional fields (absent, not 0).
        key: 64-bit stream key for the deterministic draws.
        end_hour: first hour (relative to the org start) without usage; archived projects stop there.
    """

    stream: str
    index: int
    dims: dict[str, Any]
    profile: Profile
    shape: int
    key: int
    end_hour: int


def hour_requests(s: Series, h: int, start_weekday: int) -> int:
    """Requests of series ``s`` in hour ``h`` (relative to the org start); 0 when inactive."""
    if h >= s.end_hour:
        return 0
    p = s.profile
    d, hod = divmod(h, 24)
    local = hod + p.tz
    f = (1.0 - p.diurnal) + p.diurnal * DIURNAL[local % 24]
    if (start_weekday + d + local // 24) % 7 >= 5:
        f *= p.weekend
    sd = mix64((s.key ^ (d * 0x632BE59BD9B4E019)) & MASK64)
    if unit(sd) < p.spikes:
        first = (sd >> 13) % 24
        if first <= hod < first + 1 + (sd >> 23) % 4:
            f *= 4 + (sd >> 31) % 7
    r = draw(s.key, h * 16)
    noise = 0.7 + 0.6 * unit(r)
    return int(p.rate * f * noise + unit(r ^ 0x5DEECE66D))


def hour_values(s: Series, h: int, start_weekday: int) -> Values | None:
    """Base components of series ``s`` in hour ``h``, or ``None`` when it has no usage.

    Component layouts per stream:

    * completions, decisions: ``(requests, cached_text, cached_audio, cached_image, cache_write_30m, text, audio,
      image, out_text, out_audio, out_image, cache_write_12h)``
    * embeddings, moderations: ``(requests, input_tokens)``
    * images: ``(requests, extra_images)``; ``images = requests + extra_images``
    * audio_speeches: ``(requests, characters)``; audio_transcriptions: ``(requests, seconds)``
    * code_interpreter_sessions: ``(sessions,)``; file_search_calls: ``(num_requests,)``
    * web_search_calls: ``(num_model_requests, extra_calls)``; ``num_requests = num_model_requests + extra_calls``
    """
    n = hour_requests(s, h, start_weekday)
    if n <= 0:
        return None
    p = s.profile
    base = h * 16
    u1, u2, u3, u4 = (unit(draw(s.key, base + i)) for i in (1, 2, 3, 4))
    st = s.stream
    if st in ("completions", "decisions"):
        inp = int(n * p.size * (0.8 + 0.4 * u1)) + n
        out = int(n * p.out * (0.7 + 0.6 * u2)) + 1
        cached = min(inp, int(inp * p.cached * (0.7 + 0.6 * u3)))
        cw = min(inp - cached, int(inp * p.cache_write * u4))
        unc = inp - cached - cw
        ua, ui = int(unc * p.audio), int(unc * p.image)
        ca, ci = int(cached * p.audio), int(cached * p.image)
        oa, oi = int(out * p.out_audio), int(out * p.out_image)
        cw12 = int(cw * p.cache_12h * unit(draw(s.key, base + 5)))
        return (n, cached - ca - ci, ca, ci, cw - cw12, unc - ua - ui, ua, ui, out - oa - oi, oa, oi, cw12)
    if st in ("embeddings", "moderations", "audio_speeches", "audio_transcriptions"):
        return (n, max(1, int(n * p.size * (0.75 + 0.5 * u1))))
    if st in ("images", "web_search_calls"):
        return (n, int(n * (p.per_call - 1.0) * (0.5 + u1)))
    return (n,)


def _apportion(value: int, cum: list[int]) -> list[int]:
    """Split ``value`` by cumulative weights ``cum`` (``cum[0] == 0``); the parts sum exactly to ``value``."""
    w = cum[-1]
    marks = [value * c // w for c in cum]
    return [b - a for a, b in pairwise(marks)]


def split_minutes(s: Series, h: int, values: Values) -> list[Values | None]:
    """Split an hour's components over its 60 minutes; the minutes sum exactly to ``values``.

    The first component is a count (requests or sessions); each active minute gets at least one.
    """
    n = values[0]
    r = draw(s.key, h * 16 + 9)
    if n >= 60:
        active = list(range(60))
    else:
        pool = list(range(60))
        for i in range(n):  # partial Fisher-Yates: n distinct minutes
            j = i + draw(r, i) % (60 - i)
            pool[i], pool[j] = pool[j], pool[i]
        active = sorted(pool[:n])
    # A within-hour trend plus noise, so minutes are neither uniform nor erratic.
    slope = (r >> 40) % 5
    cum = [0]
    for i, m in enumerate(active):
        cum.append(cum[-1] + 1 + draw(r, 100 + i) % 97 + slope * m)
    k = len(active)
    parts = [[1 + x for x in _apportion(n - k, cum)]]
    parts.extend(_apportion(v, cum) for v in values[1:])
    out: list[Values | None] = [None] * 60
    for m, t in zip(active, zip(*parts, strict=True), strict=True):
        out[m] = t
    return out


def gauge_walk(key: int, hours: int, end_hour: int, initial: float) -> tuple[list[int], list[int]]:
    """Hourly values of a vector-store gauge and the minute of each hour at which the value changes.

    Returns:
        ``(values, change_minute)``: during hour ``h`` the gauge reads ``values[h-1]`` (0 before the first hour)
        until minute ``change_minute[h]``, then ``values[h]``. Uploads grow it, deletions shrink it, and it drops
        to 0 at ``end_hour`` (the project's stores are deleted when it is archived).
    """
    values: list[int] = []
    minutes: list[int] = []
    v = 0
    cap = int(initial * 20)
    for h in range(hours):
        r = draw(key, h)
        u = unit(r)
        if h >= end_hour:
            nv = 0
        elif h == 0:
            nv = int(initial * (0.8 + 0.4 * unit(r ^ 1)))
        elif u < 0.22:  # upload: proportional growth only below a soft cap, so a year stays realistic
            grow = int(v * 0.01 * (1 + (r >> 20) % 8)) if v < cap else 0
            nv = v + grow + 4096 * (1 + (r >> 30) % 256)
        elif u < 0.25:  # deletion of files
            nv = v - int(v * 0.05 * (1 + (r >> 20) % 6))
        else:
            nv = v
        values.append(nv)
        minutes.append((r >> 45) % 60 if nv != v else 0)
        v = nv
    return values, minutes


__all__ = [
    "DIURNAL",
    "GOLDEN",
    "Profile",
    "Series",
    "Values",
    "gauge_walk",
    "hour_requests",
    "hour_values",
    "split_minutes",
]
