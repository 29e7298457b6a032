"""The vocabulary the dashboards are declared in: panels (:class:`XY`, :class:`Table` ...), their metrics
(:class:`M`: a label and a Lens formula), buckets, controls and the :class:`Dashboard` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Fmt = dict[str, Any]
NUMBER: Fmt = {"id": "number", "params": {"decimals": 0, "compact": True}}
PERCENT: Fmt = {"id": "percent", "params": {"decimals": 1}}
BYTES: Fmt = {"id": "bytes", "params": {"decimals": 1}}
BYTES_FIELD: Fmt = {"id": "bytes"}
#: A data view's format of a ratio field (1 is 100 %).
PERCENT_FIELD: Fmt = {"id": "percent"}
#: Money in formulas; plain cost columns inherit the data view's ``$0,0.00`` format instead.
MONEY: Fmt = {"id": "number", "params": {"decimals": 2}}
#: The data view's format of the cost field.
USD_FIELD: Fmt = {"id": "number", "params": {"pattern": "$0,0.00"}}


@dataclass(frozen=True)
class M:
    """One metric: a label and a Lens formula (``sum(f)``, ``sum(f, kql='...') / count()``)."""

    label: str
    formula: str
    fmt: Fmt | None = None


@dataclass(frozen=True)
class Terms:
    """Top values of a field, ranked by a metric column of the panel or alphabetically.

    Lens ranks top values only by a plain aggregation column (``isSortableByColumn``: no formula, math or
    cumulative-sum column, none that another column references), so ``rank`` names the index of such a metric
    in the panel (``None``: the first metric); the compiler refuses any other. ``missing`` needs ``other``:
    Lens sends ``missingBucket`` only together with ``otherBucket``.
    """

    field: str
    size: int = 10
    label: str | None = None
    other: bool = True
    missing: bool = False
    alphabetical: bool = False
    rank: int | None = None


@dataclass(frozen=True)
class Histogram:
    """Date histogram (``auto`` follows the time range)."""

    field: str = "@timestamp"
    interval: str = "auto"


Bucket = Terms | Histogram
TimeRange = tuple[str, str]
DataView = Literal["usage", "runs", "budgets", "reconciliation", "allocation"]


@dataclass(frozen=True)
class Panel:
    title: str
    w: int = 24
    h: int = 12
    description: str = ""


@dataclass(frozen=True)
class Markdown(Panel):
    text: str = ""


@dataclass(frozen=True)
class Metric(Panel):
    metric: M = M("", "count()")
    query: str = ""
    time_range: TimeRange | None = None
    dv: DataView = "usage"


@dataclass(frozen=True)
class XYLayer:
    metrics: tuple[M, ...]
    x: Bucket | None = Histogram()
    split: Terms | None = None
    series: str = "bar_stacked"
    ignore_global_filters: bool = False


@dataclass(frozen=True)
class XY(Panel):
    layers: tuple[XYLayer, ...] = ()
    query: str = ""
    time_range: TimeRange | None = None
    dv: DataView = "usage"


@dataclass(frozen=True)
class Pie(Panel):
    metric: M = M("", "count()")
    group: Terms = Terms("event.dataset")
    shape: str = "donut"
    query: str = ""
    ignore_global_filters: bool = False
    dv: DataView = "usage"


@dataclass(frozen=True)
class Table(Panel):
    rows: tuple[Terms, ...] = ()
    metrics: tuple[M, ...] = ()
    sort_by: int | None = None  # index into metrics, descending
    query: str = ""
    time_range: TimeRange | None = None
    dv: DataView = "usage"


@dataclass(frozen=True)
class SearchPanel(Panel):
    search_id: str = ""


@dataclass(frozen=True)
class Control:
    """An options-list control on a field (filters every panel)."""

    field: str
    title: str
    single: bool = True
    dv: DataView = "usage"


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    description: str
    time_from: str
    time_to: str
    panels: tuple[Panel, ...]
    controls: tuple[Control, ...] = ()


def xy(
    title: str,
    *metrics: M,
    x: Bucket | None = Histogram(),
    split: Terms | None = None,
    series: str = "bar_stacked",
    query: str = "",
    w: int = 24,
    h: int = 12,
    description: str = "",
    time_range: TimeRange | None = None,
    dv: DataView = "usage",
) -> XY:
    """A one-layer XY chart."""
    return XY(
        title,
        w,
        h,
        description,
        layers=(XYLayer(metrics, x, split, series),),
        query=query,
        time_range=time_range,
        dv=dv,
    )
