"""Costs: line items, price table, exact Decimals, amount as string or number, unknown fields (ref §1.6, §4.5-4.8)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from usage_collector.simulator import prices

DAY = 86400
Q6 = Decimal("0.000001")


def test_amount_value_is_sometimes_a_numeric_string_and_sometimes_a_number(walk, org):
    buckets = walk("costs", [("start_time", org.start), ("end_time", org.end), ("group_by", "line_item")])
    values = [r["amount"]["value"] for b in buckets for r in b["results"]]
    strings = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, float | int)]
    assert strings and numbers
    assert all(len(s.split(".")[1]) == 6 for s in strings)  # e.g. "12.500000"
    assert all(r["amount"]["currency"] == "usd" for b in buckets for r in b["results"])


def test_unknown_extra_fields_are_present(call, org):
    costs = call("costs", [("start_time", org.start)]).json["data"][0]["results"][0]
    usage = call("completions", [("start_time", org.start)]).json["data"][0]["results"][0]
    assert costs["organization_id"] == org.id and costs["api_source"] is None  # null unless grouped by it
    assert usage["organization_id"] == org.id


def test_quantity_only_when_grouped_by_line_item(org):
    day = (org.start, org.start + DAY)
    by_line = org.truth("costs", *day, "1d", ["line_item"])[0]["results"]
    by_project = org.truth("costs", *day, "1d", ["project_id"])[0]["results"]
    assert all(r["quantity"] is not None for r in by_line)
    assert {r["quantity_unit"] for r in by_line} >= {
        "tokens",
        "images",
        "characters",
        "duration_seconds",
        "gibibyte_hours",
        None,
    }
    assert all(r["quantity"] is None and r["quantity_unit"] is None for r in by_project)


def test_line_items_in_openai_style_and_storage_without_api_key(org):
    cells = org.truth("costs", org.start, org.start + DAY, "1d", ["line_item", "project_id", "api_key_id"])[0]
    items = {r["line_item"]: r for r in cells["results"]}
    for name in (
        "gpt-4o-2024-08-06, input",
        "gpt-4o-2024-08-06, cached input",
        "gpt-4o-2024-08-06, output",
        "gpt-4o-mini-2024-07-18, batch input",
        "o3-mini-2025-01-31, flex output",
        "gpt-4o-2024-08-06, priority input",
        "web search tool calls",
        "file search tool calls",
        "vector store storage",
        "code interpreter sessions",
        "dall-e-3, 1024x1792",
        "whisper-1, transcription",
        "tts-1, characters",
        "text-embedding-3-large, input",
        "scale tier units, gpt-4o-mini-2024-07-18",
    ):
        assert name in items, name
    for r in cells["results"]:
        if r["line_item"] in ("vector store storage", "code interpreter sessions"):
            assert r["api_key_id"] is None and r["project_id"] is not None
        elif r["line_item"].startswith("scale tier"):
            assert r["project_id"] is None and r["api_key_id"] is None  # org level (ref §4.8)
        else:
            assert r["api_key_id"] is not None
    assert not any("moderation" in name for name in items)  # free


def test_token_amounts_follow_the_price_table(org):
    cells = org.truth("costs", org.start, org.start + 2 * DAY, "1d", ["line_item", "project_id", "api_key_id"])
    checked = 0
    for b in cells:
        for r in b["results"]:
            model, _, component = r["line_item"].partition(", ")
            price = prices.TOKEN_PRICES.get(model)
            if price is None or component not in ("input", "cached input", "output"):
                continue
            per_million = {"input": price.input, "cached input": price.cached_input, "output": price.output}[component]
            assert r["quantity_unit"] == "tokens"
            assert r["amount"]["value"] == (r["quantity"] * per_million / prices.MILLION).quantize(Q6)
            checked += 1
    assert checked > 10


def test_grouped_costs_sum_exactly_to_totals(org):
    full = org.truth("costs", org.start, org.end, "1d", ["project_id", "line_item", "api_key_id"])
    for subset in ([], ["project_id"], ["line_item"], ["api_key_id"], ["project_id", "api_key_id"]):
        grouped = org.truth("costs", org.start, org.end, "1d", subset)
        for f, g in zip(full, grouped, strict=True):
            sums: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
            for r in f["results"]:
                sums[tuple(r[k] for k in subset)] += r["amount"]["value"]
            assert {tuple(r[k] for k in subset): r["amount"]["value"] for r in g["results"]} == sums
            assert all(v == v.quantize(Q6) for v in sums.values())


def test_costs_filters_by_project_and_key(org):
    support = org.project("support").id
    key = org.api_key("support-prod").id
    total = org.totals("costs", filters={"project_id": [support]})[()]["amount"]
    by_key = org.totals("costs", by=("api_key_id",), filters={"project_id": [support]})
    assert sum(v["amount"] for v in by_key.values()) == total
    assert org.totals("costs", filters={"api_key_id": [key]})[()]["amount"] == by_key[(key,)]["amount"]
