"""The ``Sink`` protocol: where documents, checkpoints, leases and run records live.

Every sink keeps three things in one store, so a deployment needs no extra volume or database:

* **documents**, written idempotently by ``_id``: a new ``_id`` is created, a known ``_id`` whose
  ``event.hash`` changed is replaced, an unchanged one is skipped; with ``replaces``, every stored document of
  the re-read buckets that the window no longer holds is deleted (a group that vanished, or a bucket now read
  with another ``group_by`` set);
* **checkpoints** per (organization, stream, bucket width, scope), which a sink stores only after it
  acknowledged every document of the window (:meth:`Sink.write_window` does both, in that order);
* a **lease** per organization, so two runs never write the same organization at once.

Implementations: :mod:`.duckdb` (embedded default), :mod:`.ndjson` (debug/export), :mod:`.elasticsearch`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..documents import Document


@dataclass
class Checkpoint:
    """How far a stream has been collected.

    Attributes:
        org_id: organization.
        stream: catalogue stream name.
        bucket_width: ``1m``/``1h``/``1d``.
        scope: ``run`` for the scheduled cursor; ``backfill`` for a backfill's own resumable position.
        position: Unix seconds; every final bucket before it was written and acknowledged (end-exclusive).
        range_start: backfill only: the requested start.
        range_end: backfill only: the requested (exclusive) end.
        complete: backfill only: the whole range was written.
        updated_at: when this record was last written (Unix seconds).
        last_success_at: when a window last succeeded.
        last_error: the last error of this stream (cleared on success); never contains a secret.
        last_error_at: when it happened.
        dropped_group_by: optional dimensions the API refused for this stream (HTTP 400 naming them); they
            are not requested until ``dropped_at`` is a day old, then tried again.
        dropped_at: when a dimension was last refused.
        unavailable: the API's answer when the endpoint does not exist for this organization (HTTP 404); the
            stream is skipped, not failed, and tried again once ``unavailable_checked_at`` is a day old.
        unavailable_since: when it was first found unavailable.
        unavailable_checked_at: when it was last tried.
    """

    org_id: str
    stream: str
    bucket_width: str
    scope: str = "run"
    position: int | None = None
    range_start: int | None = None
    range_end: int | None = None
    complete: bool = False
    updated_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    dropped_group_by: list[str] | None = None
    dropped_at: float | None = None
    unavailable: str | None = None
    unavailable_since: float | None = None
    unavailable_checked_at: float | None = None

    @property
    def key(self) -> str:
        return checkpoint_key(self.org_id, self.stream, self.bucket_width, self.scope)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def checkpoint_key(org_id: str, stream: str, bucket_width: str, scope: str = "run") -> str:
    return f"{org_id}/{stream}/{bucket_width}/{scope}"


@dataclass(frozen=True)
class BucketSet:
    """Buckets a window re-read in full: the API's answer is now the whole truth for each of them.

    Attributes:
        org_id: organization.
        stream: catalogue stream name.
        bucket_width: ``1m``/``1h``/``1d``.
        index: the data stream the stream's documents are in.
        starts: ``start_time`` of every bucket the API returned (empty buckets included).
    """

    org_id: str
    stream: str
    bucket_width: str
    index: str
    starts: frozenset[int]


@dataclass
class WriteStats:
    """What a write did, per document (``deleted``: superseded documents of re-read buckets removed)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retried: int = 0
    deleted: int = 0
    ids_created: list[str] = field(default_factory=list, repr=False)
    ids_updated: list[str] = field(default_factory=list, repr=False)

    def add(self, other: WriteStats) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.retried += other.retried
        self.deleted += other.deleted

    @property
    def written(self) -> int:
        return self.created + self.updated


@dataclass
class Lease:
    """Who may write an organization, until when."""

    org_id: str
    holder: str
    expires_at: float


@runtime_checkable
class Sink(Protocol):
    """A destination for documents, checkpoints, leases and run records."""

    #: a short description for logs, never containing credentials (``duckdb:usage.duckdb``)
    description: str

    def open(self) -> None:
        """Connect / create files and tables. Idempotent."""

    def close(self) -> None:
        """Flush and release resources."""

    def write_window(
        self, docs: Sequence[Document], checkpoint: Checkpoint | None, replaces: BucketSet | None = None
    ) -> WriteStats:
        """Write one window's documents idempotently, then store ``checkpoint``.

        ``checkpoint`` is stored only if every document was acknowledged; a sink that can, does both
        in one transaction. With ``replaces``, stored documents of those buckets (same organization, stream and
        width) whose ``_id`` is not in ``docs`` are deleted first, in the same write.

        Raises:
            SinkError: some document was not acknowledged; ``errors`` names each one (``_id``, reason).
                The checkpoint was not stored.
        """

    def load_checkpoint(self, org_id: str, stream: str, bucket_width: str, scope: str = "run") -> Checkpoint | None:
        """The stored checkpoint, or ``None``."""

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint without documents (errors, empty windows)."""

    def list_checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint."""

    def acquire_lease(self, org_id: str, holder: str, ttl: float, now: float) -> Lease:
        """Take or renew the organization's lease.

        Raises:
            LeaseHeldError: another holder's lease has not expired.
        """

    def release_lease(self, org_id: str, holder: str) -> None:
        """Give the lease back if ``holder`` still has it."""

    def record_run(self, run: dict[str, Any]) -> None:
        """Store one run document (one stream, one cycle)."""

    def list_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest run documents first."""

    def iter_documents(
        self, stream: str | None = None, *, start: int | None = None, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every current document as ``{"_id", "_index", "_source"}`` (one per ``_id``, latest wins).

        Args:
            stream: only this stream's documents (``event.dataset`` ``openai.<stream>``).
            start: only documents whose ``@timestamp`` is at or after this (Unix seconds).
            end: only documents whose ``@timestamp`` is before this (Unix seconds).

        Documents are read as they are yielded, a page at a time: what a reader holds does not grow with the
        store, only with what it keeps (:mod:`usage_collector.reconcile` reads one day at a time).
        """

    def retention(self) -> str | None:
        """How the store expires old data, for ``status`` (``None``: it keeps everything, a file sink)."""
