"""The ``Sink`` contract (``usage_collector/sinks/base.py``), checked for every sink: DuckDB, NDJSON and
Elasticsearch (``tests/es_server.py``, or a live cluster when ``ELASTICSEARCH_URL`` is set).

Sink-specific behaviour (NDJSON tail repair, DuckDB views and transactions, Elasticsearch backing indices,
retries and compatibility headers) is tested in ``test_sinks.py`` and ``test_es_sink.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import T0, cp, current, image_doc
from tests.helpers import docs as embeddings_docs
from usage_collector.documents import Document
from usage_collector.errors import LeaseHeldError
from usage_collector.sinks.base import Checkpoint, Sink


@dataclass
class Store:
    """One sink's store: ``sink`` is open on it; :meth:`another` opens a second instance (another process)."""

    kind: str
    namespace: str
    sink: Sink
    make: Callable[[], Sink]

    def another(self) -> Sink:
        other = self.make()
        other.open()
        return other

    def docs(self, tokens: tuple[int, ...] = (10, 20, 30), start: int = T0) -> list[Document]:
        return embeddings_docs(tokens, start, namespace=self.namespace)


@pytest.fixture(params=["duckdb", "ndjson", pytest.param("elasticsearch", marks=pytest.mark.live_es)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "elasticsearch":
        es = request.getfixturevalue("es")
        namespace, make = es.namespace, es.sink
    else:
        from usage_collector.sinks.duckdb import DuckDBSink
        from usage_collector.sinks.ndjson import NdjsonSink

        namespace = "default"
        if request.param == "duckdb":
            make = lambda: DuckDBSink(tmp_path / "u.duckdb")  # noqa: E731
        else:
            make = lambda: NdjsonSink(tmp_path / "u.ndjson")  # noqa: E731
    opened: list[Sink] = []

    def make_and_track() -> Sink:
        opened.append(make())
        return opened[-1]

    sink = make_and_track()
    sink.open()
    try:
        yield Store(request.param, namespace, sink, make_and_track)
    finally:
        for s in opened:
            s.close()


# --- write_window ----------------------------------------------------------------------------------------------
def test_a_window_is_created_then_unchanged_then_only_the_revised_document_is_updated(store):
    sink = store.sink
    first = sink.write_window(store.docs(), cp())
    assert (first.created, first.updated, first.unchanged, first.written) == (3, 0, 0, 3)
    again = sink.write_window(store.docs(), cp())
    assert (again.created, again.updated, again.unchanged, again.written) == (0, 0, 3, 0)
    revised = sink.write_window(store.docs((10, 25, 30)), cp())
    assert (revised.created, revised.updated, revised.unchanged, revised.written) == (0, 1, 2, 1)


def test_revised_values_replace_the_old_ones(store):
    sink = store.sink
    ids = [d.id for d in store.docs()]
    sink.write_window(store.docs(), cp())
    assert current(sink) == dict(zip(ids, [10, 20, 30], strict=True))
    sink.write_window(store.docs((10, 25, 31)), cp())
    assert current(sink) == dict(zip(ids, [10, 25, 31], strict=True))


def test_documents_survive_a_reopen_and_a_rerun_writes_nothing(store):
    store.sink.write_window(store.docs(), cp())
    store.sink.close()
    reopened = store.another()
    rerun = reopened.write_window(store.docs(), cp())
    assert (rerun.created, rerun.updated, rerun.unchanged) == (0, 0, 3)
    assert sorted(current(reopened).values()) == [10, 20, 30]
    assert reopened.load_checkpoint("org", "embeddings", "1h") == cp()


def test_the_checkpoint_is_stored_with_the_window(store):
    sink = store.sink
    assert sink.load_checkpoint("org", "embeddings", "1h") is None
    sink.write_window(store.docs(), cp(T0 + 3600))
    assert sink.load_checkpoint("org", "embeddings", "1h") == cp(T0 + 3600)
    sink.write_window(store.docs(start=T0 + 3600), cp(T0 + 7200))
    assert sink.load_checkpoint("org", "embeddings", "1h") == cp(T0 + 7200)
    assert store.another().load_checkpoint("org", "embeddings", "1h") == cp(T0 + 7200)


def test_a_window_without_a_checkpoint_stores_none(store):
    stats = store.sink.write_window(store.docs(), None)
    assert stats.created == 3
    assert store.sink.load_checkpoint("org", "embeddings", "1h") is None
    assert store.sink.list_checkpoints() == []


def test_a_window_of_zero_documents_still_stores_its_checkpoint(store):
    stats = store.sink.write_window([], cp(T0 + 7200))
    assert (stats.created, stats.updated, stats.unchanged) == (0, 0, 0)
    assert store.sink.load_checkpoint("org", "embeddings", "1h") == cp(T0 + 7200)
    assert current(store.sink) == {}


# --- checkpoints -------------------------------------------------------------------------------------------------
def test_checkpoints_round_trip_with_every_field_for_both_scopes(store):
    run = Checkpoint(
        "org",
        "costs",
        "1d",
        scope="run",
        position=T0,
        updated_at=T0 + 10.5,
        last_success_at=T0 + 9.25,
        last_error="HTTP 500",
        last_error_at=T0 + 10.5,
    )
    backfill = Checkpoint(
        "org",
        "costs",
        "1d",
        scope="backfill",
        position=T0 + 86400,
        range_start=T0 - 86400,
        range_end=T0 + 2 * 86400,
        complete=True,
        updated_at=T0 + 11.0,
        last_success_at=T0 + 11.0,
    )
    store.sink.save_checkpoint(run)
    store.sink.save_checkpoint(backfill)
    for sink in (store.sink, store.another()):
        assert sink.load_checkpoint("org", "costs", "1d") == run
        assert sink.load_checkpoint("org", "costs", "1d", "run") == run
        assert sink.load_checkpoint("org", "costs", "1d", "backfill") == backfill
        assert sink.load_checkpoint("org", "costs", "1h") is None
        assert sink.load_checkpoint("other-org", "costs", "1d") is None


def test_a_saved_checkpoint_replaces_the_previous_one(store):
    store.sink.save_checkpoint(Checkpoint("org", "costs", "1d", position=T0, last_error="HTTP 500"))
    store.sink.save_checkpoint(Checkpoint("org", "costs", "1d", position=T0 + 86400))
    assert store.sink.load_checkpoint("org", "costs", "1d") == Checkpoint("org", "costs", "1d", position=T0 + 86400)
    assert len(store.sink.list_checkpoints()) == 1


def test_list_checkpoints_gives_every_stored_checkpoint(store):
    sink = store.sink
    assert sink.list_checkpoints() == []
    costs = Checkpoint("org", "costs", "1d", position=T0, last_error="HTTP 500")
    costs_backfill = Checkpoint("org", "costs", "1d", scope="backfill", position=T0, range_start=0, range_end=T0)
    sink.save_checkpoint(costs)
    sink.save_checkpoint(costs_backfill)
    sink.write_window(store.docs(), cp())
    listed = sorted(sink.list_checkpoints(), key=lambda c: c.key)
    assert listed == [costs_backfill, costs, cp()]
    assert [c.key for c in listed] == ["org/costs/1d/backfill", "org/costs/1d/run", "org/embeddings/1h/run"]


# --- leases --------------------------------------------------------------------------------------------------
def test_a_lease_is_exclusive_until_it_expires(store):
    lease = store.sink.acquire_lease("org", "run-a", 60, now=1000)
    assert (lease.org_id, lease.holder, lease.expires_at) == ("org", "run-a", 1060)
    other = store.another()
    with pytest.raises(LeaseHeldError, match=r"run-a \(lease until 1970-01-01T00:17:40Z\)") as info:
        other.acquire_lease("org", "run-b", 60, now=1059)
    assert (info.value.holder, info.value.expires_at) == ("run-a", 1060)
    taken = other.acquire_lease("org", "run-b", 60, now=1061)  # expired: taken over
    assert (taken.holder, taken.expires_at) == ("run-b", 1121)
    with pytest.raises(LeaseHeldError) as info:
        store.sink.acquire_lease("org", "run-a", 60, now=1062)
    assert (info.value.holder, info.value.expires_at) == ("run-b", 1121)


def test_the_holder_renews_its_lease(store):
    store.sink.acquire_lease("org", "run-a", 60, now=1000)
    renewed = store.sink.acquire_lease("org", "run-a", 60, now=1030)
    assert (renewed.holder, renewed.expires_at) == ("run-a", 1090)
    with pytest.raises(LeaseHeldError) as info:
        store.another().acquire_lease("org", "run-b", 60, now=1089)  # would have expired at 1060 without renewal
    assert info.value.expires_at == 1090


def test_only_the_holder_releases_a_lease(store):
    other = store.another()
    store.sink.acquire_lease("org", "run-a", 60, now=1000)
    other.release_lease("org", "run-b")  # not the holder: no effect
    with pytest.raises(LeaseHeldError):
        other.acquire_lease("org", "run-b", 60, now=1001)
    store.sink.release_lease("org", "run-a")
    assert other.acquire_lease("org", "run-b", 60, now=1002).holder == "run-b"
    store.sink.release_lease("org", "run-a")  # not the holder any more: no effect
    with pytest.raises(LeaseHeldError) as info:
        store.sink.acquire_lease("org", "run-a", 60, now=1003)
    assert info.value.holder == "run-b"


def test_leases_are_per_organization(store):
    store.sink.acquire_lease("org", "run-a", 60, now=1000)
    lease = store.another().acquire_lease("other-org", "run-b", 60, now=1001)
    assert (lease.org_id, lease.holder) == ("other-org", "run-b")


# --- runs ----------------------------------------------------------------------------------------------------
def test_run_documents_are_listed_newest_first(store):
    sink = store.sink
    assert sink.list_runs() == []
    runs = [
        {"@timestamp": f"2025-10-15T0{h}:00:00Z", "usage_collector": {"stream": s}}
        for h, s in enumerate(["costs", "images", "embeddings"])
    ]
    for run in runs:
        sink.record_run(run)
    assert sink.list_runs() == runs[::-1]
    assert sink.list_runs(limit=2) == [runs[2], runs[1]]
    assert store.another().list_runs(limit=1) == [runs[2]]


# --- iter_documents ------------------------------------------------------------------------------------------
def test_iter_documents_gives_one_document_per_id_the_latest_wins(store):
    sink = store.sink
    sink.write_window(store.docs(), cp())
    sink.write_window(store.docs((11, 20, 30)), cp())
    sink.write_window(store.docs((12, 20, 30)), cp())
    got = list(sink.iter_documents())
    assert sorted(d["_id"] for d in got) == sorted(d.id for d in store.docs())
    by_id = {d["_id"]: d for d in got}
    latest = store.docs((12, 20, 30))
    assert [by_id[d.id]["_source"] for d in latest] == [d.source for d in latest]
    assert {d["_index"] for d in got} == {latest[0].index}


def test_iter_documents_filters_by_stream(store):
    sink = store.sink
    image = image_doc(store.namespace, images=2)
    sink.write_window(store.docs(), cp())
    sink.write_window([image], None)
    assert [d["_id"] for d in sink.iter_documents("images")] == [image.id]
    assert sorted(d["_id"] for d in sink.iter_documents("embeddings")) == sorted(d.id for d in store.docs())
    assert sorted(d["_id"] for d in sink.iter_documents()) == sorted([image.id] + [d.id for d in store.docs()])
    assert list(sink.iter_documents("costs")) == []


def test_iter_documents_reads_a_time_range_start_inclusive_end_exclusive(store):
    sink = store.sink
    image = image_doc(store.namespace)  # at T0
    hours = [store.docs(start=T0 + h * 3600) for h in range(3)]
    for h, window in enumerate(hours):
        sink.write_window(window, cp(T0 + (h + 1) * 3600))
    sink.write_window([image], None)

    def ids(stream=None, **bounds):
        return sorted(d["_id"] for d in sink.iter_documents(stream, **bounds))

    assert ids("embeddings", start=T0 + 3600, end=T0 + 7200) == sorted(d.id for d in hours[1])
    assert ids("embeddings", start=T0 + 3600) == sorted(d.id for d in hours[1] + hours[2])
    assert ids("embeddings", end=T0 + 3600) == sorted(d.id for d in hours[0])
    assert ids(start=T0, end=T0 + 3600) == sorted([image.id] + [d.id for d in hours[0]])
    assert ids("images", start=T0 + 1, end=T0 + 3600) == []
    assert ids(start=T0 + 3 * 3600) == []
