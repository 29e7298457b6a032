"""The API as it is now (``openai-usage-api-2026-11.md``), end to end against the simulator over HTTP.

Every numeric value the API returns is in the sink, exact: the new completions measures, the ``decisions``
stream, ``api_source``, a numeric field no documentation names; costs stay exact to the cent. A dimension the API
refuses costs that dimension, an endpoint it does not have costs that stream, and neither fails the run. A bucket
re-read with another ``group_by`` set replaces its documents, so nothing is counted twice. Spend controls land as
documents, deduplicated by content.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from tests.helpers import CANARY_KEY, make_settings
from tests.truth import assert_sink_equals_truth, diff, sink_table, truth_table
from usage_collector.catalogue import STREAM_NAMES
from usage_collector.clock import FakeClock
from usage_collector.collector import RECHECK_AFTER, Collector
from usage_collector.planning import BackfillRange
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.simulator.api import undocumented_value
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

DAY = 86400
DAYS = 3
NEW = "output_reasoning_tokens"


@pytest.fixture(scope="module")
def org():
    return Organization(seed=14, start="2026-11-01", days=DAYS)


def sim(org, clock, **kw):
    return SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None, **kw)


def _totals(docs, stream, names):
    out = dict.fromkeys(names, 0)
    for d in docs:
        own = d["_source"]["openai"].get(stream, {})
        for n in names:
            out[n] += own.get(n, 0)
    return out


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_every_value_the_api_returns_is_in_the_sink_exactly(org, tmp_path, kind, caplog):
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp_path / "a.duckdb") if kind == "duckdb" else NdjsonSink(tmp_path / "a.ndjson")
    caplog.set_level(logging.WARNING, logger="usage_collector.collector")
    with serve(sim(org, clock, undocumented_fields=True)) as url:
        settings = make_settings(openai_base_url=url)
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not result.failed, [r.error for r in result.failed]
    assert "decisions" in STREAM_NAMES and {r.stream for r in result.streams} == set(STREAM_NAMES)
    assert_sink_equals_truth(sink, org, STREAM_NAMES, org.start, org.end)

    for stream in ("completions", "decisions"):
        docs = list(sink.iter_documents(stream))
        # the undocumented field arrives intact, row by row, under its own name
        expected = {
            k: undocumented_value(stream, row)
            for k, row in _truth_rows(org, stream).items()
            if undocumented_value(stream, row) is not None
        }
        got = {_key(d): d["_source"]["openai"][stream][NEW] for d in docs if NEW in d["_source"]["openai"][stream]}
        assert got == expected and got
        # the new measures: exact totals, each as reported (30m + 12h is not how the total is stored)
        names = ("input_cache_write_tokens", "input_cache_write_30m_tokens", "input_cache_write_12h_tokens")
        rows = _truth_rows(org, stream).values()  # a result omits a split unless every series in it reports it
        want = {n: sum(r.get(n, 0) for r in rows) for n in names}
        assert _totals(docs, stream, names) == want and want["input_cache_write_12h_tokens"] > 0
        assert {d["_source"]["openai"][stream]["api_source"] for d in docs} == {"agents_api", "unlabeled"}
        # OTel names carry the same values
        assert (
            sum(d["_source"]["gen_ai"]["usage"].get("cache_creation", {}).get("input_tokens", 0) for d in docs)
            == (want["input_cache_write_tokens"])
        )
        runs = [r for r in sink.list_runs() if r["usage_collector"]["stream"] == stream]
        assert runs[0]["usage_collector"]["new_fields"] == 1
        assert runs[0]["usage_collector"]["new_field_names"] == [NEW]
    # some results carry no cache-write splits (older series): absent, not 0
    comp = list(sink.iter_documents("completions"))
    assert any("input_cache_write_30m_tokens" not in d["_source"]["openai"]["completions"] for d in comp)
    warned = [r for r in caplog.records if "new field" in r.getMessage()]
    assert len(warned) == 2, [r.getMessage() for r in warned]  # once per field per stream in this run
    costs = list(sink.iter_documents("costs"))
    assert {d["_source"]["openai"]["costs"].get("api_source") for d in costs} == {"agents_api", "unlabeled"}
    assert sum(Decimal(str(d["_source"]["openai"]["costs"]["amount"]["value"])) for d in costs) == org.total_cost()
    sink.close()


def _key(d):
    src = d["_source"]
    base = src["openai"]["base"]
    return (src["@timestamp"], base.get("project_id"), base.get("api_key_id"), base.get("model"), _own(src))


def _own(src):
    own = src["openai"][src["event"]["dataset"][7:]]
    return own.get("api_source"), own.get("batch"), own.get("service_tier")


def _truth_rows(org, stream):
    from usage_collector.catalogue import STREAMS
    from usage_collector.clock import iso

    spec = STREAMS[stream]
    out = {}
    for b in org.truth(stream, org.start, org.end, spec.default_width, list(spec.request_group_by)):
        for r in b["results"]:
            out[
                (
                    iso(b["start_time"]),
                    r["project_id"],
                    r["api_key_id"],
                    r["model"],
                    (r["api_source"], r["batch"], r["service_tier"]),
                )
            ] = r
    return out


def test_a_refused_optional_dimension_is_dropped_with_one_warning(org, tmp_path, caplog):
    clock = FakeClock(org.end + 3 * DAY)
    sink = NdjsonSink(tmp_path / "d.ndjson")
    caplog.set_level(logging.WARNING, logger="usage_collector.collector")
    with serve(sim(org, clock, refuse_group_by={"web_search_calls": "api_source"})) as url:
        settings = make_settings(openai_base_url=url, streams=["web_search_calls", "embeddings"])
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
        again = Collector(settings, sink, clock=clock).run_cycle()
    assert not result.failed and not again.failed
    web = next(r for r in result.streams if r.stream == "web_search_calls")
    assert web.dropped == ["api_source"] and "api_source" not in web.group_by
    refused = [r for r in caplog.records if "refused group_by api_source" in r.getMessage()]
    assert len(refused) == 1
    run = next(r for r in sink.list_runs() if r["usage_collector"]["stream"] == "web_search_calls")
    assert run["usage_collector"]["dropped_dimensions"] == ["api_source"]
    gb = [g for g in ("project_id", "user_id", "api_key_id", "model", "context_level")]
    expected = truth_table(org, "web_search_calls", org.start, org.end, "1h", gb)
    got = sink_table(sink.iter_documents(), "web_search_calls", "1h")
    assert not diff(expected, {k: v for k, v in got.items() if k in expected}) and set(got) >= set(expected)
    cp = sink.load_checkpoint("default", "web_search_calls", "1h")
    assert cp is not None and cp.dropped_group_by == ["api_source"]


def test_costs_by_user_where_the_api_allows_it(org, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    with serve(sim(org, clock)) as url:
        # with project_id the simulated organization answers 400 naming user_id: user_id is dropped
        refused = NdjsonSink(tmp_path / "c1.ndjson")
        settings = make_settings(
            openai_base_url=url, streams=["costs"], costs_group_by="project_id,user_id,line_item,api_source"
        )
        r1 = Collector(settings, refused, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert not r1.failed and r1.streams[0].dropped == ["user_id"]
        # without project_id it is accepted: costs by user, exact to the cent
        by_user = NdjsonSink(tmp_path / "c2.ndjson")
        settings = make_settings(openai_base_url=url, streams=["costs"], costs_group_by="user_id,line_item")
        r2 = Collector(settings, by_user, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert not r2.failed and r2.streams[0].dropped == []
    expected = truth_table(org, "costs", org.start, org.end, "1d", ["user_id", "line_item"])
    assert not diff(expected, sink_table(by_user.iter_documents(), "costs", "1d"))
    users = {d["_source"]["openai"]["base"].get("user_id") for d in by_user.iter_documents("costs")}
    assert len(users - {None}) >= 3
    for sink in (refused, by_user):
        total = sum(
            Decimal(str(d["_source"]["openai"]["costs"]["amount"]["value"])) for d in sink.iter_documents("costs")
        )
        assert total == org.total_cost()


def test_a_bucket_reread_with_another_group_by_replaces_its_documents_exactly(org, tmp_path):
    """The ``_id`` includes the group_by set, so a bucket read with ``api_source`` gets new documents; the coarser
    documents of that bucket are deleted in the same write (superseded), and totals stay exact."""
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp_path / "g.duckdb")
    with serve(sim(org, clock, refuse_group_by={"completions": "api_source"})) as url:
        settings = make_settings(openai_base_url=url, streams=["completions"], restatement={"completions": "30d"})
        first = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    coarse = {d["_id"] for d in sink.iter_documents("completions")}
    assert first.streams[0].dropped == ["api_source"] and coarse
    clock.advance(RECHECK_AFTER + 60)  # a day later the dimension is asked for again, and the API accepts it
    with serve(sim(org, clock)) as url:
        settings = make_settings(openai_base_url=url, streams=["completions"], restatement={"completions": "30d"})
        second = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not second.failed and second.streams[0].dropped == []
    assert second.streams[0].stats.deleted == len(coarse)
    docs = list(sink.iter_documents("completions"))
    assert not coarse & {d["_id"] for d in docs}
    assert_sink_equals_truth(sink, org, ["completions"], org.start, org.end)
    want = org.totals("completions")[()]
    assert _totals(docs, "completions", ("input_tokens",))["input_tokens"] == want["input_tokens"]
    sink.close()


def test_an_endpoint_missing_for_the_organization_is_unavailable_not_failed(org, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    sink = NdjsonSink(tmp_path / "u.ndjson")
    api = sim(org, clock, missing_endpoints=("decisions",))
    with serve(api) as url:
        settings = make_settings(openai_base_url=url, streams=["decisions", "embeddings"], initial_lookback="2d")
        first = Collector(settings, sink, clock=clock).run_cycle()
        assert not first.failed
        dec = next(r for r in first.streams if r.stream == "decisions")
        assert dec.unavailable and "404" in dec.unavailable
        asked = api.counters.snapshot()["by_path"]["/v1/organization/usage/decisions"]
        clock.advance(3600)
        second = Collector(settings, sink, clock=clock).run_cycle()
        assert not second.failed and second.streams[0].unavailable
        assert api.counters.snapshot()["by_path"]["/v1/organization/usage/decisions"] == asked  # not asked again
        api.missing_endpoints = frozenset()
        clock.advance(RECHECK_AFTER)
        third = Collector(settings, sink, clock=clock).run_cycle()
        assert not third.failed and third.streams[0].unavailable is None and third.streams[0].windows_done
    runs = [r for r in sink.list_runs() if r["usage_collector"]["stream"] == "decisions"]
    assert runs[-1]["event"]["outcome"] == "unknown" and runs[-1]["usage_collector"]["unavailable"]
    cp = sink.load_checkpoint("default", "decisions", "1h")
    assert cp is not None and cp.unavailable is None


def test_spend_controls_are_snapshots_deduplicated_by_content(org, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp_path / "l.duckdb")
    with serve(sim(org, clock)) as url:
        settings = make_settings(openai_base_url=url, streams=["embeddings"], spend_controls=True)
        Collector(settings, sink, clock=clock).run_cycle()
        docs = list(sink.iter_documents("limits"))
        clock.advance(3600)
        Collector(settings, sink, clock=clock).run_cycle()  # same day, same content: nothing new
        assert len(list(sink.iter_documents("limits"))) == len(docs)
        clock.advance(DAY)
        Collector(settings, sink, clock=clock).run_cycle()  # a new day: one more snapshot of each
        assert len(list(sink.iter_documents("limits"))) == 2 * len(docs)
    kinds = {}
    for d in docs:
        lim = d["_source"]["openai"]["limits"]
        kinds.setdefault((lim["scope"], lim["kind"]), []).append(d["_source"])
    assert set(kinds) == {
        ("organization", "spend_limit"),
        ("organization", "spend_alert"),
        ("project", "spend_limit"),
        ("project", "spend_alert"),
        ("project", "rate_limit"),
    }
    org_limit = kinds[("organization", "spend_limit")][0]["openai"]["limits"]
    assert Decimal(str(org_limit["threshold_amount"])) == Decimal("25000.00")  # 2,500,000 cents
    support = org.project("support").id
    proj = {s["openai"]["base"]["project_id"]: s["openai"]["limits"] for s in kinds[("project", "spend_limit")]}
    assert Decimal(str(proj[support]["threshold_amount"])) == Decimal("12000.50")
    assert len(proj) == 2  # the other projects answer 404: no document, no failure
    rows = sink.query("SELECT kind, threshold_amount FROM limits WHERE kind = 'spend_limit' ORDER BY 2")
    assert [r[1] for r in rows[:3]] == [Decimal("750.99"), Decimal("750.99"), Decimal("12000.50")]
    sink.close()


def test_spend_controls_are_read_at_most_once_per_spend_controls_every(org, tmp_path):
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(tmp_path / "l.duckdb")
    api = sim(org, clock)

    def spend_requests() -> int:
        by_path = api.counters.snapshot()["by_path"]
        return sum(n for path, n in by_path.items() if path.endswith(("spend_limit", "spend_alerts", "rate_limits")))

    with serve(api) as url:
        settings = make_settings(openai_base_url=url, streams=["embeddings"], spend_controls=True)
        Collector(settings, sink, clock=clock).run_cycle()
        first = spend_requests()
        assert first > 0
        clock.advance(3599)  # within the hour: not read again
        Collector(settings, sink, clock=clock).run_cycle()
        assert spend_requests() == first
        clock.advance(1)  # an hour after the last read
        Collector(settings, sink, clock=clock).run_cycle()
        assert spend_requests() == 2 * first
    cp = sink.load_checkpoint("default", "limits", "snapshot")
    assert cp is not None and cp.last_success_at == clock.now()
    sink.close()


def test_status_names_unavailable_streams_and_dropped_dimensions(org, tmp_path):
    from typer.testing import CliRunner

    from usage_collector.cli import app

    clock = FakeClock(org.end + 3 * DAY)
    path = tmp_path / "s.ndjson"
    api = sim(org, clock, missing_endpoints=("decisions",), refuse_group_by={"completions": "api_source"})
    with serve(api) as url:
        settings = make_settings(openai_base_url=url, streams=["decisions", "completions"], initial_lookback="1d")
        result = Collector(settings, NdjsonSink(path), clock=clock).run_cycle()
    assert not result.failed
    out = CliRunner().invoke(app, ["status", "--sink", f"ndjson:{path}"], env={}, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "unavailable: default decisions" in out.output
    assert "dropped dimension: default completions without api_source" in out.output
