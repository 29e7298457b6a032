"""Parsing: numeric strings, Decimal money, unknown fields, absent optional fields, bad bodies."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tests.helpers import bucket, page
from usage_collector.catalogue import STREAMS
from usage_collector.errors import FatalApiError, RetriableApiError
from usage_collector.models import parse_page


def _parse(stream, results):
    return parse_page(STREAMS[stream], orjson.dumps(page([bucket(0, 86400, results)])))["data"][0]["results"]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('"12.50"', Decimal("12.50")),
        ("12.5", Decimal("12.5")),
        ("0.123456789012345678901", Decimal("0.123456789012345678901")),
        ('"0.0042"', Decimal("0.0042")),
    ],
    ids=["string", "number", "many-digits-kept-exact", "small-string"],
)
def test_cost_amounts_are_exact_decimals(raw, expected):
    body = (
        '{"object":"page","has_more":false,"next_page":null,"data":[{"object":"bucket","start_time":0,'
        '"end_time":86400,"results":[{"object":"organization.costs.result","amount":{"value":'
        + raw
        + ',"currency":"usd"},"line_item":"x","project_id":"p"}]}]}'
    )
    res = parse_page(STREAMS["costs"], body.encode())["data"][0]["results"][0]
    assert res["amount"]["value"] == expected and isinstance(res["amount"]["value"], Decimal)


def test_unknown_fields_are_kept_and_numeric_strings_coerced():
    (res,) = _parse(
        "completions",
        [
            {
                "object": "organization.usage.completions.result",
                "input_tokens": "42",
                "output_tokens": 1,
                "num_model_requests": 1,
                "organization_id": "org-x",
                "api_source": "responses",
            }
        ],
    )
    assert res["input_tokens"] == 42
    # unknown fields are kept as they came; the shaper keeps the numeric ones and ignores the rest
    assert res["organization_id"] == "org-x" and res["api_source"] == "responses"


def test_absent_optional_token_fields_stay_absent_not_zero():
    (res,) = _parse("completions", [{"input_tokens": 5, "output_tokens": 1, "num_model_requests": 1}])
    assert "input_cache_write_tokens" not in res and "input_cached_tokens" not in res


@pytest.mark.parametrize(
    "body,error",
    [
        (b'{"object":"page","data":[', RetriableApiError),
        (b"<html>502 Bad Gateway</html>", RetriableApiError),
        (b'{"object":"page","data":[{"start_time":"soon","end_time":1,"results":[]}],"has_more":false}', FatalApiError),
        (b'{"object":"page"}', FatalApiError),
    ],
    ids=["truncated", "html", "wrong-type", "missing-data"],
)
def test_bad_bodies_are_classified(body, error):
    with pytest.raises(error):
        parse_page(STREAMS["completions"], body)


def test_a_row_shaped_like_a_valid_one_but_with_other_value_types_is_still_coerced_or_refused():
    """Rows whose keys and value types match a row already checked skip the per-field look; the same keys with
    a numeric string, a text amount or a bad value are still coerced or refused (the types are part of it)."""
    ok = {"object": STREAMS["completions"].object_type, "input_tokens": 5, "output_tokens": 1, "num_model_requests": 1}
    rows = _parse("completions", [ok, {**ok, "input_tokens": "7"}, ok])
    assert [r["input_tokens"] for r in rows] == [5, 7, 5] and type(rows[1]["input_tokens"]) is int
    with pytest.raises(FatalApiError, match=r"results\.1\.input_tokens"):
        _parse("completions", [ok, {**ok, "input_tokens": "seven"}])
    cost = {"object": "organization.costs.result", "amount": {"value": 1.5, "currency": "usd"}, "line_item": "x"}
    text = {**cost, "amount": {"value": "2.25", "currency": "usd"}}
    got = _parse("costs", [cost, text, cost, text])
    assert [r["amount"]["value"] for r in got] == [Decimal("1.5"), Decimal("2.25")] * 2
    assert all(type(r["amount"]["value"]) is Decimal for r in got)
    with pytest.raises(FatalApiError, match=r"results\.1\.amount\.value"):
        _parse("costs", [cost, {**cost, "amount": {"value": "lots", "currency": "usd"}}])


def test_rows_of_a_shape_that_needs_coercion_are_each_coerced_and_each_can_still_fail():
    """The coercions a shape needs are found once and remembered; they still run on every row's own value, and a
    later row of the same shape whose value cannot be coerced is refused, naming its field."""
    row = {"object": "organization.costs.result", "amount": {"value": "1.10", "currency": "usd"}, "quantity": 3}
    rows = [{**row, "amount": {"value": f"{i}.10", "currency": "usd"}, "quantity": i} for i in range(4)]
    got = _parse("costs", rows)
    assert [r["amount"]["value"] for r in got] == [Decimal(f"{i}.10") for i in range(4)]
    assert [r["quantity"] for r in got] == list(range(4)) and all(type(r["quantity"]) is Decimal for r in got)
    bad = [*rows[:2], {**row, "amount": {"value": "1.1.0", "currency": "usd"}}]
    with pytest.raises(FatalApiError, match=r"results\.2\.amount\.value: not a decimal number"):
        _parse("costs", bad)
    ok = {"object": STREAMS["completions"].object_type, "input_tokens": "5", "output_tokens": 1}
    assert [r["input_tokens"] for r in _parse("completions", [ok, {**ok, "input_tokens": " 6 "}])] == [5, 6]
    with pytest.raises(FatalApiError, match=r"results\.1\.input_tokens: not an integer"):
        _parse("completions", [ok, {**ok, "input_tokens": "6x"}])


def test_the_checker_passes_the_usual_amount_and_still_coerces_or_refuses_the_others():
    """A costs row's checker passes an amount with a Decimal value and a text currency as it is, and rows of the
    same keys with any other amount still get the full rules: a text or integer value made a Decimal, a null value or
    currency kept, a currency that is not text refused (a guard for speed work on the checker, issue 18 P2)."""
    row = {"object": "organization.costs.result", "amount": {"value": 1.25, "currency": "usd"}, "quantity": 2}
    variants = [
        {**row, "amount": {"value": "0.10", "currency": "usd"}},
        {**row, "amount": {"value": 3, "currency": "usd"}},
        {**row, "amount": {"value": None, "currency": "usd"}},
        {**row, "amount": {"value": 1.5, "currency": None}},
        {**row, "amount": {"value": 1.5}},
        {**row, "amount": None},
    ]
    got = _parse("costs", [row, *variants, row])
    values = [None if r["amount"] is None else r["amount"].get("value") for r in got]
    assert values == [
        Decimal("1.25"),
        Decimal("0.10"),
        Decimal(3),
        None,
        Decimal("1.5"),
        Decimal("1.5"),
        None,
        Decimal("1.25"),
    ]
    assert all(type(v) is Decimal for v in values if v is not None)
    assert [r["amount"] and r["amount"].get("currency") for r in got] == [
        "usd",
        "usd",
        "usd",
        "usd",
        None,
        None,
        None,
        "usd",
    ]
    with pytest.raises(FatalApiError, match=r"results\.1\.amount\.currency"):
        _parse("costs", [row, {**row, "amount": {"value": 1.5, "currency": 5}}])
