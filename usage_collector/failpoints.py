"""Failpoints: named places where a test can make the process die with SIGKILL.

Set ``USAGE_COLLECTOR_FAILPOINTS=name:N[,name:N...]`` and the N-th time the process reaches ``name`` it kills
itself with ``SIGKILL`` (like ``kill -9``: no cleanup, no flush). Unset, a failpoint costs one dict lookup.
The reliability matrix (``tests/reliability``) uses them to crash a backfill at exact points.

Names: ``page.parsed`` (after a page is parsed), ``window.shaped`` (documents built, nothing written),
``sink.mid_write`` (half of a window written, not committed), ``sink.before_checkpoint`` (documents durable,
checkpoint not yet stored), ``window.written`` (window and checkpoint stored), ``lease.acquired``.
"""

from __future__ import annotations

import os
import signal
import threading

_ENV = "USAGE_COLLECTOR_FAILPOINTS"
_lock = threading.Lock()
_targets: dict[str, int] = {}
_hits: dict[str, int] = {}


def _load() -> None:
    spec = os.environ.get(_ENV, "")
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        _targets[name] = int(count or "1")


_load()


def failpoint(name: str) -> None:
    """Die with SIGKILL if ``name`` is armed and this is its N-th hit."""
    if not _targets or name not in _targets:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == _targets[name]:
            os.kill(os.getpid(), signal.SIGKILL)
