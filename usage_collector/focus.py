"""Billed cost as a FOCUS 1.2 dataset (CSV or Parquet): one row per billed cost line.

A billed cost line is one costs document: a closed UTC day x project x line item x API key, as the Costs API
reported it (``openai.costs.amount.value``). The columns, in the order FOCUS asks for (its columns first, custom
``x_`` columns after: ``specification/attributes/column_handling.md``), are :data:`COLUMNS`. Every fact about a
column (its ID, type, feature level, nullability, allowed values) is transcribed from the FOCUS specification at tag
``v1.2`` of https://github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec; each :class:`Column` names the file.

How the Costs API maps onto FOCUS (choices made here, not stated by OpenAI):

* BillingAccount = the OpenAI organization (``organization.id``; its name, else its id); SubAccount = the project
  (``openai.base.project_id``; its display name, else its id, since SubAccountName must not be null when SubAccountId
  is not). Charges with no project (organization-level lines) have both null, as the spec requires.
* BillingPeriod = the UTC calendar month of the charge day (OpenAI invoices API usage monthly: assumed, not verified
  here). ChargePeriod = the day: ``@timestamp`` to ``openai.base.end_time``.
* ChargeCategory ``Usage`` and ChargeFrequency ``Usage-Based`` for every line, except Scale Tier unit lines
  (line item containing "scale tier"): ``Purchase`` / ``Recurring``. ChargeClass is null: the collector replaces a
  restated day in place, it never receives a correction row for an invoiced period.
* ListCost = ContractedCost = EffectiveCost = BilledCost: the Costs API reports the amount charged and nothing about
  list prices, negotiated discounts or commitments (spec: a cost with no unit price "MUST match the BilledCost").
* PricingQuantity/PricingUnit = ``quantity``/``quantity_unit`` in FOCUS unit format (:data:`UNITS`); a quantity
  whose unit the API leaves null ("no single supported unit applies") gets the generic count unit ``Units``. When
  the API reports no quantity, both stay null (the spec wants them for Usage rows; there is nothing to put there).
  ConsumedQuantity/ConsumedUnit repeat them for Usage rows (``1000_tokens`` becomes tokens x 1000).
* InvoiceIssuerName = ProviderName = PublisherName = ``OpenAI``; ServiceName ``OpenAI API``; ServiceCategory
  ``AI and Machine Learning``, ServiceSubcategory ``Generative AI``.

Money stays :class:`~decimal.Decimal` from the document to the file: CSV numbers are written with ``format(d, "f")``
(no float, no exponent), Parquet columns are ``DECIMAL(38, s)`` with ``s`` the largest scale present, so the file holds
exactly what the Costs API said. Parquet is written by DuckDB's ``COPY`` from the same CSV text, so both files hold
the same rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .pricing import parse_line_item

__all__ = [
    "ALLOWED",
    "COLUMNS",
    "FOCUS_SPEC",
    "FOCUS_VERSION",
    "UNITS",
    "Column",
    "focus_rows",
    "iso_utc",
    "write_csv",
    "write_focus",
    "write_parquet",
]

FOCUS_VERSION = "1.2"
#: Where the column facts below were read (tag and directory).
FOCUS_SPEC = "FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec@v1.2:specification/columns/"

PROVIDER = "OpenAI"
SERVICE_NAME = "OpenAI API"


@dataclass(frozen=True)
class Column:
    """One column of the dataset.

    Attributes:
        name: the Column ID.
        data_type: ``String``, ``Decimal`` or ``Date/Time`` (FOCUS data types).
        level: ``Mandatory``, ``Conditional`` or ``Recommended`` (the spec's feature level), ``Custom`` for ``x_``.
        nullable: the spec's "Allows nulls".
        spec: the file at tag v1.2 the facts come from (``None`` for custom columns).
    """

    name: str
    data_type: str
    level: str
    nullable: bool
    spec: str | None = None


def _c(name: str, data_type: str, level: str, nullable: bool, file: str) -> Column:
    return Column(name, data_type, level, nullable, f"specification/columns/{file}.md")


#: The FOCUS 1.2 columns written, in the spec's alphabetical order (Mandatory ones: 21, all present), then the
#: custom ones. Facts from each file's "Content Constraints" table at tag v1.2.
FOCUS_COLUMNS: tuple[Column, ...] = (
    _c("BilledCost", "Decimal", "Mandatory", False, "billedcost"),
    _c("BillingAccountId", "String", "Mandatory", False, "billingaccountid"),
    _c("BillingAccountName", "String", "Mandatory", True, "billingaccountname"),
    _c("BillingCurrency", "String", "Mandatory", False, "billingcurrency"),
    _c("BillingPeriodEnd", "Date/Time", "Mandatory", False, "billingperiodend"),
    _c("BillingPeriodStart", "Date/Time", "Mandatory", False, "billingperiodstart"),
    _c("ChargeCategory", "String", "Mandatory", False, "chargecategory"),
    _c("ChargeClass", "String", "Mandatory", True, "chargeclass"),
    _c("ChargeDescription", "String", "Mandatory", True, "chargedescription"),
    _c("ChargeFrequency", "String", "Recommended", False, "chargefrequency"),
    _c("ChargePeriodEnd", "Date/Time", "Mandatory", False, "chargeperiodend"),
    _c("ChargePeriodStart", "Date/Time", "Mandatory", False, "chargeperiodstart"),
    _c("ConsumedQuantity", "Decimal", "Conditional", True, "consumedquantity"),
    _c("ConsumedUnit", "String", "Conditional", True, "consumedunit"),
    _c("ContractedCost", "Decimal", "Mandatory", False, "contractedcost"),
    _c("EffectiveCost", "Decimal", "Mandatory", False, "effectivecost"),
    _c("InvoiceIssuerName", "String", "Mandatory", False, "invoiceissuer"),
    _c("ListCost", "Decimal", "Mandatory", False, "listcost"),
    _c("PricingQuantity", "Decimal", "Mandatory", True, "pricingquantity"),
    _c("PricingUnit", "String", "Mandatory", True, "pricingunit"),
    _c("ProviderName", "String", "Mandatory", False, "provider"),
    _c("PublisherName", "String", "Mandatory", False, "publisher"),
    _c("ServiceCategory", "String", "Mandatory", False, "servicecategory"),
    _c("ServiceName", "String", "Mandatory", False, "servicename"),
    _c("ServiceSubcategory", "String", "Recommended", False, "servicesubcategory"),
    _c("SubAccountId", "String", "Conditional", True, "subaccountid"),
    _c("SubAccountName", "String", "Conditional", True, "subaccountname"),
)

#: OpenAI's own columns (``x_`` prefix: ``specification/attributes/column_handling.md``, "Custom columns").
CUSTOM_COLUMNS: tuple[Column, ...] = (
    Column("x_LineItem", "String", "Custom", True),  # the Costs API line_item, as reported
    Column("x_Model", "String", "Custom", True),  # parsed from the line item; null when it has no known shape
    Column("x_Unit", "String", "Custom", True),  # the price-table unit parsed from the line item (input, output, ...)
    Column("x_ServiceTier", "String", "Custom", True),  # batch / flex / priority when the line item names one
    Column("x_ApiKeyId", "String", "Custom", True),
    Column("x_ApiKeyName", "String", "Custom", True),
    Column("x_Quantity", "Decimal", "Custom", True),  # quantity as reported
    Column("x_QuantityUnit", "String", "Custom", True),  # quantity_unit as reported
    Column("x_DocumentId", "String", "Custom", False),  # the costs document's _id in the sink
)

COLUMNS: tuple[Column, ...] = FOCUS_COLUMNS + CUSTOM_COLUMNS
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

#: Allowed values, from the "Allowed values" table of each file at tag v1.2.
ALLOWED: Mapping[str, frozenset[str]] = {
    "ChargeCategory": frozenset({"Usage", "Purchase", "Tax", "Credit", "Adjustment"}),  # chargecategory.md
    "ChargeClass": frozenset({"Correction"}),  # chargeclass.md (else null)
    "ChargeFrequency": frozenset({"One-Time", "Recurring", "Usage-Based"}),  # chargefrequency.md
    "ServiceCategory": frozenset(  # servicecategory.md
        {
            "AI and Machine Learning",
            "Analytics",
            "Business Applications",
            "Compute",
            "Databases",
            "Developer Tools",
            "Multicloud",
            "Identity",
            "Integration",
            "Internet of Things",
            "Management and Governance",
            "Media",
            "Migration",
            "Mobile",
            "Networking",
            "Security",
            "Storage",
            "Web",
            "Other",
        }
    ),
}

#: Costs API ``quantity_unit`` (openai-usage-api.md §1.6 enum) -> FOCUS unit format
#: (``specification/attributes/unit_format.md``: plural units, "1000 Tokens", "GB-Hours"-style composites,
#: "GiB" as the binary data-size abbreviation).
UNITS: Mapping[str, str] = {
    "tokens": "Tokens",
    "1000_tokens": "1000 Tokens",
    "duration_seconds": "Seconds",
    "duration_minutes": "Minutes",
    "duration_hours": "Hours",
    "gibibyte_hours": "GiB-Hours",
    "images": "Images",
    "characters": "Characters",
}
#: The generic count unit for a quantity the API gives no unit for (unit_format.md lists "Unit" as a count unit).
GENERIC_UNIT = "Units"


def iso_utc(ts: datetime) -> str:
    """``YYYY-MM-DDTHH:mm:ssZ`` (specification/attributes/datetime_format.md)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _decimal(value: Any) -> Decimal | None:
    """A document number as Decimal: floats via their shortest repr (the digits the API sent)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float):
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return Decimal(str(value))


def _month(ts: datetime) -> tuple[datetime, datetime]:
    start = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _unit(api_unit: str | None) -> str:
    if api_unit is None:
        return GENERIC_UNIT
    known = UNITS.get(api_unit)
    if known is not None:
        return known
    return " ".join(part.capitalize() for part in api_unit.replace("_", " ").split()) or GENERIC_UNIT


def _text(value: Any) -> str | None:
    """A string column value: never an empty string (specification/attributes/null_handling.md)."""
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def focus_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The FOCUS row of one costs document (``{"_id", "_index", "_source"}``); values are ``str``, ``Decimal``,
    ``datetime`` (UTC) or ``None``.

    Raises:
        ValueError: the document is not a costs document (no ``openai.costs.amount.value``).
    """
    src = doc["_source"]
    openai = src.get("openai", {})
    base = openai.get("base", {})
    costs = openai.get("costs", {})
    amount = _decimal((costs.get("amount") or {}).get("value"))
    if amount is None:
        raise ValueError(f"document {doc.get('_id')} has no openai.costs.amount.value")
    start = _parse_time(base.get("start_time") or src["@timestamp"])
    end = _parse_time(base["end_time"])
    period_start, period_end = _month(start)
    org = src.get("organization", {})
    raw_item = _text(costs.get("line_item"))
    item = parse_line_item(raw_item)
    purchase = raw_item is not None and "scale tier" in raw_item.lower()
    quantity = _decimal(costs.get("quantity"))
    api_unit = _text(costs.get("quantity_unit"))
    pricing_unit = _unit(api_unit) if quantity is not None else None
    consumed_q: Decimal | None = None
    consumed_u: str | None = None
    if not purchase and quantity is not None:
        consumed_q, consumed_u = (quantity * 1000, "Tokens") if api_unit == "1000_tokens" else (quantity, pricing_unit)
    project = _text(base.get("project_id"))
    currency = _text((costs.get("amount") or {}).get("currency"))
    return {
        "BilledCost": amount,
        "BillingAccountId": str(org.get("id")),
        "BillingAccountName": _text(org.get("name")) or str(org.get("id")),
        "BillingCurrency": currency.upper() if currency else "USD",
        "BillingPeriodEnd": period_end,
        "BillingPeriodStart": period_start,
        "ChargeCategory": "Purchase" if purchase else "Usage",
        "ChargeClass": None,
        "ChargeDescription": raw_item,
        "ChargeFrequency": "Recurring" if purchase else "Usage-Based",
        "ChargePeriodEnd": end,
        "ChargePeriodStart": start,
        "ConsumedQuantity": consumed_q,
        "ConsumedUnit": consumed_u,
        "ContractedCost": amount,
        "EffectiveCost": amount,
        "InvoiceIssuerName": PROVIDER,
        "ListCost": amount,
        "PricingQuantity": quantity,
        "PricingUnit": pricing_unit,
        "ProviderName": PROVIDER,
        "PublisherName": PROVIDER,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": SERVICE_NAME,
        "ServiceSubcategory": "Generative AI",
        "SubAccountId": project,
        "SubAccountName": (_text(base.get("project_name")) or project) if project else None,
        "x_LineItem": raw_item,
        "x_Model": item.model,
        "x_Unit": item.unit,
        "x_ServiceTier": item.tier,
        "x_ApiKeyId": _text(base.get("api_key_id")),
        "x_ApiKeyName": _text(base.get("api_key_name")),
        "x_Quantity": quantity,
        "x_QuantityUnit": api_unit,
        "x_DocumentId": str(doc["_id"]),
    }


def focus_rows(
    documents: Iterable[Mapping[str, Any]], start: int | None = None, end: int | None = None
) -> list[dict[str, Any]]:
    """FOCUS rows of the costs documents whose charge day starts in ``[start, end)`` (Unix seconds; open ends).

    Sorted by charge period, billing account, sub account, line item and API key, so a file is reproducible.
    """
    rows = []
    for doc in documents:
        row = focus_row(doc)
        ts = row["ChargePeriodStart"].timestamp()
        if (start is not None and ts < start) or (end is not None and ts >= end):
            continue
        rows.append(row)
    rows.sort(
        key=lambda r: (
            r["ChargePeriodStart"],
            r["BillingAccountId"],
            r["SubAccountId"] or "",
            r["x_LineItem"] or "",
            r["x_ApiKeyId"] or "",
            r["x_DocumentId"],
        )
    )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.copy_abs() if value.is_zero() else value, "f")
    if isinstance(value, datetime):
        return iso_utc(value)
    return str(value)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text: a header of Column IDs, empty fields for null (never an empty string: see :func:`_text`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMN_NAMES)
    for row in rows:
        writer.writerow([_cell(row[name]) for name in COLUMN_NAMES])
    return out.getvalue()


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write ``rows`` as CSV (UTF-8)."""
    path.write_text(to_csv(rows), encoding="utf-8")


def _scale(rows: Sequence[Mapping[str, Any]], name: str) -> int:
    """The decimals ``DECIMAL(38, s)`` needs to hold every value of column ``name`` exactly (at least 2)."""
    values = [v for v in (row[name] for row in rows) if isinstance(v, Decimal)]
    scale = max([2, *(-int(v.as_tuple().exponent) for v in values)])
    for v in values:
        t = v.as_tuple()
        integer_digits = max(len(t.digits) + int(t.exponent), 0)
        if integer_digits + scale > 38:
            raise ValueError(f"{name} value {v} does not fit DECIMAL(38, {scale})")
    return scale


def duckdb_types(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """DuckDB column types of the Parquet file: exact decimals, UTC timestamps, strings."""
    types = {}
    for col in COLUMNS:
        if col.data_type == "Decimal":
            types[col.name] = f"DECIMAL(38, {_scale(rows, col.name)})"
        elif col.data_type == "Date/Time":
            types[col.name] = "TIMESTAMPTZ"
        else:
            types[col.name] = "VARCHAR"
    return types


def write_parquet(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write ``rows`` as Parquet through DuckDB's ``COPY``, read from the same CSV text with explicit types."""
    import tempfile

    import duckdb

    types = duckdb_types(rows)
    with tempfile.TemporaryDirectory(prefix="focus-") as tmp:
        csv_path = Path(tmp) / "focus.csv"
        write_csv(rows, csv_path)
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in types.items()) + "}"
            select = ", ".join(f'"{name}"' for name in COLUMN_NAMES)
            con.execute(
                f"COPY (SELECT {select} FROM read_csv(?, header = true, columns = {columns}, "
                f"timestampformat = '%Y-%m-%dT%H:%M:%SZ', nullstr = '')) TO ? (FORMAT parquet)",
                [str(csv_path), str(path)],
            )
        finally:
            con.close()


def write_focus(rows: Sequence[Mapping[str, Any]], path: Path) -> str:
    """Write ``rows`` to ``path`` as CSV or Parquet by its suffix; returns the format written.

    Raises:
        ConfigError: the suffix is neither ``.csv`` nor ``.parquet``.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        write_csv(rows, path)
        return "csv"
    if suffix == ".parquet":
        write_parquet(rows, path)
        return "parquet"
    raise ConfigError(f"--output: {path} must end in .csv or .parquet")
