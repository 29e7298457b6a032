"""Budgets as a new user meets them: ``[[budgets]]`` in the TOML file, ``usage-collector budgets --check`` against a
simulated organization collected over real HTTP, standing on the 20th of a month.

Month to date must equal the simulator's billed truth to the cent; every budget gets a forecast; ``--check`` exits 1
naming each budget set far below the spend and 0 when all are generous. Budget documents are written once per
budget and UTC day and replaced by a rerun; bad budgets are refused with one line naming the budget.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import CANARY_KEY, make_settings
from usage_collector.budgets import evaluate_sink, usd, write_budget_documents
from usage_collector.cli import app, hoist_global_options
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.config import load_settings
from usage_collector.errors import ConfigError
from usage_collector.planning import BackfillRange
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

DAY = 86400
AS_OF = datetime(2026, 10, 20, tzinfo=UTC)
MONTH = datetime(2026, 10, 1, tzinfo=UTC)
runner = CliRunner()


def _ts(dt: datetime) -> int:
    return int(dt.timestamp())


@pytest.fixture(scope="module")
def org() -> Organization:
    return Organization(seed=11, start="2026-08-01", days=80)  # through 2026-10-19


@pytest.fixture(scope="module")
def db(org, tmp_path_factory) -> Path:
    """Costs of every day, and a spend-control snapshot taken on the 19th (before the 20th we stand on)."""
    path = tmp_path_factory.mktemp("budgets") / "b.duckdb"
    clock = FakeClock(_ts(AS_OF) - DAY + 12 * 3600)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    sink = DuckDBSink(path)
    with serve(api) as url:
        snapshot = make_settings(openai_base_url=url, streams=["costs"], spend_controls=True)
        assert not Collector(snapshot, sink, clock=clock).run_cycle().failed
        clock.set(org.end + 3 * DAY)
        settings = make_settings(openai_base_url=url, streams=["costs"])
        result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
    assert not result.failed, [r.error for r in result.failed]
    sink.close()
    return path


def _truth(org: Organization, project: str | None = None) -> Decimal:
    start, end = _ts(MONTH), _ts(AS_OF)
    if project is None:
        return org.total_cost(start, end)
    totals = org.totals("costs", start, end, by=("project_id",), filters={"project_id": [project]})
    return totals[(project,)]["amount"]


def _config(tmp_path: Path, budgets: list[dict[str, object]]) -> Path:
    lines = []
    for b in budgets:
        lines.append("[[budgets]]")
        for k, v in b.items():
            lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    path = tmp_path / "budgets.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _budgets(*args: str):
    """``usage-collector budgets ARGS`` (global options such as ``--config`` may follow the command)."""
    return runner.invoke(app, hoist_global_options(["budgets", *args]), env={}, catch_exceptions=False)


def test_month_to_date_is_the_billed_truth_to_the_cent_with_a_forecast_per_budget(org, db, tmp_path):
    support = org.project("support").id
    org_total, support_total = _truth(org), _truth(org, support)
    assert org_total > 100 and 0 < support_total < org_total
    cfg = _config(
        tmp_path,
        [
            {"name": "everything", "amount": int(org_total * 10)},
            {"name": "support", "amount": int(support_total * 10), "project_id": support},
        ],
    )
    out = _budgets("--config", str(cfg), "--sink", f"duckdb:{db}", "--as-of", "2026-10-20", "--check")
    assert out.exit_code == 0, out.output
    assert "as of 2026-10-20T00:00:00Z" in out.output and "closed days through 2026-10-19" in out.output
    rows = {line.split()[0]: line for line in out.output.splitlines() if line.startswith(("everything", "support"))}
    assert usd(org_total) in rows["everything"] and usd(support_total) in rows["support"]
    for row in rows.values():
        assert re.search(r"\$[\d,]+\.\d\d \[\$[\d,]+\.\d\d \.\. \$[\d,]+\.\d\d\]", row), row  # forecast [interval]
        assert "on track" in row
    assert "check: ok (2 budget(s)" in out.output

    settings = load_settings(cfg)
    sink = DuckDBSink(db, read_only=True)
    try:
        statuses = {s.name: s for s in evaluate_sink(sink, settings, AS_OF)}
    finally:
        sink.close()
    assert statuses["everything"].billed == org_total  # exact, not only to the cent
    assert statuses["support"].billed == support_total
    for s in statuses.values():
        assert s.billed_days == 19 and s.today_estimate is None and s.note is None
        assert s.forecast is not None and s.forecast.method == "weekday_run_rate"
        assert s.forecast.month_to_date == s.billed
        assert s.forecast.lower <= s.forecast.point <= s.forecast.upper and s.forecast.lower >= s.billed - 1


def test_check_exits_1_naming_each_budget_far_below_the_spend(org, db, tmp_path):
    support = org.project("support").id
    cfg = _config(
        tmp_path,
        [
            {"name": "everything", "amount": int(_truth(org) * 10)},
            {"name": "support-tiny", "amount": 1, "project_id": support},
            {"name": "org-tiny", "amount": 2.5},
        ],
    )
    out = _budgets("--config", str(cfg), "--sink", f"duckdb:{db}", "--as-of", "2026-10-20T00:00:00Z", "--check")
    assert out.exit_code == 1, out.output
    checks = [line for line in out.output.splitlines() if line.startswith("check: ")]
    assert len(checks) == 2
    assert "budget 'support-tiny'" in checks[0] and "month to date " + usd(_truth(org, support)) in checks[0]
    assert "budget 'org-tiny'" in checks[1] and "$2.50 a month" in checks[1]
    assert "everything" not in "\n".join(checks)
    assert "OVER BUDGET" in out.output


def test_a_forecast_over_the_budget_fails_the_check_before_the_spend_does(org, db, tmp_path):
    total = _truth(org)
    cfg = _config(tmp_path, [{"name": "tight", "amount": float(round(total * Decimal("1.2"), 2))}])
    out = _budgets("--config", str(cfg), "--sink", f"duckdb:{db}", "--as-of", "2026-10-20", "--check")
    assert out.exit_code == 1, out.output
    (check,) = [line for line in out.output.splitlines() if line.startswith("check: ")]
    assert "budget 'tight'" in check and "forecast $" in check and "for 2026-10" in check


def test_openai_spend_controls_of_the_same_scope_are_shown(org, db, tmp_path):
    support, rag = org.project("support").id, org.project("rag").id
    cfg = _config(
        tmp_path,
        [
            {"name": "everything", "amount": 100000},
            {"name": "support", "amount": 100000, "project_id": support},
            {"name": "rag", "amount": 100000, "project_id": rag},
        ],
    )
    out = _budgets("--config", str(cfg), "--sink", f"duckdb:{db}", "--as-of", "2026-10-20")
    assert out.exit_code == 0, out.output
    rows = {
        line.split()[0]: line for line in out.output.splitlines() if line.startswith(("everything", "support", "rag"))
    }
    assert "limit $25,000.00 (inactive); alerts $12,500.00, $20,000.00" in rows["everything"]
    assert "limit $12,000.50 (inactive); alerts $10,800.45" in rows["support"]
    assert " - " in rows["rag"]  # no spend control on that project (404)
    before = _budgets("--config", str(cfg), "--sink", f"duckdb:{db}", "--as-of", "2026-10-18")
    assert "limit $25,000.00" not in before.output  # the snapshot was taken on the 19th


def test_as_of_earlier_shows_what_the_forecast_said_then(org, db, tmp_path):
    cfg = _config(tmp_path, [{"name": "everything", "amount": 100000}])
    settings = load_settings(cfg)
    sink = DuckDBSink(db, read_only=True)
    try:
        (on_10th,) = evaluate_sink(sink, settings, datetime(2026, 10, 10, 6, tzinfo=UTC))
        (on_1st,) = evaluate_sink(sink, settings, datetime(2026, 10, 1, tzinfo=UTC))
    finally:
        sink.close()
    assert on_10th.billed == org.total_cost(_ts(MONTH), _ts(MONTH) + 9 * DAY)
    assert on_10th.forecast is not None and on_10th.forecast.closed_days == 9
    assert on_1st.billed == 0 and on_1st.billed_days == 0 and on_1st.forecast is not None
    out = _budgets("--config", str(cfg), "--sink", f"duckdb:{db}", "--as-of", "2026-07-01", "--check")
    assert out.exit_code == 0 and "no forecast: no closed day in the 56 days before 2026-07-01" in out.output
    assert "1 without a forecast (too little history)" in out.output


def test_today_estimate_is_the_sum_of_estimated_cost_of_todays_usage_documents(org, db, tmp_path):
    """When usage documents carry ``openai.<stream>.estimated_cost`` (cost intelligence), it counts for today."""
    from usage_collector.documents import Document

    path = tmp_path / "copy.duckdb"
    path.write_bytes(db.read_bytes())
    sink = DuckDBSink(path)
    support = org.project("support").id
    noon = AS_OF + timedelta(hours=12)

    def usage(i: int, project: str, cost: str, hour: int) -> Document:
        ts = AS_OF + timedelta(hours=hour)
        src = {
            "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "event": {"dataset": "openai.completions", "hash": str(i)},
            "organization": {"id": "default"},
            "openai": {"base": {"project_id": project}, "completions": {"estimated_cost": Decimal(cost)}},
        }
        return Document(f"u{i}", "metrics-openai.completions-default", "completions", _ts(ts), str(i), src)

    sink.write_window(
        [usage(1, support, "1.25", 3), usage(2, "proj_other", "2.5", 5), usage(3, support, "9", 13)], None
    )
    cfg = _config(tmp_path, [{"name": "all", "amount": 100000}, {"name": "s", "amount": 100000, "project_id": support}])
    try:
        statuses = {s.name: s for s in evaluate_sink(sink, load_settings(cfg), noon)}
    finally:
        sink.close()
    assert statuses["all"].today_estimate == Decimal("3.75")  # the 13:00 document is after as_of
    assert statuses["s"].today_estimate == Decimal("1.25")
    assert statuses["s"].month_to_date == _truth(org, support) + Decimal("1.25")
    assert statuses["s"].forecast is not None and statuses["s"].forecast.today_estimate == Decimal("1.25")


# --- budget documents ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["duckdb", "ndjson"])
def test_budget_documents_are_one_per_budget_and_day_and_a_rerun_replaces_them(org, db, tmp_path, kind):
    support = org.project("support").id
    cfg = _config(tmp_path, [{"name": "all", "amount": 1000}, {"name": "s", "amount": 50, "project_id": support}])
    settings = load_settings(cfg)
    if kind == "duckdb":
        path = tmp_path / "copy.duckdb"
        path.write_bytes(db.read_bytes())
        sink: DuckDBSink | NdjsonSink = DuckDBSink(path)
    else:
        sink = NdjsonSink(tmp_path / "b.ndjson")
        src = DuckDBSink(db, read_only=True)
        for stream in ("costs", "limits"):
            docs = list(src.iter_documents(stream))
            sink.write_window([_doc(d, stream) for d in docs], None)
        src.close()
    try:
        first = write_budget_documents(sink, settings, AS_OF + timedelta(hours=1))
        assert first is not None and first.created == 2
        again = write_budget_documents(sink, settings, AS_OF + timedelta(hours=1))
        assert again is not None and again.unchanged == 2
        later = write_budget_documents(sink, settings, AS_OF + timedelta(hours=5))
        assert later is not None and (later.created, later.updated) == (0, 2)
        assert len(list(sink.iter_documents("budgets"))) == 2
        next_day = write_budget_documents(sink, settings, AS_OF + timedelta(days=1, hours=1))
        assert next_day is not None and next_day.created == 2
        docs = {
            (d["_source"]["openai"]["budgets"]["name"], d["_source"]["openai"]["budgets"]["day"]): d
            for d in sink.iter_documents("budgets")
        }
        assert set(docs) == {("all", "2026-10-20"), ("all", "2026-10-21"), ("s", "2026-10-20"), ("s", "2026-10-21")}
        s20 = docs[("s", "2026-10-20")]
        assert s20["_index"] == "metrics-openai.budgets-default"
        assert s20["_source"]["@timestamp"] == "2026-10-20T05:00:00Z"
        b = s20["_source"]["openai"]["budgets"]
        assert Decimal(str(b["month_to_date"])) == _truth(org, support)
        assert b["scope"] == "project" and s20["_source"]["openai"]["base"]["project_id"] == support
        assert b["status"] == "over budget" and b["crossed"] == [50, 80, 100] and b["forecast"]["percent"] > 100
        assert Decimal(str(b["openai_limits"]["spend_limit"])) == Decimal("12000.50")
        if isinstance(sink, DuckDBSink):
            rows = sink.query("SELECT name, day_date, month_to_date, status, crossed FROM budgets ORDER BY 1, 2")
            assert len(rows) == 4 and rows[2][0] == "s" and rows[2][2] == _truth(org, support)
            assert rows[2][4] == [50, 80, 100]
    finally:
        sink.close()


def _doc(d, stream):
    from usage_collector.documents import Document

    src = d["_source"]
    ts = int(datetime.fromisoformat(src["@timestamp"].replace("Z", "+00:00")).timestamp())
    return Document(d["_id"], d["_index"], stream, ts, src["event"]["hash"], src)


def test_run_writes_the_budget_documents_and_a_second_run_replaces_them(tmp_path):
    org = Organization(seed=3, start="2026-09-01", days=3)
    cfg = _config(tmp_path, [{"name": "all", "amount": 100}, {"name": "other", "amount": 5, "project_id": "proj_x"}])
    sink = tmp_path / "r.duckdb"
    with serve(SimulatedAPI(org, admin_key=CANARY_KEY)) as url:
        env = {"OPENAI_ADMIN_KEY": CANARY_KEY, "OPENAI_BASE_URL": url, "USAGE_COLLECTOR_SPEND_CONTROLS": "false"}
        for _ in range(2):
            out = runner.invoke(
                app,
                ["--config", str(cfg), "run", "--stream", "costs", "--sink", f"duckdb:{sink}"],
                env=env,
                catch_exceptions=False,
            )
            assert out.exit_code == 0, out.output
    db = DuckDBSink(sink, read_only=True)
    try:
        names = sorted(d["_source"]["openai"]["budgets"]["name"] for d in db.iter_documents("budgets"))
    finally:
        db.close()
    assert names == ["all", "other"]


# --- configuration ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[budgets]]\nname = "a"\namount = 0\n', "budgets: budget 'a': amount: must be more than 0"),
        ('[[budgets]]\nname = "a"\namount = -5\n', "budgets: budget 'a': amount: must be more than 0"),
        ('[[budgets]]\nname = "a"\namount = "lots"\n', "budgets: budget 'a': amount: must be a number of USD"),
        ('[[budgets]]\nname = "a"\n', "budgets: budget 'a': amount: is required"),
        ("[[budgets]]\namount = 10\n", "budgets: budget #1: name: is required"),
        ('[[budgets]]\nname = "a"\namont = 10\n', "budgets: budget 'a': amont: unknown key (allowed: name, amount"),
        ('[[budgets]]\nname = "a"\namount = 1\nalert_at = [50, 120.5]\n', "alert_at: 120.5 is not a whole percent"),
        ('[[budgets]]\nname = "a"\namount = 1\nalert_at = 80\n', "alert_at: expected a list of percents"),
        ('[[budgets]]\nname = "a"\namount = 1\nproject_id = " "\n', "budget 'a': project_id: must not be empty"),
        (
            '[[budgets]]\nname = "a"\namount = 1\n[[budgets]]\nname = "a"\namount = 2\n',
            "budgets: two budgets are named 'a'",
        ),
        (
            '[[organizations]]\nid = "x"\n[[organizations]]\nid = "y"\n[[budgets]]\nname = "a"\namount = 1\n',
            "budgets: budget 'a': organization_id is required with several organizations (one of x, y)",
        ),
        (
            '[[organizations]]\nid = "x"\n[[budgets]]\nname = "a"\namount = 1\norganization_id = "z"\n',
            "budgets: budget 'a': organization_id 'z' is not a configured organization (one of x)",
        ),
        ("budgets = 3\n", "budgets: expected a list of budgets"),
    ],
    ids=[
        "zero",
        "negative",
        "not-a-number",
        "no-amount",
        "no-name",
        "misspelt-key",
        "fractional-percent",
        "percent-not-a-list",
        "empty-project",
        "duplicate-name",
        "org-required",
        "unknown-org",
        "not-a-list",
    ],
)
def test_bad_budgets_are_refused_with_one_line_naming_the_budget(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_budget_defaults_and_exact_amounts(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[budgets]]\nname = " platform "\namount = 2500.10\nalert_at = [100, 50, 50.0]\n')
    (b,) = load_settings(path).budgets
    assert (b.name, b.amount, b.alert_at, b.project_id) == ("platform", Decimal("2500.10"), [50, 100], None)
    path.write_text('[[budgets]]\nname = "p"\namount = 10\n')
    assert load_settings(path).budgets[0].alert_at == [50, 80, 100]


def test_budgets_without_any_configured_is_an_error_naming_the_fix(tmp_path):
    (tmp_path / "x.duckdb").touch()
    out = _budgets("--sink", f"duckdb:{tmp_path / 'x.duckdb'}")
    assert out.exit_code == 2 and "no budgets configured: add [[budgets]]" in out.output


def test_budgets_refuses_a_missing_file_sink(tmp_path):
    cfg = _config(tmp_path, [{"name": "a", "amount": 1}])
    out = _budgets("--config", str(cfg), "--sink", f"duckdb:{tmp_path / 'nope.duckdb'}", "--check")
    assert out.exit_code == 2 and "does not exist" in out.output
    assert not (tmp_path / "nope.duckdb").exists()


@pytest.mark.live_es
def test_budget_documents_go_into_their_elasticsearch_data_stream_and_a_rerun_replaces_them(es, org, tmp_path):
    """Every field mapped (the templates are ``dynamic: strict``); the same ``_id`` the same day, across a rollover."""
    clock = FakeClock(_ts(AS_OF) - DAY + 12 * 3600)
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    cfg = _config(tmp_path, [{"name": "all", "amount": 1000}])
    with serve(api) as url:
        settings = es.settings(openai_base_url=url, streams=["costs"], spend_controls=True, initial_lookback="25d")
        settings.budgets = load_settings(cfg).budgets
        sink = es.sink(settings)
        sink.open()
        try:
            assert not Collector(settings, sink, clock=clock).run_cycle().failed  # spend controls on the 19th
            clock.set(org.end + 3 * DAY)  # then the month's final costs
            assert not Collector(settings, sink, clock=clock).backfill(BackfillRange(_ts(MONTH), org.end)).failed
            first = write_budget_documents(sink, settings, AS_OF + timedelta(hours=1))
            assert first is not None and first.created == 1, first
            es.rollover("budgets")
            again = write_budget_documents(sink, settings, AS_OF + timedelta(hours=2))
            assert again is not None and (again.created, again.updated) == (0, 1)
        finally:
            sink.close()
    hits = es.client().search(index=es.data_stream("budgets"), query={"match_all": {}})["hits"]["hits"]
    assert len(hits) == 1
    b = hits[0]["_source"]["openai"]["budgets"]
    assert b["day"] == "2026-10-20" and b["month"] == "2026-10"
    assert Decimal(str(b["month_to_date"])) == _truth(org)
    assert Decimal(str(b["openai_limits"]["spend_limit"])) == Decimal("25000")
