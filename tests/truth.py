"""Compare what a sink holds with the simulator's ground truth, exactly (to the token and the cent)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from usage_collector.catalogue import STREAMS
from usage_collector.planning import Window, split

Row = dict[str, Any]
Key = tuple[Any, ...]


def _measure(spec, src: dict[str, Any], name: str) -> Any:
    node: Any = src["openai"]["base"] if name == "num_model_requests" else src["openai"].get(spec.name, {})
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None:
        return None
    return Decimal(str(node)) if isinstance(node, float) else node


def sink_table(docs: Iterable[dict[str, Any]], stream: str, width: str) -> dict[Key, Row]:
    """``{(bucket start, dim values...): {measure: value}}`` from sink documents of one stream and width."""
    from datetime import datetime

    spec = STREAMS[stream]
    out: dict[Key, Row] = {}
    for d in docs:
        src = d["_source"]
        if src["event"]["dataset"] != f"openai.{stream}" or src["openai"]["base"]["bucket_width"] != width:
            continue
        start = int(datetime.fromisoformat(src["@timestamp"].replace("Z", "+00:00")).timestamp())
        dims = []
        for g in spec.group_by:
            node = (
                src["openai"]["base"]
                if g in ("project_id", "user_id", "api_key_id", "model")
                else src["openai"].get(stream, {})
            )
            dims.append(node.get(g))
        key = (start, *dims)
        assert key not in out, f"two documents for {key}"
        row = {}
        for m in spec.measures:
            v = _measure(spec, src, m.name)
            if v is not None:
                row[m.name] = v
        out[key] = row
    return out


def truth_table(
    org: Any, stream: str, start: int, end: int, width: str, group_by: Iterable[str] | None = None
) -> dict[Key, Row]:
    """The same shape from ``org.truth`` grouped as the collector requests by default, final values."""
    spec = STREAMS[stream]
    out: dict[Key, Row] = {}
    limit = spec.limit_max(width)
    gb = list(spec.request_group_by if group_by is None else group_by)
    for win in split(Window(start, end), width, limit):
        for b in org.truth(stream, win.start, win.end, width, gb):
            for r in b["results"]:
                key = (b["start_time"], *(r.get(g) for g in spec.group_by))
                row = {}
                for m in spec.measures:
                    v = (r.get("amount") or {}).get("value") if "." in m.name else r.get(m.name)
                    if v is not None:
                        row[m.name] = v
                out[key] = row
    return out


def diff(expected: dict[Key, Row], got: dict[Key, Row], limit: int = 5) -> list[str]:
    """Human-readable differences (empty when equal)."""
    problems = []
    for key in sorted(set(expected) | set(got), key=repr):
        e, g = expected.get(key), got.get(key)
        if e != g:
            problems.append(f"{key}: truth={e} sink={g}")
            if len(problems) >= limit:
                break
    return problems


def assert_sink_equals_truth(
    sink: Any, org: Any, streams: Iterable[str], start: int, end: int, widths: dict[str, str] | None = None
) -> int:
    """Assert every stream's documents equal the truth; returns the number of rows compared."""
    docs = list(sink.iter_documents())
    compared = 0
    for stream in streams:
        width = (widths or {}).get(stream, STREAMS[stream].default_width)
        expected = truth_table(org, stream, start, end, width)
        got = sink_table(docs, stream, width)
        problems = diff(expected, got)
        assert not problems, f"{stream}: {len(problems)}+ differences:\n" + "\n".join(problems)
        compared += len(expected)
    return compared
