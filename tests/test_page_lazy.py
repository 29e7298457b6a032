"""Pages decoded a bucket at a time (``parse_page_lazily``): the same page and the same errors as
``parse_page``, with ``data`` held as raw JSON per bucket (P4 memory)."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers import bucket, page
from usage_collector.catalogue import STREAMS
from usage_collector.errors import FatalApiError, RetriableApiError
from usage_collector.models import LazyBuckets, parse_page, parse_page_lazily

COSTS = STREAMS["costs"]


def _row(i: int, value: object) -> dict[str, object]:
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": "usd"},
        "line_item": f"gpt-4o-2024-08-06, input {i}",
        "project_id": f"proj_{i % 3}",
        "extra": {"nested": [1, 2.5]},
    }


def _body(has_more: bool = False) -> bytes:
    values: list[object] = [1.5, "2.25", 0.123456789012345678901, 7, None]
    data = [bucket(d * 86400, (d + 1) * 86400, [_row(i, values[(d + i) % 5]) for i in range(4)]) for d in range(6)]
    data.append(bucket(6 * 86400, 7 * 86400, []))
    out = page(data)
    out["has_more"] = has_more
    out["next_page"] = "page_x" if has_more else None
    return orjson.dumps(out)


@pytest.mark.parametrize("has_more", [False, True])
def test_the_same_page_as_parse_page(has_more):
    body = _body(has_more)
    lazy = parse_page_lazily(COSTS, body)
    whole = parse_page(COSTS, body)
    assert isinstance(lazy["data"], LazyBuckets)
    assert len(lazy["data"]) == len(whole["data"]) == 7 and bool(lazy["data"])
    assert list(lazy["data"]) == whole["data"]
    assert lazy["data"][2] == whole["data"][2]
    assert {k: v for k, v in lazy.items() if k != "data"} == {k: v for k, v in whole.items() if k != "data"}
    # decimals stay exact, text amounts coerced, as parse_page does
    values = [r["amount"]["value"] for b in lazy["data"] for r in b["results"]]
    assert values == [r["amount"]["value"] for b in whole["data"] for r in b["results"]]


def _same_error(body: bytes) -> None:
    with pytest.raises((FatalApiError, RetriableApiError)) as whole:
        parse_page(COSTS, body)
    with pytest.raises(whole.type) as lazy:
        parse_page_lazily(COSTS, body)
    assert str(lazy.value) == str(whole.value)


@pytest.mark.parametrize(
    "body",
    [
        b'{"object":"page","data":[',
        b"<html>502 Bad Gateway</html>",
        b"[1, 2]",
        b'{"object":"page"}',
        b'{"object":"page","data":{},"has_more":false}',
        b'{"object":"page","data":[],"has_more":"perhaps"}',
        b'{"object":"page","data":[],"has_more":true,"next_page":3}',
        b'{"object":"page","data":[{"start_time":0,"end_time":1,"results":[]},7],"has_more":false}',
        b'{"object":"page","data":[{"start_time":0,"end_time":1,"results":[]},'
        b'{"start_time":"soon","end_time":1,"results":[]}],"has_more":false}',
        b'{"object":"page","data":[{"start_time":0,"end_time":1,"results":[]},'
        b'{"start_time":0,"end_time":1,"results":[{"amount":{"value":"lots"}}]}],"has_more":false}',
    ],
    ids=[
        "truncated",
        "html",
        "not-an-object",
        "missing-data",
        "data-not-a-list",
        "has-more-not-bool",
        "next-page-not-text",
        "bucket-not-an-object",
        "second-bucket-wrong-type",
        "second-bucket-bad-amount",
    ],
)
def test_the_same_errors_as_parse_page(body):
    _same_error(body)


def test_a_usage_page_is_decoded_where_it_is_used_with_the_same_errors():
    """Usage pages are not checked ahead (a fixed number of buckets, decoded once): the buckets are those of
    parse_page, and a malformed one raises parse_page's error when it is reached."""
    spec = STREAMS["completions"]
    ok = {"object": spec.object_type, "input_tokens": "5", "output_tokens": 1, "num_model_requests": 1, "x": 2.5}
    good = orjson.dumps(page([bucket(d * 3600, (d + 1) * 3600, [ok, {**ok, "model": "m"}]) for d in range(5)]))
    assert list(parse_page_lazily(spec, good)["data"]) == parse_page(spec, good)["data"]
    bad = page([bucket(d * 3600, (d + 1) * 3600, [dict(ok)]) for d in range(3)])
    bad["data"][2]["results"][0]["input_tokens"] = "seven"
    body = orjson.dumps(bad)
    with pytest.raises(FatalApiError) as whole:
        parse_page(spec, body)
    lazy = iter(parse_page_lazily(spec, body)["data"])
    assert next(lazy)["results"][0]["input_tokens"] == 5 and next(lazy)
    with pytest.raises(FatalApiError) as late:
        next(lazy)
    assert str(late.value) == str(whole.value) and "data.2.results.0.input_tokens" in str(late.value)
    with pytest.raises(RetriableApiError):
        parse_page_lazily(spec, good[:-3])


def test_usual_buckets_are_checked_without_check_page_and_read_as_parse_page_reads_them(monkeypatch):
    """A bucket whose rows a checker already made takes is checked by LazyBuckets itself (P8: 1m buckets of ~3.6
    rows, _check_page's per-page setup for each); a row none takes (a coercion, new keys) sends the bucket to
    _check_page from its first row, and the rows come out as parse_page's, coerced once."""
    from usage_collector import models

    spec = STREAMS["completions"]
    ok = {"object": spec.object_type, "input_tokens": 5, "output_tokens": 1, "num_model_requests": 1}
    other = {**ok, "model": "m"}  # other keys: another checker
    rows = [[ok, other], [other, ok, other], [ok, {**ok, "input_tokens": "7"}, other], [{**other, "x": 2.5}], [ok]]
    body = orjson.dumps(page([bucket(d * 60, (d + 1) * 60, r) for d, r in enumerate(rows)]))
    calls: list[int] = []
    check_page = models._check_page

    def spy(page_: object, types: object) -> None:
        calls.append(len(page_["data"]) if isinstance(page_, dict) else -1)  # type: ignore[arg-type]
        check_page(page_, types)

    monkeypatch.setattr(models, "_check_page", spy)
    monkeypatch.setitem(models._CHECKS, id(models._types(spec)), {})  # no checker made by another test
    lazy = list(parse_page_lazily(spec, body)["data"])
    during = len(calls)
    assert lazy == parse_page(spec, body)["data"]
    assert lazy[2]["results"][1]["input_tokens"] == 7
    # the page's top level once, then only the buckets with a row no checker took yet: 0 (new keys), 2 (a coercion),
    # 3 (new keys); buckets 1 and 4 were checked in LazyBuckets
    assert during == 1 + 3
