"""P8 CPU per result row (issue 18's "P7"; ``p7`` is the forecast backtest): CPU seconds per million result
rows, end to end, for each sink.

The simulator (``bench/_sim.py``, real clock) and, for Elasticsearch, the test server (``bench/_es.py``) run
in their own processes; the collector runs in this one: ``Collector.backfill`` of completions at 1m (the
densest stream) over ``--days`` days (default 5), over HTTP, from the API pages to the acknowledged checkpoint,
names off. CPU = this process's user + system time during the backfill (``time.process_time``), so neither
the simulator's nor Elasticsearch's work is counted; rows = documents created. Imports are not per-row work: what
the first backfill of a process would import is imported before timing (the sinks, DuckDB's engine, httpx's
transport ``httpcore`` with ``h11`` and ``trio`` when installed, the IDNA codec of the host name, the ``elasticsearch``
client with its bulk helpers, which the Elasticsearch sink imports at its first request: ~0.1-0.3 s of a ~1.5 s
backfill).

For scale, the same figure for bare ``orjson.loads`` + ``orjson.dumps`` of every result row of the same pages
(captured in-process from ``SimulatedAPI`` with the same seed and window: ``ceiling``), and the collector's share
of it (ceiling CPU / collector CPU, the gauge of P2 end to end). Informative: no goal was set for P8.

    python bench/p8_cpu.py [--days 5] [--sinks duckdb,ndjson,elasticsearch]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import ADMIN_KEY, PY, emit, sim_process, table

from usage_collector.catalogue import STREAMS
from usage_collector.collector import Collector
from usage_collector.config import load_settings
from usage_collector.planning import BackfillRange
from usage_collector.sinks import make_sink

DAY = 86400


def backfill(base_url: str, sink_spec: str, start: int, **kw: Any) -> tuple[float, int]:
    settings = load_settings(
        None,
        openai_admin_key=ADMIN_KEY,
        openai_base_url=base_url,
        enrich_names=False,
        spend_controls=False,
        rate_limit=1000.0,
        streams=["completions"],
        **kw,
    )
    sink = make_sink(sink_spec, settings)
    t = time.process_time()
    try:
        sink.open()
        result = Collector(settings, sink).backfill(BackfillRange(start, None, bucket_width="1m"))
    finally:
        sink.close()
    cpu = time.process_time() - t
    if result.failed:
        raise SystemExit(f"backfill failed: {[(r.stream, r.error) for r in result.failed]}")
    return cpu, sum(r.stats.created for r in result.streams)


def ceiling(days: int, start: int, end: int) -> tuple[float, int]:
    """CPU of orjson loads + dumps of every result row of the pages a 1m completions backfill reads."""
    from usage_collector.simulator import Organization, SimulatedAPI

    org = Organization(seed=7, start=time.strftime("%Y-%m-%d", time.gmtime(end - (days + 2) * DAY)), days=days + 3)
    api = SimulatedAPI(org, clock=lambda: float(end))
    spec = STREAMS["completions"]
    pages = []
    for s in range(start, end - DAY // 2, 1440 * 60):
        params = [("start_time", str(s)), ("end_time", str(min(end, s + 1440 * 60))), ("bucket_width", "1m")]
        params += [("limit", "1440")] + [("group_by[]", g) for g in spec.request_group_by]
        status, _, body = api.handle("GET", "/v1/" + spec.path, params, {"Authorization": f"Bearer {ADMIN_KEY}"})
        assert status == 200, body[:200]
        pages.append(body)
    t = time.process_time()
    rows = 0
    for _ in range(3):
        for body in pages:
            page = orjson.loads(body)
            lines = [orjson.dumps(r) for b in page["data"] for r in b["results"]]
            rows += len(lines)
    return (time.process_time() - t) / 3, rows // 3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--sinks", default="duckdb,ndjson,elasticsearch")
    args = ap.parse_args()
    kinds = args.sinks.split(",")
    # imports are not per-row work: done before timing
    import encodings.idna  # noqa: F401

    import elasticsearch.helpers  # noqa: F401  # the client the Elasticsearch sink imports at its first request
    import httpcore  # noqa: F401

    import usage_collector.elastic.sink
    import usage_collector.sinks.duckdb
    import usage_collector.sinks.ndjson

    usage_collector.sinks.duckdb.engine()

    out: list[list[Any]] = []
    results = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        base_url, _ = stack.enter_context(sim_process("--days", str(args.days + 3)))
        now = time.time()
        start = int(now // DAY * DAY - args.days * DAY)
        for kind in kinds:
            kw: dict[str, Any] = {}
            if kind == "elasticsearch":
                es = subprocess.Popen(
                    [PY, str(Path(__file__).resolve().parent / "_es.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
                stack.callback(es.wait, 30)
                stack.callback(es.stdin.close)  # type: ignore[union-attr]
                kw["elasticsearch_url"] = es.stdout.readline().decode().strip()  # type: ignore[union-attr]
                spec = "elasticsearch"
            else:
                spec = f"{kind}:{tmp}/p8.{kind}"
            cpu, rows = backfill(base_url, spec, start, **kw)
            out.append([kind, rows, cpu, cpu / rows * 1e6])
        c_cpu, c_rows = ceiling(args.days, start, int(now // 60 * 60))
    c_per = c_cpu / c_rows * 1e6
    for row in out:
        row.append(c_per / row[3])
    out.append(["ceiling: orjson loads + dumps", c_rows, c_cpu, c_per, 1.0])
    print(f"P8: completions 1m, {args.days} days, CPU seconds of this process (the collector) per million rows")
    print(table(["sink", "rows", "CPU s", "CPU s / million rows", "ceiling / ours"], out))
    for kind, _rows, _cpu, per, share in out[:-1]:
        line = f"P8 CPU per million result rows, {kind}: {per:.1f} s ({share:.1%} of the orjson ceiling's speed)"
        print(line)
        results.append({"name": f"P8 {kind}", "value": per, "goal": None, "at_most": True, "met": True, "line": line})
    emit(results)


if __name__ == "__main__":
    main()
