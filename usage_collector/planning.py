"""Plan which buckets to read: UTC-aligned windows, complete buckets only, a restatement tail.

Cursor semantics are named, not hidden (STYLE.md principle 5):

* ranges are start-inclusive, end-exclusive (ref ``openai-usage-api.md`` §1.1);
* a bucket is **final** when ``end_time <= now - finalization_grace``; only final buckets are read, so the
  open bucket is never written (ref §4.9; Elastic's ``finalization_grace``);
* every run re-reads a trailing **restatement window** before the final edge and writes what changed,
  because OpenAI revises recent buckets (ref §4.9);
* a window holds at most ``limit`` buckets, the API maximum for the width (1440 / 168 / 31; costs 180),
  so one window is normally one request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .catalogue import WIDTH_SECONDS


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in Unix seconds, aligned to the bucket width."""

    start: int
    end: int

    def __str__(self) -> str:
        from .clock import iso

        return f"[{iso(self.start)}, {iso(self.end)})"


def align_down(ts: float, width: str) -> int:
    """The start of the UTC-aligned bucket of width ``width`` holding ``ts``."""
    w = WIDTH_SECONDS[width]
    t = int(ts // 1)
    return t - t % w


def align_up(ts: float, width: str) -> int:
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
    step = WIDTH_SECONDS[width] * limit
    span = max(0, window.end - align_down(window.start, width))
    return -(-span // step)
