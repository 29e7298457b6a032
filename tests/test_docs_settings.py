"""The README's settings table is generated from the settings model: a setting missing there fails here."""

from __future__ import annotations

from pathlib import Path

from usage_collector.config import SETTINGS_TABLE_END, SETTINGS_TABLE_START, Settings, render_settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_settings_table_is_generated_from_the_settings_model() -> None:
    text = README.read_text()
    assert f"{SETTINGS_TABLE_START}\n{render_settings_table()}{SETTINGS_TABLE_END}" in text, (
        "README.md's settings table is stale: python -m usage_collector.config README.md"
    )


def test_every_setting_has_a_row() -> None:
    table = render_settings_table()
    for name in Settings.model_fields:
        assert f"| `{name}` |" in table, name
