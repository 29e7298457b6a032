"""Estimated against billed, and the bill allocated, on the simulated organization, exactly.

The simulator bills from its own price table (``usage_collector/simulator/prices.py``); the test writes that table as
a price file (:func:`simulator_price_file`) and collects with it. Then, per closed day x project x model:

* where the simulator bills per project and per model, the estimate equals the simulator's bill *before* it rounds
  each cost cell to 1e-6 USD, exactly, and the billed side equals the rounded cells, exactly;
* Scale Tier tokens are unpriced (counted) and their daily units are billed to the organization, on a row of their
  own with nothing estimated;
* web search is billed by search context size, which the price table cannot say: the estimate at the medium price
  differs from the bill by exactly the calls of the other sizes times their price difference.

Every billed line is allocated to users and models in parts that add up to it exactly, each within 1e-6 USD of what
the simulator billed that user (it knows the user of every cost cell).
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

import usage_collector.estimate as estimate_mod
import usage_collector.reconcile as reconcile_mod
import usage_collector.simulator.truth as truth_mod
from tests.helpers import CANARY_KEY, make_settings, simulator_price_file
from usage_collector.catalogue import STREAM_NAMES
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.estimate import PriceBook
from usage_collector.planning import BackfillRange
from usage_collector.reconcile import (
    ALLOCATION_STREAM,
    RECONCILIATION_STREAM,
    classify_line_item,
    largest_remainder,
    reconcile_days,
)
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.simulator import prices as P
from usage_collector.sinks.duckdb import DuckDBSink

DAYS = 3
ORG_ID = "default"  # the organization of make_settings()
DAY = 86400
#: The web search price the table states (the simulator's medium context price, per 1K calls).
WEB_SEARCH_PER_CALL = P.WEB_SEARCH_PRICE_PER_CALL["medium"]


@pytest.fixture(scope="module")
def org():
    return Organization(seed=11, start="2026-10-01", days=DAYS)


@pytest.fixture(scope="module")
def collected(org, tmp_path_factory):
    """A backfill of every stream but decisions (which the simulator does not bill) with the simulator's prices;
    vector stores at 1h, the granularity the simulator bills storage at."""
    tmp = tmp_path_factory.mktemp("reconcile")
    book = PriceBook(directory=simulator_price_file(tmp / "prices").parent)
    mp = pytest.MonkeyPatch()
    mp.setattr(estimate_mod, "shared_book", lambda: book)
    mp.setattr(reconcile_mod, "shared_book", lambda: book)
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp / "r.duckdb")
    streams = [s for s in STREAM_NAMES if s != "decisions"]
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    try:
        with serve(api) as url:
            settings = make_settings(
                openai_base_url=url, streams=streams, bucket_width={"vector_stores": "1h"}, enrich_names=True
            )
            result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert not result.failed, [r.error for r in result.failed]
        days = [datetime.fromtimestamp(org.start + i * DAY, UTC).date() for i in range(DAYS)]
        outcome = reconcile_days(sink, reconcile_mod.Target(ORG_ID), days, widths=settings.bucket_width, book=book)
        yield sink, result, outcome
    finally:
        mp.undo()
        sink.close()


def _exact_cells(seed: int, start: str, days: int) -> list[dict]:
    """The simulator's cost cells of every day, *unrounded* (its quantum patched to 1e-40 on a fresh organization)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(truth_mod, "Q6", Decimal("1e-40"))
    try:
        org = Organization(seed=seed, start=start, days=days)
        return [org.engine.cost_cells(d) for d in range(days)]
    finally:
        mp.undo()


def _row(ck) -> tuple:
    billed = classify_line_item(ck[0])
    return (ck[1], *billed.row)


def _docs_by_key(docs) -> dict:
    out = {}
    for d in docs:
        src = d.source
        base, own = src["openai"]["base"], src["openai"][d.stream]
        key = (src["@timestamp"][:10], base.get("project_id"), base.get("model"), own.get("item"))
        assert key not in out
        out[key] = own
    return out


def test_the_estimate_equals_the_simulators_unrounded_bill_where_it_bills_per_project_and_model(org, collected):
    _, _, outcome = collected
    rows = _docs_by_key(outcome.rows)
    exact: dict[tuple, Decimal] = defaultdict(Decimal)
    rounded: dict[tuple, Decimal] = defaultdict(Decimal)
    cells_of: dict[tuple, int] = defaultdict(int)
    with localcontext() as ctx:
        ctx.prec = 120  # the unrounded cells have up to ~40 significant digits: sum them exactly
        for d, cells in enumerate(_exact_cells(11, "2026-10-01", DAYS)):
            day = datetime.fromtimestamp(org.start + d * DAY, UTC).date().isoformat()
            for ck, cell in cells.items():
                exact[(day, *_row(ck))] += cell.amount
            for ck, cell in org.engine.cost_cells(d).items():
                rounded[(day, *_row(ck))] += cell.amount
                cells_of[(day, *_row(ck))] += 1
    assert set(rounded) <= set(rows)
    agreeing = web = scale = 0
    for key, own in rows.items():
        billed = rounded.get(key, Decimal(0))
        assert own["billed_cost"] == billed, key  # the billed side is the bill, exactly
        assert own["difference"] == own["billed_cost"] - own["estimated_cost"]
        _, project, _, item = key
        if item == "web_search_calls":
            web += 1  # priced at one context size: see test_web_search_differs_by_exactly_the_context_size_prices
        elif item is not None and item.startswith("scale tier units"):
            scale += 1
            assert project is None and own["estimated_cost"] == 0 and billed == Decimal(P.SCALE_TIER_DAILY)
        else:
            agreeing += 1
            assert own["estimated_cost"] == exact.get(key, Decimal(0)), key
            # rounding of each cost cell to 1e-6 is the whole difference
            assert abs(own["difference"]) <= Decimal("0.0000005") * cells_of[key]
    assert agreeing > 50 and web >= DAYS and scale == DAYS
    totals = (sum(o["estimated_cost"] for o in rows.values()), sum(o["billed_cost"] for o in rows.values()))
    assert totals[1] == org.total_cost()
    print(f"rows {len(rows)}: estimated {totals[0]} billed {totals[1]}")


def test_scale_tier_usage_is_unpriced_and_counted(org, collected):
    sink, result, outcome = collected
    completions = next(r for r in result.streams if r.stream == "completions")
    scale_docs = [
        d
        for d in sink.iter_documents("completions")
        if d["_source"]["openai"]["completions"].get("service_tier") == "scale"
    ]
    assert scale_docs and completions.unpriced == len(scale_docs), (completions.unpriced, len(scale_docs))
    assert all("estimated_cost" not in d["_source"]["openai"]["completions"] for d in scale_docs)
    runs = [r for r in sink.list_runs() if r["usage_collector"]["stream"] == "completions"]
    assert runs[0]["usage_collector"]["unpriced"] == len(scale_docs)
    rows = _docs_by_key(outcome.rows)
    assert sum(o["unpriced_documents"] for o in rows.values()) == sum(r.unpriced for r in result.streams)


def test_web_search_differs_by_exactly_the_context_size_prices(org, collected):
    """The table has one price per call; the simulator bills by context size."""
    _, _, outcome = collected
    rows = _docs_by_key(outcome.rows)
    calls = org.totals("web_search_calls", by=["project_id", "context_level"])
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for (project, level), m in calls.items():
        expected[project] += m["num_requests"] * (P.WEB_SEARCH_PRICE_PER_CALL[level] - WEB_SEARCH_PER_CALL)
    got: dict[str, Decimal] = defaultdict(Decimal)
    estimated: dict[str, Decimal] = defaultdict(Decimal)
    for (_, project, _, item), own in rows.items():
        if item == "web_search_calls":
            got[project] += own["difference"]
            estimated[project] += own["estimated_cost"]
    for project, m in org.totals("web_search_calls", by=["project_id"]).items():
        assert estimated[project[0]] == m["num_requests"] * WEB_SEARCH_PER_CALL
    # the bill rounds each cell to 1e-6; the calls of each size are whole, so the difference is exact here
    assert got == expected


def test_every_billed_line_is_allocated_exactly_and_each_user_within_a_micro_dollar(org, collected):
    sink, _, outcome = collected
    parts = outcome.parts
    by_line: dict[tuple, list[dict]] = defaultdict(list)
    for d in parts:
        src = d.source
        base, own = src["openai"]["base"], src["openai"][ALLOCATION_STREAM]
        key = (src["@timestamp"][:10], base.get("project_id"), base.get("api_key_id"), own.get("api_source"))
        by_line[(*key, own["line_item"])].append({**own, "user_id": base.get("user_id"), "model": base.get("model")})
    methods = defaultdict(int)
    for key, ps in by_line.items():
        billed = ps[0]["billed_amount"]
        assert sum(p["amount"] for p in ps) == billed, key
        assert all(p["amount"] == p["amount"].quantize(Decimal("0.000001")) for p in ps)
        methods[ps[0]["method"]] += 1
    assert methods["unallocated"] == DAYS  # the Scale Tier units: no usage matches them
    assert sum(methods.values()) == sum(1 for _ in sink.iter_documents("costs"))
    # against the simulator's own bill per user
    truth: dict[tuple, Decimal] = defaultdict(Decimal)
    for d in range(DAYS):
        day = datetime.fromtimestamp(org.start + d * DAY, UTC).date().isoformat()
        for (li, project, key, user, source), cell in org.engine.cost_cells(d).items():
            truth[(day, project, key, source, li, user)] += cell.amount
    worst = Decimal(0)
    for key, ps in by_line.items():
        for p in ps:
            if p["method"] == "unallocated":
                continue
            want = truth.get((*key, p["user_id"]), Decimal(0))
            worst = max(worst, abs(p["amount"] - want))
    assert worst <= Decimal("0.000001"), worst
    total = sum(p.source["openai"][ALLOCATION_STREAM]["amount"] for p in parts)
    assert total == org.total_cost()


def test_reconciliation_is_written_and_a_rerun_writes_nothing(org, collected):
    sink, _, outcome = collected
    stored = {d["_id"] for d in sink.iter_documents(RECONCILIATION_STREAM)}
    assert stored == {d.id for d in outcome.rows}
    assert {d["_id"] for d in sink.iter_documents(ALLOCATION_STREAM)} == {d.id for d in outcome.parts}
    # the backfill's own hook wrote the same documents; reconciling again changes nothing
    assert outcome.reconciliation.written == 0 and outcome.allocation.written == 0
    assert outcome.reconciliation.unchanged == len(outcome.rows)
    # the DuckDB views
    (billed,) = sink.query("SELECT sum(billed_cost) FROM reconciliation")[0:1][0]
    assert Decimal(billed) == org.total_cost()
    (allocated,) = sink.query("SELECT sum(amount) FROM allocation")[0]
    assert Decimal(allocated) == org.total_cost()


def test_after_a_backfill_each_day_is_read_on_its_own_and_written_a_week_at_a_time(org, collected, monkeypatch):
    """A backfill's reconciliation holds one day's usage at a time: every read is one day's range, every write a
    week's buckets at most; together they cover the range, and they change nothing the all-days reconciliation
    wrote."""
    monkeypatch.setattr(reconcile_mod, "DAYS_PER_WRITE", 2)  # the fixture's 3 days: a write of 2, then of 1
    sink = collected[0]
    reads: list[tuple[str | None, int | None, int | None]] = []
    writes: list[frozenset[int]] = []

    class Spy:
        def __getattr__(self, name):
            return getattr(sink, name)

        def iter_documents(self, stream=None, *, start=None, end=None):
            reads.append((stream, start, end))
            return sink.iter_documents(stream, start=start, end=end)

        def write_window(self, docs, checkpoint, replaces=None):
            writes.append(replaces.starts)
            return sink.write_window(docs, checkpoint, replaces)

    settings = make_settings(streams=[s for s in STREAM_NAMES if s != "decisions"], enrich_names=True)
    settings.bucket_width = {"vector_stores": "1h"}
    outcome = reconcile_mod.after_cycle(
        Spy(), settings, settings.orgs()[0], collected[1].streams, BackfillRange(org.start, org.end), org.end + 3 * DAY
    )
    days = [org.start + i * DAY for i in range(DAYS)]
    assert {start for _, start, _ in reads} == set(days) and all(end - start == DAY for _, start, end in reads)
    assert writes == [frozenset(days[:2])] * 2 + [frozenset(days[2:])] * 2  # reconciliation, allocation
    assert outcome is not None and outcome.reconciliation.written == outcome.allocation.written == 0
    stored = sum(1 for _ in sink.iter_documents(RECONCILIATION_STREAM))
    assert outcome.reconciliation.unchanged == stored > 0 and outcome.reconciliation.deleted == 0


def test_the_report_takes_cost_by_model_and_by_user_from_allocation(org, collected):
    from usage_collector.report import build_report, report_tables

    sink, result, _ = collected
    rep = build_report(sink)
    assert rep.total_cost == org.total_cost() and rep.allocated_days == DAYS
    assert sum(v for _, v in rep.cost_by_model) == rep.total_cost == sum(v for _, v in rep.cost_by_user)
    assert "(not allocated)" not in dict(rep.cost_by_user)
    assert rep.unpriced_documents == sum(r.unpriced for r in result.streams) > 0
    billed = sum(b for _, _, b in rep.estimated_vs_billed)
    assert billed == org.total_cost()
    names = {t.name for t in report_tables(rep)}
    assert {"cost_by_user", "estimated_vs_billed"} <= names


def test_a_restated_bill_rewrites_its_rows_and_deletes_vanished_ones(org, collected, tmp_path):
    """Rows are replaced per day: a day whose bill vanished keeps no stale row. (Changes the module's sink: last.)"""
    sink = collected[0]
    day = datetime.fromtimestamp(org.start, UTC).date()
    start = int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp())
    from usage_collector.sinks.base import BucketSet

    costs_ids = [d["_id"] for d in sink.iter_documents("costs") if d["_source"]["@timestamp"].startswith(str(day))]
    assert costs_ids
    sink.write_window([], None, BucketSet(ORG_ID, "costs", "1d", "metrics-openai.costs-default", frozenset({start})))
    again = reconcile_days(sink, reconcile_mod.Target(ORG_ID), [day])
    assert again.reconciliation.deleted > 0 or again.reconciliation.updated > 0
    rows = _docs_by_key(again.rows)
    assert all(own["billed_cost"] == 0 for own in rows.values())


def _largest_remainder_in_fractions(total: Decimal, weights: list, quantum: Decimal) -> list[Decimal]:
    """The definition, step by step in Fractions."""
    units = int(abs(total) / quantum)
    ws = [Fraction(w) for w in weights]
    exact = [units * w / sum(ws) for w in ws]
    parts = [int(e) for e in exact]
    for i in sorted(range(len(ws)), key=lambda i: (-(exact[i] - parts[i]), i))[: units - sum(parts)]:
        parts[i] += 1
    return [(-1 if total < 0 else 1) * p * quantum for p in parts]


def test_largest_remainder_is_the_definition_on_random_weights():
    """Integer, Decimal and Fraction weights (and a zero or negative one) give what the definition gives."""
    rnd = random.Random(3)
    for _ in range(3000):
        weights: list = []
        for _ in range(rnd.randint(1, 8)):
            kind = rnd.random()
            if kind < 0.4:
                weights.append(rnd.randint(0, 10 ** rnd.randint(0, 15)))
            elif kind < 0.7:
                weights.append(Decimal(rnd.randint(0, 10**8)).scaleb(-rnd.randint(0, 9)))
            elif kind < 0.9:
                weights.append(Fraction(rnd.randint(0, 1000), rnd.randint(1, 97)))
            else:
                weights.append(-rnd.randint(0, 5))
        if sum(Fraction(w) for w in weights) <= 0:
            continue
        quantum = Decimal(1).scaleb(-rnd.randint(0, 12))
        total = quantum * rnd.randint(-(10**9), 10**9)
        got = largest_remainder(total, weights, quantum)
        want = _largest_remainder_in_fractions(total, weights, quantum)
        assert [g.as_tuple() for g in got] == [w.as_tuple() for w in want], (total, weights, quantum)


def test_largest_remainder_parts_add_up_exactly():
    for total, weights in [
        (Decimal("10.000000"), [1, 1, 1]),
        (Decimal("0.000001"), [5, 3, 2]),
        (Decimal("-3.141593"), [Decimal("0.5"), Decimal("1.25"), 7]),
        (Decimal("12345.678901"), list(range(1, 50))),
    ]:
        parts = largest_remainder(total, weights, Decimal("0.000001"))
        assert sum(parts) == total
        assert all(abs(p) <= abs(total) for p in parts)
    assert largest_remainder(Decimal("0.000002"), [1, 1, 1], Decimal("0.000001")) == [
        Decimal("0.000001"),
        Decimal("0.000001"),
        Decimal("0"),
    ]
    with pytest.raises(ValueError):
        largest_remainder(Decimal("0.0000005"), [1], Decimal("0.000001"))
