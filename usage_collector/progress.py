"""Progress for long work: a rich progress bar with ETA on a TTY, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .planning import Window
from .sinks.base import WriteStats

log = logging.getLogger("usage_collector.progress")


@contextmanager
def progress_reporter(total_windows: int, *, tty: bool | None = None) -> Iterator[Any]:
    """Yield a callback ``(org, stream, window, stats)`` that advances a bar or logs a line."""
    if tty is None:
        tty = sys.stderr.isatty()
    if not tty:
        done = 0

        def plain(org: str, stream: str, window: Window, stats: WriteStats) -> None:
            nonlocal done
            done += 1
            log.info("progress %d/%d windows: %s %s %s", done, total_windows, org, stream, window)

        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("backfill", total=total_windows)

        def advance(org: str, stream: str, window: Window, stats: WriteStats) -> None:
            bar.update(task, advance=1, description=f"{stream}")

        yield advance
