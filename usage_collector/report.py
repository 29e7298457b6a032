"""Spend and usage tables from any sink: terminal tables and an offline HTML report with charts.

Works on the documents a sink holds (``Sink.iter_documents``), so the same report reads DuckDB, NDJSON or
Elasticsearch. Money is summed as :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .sinks.base import Sink


@dataclass
class Report:
    """Aggregates for the report; every table is a list of (label, value) sorted by value, descending."""

    currency: str = "usd"
    total_cost: Decimal = Decimal(0)
    days: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_project: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_line_item: list[tuple[str, Decimal]] = field(default_factory=list)
    cost_by_api_key: list[tuple[str, Decimal]] = field(default_factory=list)
    tokens_by_model: list[tuple[str, int, int]] = field(default_factory=list)
    documents: int = 0


def _label(base: dict[str, Any], key: str, name_key: str) -> str:
    ident = base.get(key)
    if ident is None:
        return "(organization level)"  # e.g. Scale Tier units and storage are billed to no project/key
    name = base.get(name_key)
    return f"{name} ({ident})" if name and name != ident else str(ident)


def _top(d: dict[str, Decimal]) -> list[tuple[str, Decimal]]:
    return sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))


def build_report(sink: Sink) -> Report:
    """Aggregate every document of ``sink``."""
    return aggregate(sink.iter_documents())


def aggregate(docs: Iterable[dict[str, Any]]) -> Report:
    rep = Report()
    by_project: dict[str, Decimal] = defaultdict(Decimal)
    by_item: dict[str, Decimal] = defaultdict(Decimal)
    by_key: dict[str, Decimal] = defaultdict(Decimal)
    by_day: dict[str, Decimal] = defaultdict(Decimal)
    tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for d in docs:
        rep.documents += 1
        src = d["_source"]
        base = src["openai"].get("base", {})
        stream = src["event"]["dataset"].removeprefix("openai.")
        own = src["openai"].get(stream, {})
        if stream == "costs":
            value = Decimal(str(own.get("amount", {}).get("value", 0)))
            rep.currency = own.get("amount", {}).get("currency", rep.currency)
            rep.total_cost += value
            by_day[src["@timestamp"][:10]] += value
            by_project[_label(base, "project_id", "project_name")] += value
            by_item[own.get("line_item") or "(none)"] += value
            by_key[_label(base, "api_key_id", "api_key_name")] += value
            continue
        if "input_tokens" in own:
            t = tokens[base.get("model") or "(none)"]
            t[0] += int(own.get("input_tokens", 0))
            t[1] += int(own.get("output_tokens", 0))
    rep.days = sorted(by_day.items())
    rep.cost_by_project = _top(by_project)
    rep.cost_by_line_item = _top(by_item)
    rep.cost_by_api_key = _top(by_key)
    rep.tokens_by_model = sorted(((m, i, o) for m, (i, o) in tokens.items()), key=lambda r: (-(r[1] + r[2]), r[0]))
    return rep


def money(v: Decimal, currency: str = "usd") -> str:
    sym = "$" if currency.lower() == "usd" else currency.upper() + " "
    return f"{sym}{v.quantize(Decimal('0.01')):,}"


def render_terminal(rep: Report, *, top: int = 8) -> None:
    """Print the report with rich tables."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(
        f"[bold]Billed cost[/bold]: {money(rep.total_cost, rep.currency)} over {len(rep.days)} day(s), "
        f"{rep.documents:,} documents"
    )
    for title, rows in (
        ("Billed cost by project", rep.cost_by_project),
        ("Billed cost by line item", rep.cost_by_line_item),
        ("Top API keys by billed cost", rep.cost_by_api_key),
    ):
        t = Table(title=title, title_justify="left")
        t.add_column("")
        t.add_column("cost", justify="right")
        t.add_column("share", justify="right")
        for label, v in rows[:top]:
            share = f"{(v / rep.total_cost * 100):.1f}%" if rep.total_cost else "-"
            t.add_row(label, money(v, rep.currency), share)
        con.print(t)
    t = Table(title="Tokens by model", title_justify="left")
    for col in ("model", "input tokens", "output tokens"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for model, i, o in rep.tokens_by_model[:top]:
        t.add_row(model, f"{i:,}", f"{o:,}")
    con.print(t)


def _bars(rows: list[tuple[str, Decimal]], currency: str, width: int = 560) -> str:
    if not rows:
        return "<p>no data</p>"
    peak = max(v for _, v in rows) or Decimal(1)
    h = 22
    parts = [f'<svg width="{250 + width + 110}" height="{h * len(rows)}" role="img">']
    for i, (label, v) in enumerate(rows):
        w = int(Decimal(width) * v / peak)
        y = i * h
        short = label if len(label) <= 38 else label[:36] + "\u2026"
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="12"><title>{html.escape(label)}</title>{html.escape(short)}</text>'
        )
        parts.append(f'<rect x="250" y="{y + 3}" width="{w}" height="{h - 6}" fill="#3b7dd8"/>')
        parts.append(f'<text x="{254 + w}" y="{y + 15}" font-size="12">{html.escape(money(v, currency))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _daily(rows: list[tuple[str, Decimal]], currency: str) -> str:
    if not rows:
        return "<p>no data</p>"
    peak = max(v for _, v in rows) or Decimal(1)
    bw, height = 18, 180
    parts = [f'<svg width="{bw * len(rows) + 40}" height="{height + 40}" role="img">']
    for i, (day, v) in enumerate(rows):
        h = int(Decimal(height) * v / peak)
        parts.append(
            f'<rect x="{i * bw}" y="{height - h}" width="{bw - 3}" height="{h}" fill="#e07b39">'
            f"<title>{day}: {html.escape(money(v, currency))}</title></rect>"
        )
        if i % 5 == 0:
            parts.append(f'<text x="{i * bw}" y="{height + 14}" font-size="10">{day[5:]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(rep: Report, title: str = "OpenAI usage and billed cost") -> str:
    """A single self-contained HTML page (inline SVG charts, no network)."""
    tok = "".join(f"<tr><td>{html.escape(m)}</td><td>{i:,}</td><td>{o:,}</td></tr>" for m, i, o in rep.tokens_by_model)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}td{{padding:2px 12px}}
td:nth-child(n+2){{text-align:right}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Billed cost: <b>{money(rep.total_cost, rep.currency)}</b> over {len(rep.days)} day(s);
{rep.documents:,} documents.</p>
<h2>Billed cost per day</h2>{_daily(rep.days, rep.currency)}
<h2>By project</h2>{_bars(rep.cost_by_project[:12], rep.currency)}
<h2>By line item</h2>{_bars(rep.cost_by_line_item[:15], rep.currency)}
<h2>Top API keys</h2>{_bars(rep.cost_by_api_key[:10], rep.currency)}
<h2>Tokens by model</h2><table><tr><th>model</th><th>input</th><th>output</th></tr>{tok}</table>
</body></html>
"""
