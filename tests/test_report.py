"""The report on a small synthetic set of documents: exact figures, tables that add up, CSV text, the HTML page.

The set (``documents()``): 50 days, 2026-09-01 to 2026-10-20, every day the same four costs rows (4.138333 a day),
except that project Beta's row is 1 dollar higher on the last 7 days (2026-10-14 to 2026-10-20); one completions
row on 2026-10-01. Every expected figure below is worked out by hand from that.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from usage_collector.catalogue import STREAMS
from usage_collector.documents import Names, Target, shape
from usage_collector.forecast import forecast_month
from usage_collector.report import (
    Report,
    aggregate,
    cost_by_model,
    model_of_line_item,
    nice_ticks,
    render_html,
    render_terminal,
    report_tables,
    with_other,
    write_csv,
)

D = Decimal
FIRST = date(2026, 9, 1)
LAST = date(2026, 10, 20)
JUMP = date(2026, 10, 14)  # Beta's line costs 1 more from this day on
NAMES = Names(projects={"proj_a": "Alpha", "proj_b": "Beta"}, api_keys={"key_1": "ci"})
ROWS = [  # (project, line item, api key, amount a day)
    ("proj_a", "gpt-4o-2024-08-06, input", "key_1", "1.10"),
    ("proj_a", "gpt-4o-2024-08-06, output", "key_1", "2.205"),
    ("proj_b", "gpt-4o-mini-2024-07-18, input", None, "0.333333"),
    (None, "web search tool calls", None, "0.50"),
]
DAY_TOTAL = D("4.138333")
TOTAL = 50 * DAY_TOTAL + 7  # 213.91665


def _ts(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp())


def documents() -> list[dict]:
    costs, completions = STREAMS["costs"], STREAMS["completions"]
    out = []
    day = FIRST
    while day <= LAST:
        for project, item, key, amount in ROWS:
            value = D(amount) + (1 if project == "proj_b" and day >= JUMP else 0)
            row = {
                "object": costs.object_type,
                "amount": {"value": value, "currency": "usd"},
                "line_item": item,
                "project_id": project,
                "api_key_id": key,
            }
            doc = shape(costs, Target("org-1"), "1d", _ts(day), _ts(day) + 86400, costs.group_by, row, NAMES)
            out.append(doc.action())
        day += timedelta(days=1)
    usage = {"object": completions.object_type, "model": "gpt-4o", "input_tokens": 100, "output_tokens": 50}
    t = _ts(date(2026, 10, 1)) + 3600
    out.append(shape(completions, Target("org-1"), "1h", t, t + 3600, ("model",), usage).action())
    return out


def expected_daily(project: str | None = None, until: date = LAST) -> dict[date, Decimal]:
    out = {}
    day = FIRST
    while day <= until:
        out[day] = sum(
            (D(a) + (1 if p == "proj_b" and day >= JUMP else 0) for p, _, _, a in ROWS if project in (None, p)),
            D(0),
        )
        day += timedelta(days=1)
    return out


@dataclass(frozen=True)
class Budget:
    name: str
    amount: Decimal | int
    project_id: str | None = None


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return documents()


@pytest.fixture(scope="module")
def rep(docs) -> Report:
    return aggregate(docs)


def test_the_period_total_and_the_breakdowns_are_exact(rep):
    assert (rep.period_start, rep.period_end, rep.period_days) == (FIRST, LAST, 50)
    assert rep.as_of == datetime(2026, 10, 21, tzinfo=UTC) and not rep.as_of_given  # the end of the data
    assert rep.total_cost == TOTAL == D("213.91665")
    assert rep.documents == 201 and rep.organizations == ["org-1"]
    assert len(rep.days) == 50 and rep.days[0] == ("2026-09-01", DAY_TOTAL) and rep.days[-1][1] == DAY_TOTAL + 1
    assert rep.cost_by_project == [
        ("Alpha (proj_a)", D("165.250")),
        ("(organization level)", D("25.00")),
        ("Beta (proj_b)", D("23.66665")),
    ]
    assert rep.cost_by_model == [
        ("gpt-4o-2024-08-06", D("165.250")),
        ("(no model) web search tool calls", D("25.00")),
        ("gpt-4o-mini-2024-07-18", D("23.66665")),
    ]
    assert rep.cost_by_api_key == [("ci (key_1)", D("165.250")), ("(organization level)", D("48.66665"))]
    assert dict(rep.cost_by_line_item)["gpt-4o-2024-08-06, output"] == D("110.250")
    assert rep.tokens_by_model == [("gpt-4o", 100, 50)]


def test_month_to_date_is_against_the_same_days_of_last_month(rep):
    m = rep.month
    assert (m.month, m.through, m.days) == (date(2026, 10, 1), date(2026, 10, 20), 20)
    assert m.this == 20 * DAY_TOTAL + 7 == D("89.76666")
    assert (m.last_month, m.last_through, m.last) == (date(2026, 9, 1), date(2026, 9, 20), 20 * DAY_TOTAL)
    assert m.change == 7


def test_the_forecast_is_forecast_month_over_the_daily_billed_series(rep):
    expected = forecast_month(expected_daily(), date(2026, 10, 21))
    assert rep.forecast == expected
    assert rep.forecast.month_to_date == D("89.76666")
    assert rep.forecast.lower <= rep.forecast.point <= rep.forecast.upper


def test_top_movers_compare_the_last_7_complete_days_with_the_7_before(rep):
    assert rep.movers_recent == (JUMP, LAST)
    beta = rep.movers_by_project[0]
    assert (beta.label, beta.recent, beta.prior, beta.change) == ("Beta (proj_b)", D("9.333331"), D("2.333331"), 7)
    assert [m.change for m in rep.movers_by_project[1:]] == [0, 0]
    assert rep.movers_by_line_item[0].label == "gpt-4o-mini-2024-07-18, input"
    table = next(t for t in report_tables(rep) if t.name == "movers_by_project")
    assert table.note == "2026-10-14 to 2026-10-20 against 2026-10-07 to 2026-10-13"


@pytest.mark.parametrize("top", [1, 2, 10, None])
def test_every_table_adds_up_to_its_total(rep, top):
    tables = {t.name: t for t in report_tables(rep, top)}
    for name in ("cost_by_project", "cost_by_model", "cost_by_line_item", "cost_by_api_key"):
        t = tables[name]
        assert sum((r[1] for r in t.rows), D(0)) == t.total[1] == rep.total_cost, name
        assert len(t.rows) <= (top or 99) + 1
    for name in ("movers_by_project", "movers_by_line_item"):
        t = tables[name]
        for col in (1, 2, 3):
            assert sum((r[col] for r in t.rows), D(0)) == t.total[col], (name, col)
    assert tables["movers_by_project"].total[1:] == (D("35.968331"), D("28.968331"), 7)


def test_the_other_row_names_how_many_rows_it_holds(rep):
    t = next(t for t in report_tables(rep, top=1) if t.name == "cost_by_project")
    assert t.other and t.rows[-1][:2] == ("other (2 more)", D("48.66665"))
    assert with_other([("a", 3), ("b", 2)], 1) == [("a", 3), ("b", 2)]  # "other (1 more)" would hide nothing


def test_start_and_end_choose_the_days(docs):
    rep = aggregate(docs, start=date(2026, 10, 1), end=date(2026, 10, 8))
    assert (rep.period_start, rep.period_end, len(rep.days)) == (date(2026, 10, 1), date(2026, 10, 7), 7)
    assert rep.total_cost == 7 * DAY_TOTAL == sum((v for _, v in rep.cost_by_project), D(0))
    assert rep.as_of == datetime(2026, 10, 8, tzinfo=UTC)  # the end of the period when as_of is not given
    assert rep.month.this == 7 * DAY_TOTAL
    assert rep.tokens_by_model == [("gpt-4o", 100, 50)]
    assert aggregate(docs, start=date(2026, 10, 2)).tokens_by_model == []


def test_as_of_leaves_out_what_was_not_there_yet(docs):
    rep = aggregate(docs, as_of=datetime(2026, 10, 10, tzinfo=UTC))
    assert rep.period_end == date(2026, 10, 9) and rep.total_cost == 39 * DAY_TOTAL
    assert rep.as_of_given and rep.month.through == date(2026, 10, 9)
    assert rep.forecast == forecast_month(expected_daily(until=date(2026, 10, 9)), date(2026, 10, 10))
    assert rep.movers_recent == (date(2026, 10, 3), date(2026, 10, 9))


def test_the_period_stops_at_as_of(docs):
    rep = aggregate(docs, start=date(2026, 10, 1), end=date(2026, 11, 1), as_of=datetime(2026, 10, 10, tzinfo=UTC))
    assert (rep.period_start, rep.period_end, len(rep.days)) == (date(2026, 10, 1), date(2026, 10, 9), 9)
    assert aggregate(docs, as_of=datetime(2026, 10, 10, 6, tzinfo=UTC)).period_end == date(2026, 10, 10)


def test_a_bucket_of_the_as_of_day_is_today_s_estimate(docs):
    rep = aggregate(docs, as_of=datetime(2026, 10, 10, 12, tzinfo=UTC))
    assert rep.month.through == date(2026, 10, 9) and rep.month.this == 9 * DAY_TOTAL  # closed days only
    assert rep.forecast.today_estimate == DAY_TOTAL
    assert rep.forecast == forecast_month(
        expected_daily(until=date(2026, 10, 9)), date(2026, 10, 10), today_estimate=DAY_TOTAL
    )


def test_too_little_history_is_said_not_hidden(docs):
    far = aggregate(docs, as_of=datetime(2027, 3, 1, tzinfo=UTC))
    assert far.forecast is None and far.forecast_note.startswith("history too short: no closed day in the 56 days")
    page = render_html(far)
    assert "history too short" in page
    short = aggregate([d for d in docs if d["_source"]["@timestamp"] < "2026-09-04"])  # 3 days
    assert short.forecast.method == "run_rate" and short.movers_by_project == []
    assert "needs 14 complete days" in short.movers_note
    note = next(t.note for t in report_tables(short) if t.name == "forecast")
    assert "history too short for a weekday pattern" in note


def test_forecast_against_budget_rows_when_budgets_are_given(docs):
    budgets = [Budget("platform", 100), Budget("beta", D("10"), "proj_b"), Budget("roomy", 1000)]
    rep = aggregate(docs, budgets=budgets)
    org, beta, roomy = rep.budgets
    assert (org.scope, org.amount, org.forecast) == ("organization", D(100), rep.forecast)
    assert org.status == "forecast over" and org.forecast.month_to_date < 100 < org.forecast.point
    assert beta.scope == "Beta (proj_b)"
    assert beta.forecast == forecast_month(expected_daily("proj_b"), date(2026, 10, 21))
    assert beta.forecast.month_to_date == 13 * D("0.333333") + 7 * D("1.333333") and beta.status == "over budget"
    assert roomy.status == "on track" and roomy.percent == roomy.forecast.point / 10
    table = next(t for t in report_tables(rep) if t.name == "forecast_against_budget")
    assert [r[0] for r in table.rows] == ["platform", "beta", "roomy"]
    page = render_html(rep)
    assert "Forecast against budget" in page and "forecast over" in page and "budget platform: $100.00" in page


def test_no_budget_rows_without_budgets(rep):
    assert rep.budgets == []
    assert "forecast_against_budget" not in {t.name for t in report_tables(rep)}
    assert "against budget" not in render_html(rep)


@pytest.mark.parametrize(
    "item,model",
    [
        ("gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06"),
        ("gpt-4o-mini-2024-07-18, batch cached input", "gpt-4o-mini-2024-07-18"),
        ("web search tool calls", "(no model) web search tool calls"),
        (None, "(no line item)"),
    ],
    ids=["input", "batch-cached", "tool-calls", "none"],
)
def test_the_model_of_a_line_item(item, model):
    assert model_of_line_item(item) == model


def test_cost_by_model_adds_up_to_the_line_items():
    rows = [("gpt-4o, input", D("1.5")), ("gpt-4o, output", D("2")), ("vector store storage", D("0.25"))]
    assert cost_by_model(rows) == [("gpt-4o", D("3.5")), ("(no model) vector store storage", D("0.25"))]


@pytest.mark.parametrize(
    "peak,ticks",
    [
        ("126.58", ["0", "50", "100", "150"]),
        ("100", ["0", "20", "40", "60", "80", "100"]),
        ("0.0123", ["0", "0.0025", "0.005", "0.0075", "0.01", "0.0125"]),
        ("3347.06", ["0", "1000", "2000", "3000", "4000"]),
        ("0", ["0", "1"]),
    ],
)
def test_axis_ticks_are_round_numbers_covering_the_peak(peak, ticks):
    assert [D(t) for t in ticks] == nice_ticks(D(peak))


def test_csv_files_hold_every_row_as_exact_decimal_text(rep, tmp_path):
    paths = write_csv(rep, tmp_path / "out")
    assert sorted(p.name for p in paths) == [
        "cost_by_api_key.csv",
        "cost_by_day.csv",
        "cost_by_line_item.csv",
        "cost_by_model.csv",
        "cost_by_project.csv",
        "estimated_vs_billed.csv",  # its note: the synthetic usage documents carry no estimated cost
        "forecast.csv",
        "month_to_date.csv",
        "movers_by_line_item.csv",
        "movers_by_project.csv",
        "tokens_by_model.csv",
    ]
    out = tmp_path / "out"
    assert (out / "cost_by_project.csv").read_text() == (
        "project,billed_cost\nAlpha (proj_a),165.250\n(organization level),25.00\nBeta (proj_b),23.666650\n"
    )
    assert (out / "month_to_date.csv").read_text() == (
        "row,first_day,last_day,billed_cost\n"
        "this month,2026-10-01,2026-10-20,89.766660\n"
        "same days of last month,2026-09-01,2026-09-20,82.766660\n"
    )
    f = rep.forecast
    assert (out / "forecast.csv").read_text() == (
        f"scope,month_to_date,forecast,low_80,high_80\norganization,89.766660,{f.point},{f.lower},{f.upper}\n"
    )
    assert (out / "movers_by_project.csv").read_text().splitlines()[1] == "Beta (proj_b),9.333331,2.333331,7.000000"
    for p in paths:
        text = p.read_text()
        assert "e-" not in text.lower() and "0000000" not in text, p.name  # no float artefacts
    days = list(csv.DictReader(io.StringIO((out / "cost_by_day.csv").read_text())))
    assert len(days) == 50 and sum((D(r["billed_cost"]) for r in days), D(0)) == TOTAL


def test_the_terminal_report_shows_the_period_the_chart_and_the_tables(rep, capsys):
    render_terminal(rep, top=1)
    out = capsys.readouterr().out
    assert "Period: 2026-09-01 to 2026-10-20 inclusive (50 UTC days)" in out
    assert "As of: 2026-10-21 00:00 UTC (the end of the data)" in out
    assert "Billed cost: $213.92" in out
    assert "the last 31 of 50 days" in out and "Tue Oct 20" in out and "$5.14" in out  # a bar's value
    assert "$0" in out and "$6" in out  # axis tick labels
    assert "other (2 more)" in out and "$48.67" in out
    assert f"Forecast for October 2026: ${rep.forecast.point}" in out


def test_the_html_page_is_offline_and_carries_its_figures(rep):
    page = render_html(rep)
    for forbidden in ("http://", "https://", "<script", "<link", "<img", "@import", "url("):
        assert forbidden not in page, forbidden
    assert "Period: 2026-09-01 to 2026-10-20 inclusive (50 UTC days)" in page
    assert "As of: 2026-10-21 00:00 UTC" in page
    assert "$213.92" in page and "$89.77" in page and f"${rep.forecast.point}" in page
    assert page.count("<svg") == 2
    assert ">$0</text>" in page and ">$6</text>" in page  # daily chart value axis (0 to 6 in steps of 1)
    assert ">Sep 1</text>" in page and "UTC day (2026)" in page
    assert "billed, by line item" in page


def test_an_empty_sink_says_so(capsys):
    rep = aggregate([])
    assert rep.period_start is None and rep.total_cost == 0
    render_terminal(rep)
    assert "No documents in the sink for this period." in capsys.readouterr().out
    assert "No documents" in render_html(rep)


# --- the page in a real browser ------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with networking features off (the page must need none)."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,2400",
    ]
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_html_report_renders_in_headless_chromium(docs, tmp_path):
    rep = aggregate(docs, budgets=[Budget("platform", 100)])
    page = tmp_path / "report.html"
    page.write_text(render_html(rep))
    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile")
    assert shot.exists() and shot.stat().st_size > 20_000, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    assert "Period: 2026-09-01 to 2026-10-20 inclusive (50 UTC days)" in dom
    assert "As of: 2026-10-21 00:00 UTC" in dom
    assert "$213.92" in dom  # the total
    assert f"forecast: ${rep.forecast.point:,}" in dom  # the month chart's forecast label
    assert "Forecast against budget" in dom and "forecast over" in dom
    assert "other (" not in dom or "more)" in dom
