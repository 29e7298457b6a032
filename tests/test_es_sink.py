"""What only the Elasticsearch sink does: idempotent windows across rollover, retries, failures, strict mappings.

Runs against ``tests/es_server.py``, or a live cluster when ``ELASTICSEARCH_URL`` is set (tests that need
the test server's fault hooks skip there). The contract every sink keeps is tested in ``test_sink_contract.py``.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests import helpers
from tests.conftest_es import EsTarget
from tests.helpers import T0, cp, current
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Document, Target, shape
from usage_collector.errors import SinkError

pytestmark = pytest.mark.live_es


def docs(es: EsTarget, tokens: tuple[int, ...] = (10, 20, 30)) -> list[Document]:
    """:func:`tests.helpers.docs` in the target's namespace."""
    return helpers.docs(tokens, namespace=es.namespace)


def test_a_second_write_of_the_same_window_sends_no_bulk_request(es):
    server = es.require_server()
    sink = es.sink()
    sink.write_window(docs(es), cp())
    bulks = len(server.headers_of("/_bulk"))
    assert bulks == 1
    assert sink.write_window(docs(es), cp()).unchanged == 3
    assert len(server.headers_of("/_bulk")) == bulks


def test_a_revised_bucket_is_updated_in_place_and_exists_once_after_a_rollover(es):
    sink = es.sink()
    sink.write_window(docs(es), cp())
    first_index = es.copies("embeddings", docs(es)[1].id)
    new_index = es.rollover("embeddings")
    revised = sink.write_window(docs(es, (10, 25, 30)), cp())
    assert (revised.created, revised.updated, revised.unchanged) == (0, 1, 2)
    assert revised.ids_updated == [docs(es)[1].id]
    assert es.copies("embeddings", docs(es)[1].id) == first_index != [new_index]  # overwritten where it was
    assert sorted(current(sink).values()) == [10, 25, 30]
    assert {d["_index"] for d in sink.iter_documents("embeddings")} == {es.data_stream("embeddings")}


def test_copies_of_an_id_in_two_backing_indices_are_reduced_to_one(es):
    """Another tool (or create-only ingestion across a rollover) left the same _id twice (ref §2, #44794)."""
    client = es.client()
    doc = docs(es)[0]
    for _ in range(2):
        client.create(index=doc.index, id=doc.id, document=doc.source, refresh=True)
        es.rollover("embeddings")
    assert len(es.copies("embeddings", doc.id)) == 2
    stats = es.sink().write_window(docs(es), cp())
    assert (stats.created, stats.unchanged) == (2, 1)
    assert len(es.copies("embeddings", doc.id)) == 1


def test_a_bulk_item_rejected_with_429_is_retried_and_succeeds(es):
    server = es.require_server()
    server.reject_next_items(2)
    stats = es.sink().write_window(docs(es), cp())
    assert (stats.created, stats.retried) == (3, 2)
    assert len(current(es.sink())) == 3


def test_429_beyond_max_retries_fails_the_window_and_keeps_the_checkpoint(es):
    server = es.require_server()
    server.reject_next_items(1000)
    with pytest.raises(SinkError, match="es_rejected_execution_exception") as info:
        es.sink(max_retries=2).write_window(docs(es), cp())
    assert len(info.value.errors) == 3
    assert es.sink().load_checkpoint("org", "embeddings", "1h") is None


def test_a_mapping_error_fails_the_window_names_the_id_and_field_and_keeps_the_checkpoint(es):
    sink = es.sink()
    bad = docs(es)
    bad[1].source["openai"]["embeddings"]["input_tokens"] = "many"
    with pytest.raises(SinkError) as info:
        sink.write_window(bad, cp())
    message = str(info.value)
    assert bad[1].id in message and "openai.embeddings.input_tokens" in message and "1 of 3" in message
    assert info.value.errors[0]["field"] == "openai.embeddings.input_tokens"
    assert info.value.errors[0]["status"] == 400
    assert sink.load_checkpoint("org", "embeddings", "1h") is None


def test_an_unmapped_field_is_refused_by_the_strict_mapping_and_named(es):
    bad = docs(es)
    bad[0].source["openai"]["base"]["surprise"] = 1
    with pytest.raises(SinkError, match=r"field openai\.base\.surprise") as info:
        es.sink().write_window(bad, cp())
    assert info.value.errors[0]["_id"] == bad[0].id


def test_a_new_numeric_field_of_a_stream_is_kept_and_mapped_long_or_double(es):
    window = docs(es)
    own = window[0].source["openai"].setdefault("embeddings", {})
    own["input_new_tokens"] = 12
    own["new_ratio"] = 0.25
    assert es.sink().write_window(window, cp()).created == 3
    mapping = es.client().indices.get_mapping(index=window[0].index)
    props = next(iter(mapping.body.values()))["mappings"]["properties"]["openai"]["properties"]["embeddings"]
    assert props["properties"]["input_new_tokens"]["type"] == "long"
    assert props["properties"]["new_ratio"]["type"] == "double"
    stored = {d["_id"]: d for d in es.sink().iter_documents("embeddings")}
    assert stored[window[0].id]["_source"]["openai"]["embeddings"]["input_new_tokens"] == 12


def test_an_injected_item_error_names_the_document(es):
    server = es.require_server()
    window = docs(es)
    server.fail_item(window[2].id, "boom")
    with pytest.raises(SinkError, match=f"_id {window[2].id}.*boom"):
        es.sink().write_window(window, cp())


def test_the_server_going_down_mid_window_loses_nothing_after_a_retry(es):
    server = es.require_server()
    sink = es.sink(chunk_size=2, transport_retries=1)
    window = docs(es, tuple(range(1, 7)))
    sink.open()
    server.die_after_bulks(1)  # the first chunk of 2 lands, then the node dies
    with pytest.raises(SinkError, match=r"unreachable.*checkpoint was not moved"):
        sink.write_window(window, cp())
    server.start()  # back on the same port, data kept
    assert sink.load_checkpoint("org", "embeddings", "1h") is None
    stats = sink.write_window(window, cp())
    assert (stats.created, stats.unchanged) == (4, 2)
    assert sorted(current(sink).values()) == [1, 2, 3, 4, 5, 6]
    assert sink.load_checkpoint("org", "embeddings", "1h").position == T0 + 3600


def test_a_server_that_is_down_gives_a_sink_error_and_the_retry_works(es):
    server = es.require_server()
    sink = es.sink(transport_retries=0)
    sink.open()
    server.stop()
    with pytest.raises(SinkError, match="unreachable"):
        sink.write_window(docs(es), cp())
    server.start()
    assert sink.write_window(docs(es), cp()).created == 3


def test_a_409_from_a_write_the_lookup_could_not_see_is_resolved_in_real_time(es):
    """Someone wrote v1 without a refresh: the search misses it, create meets 409, mget reads it."""
    server = es.require_server()
    client = es.client()
    window = docs(es)
    sink = es.sink()
    sink.open()
    client.create(index=window[0].index, id=window[0].id, document=window[0].source)  # no refresh
    revised = docs(es, (11, 20, 30))
    server.requests.clear()
    stats = sink.write_window(revised, cp())
    assert (stats.created, stats.updated, stats.retried) == (2, 1, 1)
    # The path taken: create met 409 in the backing index (the item names it, as Elasticsearch does), the bulk's
    # refresh made the copy visible, and the second pass overwrote it there with if_seq_no/if_primary_term.
    bulks = [r.body.decode().splitlines() for r in server.requests if r.path.split("?")[0] == "/_bulk"]
    assert len(bulks) == 2
    (header, _source) = bulks[1]
    assert json.loads(header) == {
        "index": {
            "_id": window[0].id,
            "_index": server.copies(window[0].id)[0],
            "if_seq_no": 0,
            "if_primary_term": 1,
        }
    }
    assert server.copies(window[0].id)[0].startswith(".ds-")
    assert [
        server.source(i, window[0].id)["openai"]["embeddings"]["input_tokens"] for i in server.copies(window[0].id)
    ] == [11]


def test_every_stream_writes_a_full_document_through_the_strict_mappings(es):
    """Every field shape() can produce is mapped with a type that accepts it (costs as decimal strings)."""
    window = []
    for spec in STREAMS.values():
        row = {"object": spec.object_type}
        for dim in spec.dimensions:
            row[dim.name] = True if dim.type == "boolean" else f"{dim.name}-1"
        for m in spec.measures:
            if m.name == "amount.value":
                row["amount"] = {"value": Decimal("12.500001"), "currency": "usd"}
            else:
                row[m.name] = Decimal("1.5") if m.value_type == "decimal" else 7
        if "quantity_unit" in spec.attributes:
            row["quantity_unit"] = "tokens"
        window.append(
            shape(
                spec,
                Target("org", "Org", namespace=es.namespace),
                spec.default_width,
                T0,
                T0 + 86400,
                spec.group_by,
                row,
            )
        )
    stats = es.sink().write_window(window, None)
    assert stats.created == len(STREAMS)
    costs = list(es.sink().iter_documents("costs"))
    assert costs[0]["_source"]["openai"]["costs"]["amount"]["value"] == 12.500001


def test_open_without_setup_says_to_run_setup(es):
    with pytest.raises(SinkError, match="run `usage-collector setup`"):
        es.sink(auto_setup=False).open()


def test_make_sink_builds_it_from_settings_without_credentials_in_the_description(es):
    from usage_collector.sinks import make_sink

    settings = es.settings(elasticsearch_url=es.url.replace("://", "://elastic:canary-es-password-XYZ@") + "/")
    sink = make_sink("elasticsearch", settings)
    assert sink.description == f"elasticsearch:{es.url}"
    assert "canary" not in repr(sink)


@pytest.mark.parametrize("page", [2, 1000], ids=["scroll", "one-search"])
def test_iter_documents_reads_every_page_and_the_newest_copy_wins(es, monkeypatch, page):
    """A range that fits in a page is one search; a larger one is scrolled: the same documents either way, the newest
    backing index's copy of an ``_id`` stored twice (another tool, an old rollover) winning."""
    from usage_collector.elastic import sink as sink_mod

    monkeypatch.setattr(sink_mod, "READ_PAGE", page)
    sink = es.sink()
    sink.write_window(docs(es, (10, 20, 30, 40, 50)), cp())
    es.rollover("embeddings")
    stale = docs(es, (11,))[0]  # p0 again, with other tokens, in the new backing index
    es.client().create(index=stale.index, id=stale.id, document=stale.source, refresh=True)
    assert len(es.copies("embeddings", stale.id)) == 2
    got = current(sink)
    assert got == dict(zip([d.id for d in docs(es, (0,) * 5)], [11, 20, 30, 40, 50], strict=True))
    ranged = {d["_id"] for d in sink.iter_documents("embeddings", start=T0, end=T0 + 3600)}
    assert ranged == set(got) and not list(sink.iter_documents("embeddings", start=T0 + 3600))


def test_bulk_lines_are_the_json_of_the_actions_whatever_their_form():
    """``bulk_lines`` spells out the action line of ``_plan``'s ``create`` actions; every other action (an
    ``index`` with its sequence number, a ``delete``, keys in another order) is serialized from its dict: each line
    is the compact JSON of ``{op: meta}`` and the source line the document's serialized ``_source``."""
    import orjson

    from usage_collector.documents import dumps
    from usage_collector.elastic.sink import ElasticsearchSink, bulk_lines

    doc = helpers.docs((10,))[0]
    doc.source["openai"]["base"]["amount"] = Decimal("0.10")  # a Decimal in the source: dumps' default
    (create,) = ElasticsearchSink._plan([doc], {}, {})
    index = {"_op_type": "index", "_index": ".ds-x-000001", "_id": doc.id, "if_seq_no": 3, "if_primary_term": 1}
    delete = {"_op_type": "delete", "_index": ".ds-x-000002", "_id": doc.id, "if_seq_no": 4, "if_primary_term": 1}
    reordered = {"_op_type": "create", "_id": doc.id, "_index": doc.index, "_source": doc}
    for action in (create, {**index, "_source": doc}, delete, reordered):
        line, source = bulk_lines(action)
        meta = {k: v for k, v in action.items() if k not in ("_op_type", "_source")}
        assert line == orjson.dumps({action["_op_type"]: meta}) and line.copy() == {action["_op_type"]: meta}
        assert source == (dumps(doc.source) if "_source" in action else None)
    assert bulk_lines(create)[0] == b'{"create":{"_index":"%s","_id":"%s"}}' % (doc.index.encode(), doc.id.encode())


@pytest.mark.parametrize("page", [2, 1000], ids=["scroll", "one-search"])
def test_superseded_documents_are_found_in_one_search_when_they_fit_else_scrolled(es, monkeypatch, page):
    """The stored documents of the re-read buckets that the window no longer holds are deleted, whether they were
    found by one search (they fit in a page: no scroll is opened, nor cleared) or by a scroll."""
    from usage_collector.elastic import sink as sink_mod
    from usage_collector.sinks.base import BucketSet

    server = es.require_server()
    monkeypatch.setattr(sink_mod, "READ_PAGE", page)
    sink = es.sink()
    window = docs(es, (10, 20, 30, 40, 50))
    sink.write_window(window, cp())
    before = len(server.requests)
    replaces = BucketSet("org", "embeddings", "1h", window[0].index, frozenset(d.timestamp for d in window))
    stats = sink.write_window(window[:2], cp(), replaces)
    assert (stats.deleted, stats.unchanged) == (3, 2)
    assert current(sink) == {window[0].id: 10, window[1].id: 20}
    scrolls = [r for r in server.requests[before:] if "scroll" in r.path]
    assert bool(scrolls) == (page == 2)
