"""A window that needs more than the DuckDB sink's pool is written again, once, with a larger one
(``DuckDBSink.write_window``, ``RETRY_MEMORY_LIMIT``), and the pool is set back afterwards."""

from __future__ import annotations

from usage_collector.documents import Document
from usage_collector.sinks.duckdb import DuckDBSink

T0 = 1_730_419_200  # 2024-11-01T00:00Z


def _docs(n: int) -> list[Document]:
    return [
        Document(
            id=f"id{i:05d}",
            index="metrics-openai.completions-default",
            stream="completions",
            timestamp=T0 + 3600 * (i % 24),
            hash=f"h{i}",
            source={"@timestamp": "2024-11-01T00:00:00Z", "event": {"hash": f"h{i}"}, "pad": f"{i}" * 2000},
        )
        for i in range(n)
    ]


def _limit(sink: DuckDBSink) -> str:
    return str(sink.query("SELECT current_setting('memory_limit')")[0][0])


def test_a_window_larger_than_the_pool_is_written_with_a_larger_one_then_the_pool_is_set_back(tmp_path):
    sink = DuckDBSink(tmp_path / "m.duckdb", memory_limit="1MB")
    try:
        before = _limit(sink)
        stats = sink.write_window(_docs(1000), None)
        assert stats.created == 1000
        assert sink.query("SELECT count(*) FROM documents") == [(1000,)]
        assert _limit(sink) == before
    finally:
        sink.close()
