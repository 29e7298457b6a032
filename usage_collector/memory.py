"""Process memory: glibc's allocator set so that a long backfill's peak RSS follows what is in use.

With its defaults, glibc malloc keeps memory the collector has freed: each thread that allocates gets an arena of
its own (up to 8 per core; four streams, the names reader, the HTTP client's and the sinks' threads), each
fragmenting on its own, and after a large block (a page's body) is freed the mmap threshold rises to its size, so
later bodies come from the heap and leave holes in it. :func:`tune_malloc` caps the arenas at two and fixes the
mmap and trim thresholds at 128 KiB (glibc's initial values, no longer raised): ``bench/p4_memory.py``, NDJSON
sink, 365-day peak RSS 79-82 -> 74 MB (the 1-day one unchanged, 54 MB). :func:`trim_malloc`, after each window,
returns the free pages of the heaps: 72-74 -> 70 MB. Elsewhere (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["trim_malloc", "tune_malloc"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: (parameter, value) set by :func:`tune_malloc`
SETTINGS = ((_M_ARENA_MAX, 2), (_M_MMAP_THRESHOLD, 128 * 1024), (_M_TRIM_THRESHOLD, 128 * 1024))

_done = False
_lock = threading.Lock()
_trim: Any = None  # libc's malloc_trim, once tune_malloc found glibc


def tune_malloc() -> bool:
    """Set :data:`SETTINGS` once per process (before the collector's threads start); ``True`` if glibc took
    them. Safe to call again, and from any thread."""
    global _done, _trim
    with _lock:
        if _done:
            return True
        if not sys.platform.startswith("linux"):
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc
            return False
        _trim = getattr(libc, "malloc_trim", None)
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        ok = all(mallopt(param, value) == 1 for param, value in SETTINGS)
        if not ok:
            log.debug("mallopt refused a setting; the allocator keeps its defaults for it")
        _done = True
        return ok


def trim_malloc() -> None:
    """Hand the free pages of glibc's heaps back to the system (``malloc_trim(0)``), after a window: what a window
    freed is otherwise kept by whichever arena it came from. Nothing without glibc or before :func:`tune_malloc`."""
    if _trim is not None:
        _trim(0)
