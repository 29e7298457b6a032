"""End to end over real HTTP on 127.0.0.1: the collector against the simulated organization.

The sink must equal the simulator's ground truth exactly: every stream, every bucket, every group, every
measure, to the token and the cent; a second run writes nothing; faults do not change the result.
"""

from __future__ import annotations

import pytest

from tests.helpers import CANARY_KEY, make_settings
from tests.truth import assert_sink_equals_truth
from usage_collector.catalogue import STREAM_NAMES
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.simulator import FaultPlan, Organization, SimulatedAPI, serve
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

DAYS = 6


@pytest.fixture(scope="module")
def org():
    return Organization(seed=11, start="2026-10-01", days=DAYS)


def sim(org, clock, **kw):
    return SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None, **kw)


def make_sink(kind, tmp_path):
    return DuckDBSink(tmp_path / "e2e.duckdb") if kind == "duckdb" else NdjsonSink(tmp_path / "e2e.ndjson")


@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_backfill_of_every_stream_equals_the_truth_and_a_rerun_writes_nothing(org, tmp_path, kind):
    clock = FakeClock(org.end + 3 * 86400)  # everything final and past every revision horizon
    sink = make_sink(kind, tmp_path)
    with serve(sim(org, clock)) as url:
        settings = make_settings(openai_base_url=url, concurrency=4, enrich_names=True)
        first = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert not first.failed, [r.error for r in first.failed]
        assert {r.stream for r in first.streams} == set(STREAM_NAMES)
        compared = assert_sink_equals_truth(sink, org, STREAM_NAMES, org.start, org.end)
        assert compared > 1000
        second = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
        assert sum(r.stats.written for r in second.streams) == 0
        assert sum(r.stats.unchanged for r in second.streams) == compared
    names = [d["_source"]["openai"]["base"].get("project_name") for d in sink.iter_documents("completions")]
    assert any(names), "documents carry project names from the Admin list endpoints"
    sink.close()


def test_faults_on_still_give_the_exact_truth(org, tmp_path):
    clock = FakeClock(org.end + 3 * 86400)
    faults = FaultPlan(
        seed=5, rate_limit=0.08, server_error=0.06, truncated=0.04, non_json=0.03, retry_after_format="mixed"
    )
    api = sim(org, clock, faults=faults)
    sink = make_sink("duckdb", tmp_path)
    with serve(api) as url:
        settings = make_settings(openai_base_url=url, concurrency=3, max_attempts=12)
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not result.failed, [r.error for r in result.failed]
    assert sum(r.requests.retries for r in result.streams) > 0, "the fault plan injected nothing"
    assert_sink_equals_truth(sink, org, STREAM_NAMES, org.start, org.end)


@pytest.mark.slow  # ~10 s: 96 hourly cycles over HTTP against the simulator
def test_late_revisions_are_caught_by_the_restatement_window(org, tmp_path):
    """Runs every hour across the revision horizon: the first reads are provisional, the last equal the truth."""
    streams = ["completions", "embeddings", "costs"]
    clock = FakeClock(org.end - 86400 + 1800)
    api = sim(org, clock, revision_horizon=6 * 3600, costs_revision_horizon=86400)
    sink = make_sink("ndjson", tmp_path)
    with serve(api) as url:
        settings = make_settings(
            openai_base_url=url,
            streams=streams,
            initial_lookback="8d",
            finalization_grace="0s",
            restatement={"completions": "8h", "embeddings": "8h"},
        )
        c = Collector(settings, sink, clock=clock)
        updated = 0
        while clock.now() < org.end + 3 * 86400:
            result = c.run_cycle()
            assert not result.failed, [r.error for r in result.failed]
            updated += sum(r.stats.updated for r in result.streams)
            clock.advance(3600)
    assert updated > 0, "no revision was ever observed: the test proves nothing"
    assert_sink_equals_truth(sink, org, streams, org.start, org.end)


def test_a_collector_that_never_rereads_would_undercount(org, tmp_path):
    """The control for the test above: with no restatement window the sink stays below the truth."""
    clock = FakeClock(org.end - 86400 + 1800)
    api = sim(org, clock, revision_horizon=6 * 3600)
    sink = make_sink("ndjson", tmp_path)
    with serve(api) as url:
        settings = make_settings(
            openai_base_url=url,
            streams=["completions"],
            initial_lookback="8d",
            finalization_grace="0s",
            restatement={"completions": "0s"},
        )
        c = Collector(settings, sink, clock=clock)
        while clock.now() < org.end + 86400:
            c.run_cycle()
            clock.advance(3600)
    with pytest.raises(AssertionError, match="differences"):
        assert_sink_equals_truth(sink, org, ["completions"], org.start, org.end)


def test_two_organizations_in_one_install_each_equal_their_truth(tmp_path):
    """``[[organizations]]``: one sink, two Admin keys, documents kept apart by ``organization.id``."""
    from pydantic import SecretStr

    from usage_collector.config import OrgConfig

    org_a = Organization(seed=21, start="2026-10-01", days=2)
    org_b = Organization(seed=22, start="2026-10-01", days=2)
    clock = FakeClock(org_a.end + 3 * 86400)
    key_b = CANARY_KEY + "-b"
    sink = make_sink("duckdb", tmp_path)
    with serve(sim(org_a, clock)) as url_a, serve(SimulatedAPI(org_b, admin_key=key_b, clock=clock.now)) as url_b:
        settings = make_settings(streams=["completions", "costs"])
        settings.organizations = [
            OrgConfig(id="org-a", name="A", admin_key=SecretStr(CANARY_KEY), base_url=url_a),
            OrgConfig(id="org-b", name="B", admin_key=SecretStr(key_b), base_url=url_b),
        ]
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org_a.start, org_a.end))
    assert not result.failed and {r.org_id for r in result.streams} == {"org-a", "org-b"}

    class OneOrg:
        def __init__(self, org_id):
            self.org_id = org_id

        def iter_documents(self):
            return (d for d in sink.iter_documents() if d["_source"]["organization"]["id"] == self.org_id)

    assert_sink_equals_truth(OneOrg("org-a"), org_a, ["completions", "costs"], org_a.start, org_a.end)
    assert_sink_equals_truth(OneOrg("org-b"), org_b, ["completions", "costs"], org_b.start, org_b.end)


def test_report_totals_equal_the_bill_to_the_cent(org, tmp_path):
    from decimal import Decimal

    from usage_collector.report import build_report, render_html

    clock = FakeClock(org.end + 3 * 86400)
    sink = make_sink("duckdb", tmp_path)
    with serve(sim(org, clock)) as url:
        collector = Collector(make_settings(openai_base_url=url, streams=["costs"]), sink, clock=clock)
        collector.backfill(BackfillRange(org.start, org.end))
    rep = build_report(sink)
    assert rep.total_cost == org.total_cost(org.start, org.end) > 0
    assert sum((v for _, v in rep.cost_by_project), Decimal(0)) == rep.total_cost
    assert sum((v for _, v in rep.cost_by_line_item), Decimal(0)) == rep.total_cost
    assert len(rep.days) == DAYS
    page = render_html(rep)
    assert f"${rep.total_cost.quantize(Decimal('0.01')):,}" in page
