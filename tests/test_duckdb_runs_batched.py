"""DuckDB sink (P3): a run document goes in the sink's next commit, not a commit of its own; the file is opened in
the background once the lease is held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.test_duckdb_window_read import T0, doc
from usage_collector.sinks.base import BucketSet, Checkpoint
from usage_collector.sinks.duckdb import DuckDBSink


def _run(stream: str, at: str = "2026-12-01T09:00:00Z") -> dict[str, Any]:
    return {"@timestamp": at, "openai": {"run": {"stream": stream}}}


def _stored_runs(sink: DuckDBSink) -> list[str]:
    """The run documents committed, read past the sink (no flush)."""
    return [r[0] for r in sink._db().execute("SELECT data->>'$.openai.run.stream' FROM runs ORDER BY 1").fetchall()]


def test_a_run_document_goes_in_the_next_window_commit(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "u.duckdb")
    sink.record_run(_run("completions"))
    sink.record_run(_run("costs"))
    assert _stored_runs(sink) == []  # no commit of its own
    docs = [doc("a", T0)]
    cp = Checkpoint("o1", "completions", "1h", position=T0 + 3600)
    sink.write_window(docs, cp, BucketSet("o1", "completions", "1h", docs[0].index, frozenset({T0})))
    assert _stored_runs(sink) == ["completions", "costs"]
    sink.record_run(_run("images"))
    sink.save_checkpoint(Checkpoint("o1", "images", "1h", position=T0))
    assert _stored_runs(sink) == ["completions", "costs", "images"]
    sink.close()


def test_run_documents_are_written_by_reads_the_lease_and_close(tmp_path: Path) -> None:
    path = tmp_path / "u.duckdb"
    sink = DuckDBSink(path)
    sink.record_run(_run("completions"))
    assert [r["openai"]["run"]["stream"] for r in sink.list_runs()] == ["completions"]
    sink.record_run(_run("costs"))
    assert sink.query("SELECT count(*) FROM runs") == [(2,)]
    sink.acquire_lease("o1", "me", 60, 0)
    sink.record_run(_run("images"))
    sink.release_lease("o1", "me")
    assert _stored_runs(sink) == ["completions", "costs", "images"]
    sink.record_run(_run("moderations"))
    sink.close()
    again = DuckDBSink(path, read_only=True)
    assert sorted(r["openai"]["run"]["stream"] for r in again.list_runs()) == [
        "completions",
        "costs",
        "images",
        "moderations",
    ]
    again.close()


def test_a_window_that_fails_keeps_the_run_documents_for_the_next_commit(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "u.duckdb")
    sink.record_run(_run("completions"))
    bad = doc("a", T0)
    bad.timestamp = "not a time"  # type: ignore[assignment]  # the INSERT fails: the transaction is rolled back
    try:
        sink.write_window([bad], Checkpoint("o1", "completions", "1h", position=T0))
    except Exception:
        pass
    else:  # pragma: no cover - the test needs a failing window
        raise AssertionError("the window was written")
    assert _stored_runs(sink) == []
    sink.close()
    assert [r["openai"]["run"]["stream"] for r in DuckDBSink(tmp_path / "u.duckdb").list_runs()] == ["completions"]


def test_a_run_document_with_an_odd_timestamp_is_written_at_once(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "u.duckdb")
    sink.record_run(_run("completions", at="2026-12-01 09:00:00+00"))  # DuckDB reads it; fromisoformat does too
    sink.record_run({"@timestamp": "2026-12-01T09:00:00 UTC", "openai": {"run": {"stream": "costs"}}})
    assert "costs" in _stored_runs(sink)
    sink.close()


def test_the_lease_starts_opening_the_file(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "u.duckdb")
    assert sink._con is None
    sink.acquire_lease("o1", "me", 60, 0)
    assert sink._opener is not None
    sink._opener.join()
    assert sink._con is not None  # opened before its first use
    assert sink.load_checkpoint("o1", "completions", "1h") is None
    sink.release_lease("o1", "me")
    sink.close()
    assert sink._con is None


def test_a_file_that_cannot_be_opened_fails_at_first_use_not_in_the_background(tmp_path: Path) -> None:
    first = DuckDBSink(tmp_path / "u.duckdb")
    first.save_checkpoint(Checkpoint("o1", "completions", "1h", position=T0))  # holds the file
    second = DuckDBSink(tmp_path / "u.duckdb", memory_limit="32MB")  # another configuration: DuckDB refuses it
    second.acquire_lease("o2", "me", 60, 0)
    assert second._opener is not None
    second._opener.join()
    assert second._con is None
    first.close()
    assert second.load_checkpoint("o1", "completions", "1h") is not None  # opened now, at first use
    second.close()
