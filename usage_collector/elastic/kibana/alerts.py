"""The optional alert rules: Elasticsearch query rules with fixed ids and no actions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...budgets import BUDGETS_STREAM
from ...budgets import DATASET as BUDGETS_DATASET
from ...catalogue import STREAMS, WIDTH_SECONDS
from ...documents import RUNS_DATASET
from ..objects import data_stream_name
from .dashboards import _COST
from .lens import _NS, _dumps

if TYPE_CHECKING:
    from ...config import Settings


def _rule_id(name: str) -> str:
    """A fixed id Kibana accepts for a rule (it requires a UUID v1 or v4): uuid5's bits, stamped v4."""
    return str(uuid.UUID(bytes=uuid.uuid5(_NS, f"rule/{name}").bytes, version=4))


RULE_IDS = {
    name: _rule_id(name)
    for name in ("stream-stale", "collector-silent", "daily-cost", "cost-spike", "budget-forecast-over")
}
RULE_TAGS = ["usage-collector", "openai"]

#: The oldest stack the ES|QL cost-spike rule is verified for, function by function, against Elasticsearch's
#: ES|QL reference: ``FROM``, ``EVAL``, ``STATS ... BY``, ``WHERE``; ``DATE_TRUNC(<time span>, <date>)`` (time span
#: first), ``NOW()``, date minus a time span (``NOW() - 1 hour`` in the 8.17 "ES|QL time spans" page), ``CASE``,
#: ``SUM``, ``MAX``, ``MEDIAN``, ``COUNT``. We could not confirm time-span arithmetic and the
#: ``searchType: esqlQuery`` param of the Elasticsearch query rule for 8.11 (ES|QL itself was a technical
#: preview there), so the floor is raised to 8.17 and :func:`.client.install_rules` skips this rule, with a
#: warning, on an older Kibana (or one whose version it cannot read).
ESQL_RULE_MIN_VERSION = "8.17.0"


@dataclass(frozen=True)
class Rule:
    """One alerting rule: its fixed id and the create body (``POST /api/alerting/rule/<id>``)."""

    key: str
    id: str
    body: dict[str, Any]
    min_kibana: str | None = None

    def update_body(self) -> dict[str, Any]:
        """The ``PUT`` body: the create body less what an update may not change."""
        return {k: v for k, v in self.body.items() if k not in ("rule_type_id", "consumer", "enabled")}


def _count_by_term(
    index: list[str], query: dict[str, Any], window: tuple[int, str], term_field: str, term_size: int
) -> dict[str, Any]:
    """``.es-query`` params: alert when any group of ``term_field`` has a document matching ``query`` in the
    last ``window`` (DSL query, count > 0, grouped by top terms; see :mod:`.validate` for the schema)."""
    size, unit = window
    return {
        "searchType": "esQuery",
        "index": index,
        "timeField": "@timestamp",
        "esQuery": _dumps(query),
        "size": 10,
        "threshold": [0],
        "thresholdComparator": ">",
        "timeWindowSize": size,
        "timeWindowUnit": unit,
        "aggType": "count",
        "groupBy": "top",
        "termField": term_field,
        "termSize": term_size,
        "excludeHitsFromPreviousRun": False,
    }


def _duration(seconds: float) -> tuple[int, str]:
    """Kibana's ``timeWindowSize``/``Unit`` (whole minutes, at least 1)."""
    minutes = max(1, int(-(-seconds // 60)))
    if minutes % 1440 == 0:
        return minutes // 1440, "d"
    if minutes % 60 == 0:
        return minutes // 60, "h"
    return minutes, "m"


def budget_spend_rule_id(percent: int) -> str:
    """The fixed id of the rule "a budget's spend crossed ``percent`` %" (one rule per ``alert_at`` value)."""
    return _rule_id(f"budget-spend-{percent}")


def _interval(seconds: float) -> str:
    size, unit = _duration(seconds)
    return f"{size}{unit}"


def rules(
    settings: Settings,
    *,
    stale_intervals: int = 3,
    daily_cost_threshold: float | None = None,
    spike_factor: float = 3.0,
    spike_days: int = 28,
) -> list[Rule]:
    """The alert rules (``.es-query``), all in the ``stackAlerts`` consumer with no actions.

    * **stream-stale** (query DSL on the run documents, one alert per stream): a run reported a lag above
      ``stale_intervals`` bucket widths plus that stream's finalization grace plus one collection interval,
      i.e. no new complete bucket for that long.
    * **collector-silent**: no run document at all for ``stale_intervals`` collection intervals (the
      collector is not running, so the stale rule would see nothing).
    * **daily-cost** (only with ``daily_cost_threshold``): yesterday's billed cost (UTC day) above it.
    * **cost-spike** (ES|QL): yesterday's cost above ``spike_factor`` times the median of the ``spike_days``
      days before (days with any cost). Needs Kibana and Elasticsearch
      :data:`ESQL_RULE_MIN_VERSION` or newer: :func:`.client.install_rules` skips it with a warning on older
      stacks, and reports it (installing the others) if Kibana refuses it anyway.
    * with ``[[budgets]]`` configured (:func:`budget_rules`): **budget-forecast-over**, one alert per budget whose
      month-end forecast is above its amount; **budget-spend-<N>** for each ``alert_at`` percent N of any budget,
      one alert per budget whose month to date has crossed N % of its amount (a budget alerts only at its own
      ``alert_at`` percents).
    """
    n = max(1, stale_intervals)
    limits = []
    for s in settings.streams:
        limit = n * WIDTH_SECONDS[settings.width_for(s)] + settings.grace_for(s) + settings.interval
        limits.append(
            {
                "bool": {
                    "filter": [
                        {"term": {"usage_collector.stream": s}},
                        {"range": {"usage_collector.lag_seconds": {"gt": int(limit)}}},
                    ]
                }
            }
        )
    runs_index = [f"logs-{RUNS_DATASET}-*"]
    window = max(2 * settings.interval, 900.0)
    size, unit = _duration(window)
    base = {"consumer": "stackAlerts", "rule_type_id": ".es-query", "enabled": True, "actions": [], "tags": RULE_TAGS}
    out = [
        Rule(
            "stream-stale",
            RULE_IDS["stream-stale"],
            {
                **base,
                "name": "[OpenAI] usage-collector: stream has no new complete bucket",
                "schedule": {"interval": _interval(settings.interval)},
                "params": _count_by_term(
                    runs_index,
                    {
                        "query": {
                            "bool": {
                                "filter": [
                                    {"term": {"event.dataset": RUNS_DATASET}},
                                    {"bool": {"should": limits, "minimum_should_match": 1}},
                                ]
                            }
                        }
                    },
                    (size, unit),
                    "usage_collector.stream",
                    len(STREAMS),
                ),
            },
        )
    ]
    silent_size, silent_unit = _duration(max(n * settings.interval, 900.0))
    out.append(
        Rule(
            "collector-silent",
            RULE_IDS["collector-silent"],
            {
                **base,
                "name": "[OpenAI] usage-collector: no runs recorded",
                "schedule": {"interval": _interval(settings.interval)},
                "params": {
                    "searchType": "esQuery",
                    "index": runs_index,
                    "timeField": "@timestamp",
                    "esQuery": _dumps({"query": {"term": {"event.dataset": RUNS_DATASET}}}),
                    "size": 0,
                    "threshold": [1],
                    "thresholdComparator": "<",
                    "timeWindowSize": silent_size,
                    "timeWindowUnit": silent_unit,
                    "aggType": "count",
                    "groupBy": "all",
                    "excludeHitsFromPreviousRun": False,
                },
            },
        )
    )
    costs_index = [data_stream_name(settings, "costs").rsplit("-", 1)[0] + "-*"]
    if daily_cost_threshold is not None:
        out.append(
            Rule(
                "daily-cost",
                RULE_IDS["daily-cost"],
                {
                    **base,
                    "name": f"[OpenAI] usage-collector: daily cost above {daily_cost_threshold:g}",
                    "schedule": {"interval": "1h"},
                    "params": {
                        "searchType": "esQuery",
                        "index": costs_index,
                        "timeField": "@timestamp",
                        "esQuery": _dumps({"query": {"range": {"@timestamp": {"gte": "now-1d/d", "lt": "now/d"}}}}),
                        "size": 0,
                        "threshold": [float(daily_cost_threshold)],
                        "thresholdComparator": ">",
                        "timeWindowSize": 3,
                        "timeWindowUnit": "d",
                        "aggType": "sum",
                        "aggField": _COST,
                        "groupBy": "all",
                        "excludeHitsFromPreviousRun": False,
                    },
                },
            )
        )
    esql = (
        f"FROM {costs_index[0]}\n"
        "| EVAL day = DATE_TRUNC(1 day, @timestamp)\n"
        f"| STATS cost = SUM({_COST}) BY day\n"
        "| EVAL yesterday = DATE_TRUNC(1 day, NOW()) - 1 day\n"
        "| EVAL latest = CASE(day == yesterday, cost), trailing = CASE(day < yesterday, cost)\n"
        "| STATS latest_cost = MAX(latest), median_cost = MEDIAN(trailing), days = COUNT(trailing)\n"
        f"| WHERE days >= 7 AND latest_cost > {float(spike_factor):g} * median_cost"
    )
    out.append(
        Rule(
            "cost-spike",
            RULE_IDS["cost-spike"],
            {
                **base,
                "name": f"[OpenAI] usage-collector: daily cost above {spike_factor:g}x its trailing median",
                "schedule": {"interval": "1h"},
                "params": {
                    "searchType": "esqlQuery",
                    "esqlQuery": {"esql": esql},
                    "timeField": "@timestamp",
                    "size": 0,
                    "threshold": [0],
                    "thresholdComparator": ">",
                    "timeWindowSize": spike_days + 2,
                    "timeWindowUnit": "d",
                },
            },
            min_kibana=ESQL_RULE_MIN_VERSION,
        )
    )
    return out + budget_rules(settings)


def budget_rules(settings: Settings) -> list[Rule]:
    """The budget rules (none without ``[[budgets]]``): query DSL on the budget documents.

    Each budget document holds one budget's figures of one UTC day, replaced by every ``run`` that day
    (:mod:`usage_collector.budgets`). A rule looks at the documents of this calendar month (``openai.budgets.day``
    from ``now/M``: a UTC month, which is how budgets count) written in the last two collection intervals (at
    least an hour), so an alert lasts while the runs keep reporting it and ends when the month turns over. One
    alert per budget name (``groupBy: top``).
    """
    if not settings.budgets:
        return []
    index = [f"{settings.data_stream_type}-openai.{BUDGETS_STREAM}-*"]
    size, unit = _duration(max(2 * settings.interval, 3600.0))
    b = f"openai.{BUDGETS_STREAM}"
    base = {"consumer": "stackAlerts", "rule_type_id": ".es-query", "enabled": True, "actions": [], "tags": RULE_TAGS}

    def rule(key: str, rule_id: str, name: str, condition: dict[str, Any]) -> Rule:
        query = {
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"event.dataset": BUDGETS_DATASET}},
                        {"range": {f"{b}.day": {"gte": "now/M"}}},
                        condition,
                    ]
                }
            }
        }
        return Rule(
            key,
            rule_id,
            {
                **base,
                "name": name,
                "schedule": {"interval": _interval(max(settings.interval, 900.0))},
                "params": _count_by_term(index, query, (size, unit), f"{b}.name", min(1000, len(settings.budgets))),
            },
        )

    out = [
        rule(
            "budget-forecast-over",
            RULE_IDS["budget-forecast-over"],
            "[OpenAI] usage-collector: budget forecast over its amount",
            {"range": {f"{b}.forecast.percent": {"gt": 100}}},
        )
    ]
    for percent in sorted({p for budget in settings.budgets for p in budget.alert_at}):
        out.append(
            rule(
                f"budget-spend-{percent}",
                budget_spend_rule_id(percent),
                f"[OpenAI] usage-collector: budget month to date crossed {percent} %",
                {"term": {f"{b}.crossed": percent}},
            )
        )
    return out
