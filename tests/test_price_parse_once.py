"""A price file is parsed once per text, not once per day it is loaded for (P3: a reconciliation loads the
table of each of its days, and every one of them was the same shipped file)."""

from __future__ import annotations

from pathlib import Path

import pytest

import usage_collector.pricing as pricing
from usage_collector.pricing import PriceTable

SHIPPED = Path(pricing.__file__).parent / "prices"


def test_a_price_file_is_parsed_once_per_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (name,) = [p.name for p in SHIPPED.iterdir() if p.suffix == ".toml"]
    text = (SHIPPED / name).read_text(encoding="utf-8")
    prices = tmp_path / "prices"
    prices.mkdir()
    (prices / name).write_text(text, encoding="utf-8")
    parsed: list[str] = []
    real = pricing._parse

    def counting(origin: str, data: object) -> object:
        parsed.append(origin)
        return real(origin, data)  # type: ignore[arg-type]

    monkeypatch.setattr(pricing, "_parse", counting)
    monkeypatch.setattr(pricing, "_PARSED", {})
    first = PriceTable.load("2026-11-28", directory=prices)
    second = PriceTable.load("2026-11-29", directory=prices)
    assert parsed == [name]
    assert first.as_of != second.as_of
    assert first.prices == second.prices and first.multipliers == second.multipliers
    assert first.prices is not second.prices  # each table has its own copy

    (prices / name).write_text(text + "\n# edited\n", encoding="utf-8")  # another text: parsed again
    PriceTable.load("2026-11-30", directory=prices)
    assert parsed == [name, name]
