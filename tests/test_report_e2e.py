"""The report of a simulated organization collected into DuckDB over real HTTP: every figure equals the bill.

40 days of costs, 2026-09-01 to 2026-10-10, read back from DuckDB (floats in JSON, turned back into the API's
digits); the report stands on 2026-10-11 so October's 10 days compare with September's first 10.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from tests.helpers import CANARY_KEY, make_settings
from usage_collector.cli import app
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.forecast import forecast_month
from usage_collector.planning import BackfillRange
from usage_collector.report import build_report, render_html, report_tables
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.sinks.duckdb import DuckDBSink

DAY = 86400
AS_OF = datetime(2026, 10, 11, tzinfo=UTC)


def _ts(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def org() -> Organization:
    return Organization(seed=11, start="2026-09-01", days=40)


@pytest.fixture(scope="module")
def db(org, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "r.duckdb"
    clock = FakeClock(org.end + 3 * DAY)
    sink = DuckDBSink(path)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    with serve(api) as url:
        settings = make_settings(openai_base_url=url, streams=["costs"], enrich_names=True)
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not result.failed, [r.error for r in result.failed]
    sink.close()
    return path


@pytest.fixture(scope="module")
def rep(db):
    sink = DuckDBSink(db)
    try:
        return build_report(sink, as_of=AS_OF)
    finally:
        sink.close()


def test_the_totals_equal_the_bill_to_the_cent(org, rep):
    assert rep.total_cost == org.total_cost(org.start, org.end) > 0
    assert (rep.period_start, rep.period_end) == (date(2026, 9, 1), date(2026, 10, 10))
    for day, value in rep.days:
        assert value == org.total_cost(_ts(date.fromisoformat(day)), _ts(date.fromisoformat(day)) + DAY), day
    for t in report_tables(rep):
        if t.name.startswith("cost_by_"):
            assert sum((r[1] for r in t.rows), Decimal(0)) == t.total[1] == rep.total_cost, t.name


def test_month_to_date_and_last_month_equal_the_bill(org, rep):
    m = rep.month
    assert (m.month, m.through, m.days) == (date(2026, 10, 1), date(2026, 10, 10), 10)
    assert m.this == org.total_cost(_ts(date(2026, 10, 1)), _ts(date(2026, 10, 11)))
    assert m.last == org.total_cost(_ts(date(2026, 9, 1)), _ts(date(2026, 9, 11)))
    assert rep.forecast.month_to_date == m.this


def test_the_forecast_is_forecast_month_over_the_billed_days(org, rep):
    truth = {
        date(2026, 9, 1) + timedelta(days=i): org.total_cost(
            _ts(date(2026, 9, 1)) + i * DAY, _ts(date(2026, 9, 1)) + (i + 1) * DAY
        )
        for i in range(40)
    }
    assert rep.forecast == forecast_month(truth, AS_OF.date())
    assert rep.forecast.method == "weekday_run_rate"


def test_top_movers_equal_the_bill_of_each_window(org, rep):
    assert rep.movers_recent == (date(2026, 10, 4), date(2026, 10, 10))
    recent = org.total_cost(_ts(date(2026, 10, 4)), _ts(date(2026, 10, 11)))
    prior = org.total_cost(_ts(date(2026, 9, 27)), _ts(date(2026, 10, 4)))
    for movers in (rep.movers_by_project, rep.movers_by_line_item):
        assert sum((m.recent for m in movers), Decimal(0)) == recent
        assert sum((m.prior for m in movers), Decimal(0)) == prior
        changes = [abs(m.change) for m in movers]
        assert changes == sorted(changes, reverse=True)


def test_the_cli_writes_the_terminal_report_the_page_and_the_csv_files(org, db, rep, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--sink",
            f"duckdb:{db}",
            "--start",
            "2026-09-01",
            "--as-of",
            "2026-10-11",
            "--html",
            str(tmp_path / "r.html"),
            "--csv",
            str(tmp_path / "out"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    total = rep.total_cost.quantize(Decimal("0.01"))
    assert "Period: 2026-09-01 to 2026-10-10 inclusive (40 UTC days)" in result.output
    assert "As of: 2026-10-11 00:00 UTC" in result.output and f"${total:,}" in result.output
    assert "CSV: 12 tables in" in result.output  # with cost by user and estimated against billed
    page = (tmp_path / "r.html").read_text()
    assert page == render_html(rep)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "cost_by_project.csv").read_text())))
    assert sum((Decimal(r["billed_cost"]) for r in rows), Decimal(0)) == org.total_cost(org.start, org.end)
    days = list(csv.DictReader(io.StringIO((tmp_path / "out" / "cost_by_day.csv").read_text())))
    assert len(days) == 40 and days[0] == {"day": "2026-09-01", "billed_cost": str(rep.days[0][1])}


def test_end_chooses_the_days_and_end_before_start_is_refused(db, org):
    args = ["report", "--sink", f"duckdb:{db}", "--as-of", "2026-10-11"]
    week = CliRunner().invoke(app, [*args, "--start", "2026-10-01", "--end", "2026-10-08"], catch_exceptions=False)
    assert week.exit_code == 0 and "Period: 2026-10-01 to 2026-10-07 inclusive (7 UTC days)" in week.output
    assert (
        f"${org.total_cost(_ts(date(2026, 10, 1)), _ts(date(2026, 10, 8))).quantize(Decimal('0.01')):,}" in week.output
    )
    bad = CliRunner().invoke(app, [*args, "--start", "2026-10-05", "--end", "2026-10-01"], catch_exceptions=False)
    assert bad.exit_code == 2 and "--end (2026-10-01) must be after --start (2026-10-05)" in bad.output
