"""Failpoints: named places where a test can make the process die with SIGKILL.

Set ``USAGE_COLLECTOR_FAILPOINTS=name:N[,name:N...]`` and the N-th time the process reaches ``name`` it kills
itself with ``SIGKILL`` (like ``kill -9``: no cleanup, no flush). Unset, a failpoint costs one dict lookup.
The reliability matrix (``tests/reliability``) uses them to crash a backfill at exact points.

They sit only at the collector's stage boundaries, never inside a sink (sinks write plainly; what a crash
inside a write leaves, a torn NDJSON line or a rolled-back DuckDB transaction, is covered by unit tests of the
sinks' own recovery). Names, in the order of the data path: ``lease.acquired``, ``page.parsed`` (after a page
is parsed), ``window.shaped`` (documents built, nothing written), ``window.written`` (the window's documents
and its checkpoint acknowledged by the sink).
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
