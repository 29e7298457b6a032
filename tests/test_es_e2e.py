"""End to end into Elasticsearch: simulator -> collector -> ES (test server, or a live cluster when
``ELASTICSEARCH_URL`` is set): totals equal the truth, a rerun writes nothing, a rollover between runs
still leaves every ``_id`` once, and no credential appears in any request log.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from tests.helpers import CANARY_KEY
from tests.truth import assert_sink_equals_truth
from usage_collector.catalogue import STREAM_NAMES
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.planning import BackfillRange
from usage_collector.simulator import Organization, SimulatedAPI, serve

pytestmark = pytest.mark.live_es


@pytest.mark.parametrize("es", ["8.15.0", "9.1.0"], ids=["es8", "es9"], indirect=True)
def test_backfill_into_elasticsearch_equals_the_truth_and_a_rerun_writes_nothing(es, caplog):
    caplog.set_level(logging.DEBUG)
    org = Organization(seed=31, start="2026-10-01", days=3)
    clock = FakeClock(org.end + 3 * 86400)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now)
    with serve(api) as url:
        settings = es.settings(openai_base_url=url, concurrency=3)
        sink = es.sink(settings)
        sink.open()
        try:
            first = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
            assert not first.failed, [r.error for r in first.failed]
            compared = assert_sink_equals_truth(sink, org, STREAM_NAMES, org.start, org.end)
            assert compared > 500
            # reconciliation and allocation documents pass the strict mappings; allocation adds up to the bill
            assert list(sink.iter_documents("reconciliation"))
            allocated = sum(
                Decimal(str(d["_source"]["openai"]["allocation"]["amount"])) for d in sink.iter_documents("allocation")
            )
            assert allocated == org.total_cost()
            for stream in ("completions", "costs"):
                es.rollover(stream)  # new backing index: create alone would now duplicate
            second = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
            assert sum(r.stats.written for r in second.streams) == 0
            assert sum(r.stats.unchanged for r in second.streams) == compared
            assert_sink_equals_truth(sink, org, STREAM_NAMES, org.start, org.end)
            cp = sink.load_checkpoint("default", "completions", "1h", "run")
            assert cp is not None and cp.position == org.end
        finally:
            sink.close()
    assert CANARY_KEY not in caplog.text
