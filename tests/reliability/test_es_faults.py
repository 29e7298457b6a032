"""Elasticsearch sink faults (``tests/es_server.py`` fault hooks): bulk items rejected with 429 are resent and
the result is exact; an item refused with 400 fails its stream, naming the ``_id`` and the reason, without
moving the checkpoint; the server going down in the middle of a run and coming back loses nothing.

Skipped against a live cluster (``ELASTICSEARCH_URL``): the hooks need the test server.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import make_settings
from tests.reliability.helpers import (
    DAY,
    assert_checkpoints_never_pass_unwritten_data,
    assert_exact,
    assert_no_canary,
    past_org,
)
from tests.reliability.matrix import MATRIX
from usage_collector.clock import FakeClock, iso
from usage_collector.collector import Collector
from usage_collector.errors import SinkError
from usage_collector.planning import BackfillRange
from usage_collector.sinks.ndjson import NdjsonSink

#: completions and embeddings have two windows each (8 days of 1h buckets), costs one: 5 windows in order
STREAMS = ["completions", "embeddings", "costs"]
ES_KEY = "CANARY-es-api-key-4d2b8e"

pytestmark = [pytest.mark.live_es, pytest.mark.es_server(api_key=ES_KEY)]


@pytest.fixture(scope="module")
def org():
    return past_org(seed=404, days=8)


@pytest.fixture(autouse=True)
def _test_server_only(es):
    es.require_server()  # the fault hooks need the test server


def _settings(es, url):
    return es.settings(openai_base_url=url, streams=STREAMS, elasticsearch_api_key=ES_KEY)


def _backfill(org, es, url, sink, later=0.0):
    clock = FakeClock(org.end + 3 * DAY + later)
    result = Collector(_settings(es, url), sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not result.skipped, result.skipped
    return result


def test_bulk_items_rejected_with_429_are_resent_and_the_result_is_exact(org, url, es):
    sink = es.sink(_settings(es, url))
    with MATRIX.run("elasticsearch: bulk item 429", "resent"):
        es.server.reject_next_items(300)
        result = _backfill(org, es, url, sink)
        assert not result.failed, [r.error for r in result.failed]
        assert sum(r.stats.retried for r in result.streams) >= 300
        assert_exact(sink, org, STREAMS)
    sink.close()


def _dump(sink) -> str:
    """Every document, checkpoint and run record in the sink, as text."""
    return json.dumps(
        [list(sink.iter_documents()), [c.to_dict() for c in sink.list_checkpoints()], sink.list_runs(1000)], default=str
    )


def _an_id_in_the_second_window(org, url, tmp_path) -> str:
    """The ``_id`` of a completions document of the second window (same ``_id`` in every sink)."""
    sink = NdjsonSink(tmp_path / "ids.ndjson")
    Collector(
        make_settings(openai_base_url=url, streams=["completions"]), sink, clock=FakeClock(org.end + 3 * DAY)
    ).backfill(BackfillRange(org.start, org.end))
    second = iso(org.start + 7 * DAY)
    return next(str(d["_id"]) for d in sink.iter_documents("completions") if d["_source"]["@timestamp"] >= second)


def test_a_bulk_item_refused_with_400_fails_its_stream_naming_it_and_the_checkpoint_stays(org, url, es, tmp_path):
    doc_id = _an_id_in_the_second_window(org, url, tmp_path)
    sink = es.sink(_settings(es, url))
    with MATRIX.run("elasticsearch: bulk item 400", "stream stops, heal, rerun"):
        es.server.fail_item(
            doc_id, reason="failed to parse field [openai.completions.input_tokens]", type_="document_parsing_exception"
        )
        result = _backfill(org, es, url, sink)
        (failed,) = result.failed
        assert failed.stream == "completions"
        assert doc_id in (failed.error or "") and "document_parsing_exception 400" in (failed.error or ""), failed
        positions = assert_checkpoints_never_pass_unwritten_data(sink, org, STREAMS)
        assert positions == {"completions": org.start + 7 * DAY, "embeddings": org.end, "costs": org.end}
        es.server.heal()
        rerun = _backfill(org, es, url, sink)
        assert not rerun.failed, [r.error for r in rerun.failed]
        assert_exact(sink, org, STREAMS)
    assert_no_canary("elasticsearch 400", [failed.error or "", _dump(sink)], secrets=[ES_KEY])
    sink.close()


def _down_mid_run(org, es, url, sink):
    """Backfill while the server dies after 4 bulk requests (inside completions' first window, which takes 5
    bulk requests of 500 items); returns the result, or the error that escaped ``backfill``."""
    es.server.die_after_bulks(4)
    try:
        return _backfill(org, es, url, sink)
    except SinkError as exc:  # see test_the_result_of_a_cycle_survives_the_sink_going_down below
        return exc
    finally:
        if es.server.down:
            es.server.stop()


def test_the_server_going_down_mid_run_and_coming_back_loses_nothing(org, url, es):
    sink = es.sink(_settings(es, url))
    with MATRIX.run("elasticsearch: server down mid-run, back", "rerun"):
        outcome = _down_mid_run(org, es, url, sink)
        errors = [str(outcome)] if isinstance(outcome, SinkError) else [r.error or "" for r in outcome.failed]
        assert errors, "the server never went down"
        for error in errors:
            assert "Elasticsearch unreachable" in error, error
        es.server.start()  # same port, data kept
        assert_checkpoints_never_pass_unwritten_data(sink, org, STREAMS)
        # the lease could not be released while the server was down: the next run waits for its TTL
        rerun = _backfill(org, es, url, sink, later=_settings(es, url).lease_ttl + 1)
        assert not rerun.failed, [r.error for r in rerun.failed]
        assert_exact(sink, org, STREAMS)
    assert_no_canary("elasticsearch down", [*errors, _dump(sink)], secrets=[ES_KEY])
    sink.close()


def test_the_result_of_a_cycle_survives_the_sink_going_down(org, url, es):
    """Regression (found by this matrix, fixed in c27436a): ``release_lease`` raising in the ``finally`` of
    ``Collector._each_org`` replaced the cycle's result, so ``backfill``/``run`` printed a traceback instead
    of which streams failed and why."""
    sink = es.sink(_settings(es, url))
    outcome = _down_mid_run(org, es, url, sink)
    es.server.start()
    sink.close()
    assert not isinstance(outcome, Exception), f"backfill raised instead of returning the failed streams: {outcome}"


def test_a_stream_written_before_the_sink_went_down_is_not_reported_failed(org, url, es):
    """Regression (found by this matrix, fixed in f6d2ca0): ``_collect_stream`` called ``self._range`` (which
    loads the checkpoint) before its ``try``, so when the sink went down the exception left the stream and
    ``_each_org`` marked *every* stream of the organization failed with that one error: completions, written
    and checkpointed before the server died, was reported FAILED and embeddings lost its own reason."""
    sink = es.sink(_settings(es, url))
    with MATRIX.run("elasticsearch: server down mid-run, back", "each stream reports its own outcome"):
        # completions' two windows take 8 bulk requests (each window is written in parts of WRITE_PART documents,
        # one bulk request or more a part; counted on this server): the server dies right after them
        es.server.die_after_bulks(8)
        try:
            result = _backfill(org, es, url, sink)
        finally:
            es.server.stop()
            es.server.start()
            sink.close()
        status = {r.stream: r.error or "ok" for r in result.streams}
        assert status["completions"] == "ok", status
        assert "during a bulk write" in status["embeddings"], status
