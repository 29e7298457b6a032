"""P2 throughput: result rows per second from raw page bytes to Elasticsearch bulk bodies.

Page bytes are captured once from the simulator (``SimulatedAPI.handle``, the exact bytes its HTTP server
sends): completions, images and embeddings at 1h (168 buckets a page, every ``group_by``), costs at 1d
(180 days a page, every ``group_by``). Then, in this process, on the same bytes, interleaved round by round:

* **ours (sink as is)**: ``parse_page`` -> ``Shaper.bucket`` with the estimated cost (pages dated inside the
  shipped price tables, so the usage rows of listed models are priced) (documents keyed by ``_id``
  as the collector does, the cyclic GC paused as the collector pauses it per page while shaping and around
  ``sink.write_window``) -> ``ElasticsearchSink._plan`` (``create`` actions, nothing stored yet) -> for each action
  the sink's ``expand_action_callback`` (``bulk_lines``) and the client's ``application/json`` serializer (what
  ``streaming_bulk`` does with them) -> one bulk body (action line + source line per document);
* **ours (OrjsonSerializer)**: the same path with ``elasticsearch.serializer.OrjsonSerializer`` as the
  client's ``application/json`` serializer (informative: what a one-line serializer swap in ``connect()`` gives);
* **floor** (informative): the least work that makes output of this kind (:func:`floor`): one untyped decode per
  page; per row a BLAKE2b of its JSON, a SHA-1 ``_id``, one source dict holding the row as it came, the action
  line and the source's JSON. No checks, no pricing, no Decimal money, no field copied;
* **ceiling**: ``orjson.loads(page)`` and ``orjson.dumps(row)`` of every result row, one line per row;
* **ours without pricing**, **ours without pricing or checks** (informative ablations, not the collector): the sink
  path as is but shaped without the price hook, and then also on msgspec's untyped decode instead of ``parse_page``
  (:func:`shape_page`): what the output's estimated cost and the page checks cost, in the ratio.

Informative, in the stages table: ``parse_page`` done as issue 18's first suggestion, a typed decode into structs
(:func:`typed_decoder`, a prototype checked to make the same rows of these pages).

Informative, in the per-stream table and a line of its own: completions at 1m (two pages of 1,440 buckets), the
width of a dense 1-minute backfill, where per-bucket work weighs more.

Goal: ours (sink as is) at least 40 % of the ceiling, in rows per second.

    python bench/p2_throughput.py [--rounds 7] [--profile]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from binascii import b2a_base64
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
import orjson
from _common import ADMIN_KEY, DAY, SEED, emit, median, table, verdict

from usage_collector.catalogue import STREAMS
from usage_collector.documents import Document, Shaper, Target, paused_gc
from usage_collector.estimate import shared_book
from usage_collector.models import _COSTS, _USAGE, parse_page
from usage_collector.simulator import Organization, SimulatedAPI

GOAL = 0.40
CAPTURE = [("completions", "1h", 2), ("images", "1h", 2), ("embeddings", "1h", 2), ("costs", "1d", 1)]
#: Informative, beside the goal figure: completions at 1m (1,440 buckets a page), the width of a dense 1-minute
#: backfill, where a bucket holds a few rows and per-bucket work weighs more (issue 18's independent gauge).
CAPTURE_1M = [("completions", "1m", 2)]
SPAN = {"1m": 60, "1h": 3600, "1d": DAY}
TARGET = Target("org-bench", "Bench Org")


def capture(which: list[tuple[str, str, int]] = CAPTURE) -> list[tuple[str, str, bytes, int]]:
    """``(stream, width, body, rows)`` of real simulator pages."""
    # usage pages from late October to mid-November 2026: inside the shipped price tables (the earliest is in force
    # from 2026-08-21), so every usage row is priced as the collector prices it (main() checks it)
    org = Organization(seed=SEED, start="2026-05-01", days=200)
    now = org.start + 199 * DAY + 12 * 3600
    api = SimulatedAPI(org, clock=lambda: now)
    pages = []
    for name, width, n in which:
        spec = STREAMS[name]
        limit = spec.limit_max(width)
        span = limit * SPAN[width]
        for i in range(n):
            start = now - 3 * DAY - (i + 1) * span if width != "1d" else now - DAY - span
            start -= start % SPAN[width]
            params = [
                ("start_time", str(start)),
                ("end_time", str(start + span)),
                ("bucket_width", width),
                ("limit", str(limit)),
            ] + [("group_by[]", g) for g in spec.request_group_by]
            status, _, body = api.handle("GET", "/v1/" + spec.path, params, {"Authorization": f"Bearer {ADMIN_KEY}"})
            assert status == 200, body[:200]
            rows = sum(len(b["results"]) for b in orjson.loads(body)["data"])
            pages.append((name, width, body, rows))
    return pages


def _es_serializer() -> Any:
    """The serializer ``streaming_bulk`` uses: the client's ``application/json`` one (defaults, as the sink)."""
    from elasticsearch import Elasticsearch

    es = Elasticsearch("http://127.0.0.1:9")  # never contacted
    return es.transport.serializers.get_serializer("application/json")


def shape_page(name: str, width: str, body: bytes, *, priced: bool = True, checked: bool = True) -> list[Document]:
    """As the collector does: parsed, shaped with the estimated cost (the shipped price table), keyed by ``_id``,
    the cyclic GC paused for the window (``documents.paused_gc``).

    Informative ablations (not what the collector does): ``priced=False`` shapes without the price hook (no
    ``estimated_cost``, one hash fewer on a priced row); ``checked=False`` takes msgspec's untyped decode of the page
    as it is (``parse_page`` without its checks and coercions; the simulator's pages need none)."""
    spec = STREAMS[name]
    with paused_gc:
        page = parse_page(spec, body) if checked else (_COSTS if spec.is_costs else _USAGE).decode(body)
        price = shared_book().pricer(name, width) if priced else None
        shaper = Shaper(spec, TARGET, width, spec.request_group_by, None, price)
        docs: dict[str, Document] = {}
        for bucket in page["data"]:
            for doc in shaper.bucket(bucket["start_time"], bucket["end_time"], bucket["results"]):
                docs[doc.id] = doc
        return list(docs.values())


def ours_sink(pages: list[tuple[str, str, bytes, int]], serializer: Any, **ablate: bool) -> int:
    """Page bytes -> bulk bodies exactly as the Elasticsearch sink builds them: ``_plan``, then its
    ``expand_action_callback`` (``bulk_lines``) and the client's serializer, as ``streaming_bulk`` calls them.
    ``ablate``: :func:`shape_page`'s informative switches."""
    from usage_collector.elastic.sink import ElasticsearchSink, bulk_lines

    size = 0
    for name, width, body, _ in pages:
        docs = shape_page(name, width, body, **ablate)
        lines: list[bytes] = []
        with paused_gc:  # as the collector holds it around ``sink.write_window``
            for a in ElasticsearchSink._plan(docs, {}, {}):
                action, data = bulk_lines(a)
                lines.append(serializer.dumps(action))
                if data is not None:
                    lines.append(serializer.dumps(data))
        size += len(b"\n".join(lines) + b"\n")
    return size


def ceiling(pages: list[tuple[str, str, bytes, int]]) -> int:
    size = 0
    for _, _, body, _ in pages:
        page = orjson.loads(body)
        size += len(b"\n".join([orjson.dumps(r) for b in page["data"] for r in b["results"]]) + b"\n")
    return size


_FLOOR_DECODER = msgspec.json.Decoder()
_FLOOR_ECS = {"version": "8.17.0"}
_FLOOR_DS = {"type": "metrics", "dataset": "openai.bench", "namespace": "default"}
_FLOOR_ORG = {"id": TARGET.org_id, "name": TARGET.org_name}
_FLOOR_HEAD = b'{"create":{"_index":"metrics-openai.bench-default","_id":'


def _floor_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def floor(pages: list[tuple[str, str, bytes, int]]) -> int:
    """Informative: the least work that makes output of this kind, in Python, as a bound on what shaping can reach.
    Per page one ``msgspec`` decode (untyped, no checks); per row ``event.hash`` (BLAKE2b of the row's JSON), an
    ``_id`` (SHA-1 of an identity key, base64), one source dict whose ``openai.base`` is the decoded row itself (no
    field copied, no pricing, no names, no Decimal money), the action line and ``orjson.dumps`` of the source. Not
    the collector's output; a side that measures below 40 % of the ceiling shows that the goal is out of reach of
    any pure-Python shaper that hashes and serializes each row."""
    size = 0
    sha1, blake = hashlib.sha1(usedforsecurity=False), hashlib.blake2b(digest_size=8)
    for name, width, body, _ in pages:
        page = _FLOOR_DECODER.decode(body)
        lines: list[bytes] = []
        for bucket in page["data"]:
            ts = str(bucket["start_time"])
            for row in bucket["results"]:
                h = blake.copy()
                h.update(orjson.dumps(row))
                digest = h.hexdigest()
                k = sha1.copy()
                k.update(f"{name}\x1f{width}\x1f{ts}\x1f{row.get('project_id')}\x1f{row.get('model')}".encode())
                doc_id = b2a_base64(k.digest(), newline=False)[:27].decode()
                source = {
                    "@timestamp": ts,
                    "ecs": _FLOOR_ECS,
                    "event": {"kind": "metric", "dataset": name, "module": "openai", "hash": digest},
                    "data_stream": _FLOOR_DS,
                    "organization": _FLOOR_ORG,
                    "openai": {"base": row},
                }
                lines.append(_FLOOR_HEAD + orjson.dumps(doc_id) + b"}}")
                lines.append(orjson.dumps(source, default=_floor_default))
        size += len(b"\n".join(lines) + b"\n")
    return size


def typed_decoder(name: str) -> msgspec.json.Decoder[Any]:
    """Informative: issue 18's first suggestion, decoding into typed structs, as a prototype of ``parse_page``'s
    checks: one ``msgspec.Struct`` per stream with ``parse_page``'s type table (``models._result_types``: each known
    field its type, ``null`` or absent; ``organization_id`` text), unknown fields refused (a page with one would take
    ``parse_page``'s path), strict (no coercion: a row that needs one would too). :func:`typed_parse` turns the page
    back into the dicts the shaper reads. Not complete (it lets ``"NaN"`` through as a ``Decimal``, for one); a bound
    on what it could save."""
    from msgspec import UNSET, UnsetType

    from usage_collector.models import _Amount, _result_types

    fields: dict[str, Any] = {**_result_types(STREAMS[name]), "organization_id": str}  # parse_page's type table
    if fields.get("amount") is _Amount:
        amount = [("value", Decimal | None | UnsetType, UNSET), ("currency", str | None | UnsetType, UNSET)]
        fields["amount"] = msgspec.defstruct("Amount", amount, forbid_unknown_fields=True)
    row = msgspec.defstruct(
        f"{name}_row",
        [(k, t | None | UnsetType, UNSET) for k, t in fields.items()],
        forbid_unknown_fields=True,
        omit_defaults=True,
    )
    bucket = msgspec.defstruct(
        "Bucket", [("object", str), ("start_time", int), ("end_time", int), ("results", list[row])]
    )
    page = msgspec.defstruct(
        "Page", [("object", str), ("data", list[bucket]), ("has_more", bool), ("next_page", str | None, None)]
    )
    return msgspec.json.Decoder(page)


def typed_parse(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """The page as ``parse_page`` returns it (dicts, absent fields absent, money ``Decimal``), by
    :func:`typed_decoder`."""
    return msgspec.to_builtins(decoder.decode(body), builtin_types=(Decimal,))


def timed(fn: Any, *args: Any) -> float:
    """CPU seconds of ``fn(*args)`` (this process): on a shared 2-core machine wall time also counts the time
    other processes held the CPU; the work here is single-threaded and never waits."""
    t = time.process_time()
    fn(*args)
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="pyinstrument profile of 'ours (sink as is)'")
    args = ap.parse_args()

    pages = capture()
    rows = sum(p[3] for p in pages)
    serializer = _es_serializer()
    print(
        f"P2: {len(pages)} pages, {sum(len(p[2]) for p in pages) / 1e6:.1f} MB, {rows:,} result rows "
        f"({', '.join(f'{n} {w}' for n, w, _ in CAPTURE)}); serializer {type(serializer).__module__}."
        f"{type(serializer).__name__}"
    )
    usage_docs = [d for name, width, body, _ in pages if name != "costs" for d in shape_page(name, width, body)]
    usage_rows = len(usage_docs)
    unpriced = sum("estimated_cost" not in d.source["openai"].get(d.stream, {}) for d in usage_docs)
    del usage_docs
    # rows of models the shipped table does not list stay unpriced, as in the collector; a capture dated before
    # every price table would leave them all unpriced and skip the pricing the collector does
    print(f"usage rows priced: {usage_rows - unpriced:,} of {usage_rows:,} (the others' models have no price)")
    if unpriced * 2 > usage_rows:
        raise SystemExit("P2 must measure priced usage rows, as the collector writes them: move the capture's dates")
    # warm-up (adapters, shapers, imports)
    from elasticsearch.serializer import OrjsonSerializer

    fast = OrjsonSerializer()
    ours_sink(pages, serializer), ours_sink(pages, fast), floor(pages), ceiling(pages)
    ours_sink(pages, serializer, priced=False), ours_sink(pages, serializer, priced=False, checked=False)

    sides = {
        "ours (sink as is)": lambda: ours_sink(pages, serializer),
        "ours (OrjsonSerializer)": lambda: ours_sink(pages, fast),
        "ours without pricing (informative)": lambda: ours_sink(pages, serializer, priced=False),
        "ours without pricing or checks (informative)": lambda: ours_sink(
            pages, serializer, priced=False, checked=False
        ),
        "floor (least work of this kind, informative)": lambda: floor(pages),
        "ceiling (orjson loads+dumps)": lambda: ceiling(pages),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(args.rounds):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))  # interleaved, alternating order
        for k in order:
            times[k].append(timed(sides[k]))
    ceil_t = times["ceiling (orjson loads+dumps)"]
    out = []
    for k, ts in times.items():
        ratios = [c / t for c, t in zip(ceil_t, ts, strict=True)]  # per round: (rows/t) / (rows/c)
        out.append([k, median(ts), rows / median(ts), median(ratios)])
    print(table(["side", "median s", "rows/s", "of ceiling"], out))

    # per stream (informative): one round each; the 1m completions pages too (not in the goal figure)
    pages_1m = capture(CAPTURE_1M)
    ours_sink(pages_1m, serializer)  # warm-up: the 1m row functions
    per = []
    for name, width, _ in [*CAPTURE, *CAPTURE_1M]:
        sub = [p for p in [*pages, *pages_1m] if (p[0], p[1]) == (name, width)]
        r = sum(p[3] for p in sub)
        a = median([timed(ours_sink, sub, serializer) for _ in range(3)])
        b = median([timed(ours_sink, sub, fast) for _ in range(3)])
        c = median([timed(ceiling, sub) for _ in range(3)])
        per.append([f"{name} {width}", r, r / a, r / b, r / c, c / a, c / b])
    print("\nper stream (median of 3):")
    print(
        table(
            ["stream", "rows", "as is rows/s", "orjson-ser rows/s", "ceiling rows/s", "as is/ceil", "orjson-ser/ceil"],
            per,
        )
    )

    # stages (informative): where the time of "ours (sink as is)" goes, median of 5, all pages
    def parse_only() -> None:
        for name, _, body, _ in pages:
            parse_page(STREAMS[name], body)

    def parse_shape() -> None:
        for name, width, body, _ in pages:
            shape_page(name, width, body)

    typed = {name: typed_decoder(name) for name, _, _ in CAPTURE}
    for name, _, body, _ in pages:  # the prototype makes the same rows of these pages, or its figure means nothing
        assert typed_parse(typed[name], body) == parse_page(STREAMS[name], body), name

    def typed_only() -> None:
        for name, _, body, _ in pages:
            typed_parse(typed[name], body)

    typed_s = median([timed(typed_only) for _ in range(5)])
    st = {
        "parse_page": median([timed(parse_only) for _ in range(5)]),
        "parse_page + shape": median([timed(parse_shape) for _ in range(5)]),
        "+ _plan, expand_action, serializer (sink as is)": median(
            [timed(ours_sink, pages, serializer) for _ in range(5)]
        ),
    }
    full = st["+ _plan, expand_action, serializer (sink as is)"]
    rows_st: list[list[Any]] = []
    prev = 0.0
    for k, v in st.items():
        rows_st.append([k, v, (v - prev) / rows * 1e6, f"{(v - prev) / full * 100:.0f} %"])
        prev = v
    rows_st.append(["ceiling", median(ceil_t), median(ceil_t) / rows * 1e6, ""])
    rows_st.append(["parse_page as typed structs (prototype, informative)", typed_s, typed_s / rows * 1e6, ""])
    print("\nstages of ours (sink as is), cumulative; us/row is the stage's own cost:")
    print(table(["stage", "cumulative s", "us/row", "share"], rows_st))

    results = [verdict("P2 throughput (ours sink as is / ceiling)", out[0][3], GOAL, at_most=False)]
    verdict("P2 throughput at 1m, completions (informative)", per[-1][5], GOAL, at_most=False)
    verdict("P2 throughput (ours with OrjsonSerializer / ceiling, informative)", out[1][3], GOAL, at_most=False)
    verdict("P2 without pricing (informative)", out[2][3], GOAL, at_most=False)
    verdict("P2 without pricing or checks (informative)", out[3][3], GOAL, at_most=False)
    verdict("P2 floor: least work of this kind in Python / ceiling (informative)", out[4][3], GOAL, at_most=False)
    emit(results)

    if args.profile:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005)
        prof.start()
        for _ in range(3):
            ours_sink(pages, serializer)
        prof.stop()
        print(prof.output_text(unicode=False, color=False, show_all=False, short_mode=False))


if __name__ == "__main__":
    main()
