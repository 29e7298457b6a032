"""Plan which buckets to read: UTC-aligned windows, complete buckets only, a restatement tail.

Cursor semantics are named, not hidden (STYLE.md principle 5):

* ranges are start-inclusive, end-exclusive (ref ``openai-usage-api.md`` §1.1);
* a bucket is **final** when ``end_time <= now - finalization_grace``; only final buckets are read, so the
  open bucket is never written (ref §4.9; Elastic's ``finalization_grace``);
* every run re-reads a trailing **restatement window** before the final edge and writes what changed,
  because OpenAI revises recent buckets (ref §4.9);
* a window holds at most the API's maximum ``limit`` of buckets for the width (1440 / 168 / 31), so one window
  is normally one request; a costs window holds :data:`COSTS_WINDOW_DAYS` (the API would page up to 180).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from .catalogue import WIDTH_SECONDS, StreamSpec
from .clock import iso
from .sinks.base import Checkpoint

#: Days in one costs window, below the API's 180 (``catalogue.COSTS_LIMIT_MAX``) for memory: a window's page
#: body and documents are held while it is shaped and written, and a 180-day costs page (~4 MB in
#: ``bench/p4_memory.py``, more for an organization with many projects and line items) was the 365-day
#: backfill's peak. Measured there with the NDJSON sink, peak RSS of the 365-day backfill, two runs each on one
#: machine (1-day: 49 MB): 180 days 65 MB, 90 days 65, 60 days 61, 31 days 61. A 365-day backfill takes 7
#: costs requests instead of 3.
COSTS_WINDOW_DAYS = 60

#: ``run``: the scheduled cursor; ``backfill``: a backfill's own resumable position.
Scope = Literal["run", "backfill"]


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in Unix seconds, aligned to the bucket width."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"


def align_down(ts: float, width: str) -> int:
    """The start of the UTC-aligned bucket of width ``width`` holding ``ts``."""
    w = WIDTH_SECONDS[width]
    t = int(ts // 1)
    return t - t % w


def align_up(ts: float, width: str) -> int:
    """The end of the UTC-aligned bucket of width ``width`` holding ``ts`` (``ts`` itself when aligned)."""
    w = WIDTH_SECONDS[width]
    down = align_down(ts, width)
    return down if down == ts else down + w


def final_edge(now: float, width: str, grace: float) -> int:
    """End of the last final bucket: every bucket ending at or before it is complete.

    >>> final_edge(1730430000, "1h", 900)  # 03:00:00Z now, 15 min grace -> 02:00Z
    1730426400
    """
    return align_down(now - grace, width)


def plan_run(
    *,
    position: int | None,
    now: float,
    width: str,
    grace: float,
    restatement: float,
    initial_lookback: float,
) -> Window:
    """The range one scheduled cycle reads.

    Args:
        position: the stored checkpoint (end of the last acknowledged window), or ``None``.
        now: the current time.
        width: bucket width.
        grace: finalization grace.
        restatement: how far back before the final edge to re-read every run.
        initial_lookback: how far back a first run starts.

    Returns:
        ``[start, end)``: from the earlier of the checkpoint and the restatement start, up to the final edge.
        Empty (``start == end``) when nothing is final yet.
    """
    end = final_edge(now, width, grace)
    restate_from = align_down(end - restatement, width)
    start = align_down(now - initial_lookback, width) if position is None else min(position, restate_from)
    return Window(min(start, end), end)


def split(window: Window, width: str, limit: int) -> Iterator[Window]:
    """Cut ``window`` into consecutive windows of at most ``limit`` buckets.

    >>> [(w.start, w.end) for w in split(Window(0, 86400 * 40), "1d", 31)]
    [(0, 2678400), (2678400, 3456000)]
    """
    step = WIDTH_SECONDS[width] * limit
    start = align_down(window.start, width)
    while start < window.end:
        end = min(start + step, window.end)
        yield Window(start, end)
        start = end


def count_windows(window: Window, width: str, limit: int) -> int:
    """How many windows :func:`split` cuts ``window`` into."""
    step = WIDTH_SECONDS[width] * limit
    span = max(0, window.end - align_down(window.start, width))
    return -(-span // step)


@dataclass(frozen=True)
class BackfillRange:
    """What ``backfill`` was asked for: ``[start, end)`` in Unix seconds, and an optional bucket width.

    Attributes:
        start: first instant (aligned down to the bucket width).
        end: exclusive end (aligned up); ``None`` means up to the final edge.
        bucket_width: ``1m``/``1h``/``1d``; ``None`` means each stream's configured width. A width the stream
            does not support (costs is ``1d`` only) falls back to the stream's default.
    """

    start: int
    end: int | None = None
    bucket_width: str | None = None


@dataclass(frozen=True)
class StreamPlan:
    """What one stream reads in one cycle or backfill, and how its checkpoint moves.

    Attributes:
        spec: the stream.
        width: bucket width.
        scope: ``run`` or ``backfill`` (the checkpoint it advances).
        window: ``[start, end)`` to read; empty when nothing is final yet.
        edge: the final edge: buckets ending after it are never written.
        checkpoint: the checkpoint to resume from (a fresh one when none applies).
    """

    spec: StreamSpec
    width: str
    scope: Scope
    window: Window
    edge: int
    checkpoint: Checkpoint

    @property
    def window_buckets(self) -> int:
        """Buckets per window: the API maximum for the width (the ``limit`` sent), :data:`COSTS_WINDOW_DAYS` for
        costs."""
        return COSTS_WINDOW_DAYS if self.spec.is_costs else self.spec.limit_max(self.width)

    def windows(self) -> Iterator[Window]:
        """The windows to fetch, in order (at most :attr:`window_buckets` buckets each)."""
        return split(self.window, self.width, self.window_buckets)

    def count(self) -> int:
        return count_windows(self.window, self.width, self.window_buckets)

    def advance(self, cp: Checkpoint, win: Window, now: float) -> Checkpoint:
        """The checkpoint to store with ``win``'s documents (stored only once the sink acknowledged them).

        ``run``: the position never moves back (the restatement tail is re-read behind it). ``backfill``: the
        position is the end of the last written window, and the backfill is complete at the window's end.
        """
        position = max(cp.position or win.end, win.end) if self.scope == "run" else win.end
        return replace(
            cp,
            position=position,
            updated_at=now,
            last_success_at=now,
            last_error=None,
            complete=cp.complete if self.scope == "run" else win.end >= self.window.end,
        )

    def follow_up(self, cp: Checkpoint, run_cp: Checkpoint | None, now: float) -> Checkpoint | None:
        """After a complete backfill: the scheduled cursor moved to the backfill's end, or ``None`` to keep it.

        The cursor follows only when it is unset or inside the backfilled range (contiguous): a backfill of an
        old range never makes the scheduled cycle skip what lies between.
        """
        if self.scope != "backfill" or not cp.complete:
            return None
        start = cp.range_start or self.window.start
        end = self.window.end
        run_cp = run_cp or Checkpoint(cp.org_id, cp.stream, cp.bucket_width, "run")
        if run_cp.position is None or start <= run_cp.position < end:
            return replace(run_cp, position=end, updated_at=now)
        return None


def stream_width(spec: StreamSpec, configured: str, requested: str | None) -> str:
    """The bucket width a stream is read at: the requested one if the stream supports it, else its default."""
    if requested is not None:
        return requested if requested in spec.widths else spec.default_width
    return configured


def plan_stream(
    spec: StreamSpec,
    *,
    org_id: str,
    width: str,
    now: float,
    grace: float,
    restatement: float,
    initial_lookback: float,
    stored: Checkpoint | None,
    backfill: BackfillRange | None = None,
) -> StreamPlan:
    """Plan one stream: the window, the final edge, and the checkpoint to resume from.

    Args:
        spec: the stream.
        org_id: the organization (names a fresh checkpoint).
        width: bucket width (see :func:`stream_width`).
        now: the current time.
        grace: finalization grace.
        restatement: how far back before the final edge a scheduled cycle re-reads.
        initial_lookback: how far back a first scheduled cycle starts.
        stored: the stored checkpoint of this scope (``run`` for a cycle, ``backfill`` for a backfill).
        backfill: the backfill range, or ``None`` for a scheduled cycle.

    Returns:
        A scheduled cycle reads :func:`plan_run`'s window from the stored cursor. A backfill reads
        ``[start, min(end, edge))`` and resumes from its stored position when the stored checkpoint is an
        unfinished backfill of exactly that range; otherwise it starts over with a fresh checkpoint.
    """
    edge = final_edge(now, width, grace)
    if backfill is None:
        window = plan_run(
            position=stored.position if stored else None,
            now=now,
            width=width,
            grace=grace,
            restatement=restatement,
            initial_lookback=initial_lookback,
        )
        cp = stored or Checkpoint(org_id, spec.name, width, "run")
        return StreamPlan(spec, width, "run", window, edge, cp)
    start = align_down(backfill.start, width)
    end = min(align_up(backfill.end, width) if backfill.end is not None else edge, edge)
    if (
        stored
        and stored.range_start == start
        and stored.range_end == end
        and not stored.complete
        and stored.position is not None
    ):
        return StreamPlan(spec, width, "backfill", Window(min(stored.position, end), end), edge, stored)
    window = Window(min(start, end), end)
    fresh = Checkpoint(org_id, spec.name, width, "backfill", range_start=window.start, range_end=window.end)
    return StreamPlan(spec, width, "backfill", window, edge, fresh)
