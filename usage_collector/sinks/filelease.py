"""A lease for file-based sinks: a JSON file beside the sink, updated under an exclusive ``flock``.

Elasticsearch keeps its lease in the state index; DuckDB and NDJSON keep it here, so a second process
learns who holds the organization, until when, before it opens the database file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LeaseHeldError
from .base import Lease


class FileLease:
    """Leases per organization in ``path`` (``<sink file>.lease``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 1 << 20)
            try:
                data: dict[str, Any] = json.loads(raw) if raw.strip() else {}
            except ValueError:
                data = {}
            yield data
            payload = json.dumps(data, sort_keys=True).encode()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the flock

    def acquire(self, org_id: str, holder: str, ttl: float, now: float) -> Lease:
        with self._locked() as data:
            cur = data.get(org_id)
            if (
                cur
                and cur.get("holder") != holder
                and float(cur.get("expires_at", 0)) > now
                and not _dead_local_holder(str(cur.get("holder")))
            ):
                raise LeaseHeldError(
                    f"organization {org_id!r} is being collected by {cur['holder']} "
                    f"(lease until {_iso(float(cur['expires_at']))})",
                    holder=str(cur["holder"]),
                    expires_at=float(cur["expires_at"]),
                )
            data[org_id] = {"holder": holder, "expires_at": now + ttl}
            return Lease(org_id, holder, now + ttl)

    def release(self, org_id: str, holder: str) -> None:
        if not self.path.exists():
            return
        with self._locked() as data:
            if data.get(org_id, {}).get("holder") == holder:
                del data[org_id]


class FileLeaseMixin:
    """``acquire_lease``/``release_lease`` of the Sink protocol for sinks that keep a :class:`FileLease`."""

    _lease: FileLease

    def acquire_lease(self, org_id: str, holder: str, ttl: float, now: float) -> Lease:
        return self._lease.acquire(org_id, holder, ttl, now)

    def release_lease(self, org_id: str, holder: str) -> None:
        self._lease.release(org_id, holder)


def _dead_local_holder(holder: str) -> bool:
    """``host:pid:suffix`` on this host whose process is gone (a run killed with ``kill -9``)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _iso(ts: float) -> str:
    from ..clock import iso

    return iso(ts)
