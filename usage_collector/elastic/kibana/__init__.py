"""Kibana dashboards, data views and alert rules of usage-collector, and their installation.

What ``usage-collector setup`` puts into Kibana (``docs/dashboards.md`` lists every panel):

=====================================  =============================================================
data view ``usage-collector-openai``   exactly our usage data streams, ``<type>-openai.<stream>-*`` for
                                       every catalogue stream (comma-separated), never ``logs-*``
data view ``usage-collector-runs``     ``logs-usage_collector.runs-*``, the run documents
data view ``usage-collector-budgets``  ``<type>-openai.budgets-*``, the budget documents
data view ``…-reconciliation``         ``<type>-openai.reconciliation-*``, estimated against billed
data view ``…-allocation``             ``<type>-openai.allocation-*``, the bill split by usage share
dashboard ``…-usage-overview``         Elastic's "OpenAI Usage Overview", panel for panel, plus vector
                                       store bytes, code interpreter sessions, file/web search calls,
                                       cached-token share and batch share
dashboard ``…-costs``                  billed cost by day, line item, project and API key, month to
                                       date against last month, top movers, budgets (month to date
                                       against budget and forecast), estimated against billed, cost
                                       allocated to models and users
dashboard ``…-chargeback``             one project (a control picks it): tokens and cost by model and
                                       API key, trend, share of the organization
dashboard ``…-collector-health``       per stream: last complete bucket, lag, documents, failures
saved search ``…-failed-runs``         failed runs with their error message (a panel of the above)
=====================================  =============================================================

The modules, each depending only on those above it:

=================  ================================================================================
``panels``         the vocabulary the dashboards are declared in (:class:`M`, :class:`XY`, ...)
``dashboards``     the four dashboards and the saved search's id
``formula``        a parser for the Lens formula subset the metrics use
``lens``           the compiler: Lens panels, data views, saved objects, the NDJSON bundle
``validate``       Kibana's own import, dashboard, Lens and ``.es-query`` rules, applied to the bundle
``alerts``         the optional alert rules
``client``         installation over HTTP: :func:`install`, :func:`install_rules`
``docs``           ``docs/dashboards.md``; ``python -m usage_collector.elastic.kibana.docs`` regenerates it
                   and the bundle
=================  ================================================================================
"""

from .alerts import RULE_IDS, rules
from .client import KibanaError, install, install_rules, make_client, tls_context
from .dashboards import DASHBOARDS
from .lens import (
    ALLOCATION_DATA_VIEW,
    BUDGETS_DATA_VIEW,
    NDJSON_PATH,
    PANEL_VERSION,
    RECONCILIATION_DATA_VIEW,
    RUNS_DATA_VIEW,
    TYPE_MIGRATION_VERSIONS,
    USAGE_DATA_VIEW,
    default_settings,
    render_ndjson,
    saved_objects,
)
from .panels import M

__all__ = [
    "ALLOCATION_DATA_VIEW",
    "BUDGETS_DATA_VIEW",
    "DASHBOARDS",
    "NDJSON_PATH",
    "PANEL_VERSION",
    "RECONCILIATION_DATA_VIEW",
    "RULE_IDS",
    "RUNS_DATA_VIEW",
    "TYPE_MIGRATION_VERSIONS",
    "USAGE_DATA_VIEW",
    "KibanaError",
    "M",
    "default_settings",
    "install",
    "install_rules",
    "make_client",
    "render_ndjson",
    "rules",
    "saved_objects",
    "tls_context",
]
