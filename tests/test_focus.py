"""The FOCUS 1.2 export, column by column, against the specification; sums against the simulator's bill.

The requirements below are transcribed from FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec at tag v1.2, one
``specification/columns/<file>.md`` per column ("Content Constraints" table and the requirement bullets), and
``specification/attributes/{datetime_format,numeric_format,null_handling,column_handling,currency_format}.md``.
They are written out here again, independently of ``usage_collector.focus``, so a slip in either shows.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest
from typer.testing import CliRunner

from tests.helpers import CANARY_KEY, make_settings
from usage_collector.cli import app
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.focus import COLUMNS, focus_row, focus_rows, iso_utc, write_csv, write_parquet
from usage_collector.planning import BackfillRange
from usage_collector.simulator import Organization, SimulatedAPI, serve
from usage_collector.sinks.duckdb import DuckDBSink
from usage_collector.sinks.ndjson import NdjsonSink

runner = CliRunner()

# (Column ID, data type, feature level, allows nulls), from each column's Content Constraints at v1.2.
SPEC = {
    "BilledCost": ("Decimal", "Mandatory", False),  # billedcost.md
    "BillingAccountId": ("String", "Mandatory", False),  # billingaccountid.md
    "BillingAccountName": ("String", "Mandatory", True),  # billingaccountname.md
    "BillingCurrency": ("String", "Mandatory", False),  # billingcurrency.md
    "BillingPeriodEnd": ("Date/Time", "Mandatory", False),  # billingperiodend.md
    "BillingPeriodStart": ("Date/Time", "Mandatory", False),  # billingperiodstart.md
    "ChargeCategory": ("String", "Mandatory", False),  # chargecategory.md
    "ChargeClass": ("String", "Mandatory", True),  # chargeclass.md
    "ChargeDescription": ("String", "Mandatory", True),  # chargedescription.md
    "ChargePeriodEnd": ("Date/Time", "Mandatory", False),  # chargeperiodend.md
    "ChargePeriodStart": ("Date/Time", "Mandatory", False),  # chargeperiodstart.md
    "ContractedCost": ("Decimal", "Mandatory", False),  # contractedcost.md
    "EffectiveCost": ("Decimal", "Mandatory", False),  # effectivecost.md
    "InvoiceIssuerName": ("String", "Mandatory", False),  # invoiceissuer.md
    "ListCost": ("Decimal", "Mandatory", False),  # listcost.md
    "PricingQuantity": ("Decimal", "Mandatory", True),  # pricingquantity.md
    "PricingUnit": ("String", "Mandatory", True),  # pricingunit.md
    "ProviderName": ("String", "Mandatory", False),  # provider.md
    "PublisherName": ("String", "Mandatory", False),  # publisher.md
    "ServiceCategory": ("String", "Mandatory", False),  # servicecategory.md
    "ServiceName": ("String", "Mandatory", False),  # servicename.md
    # conditional and recommended ones we write
    "ChargeFrequency": ("String", "Recommended", False),  # chargefrequency.md
    "ServiceSubcategory": ("String", "Recommended", False),  # servicesubcategory.md
    "SubAccountId": ("String", "Conditional", True),  # subaccountid.md
    "SubAccountName": ("String", "Conditional", True),  # subaccountname.md
    "ConsumedQuantity": ("Decimal", "Conditional", True),  # consumedquantity.md
    "ConsumedUnit": ("String", "Conditional", True),  # consumedunit.md
}
MANDATORY = {name for name, (_t, level, _n) in SPEC.items() if level == "Mandatory"}
CHARGE_CATEGORY = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}  # chargecategory.md
CHARGE_FREQUENCY = {"One-Time", "Recurring", "Usage-Based"}  # chargefrequency.md
SERVICE_CATEGORY = {  # servicecategory.md
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
    "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media",
    "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other",
}  # fmt: skip
AI_SUBCATEGORIES = {  # servicesubcategory.md, parent "AI and Machine Learning"
    "AI Platforms", "Bots", "Generative AI", "Machine Learning", "Natural Language Processing",
    "Other (AI and Machine Learning)",
}  # fmt: skip
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")  # datetime_format.md
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")  # numeric_format.md (no sign for positives, no commas, no units)
DAY = 86400


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A simulated organization's costs, backfilled over HTTP into a DuckDB and an NDJSON sink."""
    org = Organization(seed=11, start="2026-10-01", days=6)
    clock = FakeClock(org.end + 3 * DAY)  # every day closed and past the revision horizon
    tmp = tmp_path_factory.mktemp("focus")
    sinks = {"duckdb": DuckDBSink(tmp / "c.duckdb"), "ndjson": NdjsonSink(tmp / "c.ndjson")}
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=clock.now, sleep=lambda s: None)
    with serve(api) as url:
        settings = make_settings(openai_base_url=url, streams=["costs"], enrich_names=True)
        for sink in sinks.values():
            result = Collector(settings, sink, clock=clock).backfill(BackfillRange(org.start, org.end))
            assert not result.failed, [r.error for r in result.failed]
    rows = focus_rows(sinks["duckdb"].iter_documents("costs"))
    write_csv(rows, tmp / "focus.csv")
    write_parquet(rows, tmp / "focus.parquet")
    with (tmp / "focus.csv").open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        table = [dict(zip(header, (v if v != "" else None for v in line), strict=True)) for line in reader]
    yield {"org": org, "sinks": sinks, "rows": rows, "dir": tmp, "header": header, "csv": table}
    for sink in sinks.values():
        sink.close()


def parquet_rows(path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = con.sql(f"SELECT * FROM read_parquet('{path}')")
    names, types = rel.columns, [str(t) for t in rel.types]
    data = rel.fetchall()
    con.close()
    return names, types, data


# --- shape ------------------------------------------------------------------------------------------------------------


def test_every_mandatory_focus_1_2_column_is_present_in_both_files(world):
    assert len(MANDATORY) == 21
    assert set(world["header"]) >= MANDATORY
    names, _, _ = parquet_rows(world["dir"] / "focus.parquet")
    assert set(names) >= MANDATORY
    assert {"SubAccountId", "SubAccountName", "ConsumedQuantity", "ConsumedUnit"} <= set(names)


def test_the_module_states_each_column_as_the_spec_does():
    declared = {c.name: (c.data_type, c.level, c.nullable) for c in COLUMNS if not c.name.startswith("x_")}
    assert declared == SPEC
    for c in COLUMNS:
        if c.spec is not None:
            assert c.spec == f"specification/columns/{c.spec.rsplit('/', 1)[1]}"


def test_custom_columns_are_x_prefixed_and_come_after_every_focus_column(world):
    header = world["header"]
    custom = [i for i, name in enumerate(header) if name.startswith("x_")]
    assert custom and min(custom) == len(header) - len(custom)  # column_handling.md: custom after FOCUS columns
    assert {"x_LineItem", "x_ApiKeyId", "x_Model", "x_Unit"} <= set(header)
    for name in header:  # Pascal case, alphanumeric (column_handling.md)
        assert re.fullmatch(r"(x_)?[A-Z][A-Za-z0-9]*", name), name


def test_non_nullable_columns_are_never_null_and_no_string_is_empty(world):
    for row in world["csv"]:
        for name, (_t, _l, nullable) in SPEC.items():
            if not nullable:
                assert row[name] is not None, (name, row)
    _, _, data = parquet_rows(world["dir"] / "focus.parquet")
    assert all(value != "" for line in data for value in line)  # null_handling.md: no empty strings


def test_types_decimal_columns_are_plain_numbers_and_datetimes_iso_8601_utc(world):
    for row in world["csv"]:
        for name, (data_type, _l, _n) in SPEC.items():
            value = row[name]
            if value is None:
                continue
            if data_type == "Decimal":
                assert NUMBER.match(value), (name, value)
            elif data_type == "Date/Time":
                assert DATETIME.match(value), (name, value)
    names, types, _ = parquet_rows(world["dir"] / "focus.parquet")
    kinds = dict(zip(names, types, strict=True))
    for name, (data_type, _l, _n) in SPEC.items():
        expected = {"Decimal": "DECIMAL(38,", "Date/Time": "TIMESTAMP WITH TIME ZONE", "String": "VARCHAR"}[data_type]
        assert kinds[name].startswith(expected), (name, kinds[name])


def test_allowed_values(world):
    for row in world["csv"]:
        assert row["ChargeCategory"] in CHARGE_CATEGORY
        assert row["ChargeClass"] in (None, "Correction")  # chargeclass.md
        assert row["ServiceCategory"] in SERVICE_CATEGORY
        assert row["ServiceSubcategory"] in AI_SUBCATEGORIES and row["ServiceCategory"] == "AI and Machine Learning"
        assert row["ChargeFrequency"] in CHARGE_FREQUENCY
        if row["ChargeCategory"] == "Purchase":
            assert row["ChargeFrequency"] != "Usage-Based"  # chargefrequency.md
        assert re.fullmatch(r"[A-Z]{3}", row["BillingCurrency"])  # currency_format.md, ISO 4217
    categories = {row["ChargeCategory"] for row in world["csv"]}
    assert categories == {"Usage", "Purchase"}  # the simulator bills Scale Tier units too


def test_periods(world):
    for row in world["csv"]:
        charge_start = datetime.fromisoformat(row["ChargePeriodStart"])
        charge_end = datetime.fromisoformat(row["ChargePeriodEnd"])
        assert charge_end - charge_start == timedelta(days=1)  # one closed UTC day
        assert charge_start.hour == charge_start.minute == 0
        period_start = datetime.fromisoformat(row["BillingPeriodStart"])
        period_end = datetime.fromisoformat(row["BillingPeriodEnd"])
        assert period_start.day == 1 and period_start <= charge_start < charge_end <= period_end
        assert period_end.day == 1 and (period_end - period_start).days in (28, 29, 30, 31)


def test_conditional_nullability(world):
    for row in world["csv"]:
        # subaccountname.md: null exactly when SubAccountId is null
        assert (row["SubAccountId"] is None) == (row["SubAccountName"] is None)
        # pricingunit.md: null exactly when PricingQuantity is null
        assert (row["PricingQuantity"] is None) == (row["PricingUnit"] is None)
        # consumedquantity.md: null when ChargeCategory is not Usage; consumedunit.md: with ConsumedQuantity
        if row["ChargeCategory"] != "Usage":
            assert row["ConsumedQuantity"] is None
        assert (row["ConsumedQuantity"] is None) == (row["ConsumedUnit"] is None)
        # pricingquantity.md / consumedquantity.md: not null for Usage and Purchase rows that are no correction
        assert row["PricingQuantity"] is not None
        if row["ChargeCategory"] == "Usage":
            assert row["ConsumedQuantity"] is not None
        # listcost/contractedcost.md: no unit price, a charge of its own: equal to BilledCost
        assert row["ListCost"] == row["ContractedCost"] == row["EffectiveCost"] == row["BilledCost"]
        for name in ("InvoiceIssuerName", "ProviderName", "PublisherName"):
            assert row[name] == "OpenAI"
    assert any(row["SubAccountId"] is None for row in world["csv"]), "organization-level lines exist"
    assert any(row["SubAccountName"] not in (None, row["SubAccountId"]) for row in world["csv"]), "project names"


def test_line_items_are_parsed_into_model_and_unit_and_the_rest_kept_raw(world):
    rows = world["csv"]
    parsed = [r for r in rows if r["x_Model"] is not None]
    raw = [r for r in rows if r["x_Model"] is None]
    assert parsed and raw
    for r in parsed:
        assert r["x_LineItem"].startswith(r["x_Model"] + ", ") and r["x_Unit"] is not None
    assert {r["x_LineItem"] for r in raw} >= {"web search tool calls", "vector store storage"}
    for r in raw:
        assert r["x_Unit"] is None and r["x_LineItem"] == r["ChargeDescription"]
    assert any(r["x_ServiceTier"] == "batch" for r in parsed)
    assert any(r["x_ApiKeyId"] for r in rows) and any(r["x_ApiKeyName"] for r in rows)


# --- the bill ---------------------------------------------------------------------------------------------------------


def test_billed_cost_per_day_and_project_equals_the_simulators_bill_to_the_cent_and_beyond(world):
    org = world["org"]
    exported: dict[tuple[str, str | None], Decimal] = defaultdict(Decimal)
    for row in world["csv"]:
        exported[(row["ChargePeriodStart"], row["SubAccountId"])] += Decimal(row["BilledCost"])
    truth: dict[tuple[str, str | None], Decimal] = {}
    for day in range(org.start, org.end, DAY):
        for (project,), measures in org.totals("costs", day, day + DAY, by=("project_id",)).items():
            truth[(iso_utc(datetime.fromtimestamp(day, UTC)), project)] = measures["amount"]
    assert {k: v for k, v in exported.items() if v} == {k: v for k, v in truth.items() if v}
    assert sum(exported.values()) == org.total_cost() > 0


def test_csv_and_parquet_hold_the_same_rows(world):
    names, _, data = parquet_rows(world["dir"] / "focus.parquet")
    assert names == world["header"]

    def cell(value):
        if value is None:
            return None
        if isinstance(value, datetime):
            return iso_utc(value)
        if isinstance(value, Decimal):
            return value
        return str(value)

    def csv_cell(name, value):
        kind = SPEC.get(name, ("Decimal",) if name == "x_Quantity" else ("String",))[0]
        return Decimal(value) if value is not None and kind == "Decimal" else value

    from_parquet = sorted(tuple(cell(v) for v in line) for line in data)
    from_csv = sorted(tuple(csv_cell(n, row[n]) for n in names) for row in world["csv"])
    assert from_parquet == from_csv
    assert len(from_csv) == len(world["rows"]) > 100


def test_every_sink_gives_the_same_export(world):
    a = focus_rows(world["sinks"]["duckdb"].iter_documents("costs"))
    b = focus_rows(world["sinks"]["ndjson"].iter_documents("costs"))
    assert a == b


def test_amounts_keep_their_digits_whatever_json_type_they_arrived_as():
    doc = {
        "_id": "x",
        "_source": {
            "@timestamp": "2026-10-01T00:00:00.000Z",
            "organization": {"id": "org-1"},
            "openai": {
                "base": {"start_time": "2026-10-01T00:00:00.000Z", "end_time": "2026-10-02T00:00:00.000Z"},
                "costs": {"amount": {"value": 0.1}, "line_item": "gpt-4o, input", "quantity": 40000.0},
            },
        },
    }
    assert focus_row(doc)["BilledCost"] == Decimal("0.1")
    assert focus_row(doc)["PricingQuantity"] == Decimal(40000)
    assert focus_row(doc)["BillingCurrency"] == "USD"
    doc["_source"]["openai"]["costs"]["amount"] = {"value": "12.50", "currency": "usd"}
    assert focus_row(doc)["BilledCost"] == Decimal("12.50")
    doc["_source"]["openai"]["costs"]["quantity_unit"] = "1000_tokens"
    row = focus_row(doc)
    assert (row["PricingQuantity"], row["PricingUnit"]) == (Decimal(40000), "1000 Tokens")
    assert (row["ConsumedQuantity"], row["ConsumedUnit"]) == (Decimal(40000000), "Tokens")
    assert row["BillingAccountName"] == "org-1"  # unnamed organization: its id


# --- the command ------------------------------------------------------------------------------------------------------


def invoke(*args):
    return runner.invoke(app, list(args), env={}, catch_exceptions=False)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_export_command_writes_the_days_asked_for(world, tmp_path, suffix):
    org = world["org"]
    out = tmp_path / f"f.{suffix}"
    start = datetime.fromtimestamp(org.start + DAY, UTC).strftime("%Y-%m-%d")
    end = datetime.fromtimestamp(org.start + 3 * DAY, UTC).strftime("%Y-%m-%d")
    sink = f"duckdb:{world['dir'] / 'c.duckdb'}"
    result = invoke("export", "--format", "focus", "--start", start, "--end", end, "--sink", sink, "--output", str(out))
    assert result.exit_code == 0, result.output
    total = org.total_cost(org.start + DAY, org.start + 3 * DAY)
    assert f"2 day(s), BilledCost {total:,.2f} USD (exact: {total})" in result.output
    if suffix == "csv":
        with out.open(newline="") as fh:
            lines = list(csv.DictReader(fh))
        days = len({r["ChargePeriodStart"] for r in lines})
        billed = sum((Decimal(r["BilledCost"]) for r in lines), Decimal(0))
    else:
        con = duckdb.connect()
        days, billed = con.execute(
            f"SELECT count(DISTINCT ChargePeriodStart), sum(BilledCost) FROM read_parquet('{out}')"
        ).fetchone()
        con.close()
    assert days == 2 and billed == total


@pytest.mark.parametrize(
    "args,message",
    [
        (["--output", "f.xlsx"], "--output: f.xlsx must end in .csv or .parquet"),
        (["--format", "cur", "--output", "f.csv"], "--format: 'cur' is not supported; allowed: focus"),
        (["--start", "2026-10-05", "--end", "2026-10-01", "--output", "f.csv"], "--end (2026-10-01) must be after"),
        (["--start", "October", "--output", "f.csv"], "--start: 'October' is not a date"),
    ],
    ids=["suffix", "format", "range", "date"],
)
def test_export_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("export", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_empty_sink_writes_the_header_and_says_why(tmp_path):
    from usage_collector.sinks.duckdb import DuckDBSink

    out = tmp_path / "f.csv"
    empty = DuckDBSink(tmp_path / "empty.duckdb")
    assert empty.list_checkpoints() == []  # creates the file, holding no document
    empty.close()
    result = invoke("export", "--sink", f"duckdb:{tmp_path / 'empty.duckdb'}", "--output", str(out))
    assert result.exit_code == 0
    assert "no billed cost lines" in result.output and "backfill" in result.output
    assert out.read_text().splitlines() == [",".join(c.name for c in COLUMNS)]


def test_export_refuses_a_sink_that_does_not_exist_and_creates_none(tmp_path):
    missing = tmp_path / "nope.duckdb"
    result = invoke("export", "--sink", f"duckdb:{missing}", "--output", str(tmp_path / "f.csv"))
    assert result.exit_code == 2
    assert str(missing) in result.output
    assert not missing.exists() and not (tmp_path / "f.csv").exists()
