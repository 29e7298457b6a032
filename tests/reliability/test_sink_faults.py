"""Sink faults: a full disk under DuckDB and NDJSON. Nothing is lost after recovery, and the error names
the sink file and what failed.

Two ways to fill the disk, since a tiny filesystem cannot be mounted here:

* **real I/O, as a subprocess**: the collector runs with ``RLIMIT_FSIZE`` below the size the sink needs, so
  the kernel refuses the write that would pass it (``EFBIG``, "File too large"; Python ignores ``SIGXFSZ``).
  DuckDB and NDJSON hit a genuine failing ``write(2)`` in their own I/O paths, partial writes included;
  the rerun without the limit must repair whatever was left and reach the exact truth.
* **in process**: ``duckdb.IOException("No space left on device")`` from the connection in the middle of a
  window, and ``OSError(ENOSPC)`` after a partial append for NDJSON, so the disk can also be freed again
  while the run goes on (space freed by log rotation, a deleted temporary file, ...).
"""

from __future__ import annotations

import errno
import pathlib
import re
import resource
from typing import Any

import orjson
import pytest

from tests.helpers import make_settings
from tests.reliability.helpers import (
    ALL,
    DAY,
    assert_checkpoints_never_pass_unwritten_data,
    assert_exact,
    assert_no_canary,
    backfill_args,
    cli,
    cli_env,
    describe,
    open_sink,
    outputs,
    past_org,
    plain_lines,
)
from tests.reliability.matrix import MATRIX
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

#: Full sizes for this organization are about 5.5 MB (DuckDB, at concurrency 1) and 8.6 MB (NDJSON).
FILE_LIMIT = {"duckdb": 3_000_000, "ndjson": 4_000_000}


@pytest.fixture(scope="module")
def org():
    return past_org(seed=303, days=8)


# --- real I/O: the kernel refuses the write ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_a_write_refused_by_the_kernel_fails_the_stream_and_the_rerun_repairs_to_the_truth(kind, org, url, tmp_path):
    path = tmp_path / f"u.{kind}"
    args = backfill_args(org, f"{kind}:{path}", log_format="json")
    env = cli_env(url, concurrency=1)
    limit = FILE_LIMIT[kind]

    def small_disk() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with MATRIX.run(f"sink: {kind} write refused by the kernel (EFBIG)", "subprocess"):
        proc = cli(args, env, preexec_fn=small_disk)
        assert proc.returncode == 1, describe(proc)
        lines = plain_lines(proc.stderr)
        failed_lines = [line for line in lines if line.startswith("  default/")]
        # streams that failed with the very same message share a line: "default/2 streams (embeddings, moderations)"
        failed = sum(
            int(m.group(1)) if (m := re.match(r"  default/(\d+) streams \(", line)) else 1 for line in failed_lines
        )
        assert lines[0] == f"{failed} stream(s) failed:", describe(proc)
        assert 0 < failed < len(ALL), "the limit should fail some streams, not all or none"
        for line in failed_lines:
            assert f"SinkError: {path}" in line, line  # names the file ...
        assert "File too large" in failed_lines[0], failed_lines[0]  # ... and what the kernel said
        with open_sink(kind, path) as sink:
            positions = assert_checkpoints_never_pass_unwritten_data(sink, org)
        assert sum(p == org.end for p in positions.values()) == len(ALL) - failed, positions

        rerun = cli(args, env)  # space again
        assert rerun.returncode == 0, describe(rerun)
        with open_sink(kind, path) as sink:
            assert_exact(sink, org)
        if kind == "ndjson":
            size = path.stat().st_size
            again = cli(args, env)
            assert again.returncode == 0 and path.stat().st_size == size, "a rerun after completion appended"
    assert_no_canary(f"sink {kind} EFBIG", outputs(proc, rerun), [tmp_path])


# --- DuckDB: "No space left on device" from the connection ----------------------------------------------------
class _FullDisk:
    """Wraps a DuckDB connection: from the ``fail_at``-th document INSERT on, every write statement raises
    ``duckdb.IOException`` as DuckDB does on ENOSPC, until :meth:`free`."""

    WRITES = ("INSERT", "DELETE", "UPDATE", "COMMIT")

    def __init__(self, con: Any, fail_at: int, transient: bool = False) -> None:
        self._con, self._fail_at, self._transient = con, fail_at, transient
        self.inserts = 0
        self.full = False
        self.raised = 0

    def free(self) -> None:
        self.full = False
        self._fail_at = 10**9

    def execute(self, sql: str, *args: Any) -> Any:
        import duckdb

        if sql.startswith("INSERT INTO documents"):
            self.inserts += 1
            if self.inserts == self._fail_at:
                self.full = True
        if self.full and sql.lstrip().upper().startswith(self.WRITES):
            self.raised += 1
            if self._transient:
                self.free()
            raise duckdb.IOException('Could not write file "u.duckdb.wal": No space left on device')
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@pytest.mark.parametrize("transient", [False, True], ids=["stays-full", "freed-at-once"])
def test_duckdb_out_of_space_mid_window_loses_nothing(transient, org, url, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    settings = make_settings(openai_base_url=url)
    sink = DuckDBSink(tmp_path / "u.duckdb")
    disk = _FullDisk(sink._db(), fail_at=9, transient=transient)  # in the middle of a window, after others
    sink._con = disk
    with MATRIX.run("sink: duckdb out of space mid-window", "freed at once" if transient else "stays full"):
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert disk.raised, "the disk never filled"
        failed = {r.stream: r.error or "" for r in result.failed}
        assert failed and (len(failed) == 1 if transient else len(failed) > 1), failed
        for error in failed.values():
            assert "u.duckdb" in error and "No space left on device" in error and "not written" in error, error
        disk.free()
        assert_checkpoints_never_pass_unwritten_data(sink, org)
        rerun = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert not rerun.failed, [r.error for r in rerun.failed]
        assert_exact(sink, org)
    assert_no_canary("sink duckdb ENOSPC", list(failed.values()), [tmp_path])
    sink.close()


# --- NDJSON: ENOSPC on append -----------------------------------------------------------------------------------
class _Disk:
    """``Path.open`` for files under ``root`` opened for writing: at most ``free_bytes`` more bytes land, the
    write that does not fit lands partly and raises ``OSError(ENOSPC)`` (as write(2) on a full disk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: pathlib.Path, free_bytes: int) -> None:
        self.root, self.free_bytes, self.refused = root, free_bytes, 0
        real_open = pathlib.Path.open
        disk = self

        def open_(path: pathlib.Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            fh = real_open(path, mode, *args, **kwargs)
            if path.parent == disk.root and any(c in mode for c in "aw+"):
                return _LimitedFile(fh, disk)
            return fh

        monkeypatch.setattr(pathlib.Path, "open", open_)


class _LimitedFile:
    def __init__(self, fh: Any, disk: _Disk) -> None:
        self._fh, self._disk = fh, disk

    def write(self, data: Any) -> int:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(raw) <= self._disk.free_bytes:
            self._disk.free_bytes -= len(raw)
            return int(self._fh.write(data))
        fit = self._disk.free_bytes
        if fit:
            self._fh.write(raw[:fit] if isinstance(data, bytes) else raw[:fit].decode(errors="ignore"))
            self._fh.flush()
        self._disk.free_bytes = 0
        self._disk.refused += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return int(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> Any:  # seek, read, truncate, ... (the tail repair)
        return getattr(self._fh, name)

    def __enter__(self) -> _LimitedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def _ndjson_backfill(org, url, sink, clock):
    return Collector(make_settings(openai_base_url=url), sink, clock=clock).backfill(BackfillRange(org.start, org.end))


def test_ndjson_disk_full_on_append_loses_nothing_after_space_is_freed(org, url, tmp_path, monkeypatch):
    """The disk fills in the middle of a window's lines and stays full for the rest of the run; the next run
    (after space was freed) cuts the partial line and reaches the truth."""
    clock = FakeClock(org.end + 3 * DAY)
    path = tmp_path / "u.ndjson"
    sink = NdjsonSink(path)
    with MATRIX.run("sink: ndjson ENOSPC on append", "stays full, next run"):
        disk = _Disk(monkeypatch, tmp_path, free_bytes=4_500_000)
        result = _ndjson_backfill(org, url, sink, clock)
        assert disk.refused
        failed = {r.stream: r.error or "" for r in result.failed}
        assert 0 < len(failed) < len(ALL), failed
        for error in failed.values():
            assert str(path) in error and "No space left on device" in error, error
        monkeypatch.undo()  # space freed; a new process opens the file
        with open_sink("ndjson", path) as fresh:
            assert_checkpoints_never_pass_unwritten_data(fresh, org)
            rerun = _ndjson_backfill(org, url, fresh, clock)
            assert not rerun.failed, [r.error for r in rerun.failed]
            assert_exact(fresh, org)
        # every line of the file parses: reads go through the index, which would not notice a glued line
        assert all(orjson.loads(line) for line in path.read_bytes().splitlines())
    assert_no_canary("sink ndjson ENOSPC", list(failed.values()), [tmp_path])


def test_ndjson_disk_full_on_the_state_file_loses_nothing(org, url, tmp_path, monkeypatch):
    """The lines of a window are fsynced, then the checkpoint cannot be stored: the window is read again
    and its documents, already there, are not appended twice."""
    clock = FakeClock(org.end + 3 * DAY)
    path = tmp_path / "u.ndjson"
    sink = NdjsonSink(path)
    with MATRIX.run("sink: ndjson ENOSPC on the state file", "checkpoint not stored"):
        _Disk(monkeypatch, tmp_path, free_bytes=10**9)
        real_flush = NdjsonSink._flush_state
        calls = {"n": 0}

        def flush_state(self: NdjsonSink) -> None:
            calls["n"] += 1
            if 3 <= calls["n"] <= 5:  # three state writes fail (checkpoints, an error record, a run record)
                from usage_collector.errors import SinkError

                raise SinkError(f"{self.state_path}: cannot write state: No space left on device")
            real_flush(self)

        monkeypatch.setattr(NdjsonSink, "_flush_state", flush_state)
        result = _ndjson_backfill(org, url, sink, clock)
        failed = {r.stream: r.error or "" for r in result.failed}
        assert failed and all(
            "state.json: cannot write state: No space left on device" in e for e in failed.values()
        ), failed
        lines = path.read_bytes().count(b"\n")
        monkeypatch.undo()
        with open_sink("ndjson", path) as fresh:
            assert_checkpoints_never_pass_unwritten_data(fresh, org)
            rerun = _ndjson_backfill(org, url, fresh, clock)
            assert not rerun.failed
            assert sum(r.stats.created for r in rerun.streams) == 0, "documents written twice"
            assert path.read_bytes().count(b"\n") == lines
            assert_exact(fresh, org)


def test_ndjson_a_failed_append_does_not_corrupt_the_file_when_space_comes_back(org, url, tmp_path, monkeypatch):
    """Regression (found by this matrix, fixed in 3d5c20f): an append that failed part-way (ENOSPC, EFBIG,
    EIO) left a cut line at the end of the file; when the next window (another stream, same run) appended
    successfully, its first line was glued to the cut one, a line in the middle of the file was no longer
    JSON, and every later ``open()`` died with ``JSONDecodeError``: the sink was unusable until edited by
    hand. The append is now truncated back on failure."""
    clock = FakeClock(org.end + 3 * DAY)
    path = tmp_path / "u.ndjson"
    sink = NdjsonSink(path)
    with MATRIX.run("sink: ndjson ENOSPC on append", "freed during the run"):
        disk = _Disk(monkeypatch, tmp_path, free_bytes=4_500_000)
        real_write = _LimitedFile.write

        def write(self: _LimitedFile, data: Any) -> int:
            try:
                return real_write(self, data)
            except OSError:
                disk.free_bytes = 10**9  # a moment later another process frees space
                raise

        monkeypatch.setattr(_LimitedFile, "write", write)
        result = _ndjson_backfill(org, url, sink, clock)
        assert disk.refused == 1 and len(result.failed) == 1, [r.error for r in result.failed]
        monkeypatch.undo()
        with open_sink("ndjson", path) as fresh:
            fresh.open()  # the next run opens the file: must not raise
            rerun = _ndjson_backfill(org, url, fresh, clock)
            assert not rerun.failed, [r.error for r in rerun.failed]
            assert_exact(fresh, org)
        # every line of the file parses: reads go through the index, which would not notice a glued line
        assert all(orjson.loads(line) for line in path.read_bytes().splitlines())
