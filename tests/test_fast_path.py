"""The fast paths of shaping and pricing give exactly what the general ones give.

``Shaper`` compiles a fast row function per row shape (which keys, which are ``null``, which types) and falls back
to its general row function for any other row; ``estimate.cost_of`` prices a document from per-unit rates found
once. Each is checked here against the general path, on every row of a simulated organization's pages and on rows
changed one field at a time; a check also fails if the fast path was never taken.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from tests.helpers import CANARY_KEY, simulator_price_file
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Document, Names, Shaper, Target, _iso
from usage_collector.estimate import PriceBook, annotate, cost_of, estimate_source, usage_estimate
from usage_collector.models import parse_page
from usage_collector.pricing import PriceTable
from usage_collector.simulator import Organization, SimulatedAPI

DAY = 86400
TARGET = Target("org-fast", "Fast Org")


@pytest.fixture(scope="module")
def pages() -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Parsed pages of every stream (1h; completions also 1m; costs 1d), two simulated days."""
    org = Organization(seed=5, start="2026-10-01", days=3)
    now = org.start + 2 * DAY + 12 * 3600
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=lambda: now)
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, spec in STREAMS.items():
        for width in ("1d",) if spec.is_costs else ("1h", "1m") if name == "completions" else ("1h",):
            span = {"1m": 1440 * 60, "1h": 48 * 3600, "1d": 3 * DAY}[width]
            start = org.start if width != "1m" else org.start + DAY
            params = [("start_time", str(start)), ("end_time", str(start + span)), ("bucket_width", width)]
            params += [("limit", str(spec.limit_max(width)))] + [("group_by[]", g) for g in spec.request_group_by]
            status, _, body = api.handle("GET", "/v1/" + spec.path, params, {"Authorization": f"Bearer {CANARY_KEY}"})
            assert status == 200, body[:300]
            out[(name, width)] = [parse_page(spec, body)]
    return out


def _same(a: Document, b: Document) -> None:
    """Equal documents: ``_id``, index, stream, timestamp, hash, and ``_source`` byte for byte (key order too)."""
    assert (a.id, a.index, a.stream, a.timestamp, a.hash) == (b.id, b.index, b.stream, b.timestamp, b.hash)
    assert a.source_json == b.source_json


def _rows(page: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    return [(b["start_time"], b["end_time"], r) for b in page["data"] for r in b["results"]]


NAMES = Names(projects={"proj_x": "X"}, api_keys={}, users={}, service_accounts={})


@pytest.mark.parametrize("with_names", [False, True])
def test_fast_rows_equal_general_rows_on_every_simulated_row(pages, with_names):
    fast_taken = 0
    rows = 0
    for (name, width), parsed in pages.items():
        spec = STREAMS[name]
        names = NAMES if with_names else None
        shaper = Shaper(spec, TARGET, width, spec.request_group_by, names)
        general = Shaper(spec, TARGET, width, spec.request_group_by, names)
        for page in parsed:
            for b in page["data"]:
                docs = shaper.bucket(b["start_time"], b["end_time"], b["results"])
                for doc, row in zip(docs, b["results"], strict=True):
                    _same(doc, general._row(b["start_time"], _iso(b["start_time"]), _iso(b["end_time"]), row))
                    rows += 1
        fast_taken += sum(f is not None for f in shaper._fast_by_shape.values())
    assert rows > 5000 and fast_taken >= len(pages), (rows, fast_taken)


def _variants(row: dict[str, Any]) -> list[dict[str, Any]]:
    """``row`` changed one way at a time: each field null, each field gone, each field renamed, a dimension of
    another type, an unknown number, an unknown object of numbers, a non-text ``organization_id``, ``amount`` with
    a null or another key."""
    out: list[dict[str, Any]] = []
    for key in row:
        out.append({**row, key: None})
        out.append({k: v for k, v in row.items() if k != key})
        out.append({(f"x_{k}" if k == key else k): v for k, v in row.items()})  # as many keys, one other
    for key, value in row.items():
        if type(value) is bool:
            out.append({**row, key: "true"})
        if type(value) is str and key != "object":
            out.append({**row, key: 7})
    out.append({**row, "brand_new_tokens": 12})
    out.append({**row, "brand_new_details": {"a_tokens": 1, "b": "x"}})
    out.append({**row, "organization_id": 12})
    out.append({**row, "Bad-Name": 3})
    if isinstance(row.get("amount"), dict):
        out.append({**row, "amount": {**row["amount"], "currency": None}})
        out.append({**row, "amount": {"value": row["amount"]["value"]}})
        out.append({**row, "amount": {"value": row["amount"]["value"], "unit": "usd"}})
        out.append({**row, "amount": "not an object"})
    return out


@pytest.mark.parametrize("stream", ["completions", "costs", "images", "embeddings", "vector_stores"])
def test_a_row_of_another_shape_after_a_fast_one_is_shaped_as_the_general_function_does(pages, stream):
    spec = STREAMS[stream]
    width = "1d" if spec.is_costs else "1h"
    start, _end, row = next(r for p in pages[(stream, width)] for r in _rows(p))
    ts, te = "2026-10-01T00:00:00Z", "2026-10-01T01:00:00Z"
    checked = 0
    for variant in _variants(row):
        shaper = Shaper(spec, TARGET, width, spec.request_group_by, NAMES)
        general = Shaper(spec, TARGET, width, spec.request_group_by, NAMES)
        _same(shaper.row(start, ts, te, row), general._row(start, ts, te, row))  # compiles row's fast function
        assert shaper._fast_by_shape, "the fast path was not taken"
        try:
            want = general._row(start, ts, te, variant)
        except Exception as exc:  # the general function refuses it: so must the fast one
            with pytest.raises(type(exc)):
                shaper.row(start, ts, te, variant)
            continue
        _same(shaper.row(start, ts, te, variant), want)
        _same(shaper.row(start, ts, te, row), general._row(start, ts, te, row))  # and back
        assert shaper.new_fields == general.new_fields and shaper.skipped_fields == general.skipped_fields
        checked += 1
    assert checked >= 2 * len(row)


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> PriceBook:
    directory = simulator_price_file(tmp_path_factory.mktemp("prices") / "prices").parent
    return PriceBook(directory=directory)


def _usage_docs(pages):
    """``(stream, width, document)`` of every usage row of the captured pages, shaped without prices."""
    for (name, width), parsed in pages.items():
        spec = STREAMS[name]
        if spec.is_costs:
            continue
        shaper = Shaper(spec, TARGET, width, spec.request_group_by)
        for page in parsed:
            for b in page["data"]:
                yield from ((name, width, doc) for doc in shaper.bucket(b["start_time"], b["end_time"], b["results"]))


@pytest.mark.parametrize("which", ["simulator", "shipped"])
def test_cost_of_equals_estimate_source_on_every_simulated_row(pages, book, which):
    """The fast pricing of every usage row equals the general estimate, with the simulator's prices (nearly all
    priced) and with the shipped table (many unpriced: other models, other dates)."""
    priced = unpriced = 0
    shipped = PriceTable.load("2026-11-30")
    for name, width, doc in _usage_docs(pages):
        table = book.table(doc_day(doc)) if which == "simulator" else shipped
        assert table is not None
        own = doc.source["openai"].get(name, {})
        want = estimate_source(name, doc.source, table).cost
        got = cost_of(name, own, doc.source["openai"]["base"].get("model"), width, table)
        assert got == want, (name, own, got, want)
        priced += want is not None
        unpriced += want is None
    assert priced > 1000 and (unpriced > 0 if which == "shipped" else True), (priced, unpriced)


@pytest.mark.parametrize("which", ["simulator", "shipped", "none"])
def test_usage_estimate_equals_estimate_source_on_every_simulated_row(pages, book, which):
    """What reconciliation takes of each usage document (cost and quantities) equals the general estimate: with the
    simulator's prices, with the shipped table (many unpriced) and without a table."""
    shipped = PriceTable.load("2026-11-30")
    seen = priced = 0
    for name, width, doc in _usage_docs(pages):
        table = {"simulator": book.table(doc_day(doc)), "shipped": shipped, "none": None}[which]
        own = doc.source["openai"].get(name, {})
        want = estimate_source(name, doc.source, table)
        cost, quantities = usage_estimate(name, own, doc.source["openai"]["base"].get("model"), width, table)
        assert (cost, quantities) == (want.cost, want.quantities), (name, own)
        assert [q.as_tuple() for q in quantities.values()] == [q.as_tuple() for q in want.quantities.values()]
        seen += 1
        priced += cost is not None
    assert seen > 5000 and (priced > 1000 if which == "simulator" else True), (seen, priced)


@pytest.mark.parametrize(
    ("stream", "width", "own"),
    [
        ("completions", "1h", {"input_tokens": 900, "input_cached_tokens": 100, "output_tokens": 50}),  # older shape
        ("completions", "1h", {"input_tokens": 10, "input_cached_tokens": 40, "output_tokens": 5}),  # negative input
        ("completions", "1d", {"input_text_tokens": "120", "output_text_tokens": 7.0, "input_cached_text_tokens": 0}),
        (
            "completions",
            "1h",
            {
                "input_text_tokens": 5,
                "output_text_tokens": 1,
                "input_cached_text_tokens": 0,
                "input_cache_write_tokens": 30,
                "batch": True,
            },
        ),
        (
            "completions",
            "1h",
            {
                "input_text_tokens": 5,
                "output_text_tokens": 1,
                "input_cached_text_tokens": 2,
                "input_cache_write_30m_tokens": 3,
                "service_tier": "priority",
            },
        ),
        ("completions", "1h", {"input_tokens": 5, "service_tier": "scale"}),
        ("embeddings", "1h", {"input_tokens": True}),
        ("audio_speeches", "1h", {"characters": "1000"}),
        ("images", "1h", {"images": 3, "size": "1024x1024"}),
        ("images", "1h", {"images": 2, "size": "1024x1024", "quality": "hd", "batch": True}),
        ("vector_stores", "1h", {"usage_bytes": 123456789}),
        ("code_interpreter_sessions", "1d", {"num_sessions": None}),
    ],
)
def test_usage_estimate_equals_estimate_source_on_unusual_rows(book, stream, width, own):
    table = book.table(date(2026, 10, 1))
    for model in ("gpt-4o-2024-08-06", "gpt-4o-mini", "dall-e-3", "no-such-model", None):
        src = {"openai": {"base": {"model": model, "bucket_width": width}, stream: own}}
        for t in (table, None):
            want = estimate_source(stream, src, t)
            assert usage_estimate(stream, own, model, width, t) == (want.cost, want.quantities), (model, t)


def doc_day(doc: Document) -> date:
    return date.fromisoformat(doc.source["@timestamp"][:10])


def test_pricing_while_shaping_equals_annotating_afterwards(pages, book):
    """The ``price`` hook gives the documents (cost, ``event.hash``, key order) and the unpriced count that
    :func:`annotate` gives on the same documents shaped without it."""
    total_unpriced = priced = 0
    for (name, width), parsed in pages.items():
        spec = STREAMS[name]
        hooked = Shaper(spec, TARGET, width, spec.request_group_by, NAMES, book.pricer(name, width))
        plain = Shaper(spec, TARGET, width, spec.request_group_by, NAMES)
        for page in parsed:
            for b in page["data"]:
                got = hooked.bucket(b["start_time"], b["end_time"], b["results"])
                want = plain.bucket(b["start_time"], b["end_time"], b["results"])
                total_unpriced += annotate(want, book)
                for g, w in zip(got, want, strict=True):
                    _same(g, w)
                    priced += "estimated_cost" in g.source["openai"].get(name, {})
    assert priced > 1000
    hooked_unpriced = 0
    for (name, width), parsed in pages.items():
        spec = STREAMS[name]
        s = Shaper(spec, TARGET, width, spec.request_group_by, NAMES, book.pricer(name, width))
        for page in parsed:
            for b in page["data"]:
                s.bucket(b["start_time"], b["end_time"], b["results"])
        hooked_unpriced += s.unpriced
    assert hooked_unpriced == total_unpriced > 0


def test_shapes_compiled_are_bounded(pages):
    """A page whose rows all differ in shape stops compiling after a bound and uses the general function."""
    spec = STREAMS["completions"]
    start, _end, row = next(r for p in pages[("completions", "1h")] for r in _rows(p))
    shaper = Shaper(spec, TARGET, "1h", spec.request_group_by)
    general = Shaper(spec, TARGET, "1h", spec.request_group_by)
    for n in range(100):
        variant = {**row, f"new_field_{n}": n} if n % 2 else {**row, "input_tokens": str(n)}
        _same(shaper.row(start, "a", "b", variant), general._row(start, "a", "b", variant))
    assert len(shaper._fast_by_shape) <= 64


def test_shapers_share_compiled_code_but_not_their_constants(pages):
    """Row functions are compiled once per source (the constants are the shaper's globals): two shapers of one
    stream for two organizations share the code and still give each its own documents."""
    spec = STREAMS["costs"]
    (page,) = pages[("costs", "1d")]
    start, end, row = _rows(page)[0]
    a = Shaper(spec, TARGET, "1d", spec.request_group_by)
    b = Shaper(spec, Target("org-other", None, "ns2"), "1d", spec.request_group_by)
    da, db = a.row(start, _iso(start), _iso(end), row), b.row(start, _iso(start), _iso(end), row)
    assert a._fast.__code__ is b._fast.__code__ and a._row.__code__ is b._row.__code__
    assert da.id != db.id and db.index == "metrics-openai.costs-ns2"
    assert db.source["organization"] == {"id": "org-other"} and da.source["organization"]["id"] == "org-fast"
    _same(
        db,
        Shaper(spec, Target("org-other", None, "ns2"), "1d", spec.request_group_by)._row(
            start, _iso(start), _iso(end), row
        ),
    )


def test_rows_of_interleaved_shapes_are_shaped_as_each_alone(pages):
    """Costs rows with and without a project, an API key or a quantity unit interleave (several fast functions, a
    quarter of the rows of another shape than the row before): each document equals the general function's."""
    spec = STREAMS["costs"]
    (page,) = pages[("costs", "1d")]
    rows = _rows(page)
    variants = [r for _, _, r in rows[:40]]
    variants += [{**r, "project_id": None} for r in variants[:10]] + [{**r, "quantity_unit": None} for r in variants]
    variants = [variants[(i * 7) % len(variants)] for i in range(len(variants) * 2)]  # shuffled, repeated
    shaper = Shaper(spec, TARGET, "1d", spec.request_group_by)
    general = Shaper(spec, TARGET, "1d", spec.request_group_by)
    start, end = rows[0][0], rows[0][1]
    got = shaper.bucket(start, end, variants)
    for doc, row in zip(got, variants, strict=True):
        _same(doc, general._row(start, _iso(start), _iso(end), row))
    assert len([f for f in shaper._fast_by_shape.values() if f is not None]) >= 3
