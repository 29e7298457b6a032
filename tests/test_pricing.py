"""The price table: effective dates, user overrides, model normalisation, no guesses, exact arithmetic."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from typer.testing import CliRunner

import usage_collector.pricing as pricing
from usage_collector.cli import app
from usage_collector.pricing import USER_FILE_ENV, PriceTable, PriceTableError, parse_line_item, unit_of

runner = CliRunner()
TODAY = "2026-11-30"


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def dated(tmp_path):
    """Two dated files: gpt-x costs 1.00 from 2026-01-01, 2.00 from 2026-03-01."""
    d = tmp_path / "prices"
    d.mkdir()
    write(d / "2026-01-01.toml", 'effective = 2026-01-01\n[models."gpt-x"]\ninput = "1.00"\noutput = "4.00"\n')
    write(d / "2026-03-01.toml", 'effective = 2026-03-01\n[models."gpt-x"]\ninput = "2.00"\n')
    write(d / "README.txt", "not a price file")  # ignored: not named YYYY-MM-DD.toml|json
    return d


def test_the_module_examples_hold():
    assert doctest.testmod(pricing).failed == 0


# --- the shipped table ------------------------------------------------------------------------------------------------


def test_the_shipped_table_says_where_every_price_came_from_and_that_none_is_verified():
    table = PriceTable.load(TODAY)
    assert table.origins == ("2026-08-21.toml",)
    prices = list(table)
    assert len(prices) > 100
    for p in prices:
        assert p.source and p.source_url and p.source_url.startswith("https://"), p
        assert p.verified is False, f"{p.model} {p.unit.name}: nothing here was checked against OpenAI"
        assert p.usd >= 0
    undated = {(p.model, p.unit.name) for p in prices if p.checked is None}
    assert {m for m, _ in undated} <= {"omni-moderation-latest", "text-moderation-latest"}  # genai-prices gives none
    units = {p.unit.name for p in prices}
    for required in ("input", "cached_input", "output", "audio_input", "audio_output", "image_input"):
        assert required in units
    assert {"transcription_seconds", "speech_characters", "web_search_calls", "file_search_calls"} <= units
    assert {"code_interpreter_sessions", "vector_storage_gb_day", "image:1024x1024:high"} <= units
    assert {m.tier for m in table.multipliers.values()} == {"batch", "flex"}


def test_units_without_any_source_are_known_but_unpriced():
    table = PriceTable.load(TODAY)
    for unit in ("cache_write_30m", "cache_write_12h"):
        assert unit_of(unit) is not None
        assert table.estimate("gpt-4o", unit, 1000) is None


# --- effective dates --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "as_of,price",
    [("2026-01-01", "1.00"), ("2026-02-28", "1.00"), ("2026-03-01", "2.00"), ("2027-06-30", "2.00")],
    ids=["first-day", "day-before-change", "day-of-change", "long-after"],
)
def test_the_file_in_force_is_the_newest_on_or_before_the_date(dated, as_of, price):
    table = PriceTable.load(as_of, directory=dated)
    assert table.lookup("gpt-x", "input").usd == Decimal(price)


def test_a_unit_dropped_by_a_later_file_is_not_carried_over(dated):
    assert PriceTable.load("2026-02-01", directory=dated).lookup("gpt-x", "output") is not None
    assert PriceTable.load("2026-03-01", directory=dated).lookup("gpt-x", "output") is None


def test_before_the_first_file_no_table_is_in_force(dated):
    message = "no price table is in force on 2025-12-31; the earliest starts 2026-01-01"
    with pytest.raises(PriceTableError, match=message):
        PriceTable.load("2025-12-31", directory=dated)


def test_a_file_whose_effective_date_disagrees_with_its_name_is_refused(tmp_path):
    write(tmp_path / "2026-01-01.toml", 'effective = 2026-02-01\n[models."m"]\ninput = "1"\n')
    with pytest.raises(PriceTableError, match="differs from the file name"):
        PriceTable.load("2026-06-01", directory=tmp_path)


# --- user files -------------------------------------------------------------------------------------------------------


def test_a_user_toml_overrides_one_price_and_keeps_the_rest(dated, tmp_path):
    user = write(tmp_path / "mine.toml", '[models."gpt-x"]\ninput = "0.90"\nsource = "our contract"\n')
    table = PriceTable.load("2026-02-01", user, directory=dated)
    assert table.lookup("gpt-x", "input").usd == Decimal("0.90")
    assert table.lookup("gpt-x", "input").source == "our contract"
    assert table.lookup("gpt-x", "input").origin == str(user)
    assert table.lookup("gpt-x", "output").usd == Decimal("4.00")
    assert table.origins == ("2026-01-01.toml", str(user))


def test_a_user_json_extends_the_table_with_a_new_model_its_snapshots_and_a_multiplier(dated, tmp_path):
    data = {
        "models": {"ft-ours": {"snapshots": ["ft-ours-2026-01-05"], "input": "3.10", "priority": {"input": "6"}}},
        "multipliers": {"batch": {"factor": "0.4"}},
    }
    user = write(tmp_path / "mine.json", json.dumps(data))
    table = PriceTable.load("2026-02-01", user, directory=dated)
    assert table.estimate("ft-ours-2026-01-05", "input", 1_000_000) == Decimal("3.10")
    assert table.estimate("ft-ours", "input", 1_000_000, service_tier="priority") == Decimal(6)
    assert table.estimate("gpt-x", "input", 1_000_000, batch=True) == Decimal("0.400")


def test_a_user_file_with_a_later_effective_date_applies_only_from_then(dated, tmp_path):
    user = write(tmp_path / "mine.toml", 'effective = 2026-02-15\n[models."gpt-x"]\ninput = "0.50"\n')
    assert PriceTable.load("2026-02-14", user, directory=dated).lookup("gpt-x", "input").usd == Decimal("1.00")
    assert PriceTable.load("2026-02-15", user, directory=dated).lookup("gpt-x", "input").usd == Decimal("0.50")


@pytest.mark.parametrize(
    "text,message",
    [
        ('[models."m"]\ninptu = "1"\n', "unknown unit 'inptu'; known units: input, cached_input"),
        ('[models."m"]\ninput = "-1"\n', "must be a finite price >= 0"),
        ('[models."m"]\ninput = "two"\n', "is not a decimal number"),
        ('[models."m"]\ninput = { source = "x" }\n', "a table needs a price"),
        ("[multipliers.turbo]\nfactor = '2'\n", "for one of batch, flex, priority"),
        ("[models\n", "mine.toml"),
    ],
    ids=["unknown-unit", "negative", "not-a-number", "table-without-price", "unknown-tier", "bad-toml"],
)
def test_a_malformed_user_file_is_refused_with_its_name_and_the_reason(dated, tmp_path, text, message):
    user = write(tmp_path / "mine.toml", text)
    with pytest.raises(PriceTableError, match=message.replace("(", r"\(")):
        PriceTable.load("2026-02-01", user, directory=dated)


def test_a_missing_or_oddly_named_user_file_is_refused(dated, tmp_path):
    with pytest.raises(PriceTableError, match="No such file"):
        PriceTable.load("2026-02-01", tmp_path / "nope.toml", directory=dated)
    with pytest.raises(PriceTableError, match=r"use a \.toml or \.json file"):
        PriceTable.load("2026-02-01", write(tmp_path / "p.yaml", "a: 1"), directory=dated)


# --- models -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,key",
    [
        ("gpt-4o", "gpt-4o"),
        ("  GPT-4o ", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),  # listed snapshot
        ("gpt-4o-2024-05-13", None),  # a snapshot priced apart by one source: not the alias's price
        ("gpt-5-nano-2025-08-07", "gpt-5-nano"),  # dated_snapshots = true
        ("gpt-4o-mini-2099-01-01", None),  # unlisted snapshot of an alias without dated_snapshots
        ("gpt-4", None),  # a prefix of priced models is not one of them
        ("a-model-nobody-priced", None),
    ],
    ids=["alias", "case", "listed-snapshot", "conflicting-snapshot", "dated", "unlisted", "prefix", "unknown"],
)
def test_model_names_resolve_only_by_the_documented_rules(name, key):
    assert PriceTable.load(TODAY).resolve_model(name) == key


def test_an_unknown_model_has_no_price_for_any_token_unit_but_tool_prices_apply_to_every_model():
    table = PriceTable.load(TODAY)
    for unit in ("input", "output", "cached_input", "audio_output"):
        assert table.estimate("a-model-nobody-priced", unit, 10**6) is None
        assert table.estimate(None, unit, 10**6) is None
    assert table.estimate("a-model-nobody-priced", "web_search_calls", 1000) == Decimal("10.00")
    assert table.estimate(None, "file_search_calls", 4) == Decimal("0.01")


def test_an_unknown_unit_has_no_price():
    assert PriceTable.load(TODAY).estimate("gpt-4o", "telepathy", 1) is None


# --- arithmetic -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", [1, 7, 999_999, 123_456_789, 10**15 + 1])
def test_batch_is_exactly_half_of_standard_for_any_quantity(quantity):
    table = PriceTable.load(TODAY)
    standard = table.estimate("gpt-4o-mini-2024-07-18", "cached_input", quantity)
    batch = table.estimate("gpt-4o-mini-2024-07-18", "cached_input", quantity, batch=True)
    assert Fraction(standard) == Fraction(quantity) * Fraction("0.075") / 10**6
    assert Fraction(batch) == Fraction(standard) / 2


def test_many_small_estimates_sum_exactly():
    table = PriceTable.load(TODAY)
    parts = [table.estimate("gpt-4.1-nano", "cached_input", 1, batch=True) for _ in range(1000)]
    assert parts[0] == Decimal("0.0000000125")
    assert sum(parts, Decimal(0)) == Decimal("0.0000125")


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({}, Decimal("2.50")),
        ({"service_tier": "default"}, Decimal("2.50")),
        ({"service_tier": "auto"}, Decimal("2.50")),
        ({"service_tier": "priority"}, Decimal("4.25")),  # the model's own priority price
        ({"service_tier": "flex"}, Decimal("1.250")),  # the flex multiplier
        ({"batch": True}, Decimal("1.250")),
        ({"batch": True, "service_tier": "priority"}, None),  # batch with another tier: unknown
        ({"service_tier": "scale"}, None),  # Scale Tier is billed as units, not per token
        ({"service_tier": "turbo"}, None),
    ],
    ids=["none", "default", "auto", "priority", "flex", "batch", "batch+priority", "scale", "unknown-tier"],
)
def test_service_tiers(kwargs, expected):
    assert PriceTable.load(TODAY).estimate("gpt-4o-2024-11-20", "input", 1_000_000, **kwargs) == expected


def test_priority_without_a_model_price_is_none_and_multipliers_never_apply_to_non_token_units():
    table = PriceTable.load(TODAY)
    assert table.estimate("gpt-5.5", "input", 10**6, service_tier="priority") is None
    assert table.estimate("whisper-1", "transcription_seconds", 60) == Decimal("0.0060")
    assert table.estimate("whisper-1", "transcription_seconds", 60, batch=True) is None
    assert table.estimate("gpt-image-1", "image:1024x1024:medium", 3) == Decimal("0.126")


def test_a_float_quantity_is_refused():
    with pytest.raises(TypeError, match="not a float"):
        PriceTable.load(TODAY).estimate("gpt-4o", "input", 0.1)  # type: ignore[arg-type]


# --- line items -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,model,unit,tier",
    [
        ("gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06", "input", None),
        ("gpt-4o-2024-08-06, cached input", "gpt-4o-2024-08-06", "cached_input", None),
        ("gpt-4o-mini-2024-07-18, batch output", "gpt-4o-mini-2024-07-18", "output", "batch"),
        ("o3-mini-2025-01-31, priority cached input", "o3-mini-2025-01-31", "cached_input", "priority"),
        ("gpt-4o-audio-preview-2024-12-17, audio output", "gpt-4o-audio-preview-2024-12-17", "audio_output", None),
        ("GPT-4o, Input", "GPT-4o", "input", None),
        ("scale tier units, gpt-4o-mini-2024-07-18", None, None, None),
        ("web search tool calls", None, None, None),
        ("Text tokens", None, None, None),
        ("input_tokens", None, None, None),
        (", input", None, None, None),
        (None, None, None, None),
    ],
)
def test_line_items_parse_into_model_unit_and_tier_or_not_at_all(text, model, unit, tier):
    item = parse_line_item(text)
    assert (item.raw, item.model, item.unit, item.tier) == (text, model, unit, tier)


def test_parsed_line_item_units_are_units_of_the_price_table():
    assert all(unit_of(u) is not None for u in pricing.LINE_ITEM_UNITS.values())


# --- the command ------------------------------------------------------------------------------------------------------


def invoke(*args, env=None):
    return runner.invoke(app, list(args), env=env or {}, catch_exceptions=False)


def test_prices_shows_a_model_with_its_sources_and_the_multipliers():
    result = invoke("prices", "--model", "gpt-4o-2024-08-06", "--as-of", TODAY)
    assert result.exit_code == 0, result.output
    assert "prices in force on 2026-11-30" in result.output
    assert "gpt-4o " in result.output and "2.50" in result.output and "4.25" in result.output
    assert "batch: x0.5" in result.output
    assert "genai-prices: https://github.com/pydantic/genai-prices/blob/" in result.output
    assert "gpt-4.1" not in result.output


def test_prices_says_when_a_model_has_no_price():
    result = invoke("prices", "--model", "gpt-4o-2024-05-13", "--as-of", TODAY)
    assert result.exit_code == 0
    expected = "gpt-4o-2024-05-13: no price in the table in force on 2026-11-30 (estimates leave it out)"
    assert result.output.strip() == expected


def test_prices_with_a_user_file_from_the_flag_or_the_environment(tmp_path):
    user = write(tmp_path / "mine.toml", '[models."gpt-4o"]\ninput = "2.00"\nsource = "contract"\nverified = true\n')
    for args, env in (((("--file", str(user))), None), ((), {USER_FILE_ENV: str(user)})):
        result = invoke("prices", "--model", "gpt-4o", "--as-of", TODAY, *args, env=env)
        assert result.exit_code == 0, result.output
        line = next(row for row in result.output.splitlines() if " input " in row and "priority" not in row)
        assert "2.00" in line and "contract" in line and "yes" in line


@pytest.mark.parametrize(
    "args,message",
    [
        (["--as-of", "2020-01-01"], "no price table is in force on 2020-01-01; the earliest starts 2026-08-21"),
        (["--as-of", "yesterday"], "--as-of: 'yesterday' is not a date"),
        (["--as-of", "2026-11-31"], "--as-of: '2026-11-31' is not a date"),
        (["--file", "/nonexistent/p.toml"], "price file /nonexistent/p.toml"),
    ],
    ids=["before-first", "not-a-date", "no-such-day", "missing-file"],
)
def test_prices_bad_input_exits_2_with_one_line(args, message):
    result = invoke("prices", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_load_defaults_to_today_utc():
    assert PriceTable.load().as_of == datetime.now(UTC).date()
