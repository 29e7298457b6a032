"""The memory settings P4 relies on (``bench/p4_memory.py``): DuckDB's connection, glibc's allocator."""

from __future__ import annotations

import sys

import pytest

from usage_collector.memory import tune_malloc
from usage_collector.sinks.duckdb import MEMORY_LIMIT, DuckDBSink


def test_the_duckdb_connection_has_the_memory_settings(tmp_path):
    sink = DuckDBSink(tmp_path / "m.duckdb")
    try:
        con = sink._db()
        got = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', 'memory_limit', "
                "'allocator_flush_threshold', 'checkpoint_threshold')"
            ).fetchall()
        )
    finally:
        sink.close()
    assert got["threads"] == "1"
    # DuckDB shows sizes in its own units: 16 MB = 15.2 MiB
    assert MEMORY_LIMIT == "16MB" and got["memory_limit"] == "15.2 MiB", got
    assert got["allocator_flush_threshold"].replace(" ", "") in ("8MB", "8000000B", "7.6MiB"), got
    # 64 MB of WAL between checkpoints, not 16: fewer compressions of the last row group (bench/p8_cpu.py)
    assert got["checkpoint_threshold"].replace(" ", "") in ("64MB", "64000000B", "61.0MiB"), got


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_malloc_is_taken_once_and_can_be_called_again():
    assert tune_malloc() in (True, False)  # False: not glibc (musl)
    assert tune_malloc() is True or not sys.platform.startswith("linux")


def test_trim_malloc_after_a_window_is_harmless():
    from usage_collector.memory import trim_malloc

    tune_malloc()
    trim_malloc()
    trim_malloc()
