"""Estimated cost on usage documents: the measure -> price unit mapping, dates, overrides, unpriced documents."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import T0
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Target, shape
from usage_collector.estimate import PriceBook, annotate, estimate_source
from usage_collector.pricing import PriceTable

FIRST = """effective = 2025-01-01
[multipliers.batch]
factor = "0.5"
[models."m-1"]
input = "1.00"
cached_input = "0.10"
output = "4.00"
audio_input = "40"
[models."m-1".priority]
input = "2.00"
output = "8.00"
[models."img"]
"image:1024x1024:low" = "0.01"
"image:1024x1024:high" = "0.05"
"image:512x512:standard" = "0.02"
[models."*"]
web_search_calls = "10"
vector_storage_gb_day = "0.10"
"""
SECOND = FIRST.replace("effective = 2025-01-01", "effective = 2025-10-16").replace('input = "1.00"', 'input = "3.00"')


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    d = tmp_path / "prices"
    d.mkdir()
    (d / "2025-01-01.toml").write_text(FIRST)
    (d / "2025-10-16.toml").write_text(SECOND)
    return d


def doc(stream: str, row: dict, start: int = T0, width: str = "1d"):
    spec = STREAMS[stream]
    row = {"object": spec.object_type, **row}
    return shape(spec, Target("org"), width, start, start + 86400, spec.group_by, row)


def completions(**measures):
    row = {"model": "m-1", "batch": False, "service_tier": "default", "input_tokens": 0, "output_tokens": 0}
    row["num_model_requests"] = 1
    return doc("completions", {**row, **measures})


@pytest.mark.parametrize(
    "measures, expected",
    [
        # newest shape: the modality splits, cached text at its own price
        (
            {
                "input_tokens": 1200,
                "input_text_tokens": 1000,
                "input_cached_text_tokens": 200,
                "output_tokens": 100,
                "output_text_tokens": 100,
            },
            Decimal("0.00142"),
        ),
        # image tokens and cache writes without their own price are input
        (
            {
                "input_tokens": 1600,
                "input_text_tokens": 1000,
                "input_image_tokens": 300,
                "input_cached_text_tokens": 0,
                "input_cache_write_30m_tokens": 200,
                "input_cache_write_12h_tokens": 100,
            },
            Decimal("0.0016"),
        ),
        # oldest shape: input = total less cached, output as reported
        ({"input_tokens": 1000, "input_cached_tokens": 400, "output_tokens": 10}, Decimal("0.00068")),
        # audio has its own price
        ({"input_tokens": 1000, "input_cached_tokens": 0, "input_audio_tokens": 100}, Decimal("0.0049")),
        # batch: half price through the multiplier
        ({"input_tokens": 1000, "input_cached_tokens": 0, "batch": True}, Decimal("0.0005")),
        # priority: the model's own tier price
        ({"input_tokens": 1000, "output_tokens": 1000, "service_tier": "priority"}, Decimal("0.010")),
    ],
    ids=["splits", "fallbacks", "old-shape", "audio", "batch", "priority"],
)
def test_completions_measures_map_to_price_units(prices, measures, expected):
    d = completions(**measures)
    assert annotate([d], PriceBook(directory=prices)) == 0
    assert d.source["openai"]["completions"]["estimated_cost"] == expected


@pytest.mark.parametrize(
    "measures, why",
    [
        ({"model": "nobody-priced-me", "input_tokens": 10}, "unknown model"),
        ({"input_tokens": 10, "output_tokens": 10, "output_audio_tokens": 5}, "audio output has no price"),
        ({"input_tokens": 10, "service_tier": "scale"}, "scale tier is billed as units"),
        ({"input_tokens": 10, "service_tier": "flex"}, "no flex price nor multiplier"),
    ],
    ids=["unknown-model", "no-audio-output", "scale", "flex"],
)
def test_unpriced_documents_get_no_field_and_are_counted(prices, measures, why):
    d = completions(**measures)
    priced = completions(input_tokens=10)
    assert annotate([d, priced], PriceBook(directory=prices)) == 1, why
    assert "estimated_cost" not in d.source["openai"]["completions"]
    assert "estimated_cost" in priced.source["openai"]["completions"]


def test_the_table_in_force_on_the_buckets_day_prices_it(prices):
    book = PriceBook(directory=prices)
    before, after = (
        completions(input_tokens=1000),
        doc(
            "completions",
            {
                "model": "m-1",
                "batch": False,
                "service_tier": "default",
                "input_tokens": 1000,
                "output_tokens": 0,
                "num_model_requests": 1,
            },
            start=T0 + 86400,  # 2025-10-16, the second file's first day
        ),
    )
    annotate([before, after], book)
    assert before.source["openai"]["completions"]["estimated_cost"] == Decimal("0.001")
    assert after.source["openai"]["completions"]["estimated_cost"] == Decimal("0.003")
    early = doc(
        "completions",
        {"model": "m-1", "input_tokens": 1, "output_tokens": 0, "num_model_requests": 1},
        start=1735603200,
    )  # 2024-12-31: no table in force
    assert annotate([early], book) == 1


def test_a_user_file_overrides_a_price_and_changes_the_hash(prices, tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text('[models."m-1"]\ninput = "2.00"\n')
    plain, mine = completions(input_tokens=1000), completions(input_tokens=1000)
    annotate([plain], PriceBook(directory=prices))
    annotate([mine], PriceBook(user, directory=prices))
    assert mine.source["openai"]["completions"]["estimated_cost"] == Decimal("0.002")
    assert plain.hash != mine.hash and mine.source["event"]["hash"] == mine.hash


def test_a_malformed_user_file_leaves_documents_unpriced_not_failed(prices, tmp_path, caplog):
    user = tmp_path / "bad.toml"
    user.write_text('[models."m-1"]\ninput = "two dollars"\n')
    d = completions(input_tokens=1000)
    assert annotate([d], PriceBook(user, directory=prices)) == 1
    assert "not a decimal number" in caplog.text


def test_images_tools_and_storage(prices):
    book = PriceBook(directory=prices)
    one_quality = doc("images", {"model": "img", "size": "512x512", "images": 3, "num_model_requests": 3})
    two_qualities = doc("images", {"model": "img", "size": "1024x1024", "images": 3, "num_model_requests": 3})
    web = doc("web_search_calls", {"model": "m-1", "num_model_requests": 5, "num_requests": 7})
    day = doc("vector_stores", {"project_id": "p", "usage_bytes": 3 << 30})
    hour = doc("vector_stores", {"project_id": "p", "usage_bytes": 3 << 30}, width="1h")
    assert annotate([one_quality, two_qualities, web, day, hour], book) == 1  # sizes priced by quality: unknown
    assert one_quality.source["openai"]["images"]["estimated_cost"] == Decimal("0.06")
    assert "estimated_cost" not in two_qualities.source["openai"]["images"]
    assert web.source["openai"]["web_search_calls"]["estimated_cost"] == Decimal("0.07")
    assert day.source["openai"]["vector_stores"]["estimated_cost"] == Decimal("0.3")
    assert hour.source["openai"]["vector_stores"]["estimated_cost"] == Decimal("0.0125")


def test_the_shipped_table_prices_a_real_model_and_leaves_a_dated_unknown_snapshot_unpriced():
    table = PriceTable.load("2026-11-30")
    src = {"openai": {"base": {"model": "gpt-4o-2024-05-13"}, "completions": {"input_tokens": 10, "output_tokens": 1}}}
    assert estimate_source("completions", src, table).cost is None
    src["openai"]["base"]["model"] = "gpt-4o-2024-08-06"
    assert estimate_source("completions", src, table).cost == Decimal("0.000035")


def test_days_with_the_same_files_share_one_table(prices, tmp_path):
    """A year's backfill holds one table per price file, not one per day (P4 memory): the days of one file
    share its table (and its memo); a newer file, or a user file that takes effect, is another table."""
    from datetime import date

    book = PriceBook(directory=prices)
    first = [book.table(date(2025, 3, d)) for d in range(1, 29)]
    assert first[0] is not None and all(t is first[0] for t in first)
    second = book.table(date(2025, 10, 16))
    assert second is not None and second is not first[0] and second is book.table(date(2026, 1, 1))
    assert second.prices != first[0].prices
    assert book.table(date(2024, 12, 31)) is None
    user = tmp_path / "mine.toml"
    user.write_text('effective = 2025-06-01\n[models."m-1"]\ninput = "2.00"\n')
    mine = PriceBook(user, directory=prices)
    before, after, later = mine.table(date(2025, 5, 31)), mine.table(date(2025, 6, 1)), mine.table(date(2025, 7, 1))
    assert before is not None and after is not None and before is not after and after is later
    assert before.prices == first[0].prices and after.origins == ("2025-01-01.toml", str(user))


def test_days_before_the_earliest_table_are_said_once_not_once_a_day(prices, caplog):
    """A year's backfill that starts before the first price file: one warning for all those days (it was one a
    day), and each of them still unpriced; a day with a table is priced."""
    from datetime import date, timedelta

    book = PriceBook(directory=prices)
    days = [date(2024, 12, 1) + timedelta(days=i) for i in range(40)]
    with caplog.at_level("WARNING", logger="usage_collector.estimate"):
        tables = [book.table(d) for d in days]
    assert tables[:31] == [None] * 31 and all(t is not None for t in tables[31:])
    warnings = [r.getMessage() for r in caplog.records if "no price table is in force" in r.getMessage()]
    assert warnings == [
        "estimated cost: no price table is in force on 2024-12-01; the earliest starts 2025-01-01; documents of "
        "that day and of every day before the earliest table are left unpriced"
    ]
