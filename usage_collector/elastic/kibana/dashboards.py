"""The definitions: the four dashboards and the id of the saved search one of them shows.

**Definitions, not exports.** Each dashboard is declared below as a small tree of :class:`.panels.Dashboard`,
:class:`.panels.XY`, :class:`.panels.Table` ... whose metrics are Lens formulas
(``sum(openai.costs.amount.value)``); :mod:`.lens` compiles them into saved objects.
"""

from __future__ import annotations

from .panels import (
    BYTES,
    MONEY,
    NUMBER,
    PERCENT,
    XY,
    Control,
    Dashboard,
    Histogram,
    M,
    Markdown,
    Metric,
    Pie,
    SearchPanel,
    Table,
    Terms,
    XYLayer,
    xy,
)

FAILED_RUNS_SEARCH = "usage-collector-failed-runs"
_COST = "openai.costs.amount.value"
_REQUESTS = "openai.base.num_model_requests"
_TOKENS = "sum(gen_ai.usage.input_tokens) + sum(gen_ai.usage.output_tokens)"
_NOT_WEB = 'not event.dataset : "openai.web_search_calls"'


def _ds(stream: str) -> str:
    return f'event.dataset : "openai.{stream}"'


def _by_model(title: str, measure: M, stream: str) -> XY:
    return xy(
        title,
        measure,
        split=Terms("openai.base.model", 10, "Model"),
        query=_ds(stream),
        description=f"{measure.label} of the {stream.replace('_', ' ')} stream over time, stacked by model (top 10).",
    )


_REQ = M("Model requests", f"sum({_REQUESTS})", NUMBER)
_TOK = M("Tokens", _TOKENS, NUMBER)
_CC = "openai.completions"
_TOKEN_TYPES = (
    M("Completions input, uncached", f"sum({_CC}.input_tokens) - sum({_CC}.input_cached_tokens)", NUMBER),
    M("Completions input, cached", f"sum({_CC}.input_cached_tokens)", NUMBER),
    M("Completions output", f"sum({_CC}.output_tokens)", NUMBER),
    M("Embeddings input", "sum(openai.embeddings.input_tokens)", NUMBER),
    M("Moderations input", "sum(openai.moderations.input_tokens)", NUMBER),
)
_PROJECT = Terms("openai.base.project_name", 10, "Project", missing=True)
#: Models by name: for metrics that are formulas (Lens ranks top values only by a plain aggregation column).
_MODELS_AZ = Terms("openai.base.model", 20, "Model", alphabetical=True)
_API_KEY = Terms("openai.base.api_key_name", 10, "API key", missing=True)


def _top(title: str, ident: str, name: str, what: str, id_label: str) -> Table:
    return Table(
        title,
        16,
        13,
        f"The ten {what} with the most model requests, with their tokens; the name reads (missing value) "
        "where the documents carry none (names come from the Admin list endpoints, setting enrich_names).",
        rows=(
            Terms(f"openai.base.{ident}", 10, id_label, other=False),
            Terms(f"openai.base.{name}", 1, "Name", missing=True),
        ),
        metrics=(_REQ, _TOK),
        sort_by=0,
        query=_NOT_WEB,
    )


USAGE_OVERVIEW = Dashboard(
    id="usage-collector-usage-overview",
    title="[OpenAI] Usage overview (usage-collector)",
    description="Requests, tokens, images, audio, tools and storage of the OpenAI organization.",
    time_from="now-7d",
    time_to="now",
    panels=(
        Markdown(
            "",
            16,
            10,
            text=(
                "### OpenAI usage\n\nFrom the organization's [Usage API](https://platform.openai.com/docs/"
                "api-reference/usage), collected by usage-collector: requests and model share, top projects, "
                "API keys and users, tokens by type and model, images, audio, and the tools (vector stores, "
                "code interpreter, file and web search).\n\nOnly complete buckets are written, so the newest "
                "bucket appears after the finalization grace. Billed money is on **[OpenAI] Costs**."
            ),
        ),
        Metric(
            "Model requests",
            8,
            10,
            "Requests to models across completions, embeddings, moderations, "
            "images and audio (web search requests are not counted twice).",
            metric=_REQ,
            query=_NOT_WEB,
        ),
        Metric(
            "Tokens",
            8,
            10,
            "Input plus output tokens (completions, embeddings, moderations); input includes cached tokens.",
            metric=_TOK,
        ),
        Pie(
            "Model usage",
            16,
            10,
            "Share of model requests by model (top 10).",
            metric=_REQ,
            group=Terms("openai.base.model", 10, "Model"),
            query=_NOT_WEB,
        ),
        xy(
            "Requests by usage type",
            _REQ,
            x=Terms("event.dataset", 10, "Usage type"),
            series="bar_horizontal",
            w=16,
            h=12,
            query=_NOT_WEB,
            description="Model requests per usage stream.",
        ),
        xy(
            "Model requests over time, by model",
            _REQ,
            split=Terms("openai.base.model", 10, "Model"),
            w=32,
            query=_NOT_WEB,
            description="Request rate over time, stacked by model (top 10).",
        ),
        _top("Top 10 projects", "project_id", "project_name", "projects", "Project ID"),
        _top("Top 10 API keys", "api_key_id", "api_key_name", "API keys", "API key ID"),
        _top("Top 10 users", "user_id", "user_email", "users", "User ID"),
        Markdown("", 48, 3, text="### Tokens"),
        xy(
            "Token usage by type",
            *_TOKEN_TYPES,
            description="Tokens over time by type, stacked: the "
            "completions input is split into its uncached and cached parts, so the stack is the total.",
        ),
        xy(
            "Overall token usage by type",
            *_TOKEN_TYPES,
            x=None,
            series="bar",
            description="The same token types, totalled over the time range.",
        ),
        xy(
            "Token usage by model",
            _TOK,
            split=_MODELS_AZ,
            description="Input plus output tokens over time, stacked by model (the first 20 models by name, "
            "the rest as Other: a sum of two columns cannot rank top values in Lens).",
        ),
        Metric(
            "Cached input share",
            12,
            12,
            "Share of completions input tokens served from the prompt cache.",
            metric=M("Cached input share", f"sum({_CC}.input_cached_tokens) / sum({_CC}.input_tokens)", PERCENT),
            query=_ds("completions"),
        ),
        Pie(
            "Batch share",
            12,
            12,
            "Completions tokens (input plus output) sent through the Batch API (true) or not (false).",
            metric=M("Tokens", f"sum({_CC}.input_tokens) + sum({_CC}.output_tokens)", NUMBER),
            group=Terms(f"{_CC}.batch", 3, "Batch", other=False, alphabetical=True),
            query=_ds("completions"),
        ),
        Markdown("", 48, 3, text="### Images"),
        _by_model("Image requests by model", _REQ, "images"),
        xy(
            "Images generated by size",
            M("Images", "sum(openai.images.images)", NUMBER),
            split=Terms("openai.images.size", 10, "Size"),
            query=_ds("images"),
            description="Images over time, stacked by size.",
        ),
        Markdown("", 48, 3, text="### Audio"),
        _by_model("Transcription requests by model", _REQ, "audio_transcriptions"),
        _by_model(
            "Transcribed seconds by model",
            M("Seconds", "sum(openai.audio_transcriptions.seconds)", NUMBER),
            "audio_transcriptions",
        ),
        _by_model("Speech requests by model", _REQ, "audio_speeches"),
        _by_model(
            "Characters synthesized by model",
            M("Characters", "sum(openai.audio_speeches.characters)", NUMBER),
            "audio_speeches",
        ),
        Markdown("", 48, 3, text="### Tools and storage"),
        xy(
            "Vector store storage by project",
            M("Bytes", "last_value(openai.vector_stores.usage_bytes)", BYTES),
            split=_PROJECT,
            query=_ds("vector_stores"),
            description="Bytes stored in vector stores: the last "
            "reading per project in each interval (a gauge, so readings are not added up over time).",
        ),
        xy(
            "Code interpreter sessions by project",
            M("Sessions", "sum(openai.code_interpreter_sessions.num_sessions)", NUMBER),
            split=_PROJECT,
            query=_ds("code_interpreter_sessions"),
            description="Code interpreter sessions, stacked by project.",
        ),
        xy(
            "File search calls by project",
            M("Calls", "sum(openai.file_search_calls.num_requests)", NUMBER),
            split=_PROJECT,
            query=_ds("file_search_calls"),
            description="File search tool calls by project.",
        ),
        xy(
            "Web search calls by model",
            M("Calls", "sum(openai.web_search_calls.num_requests)", NUMBER),
            split=Terms("openai.base.model", 10, "Model"),
            query=_ds("web_search_calls"),
            description="Web search tool calls, stacked by model.",
        ),
    ),
)

_COST_M = M("Cost", f"sum({_COST})")
#: The last fourteen complete days (``to`` rounds up to the end of yesterday), split into two explicit ranges by
#: KQL filters on ``@timestamp`` (no time shift: Lens refuses shifted metrics next to dynamic top values).
_TWO_WEEKS = ("now-14d/d", "now-1d/d")
_LAST = "kql='@timestamp >= \"now-7d/d\"'"
_PREVIOUS = "kql='@timestamp < \"now-7d/d\"'"
_MOVERS = (
    M("Last 7 days", f"sum({_COST}, {_LAST})"),
    M("Previous 7 days", f"sum({_COST}, {_PREVIOUS})"),
    M("Change", f"sum({_COST}, {_LAST}) - sum({_COST}, {_PREVIOUS})", MONEY),
    M("Change %", f"sum({_COST}, {_LAST}) / sum({_COST}, {_PREVIOUS}) - 1", PERCENT),
    M("14 days", f"sum({_COST})"),
)
_MOVERS_RANK = 4  # top values ranked by the cost of both weeks (a plain column); rows sorted by the change

#: Budget documents (``metrics-openai.budgets-*``): one per budget and UTC day, the newest run's figures.
_B = "openai.budgets"
_BUDGET = Terms(f"{_B}.name", 50, "Budget", other=False, alphabetical=True)
_BUDGET_PANELS = (
    Markdown(
        "",
        48,
        4,
        text=(
            "### Budgets\n\nFrom the budget documents (`metrics-openai.budgets-*`) each `run` writes for the "
            "`[[budgets]]` of the configuration: month to date (billed closed days plus today's estimate), the "
            "month-end forecast with its 80 % interval, and OpenAI's own spend limit of the same scope. "
            "`usage-collector budgets` prints the same figures."
        ),
    ),
    Table(
        "Budgets this month",
        48,
        10,
        "Each budget's newest figures this month: amount, month to date, forecast and its interval, percent of the "
        "budget spent and forecast, OpenAI's spend limit of the scope, status.",
        dv="budgets",
        rows=(_BUDGET, Terms(f"{_B}.scope", 1, "Scope", other=False, alphabetical=True)),
        metrics=(
            M("Budget", f"last_value({_B}.amount)", MONEY),
            M("Month to date", f"last_value({_B}.month_to_date)", MONEY),
            M("Forecast", f"last_value({_B}.forecast.point)", MONEY),
            M("Forecast low", f"last_value({_B}.forecast.lower)", MONEY),
            M("Forecast high", f"last_value({_B}.forecast.upper)", MONEY),
            M("Spent %", f"last_value({_B}.spend_percent)", MONEY),
            M("Forecast %", f"last_value({_B}.forecast.percent)", MONEY),
            M("OpenAI spend limit", f"last_value({_B}.openai_limits.spend_limit)", MONEY),
            M("Status", f"last_value({_B}.status)"),
        ),
        sort_by=6,
        time_range=("now/M", "now"),
    ),
    xy(
        "Month to date against budget and forecast",
        M("Month to date", f"max({_B}.month_to_date)", MONEY),
        M("Forecast", f"max({_B}.forecast.point)", MONEY),
        M("Budget", f"max({_B}.amount)", MONEY),
        x=Histogram(interval="1d"),
        split=_BUDGET,
        series="line",
        w=48,
        h=14,
        dv="budgets",
        time_range=("now/M", "now/M"),
        description="Per budget and day of this month: the month to date, the month-end forecast made that day, "
        "and the budget; a forecast line above the budget line is a month heading over.",
    ),
)

#: Reconciliation documents (``metrics-openai.reconciliation-*``): one per closed UTC day x project x model (tools,
#: storage and unparsed line items: no model, an ``item``). Allocation documents (``metrics-openai.allocation-*``):
#: each billed line split over the users and models whose usage matches it, by usage share.
_R = "openai.reconciliation"
_A = "openai.allocation"
_ESTIMATED = M("Estimated", f"sum({_R}.estimated_cost)")
_BILLED = M("Billed", f"sum({_R}.billed_cost)")
_ALLOCATED = M("Allocated cost", f"sum({_A}.amount)")
_UNALLOCATED = M("Unallocated", f"sum({_A}.amount, kql='{_A}.method : \"unallocated\"')")
_ALLOCATION_NOTE = (
    "Allocation splits the bill by usage share: each billed line (day, project, line item, API key) goes to the "
    "users and models whose usage that day matches it, in proportion to their quantity of the line's unit "
    "(tokens, images, seconds ...), to the micro-dollar, so the parts add up to the bill; a line no usage "
    "matches stays whole as unallocated."
)
_COST_INTELLIGENCE_PANELS = (
    Markdown(
        "",
        48,
        5,
        text=(
            "### Cost intelligence\n\nEstimated against billed cost from the reconciliation documents "
            "(`metrics-openai.reconciliation-*`, one per closed UTC day, project and model; tools and storage, "
            "billed per project, have no model): the estimate prices the day's usage with the price table in "
            "force that day. Cost by model and user from the allocation documents (`metrics-openai.allocation-*`): "
            f"{_ALLOCATION_NOTE} `usage-collector report` prints the same tables."
        ),
    ),
    xy(
        "Estimated against billed cost per day",
        _ESTIMATED,
        _BILLED,
        x=Histogram(interval="1d"),
        series="line",
        w=48,
        dv="reconciliation",
        description="Per closed UTC day: the sum of the estimates of the day's usage (price table in force that "
        "day) and the billed cost of the same day; a gap is where estimate and bill disagree (unpriced usage, "
        "credits, line items that name no model).",
    ),
    Table(
        "Estimated against billed by project and model",
        48,
        14,
        "Per project and model in the time range: estimated and billed cost, the difference (billed - "
        "estimated), the share of the bill the estimate explains (estimated / billed) and the usage documents "
        "left unpriced. Ranked by billed cost (the 20 projects and 10 models per project with the most, the rest "
        "as Other); tools, storage and unparsed line items read (missing value) as model.",
        dv="reconciliation",
        rows=(
            Terms("openai.base.project_name", 20, "Project", missing=True, rank=1),
            Terms("openai.base.model", 10, "Model", missing=True, rank=1),
        ),
        metrics=(
            _ESTIMATED,
            _BILLED,
            M("Difference", f"sum({_R}.difference)"),
            M("Share explained", f"sum({_R}.estimated_cost) / sum({_R}.billed_cost)", PERCENT),
            M("Unpriced documents", f"sum({_R}.unpriced_documents)", NUMBER),
        ),
        sort_by=1,
    ),
    Table(
        "Allocated cost by model",
        24,
        14,
        "The bill by model in the time range (the 20 models with the most allocated cost, the rest as Other), and "
        f"how much of it is unallocated. {_ALLOCATION_NOTE} Tool lines take the model of the usage they are "
        "split over; storage and line items that name no model read (missing value).",
        dv="allocation",
        rows=(Terms("openai.base.model", 20, "Model", missing=True),),
        metrics=(_ALLOCATED, _UNALLOCATED),
        sort_by=0,
    ),
    Table(
        "Allocated cost by user",
        24,
        14,
        "The bill by user in the time range (the 20 users with the most allocated cost, the rest as Other); "
        "(missing value) is cost whose usage names no user (usage not grouped by user, or an unallocated line "
        "that names none). "
        f"{_ALLOCATION_NOTE}",
        dv="allocation",
        rows=(
            Terms("openai.base.user_id", 20, "User ID", missing=True),
            Terms("openai.base.user_email", 1, "Email", missing=True),
        ),
        metrics=(_ALLOCATED, _UNALLOCATED),
        sort_by=0,
    ),
)

COSTS = Dashboard(
    id="usage-collector-costs",
    title="[OpenAI] Costs (usage-collector)",
    description="Billed cost from the Costs API: by day, line item, project and API key; month to date; movers; "
    "budgets against month to date and forecast; estimated against billed, and the bill allocated to models "
    "and users.",
    time_from="now-30d/d",
    time_to="now",
    panels=(
        Markdown(
            "",
            16,
            8,
            text=(
                "### OpenAI costs\n\nBilled cost from the [Costs API](https://platform.openai.com/docs/"
                "api-reference/usage/costs), one bucket per UTC day, in the organization's currency (USD). A "
                "day appears once it is complete; recent days are re-read while OpenAI still revises them.\n\n"
                "Month-to-date panels use their own time range (set Advanced Settings `dateFormat:tz` to UTC "
                "so months start at 00:00 UTC)."
            ),
        ),
        Metric("Billed cost", 8, 8, "Total billed cost in the dashboard's time range.", metric=_COST_M),
        Metric("Month to date", 8, 8, "This calendar month so far.", metric=_COST_M, time_range=("now/M", "now")),
        Metric(
            "Last month, same days",
            8,
            8,
            "Last month from its first day to the same day and time.",
            metric=_COST_M,
            time_range=("now-1M/M", "now-1M"),
        ),
        Metric("Last month", 8, 8, "All of last month.", metric=_COST_M, time_range=("now-1M/M", "now-1M/M")),
        xy(
            "Daily cost by line item",
            _COST_M,
            x=Histogram(interval="1d"),
            split=Terms("openai.costs.line_item", 15, "Line item"),
            w=48,
            h=14,
            description="Cost per UTC day, stacked by line item (top 15, the rest as Other).",
        ),
        xy(
            "Daily cost by project",
            _COST_M,
            x=Histogram(interval="1d"),
            split=_PROJECT,
            description="Cost per day, stacked by project (top 10).",
        ),
        xy(
            "Daily cost by API key",
            _COST_M,
            x=Histogram(interval="1d"),
            split=_API_KEY,
            description="Cost per day, stacked by API key (top 10; costs without a key are grouped as missing).",
        ),
        xy(
            "Month to date against last month",
            M("This month", f"cumulative_sum(sum({_COST}))", MONEY),
            M("Last month", f"cumulative_sum(sum({_COST}, shift='1M'))", MONEY),
            x=Histogram(interval="1d"),
            series="line",
            time_range=("now/M", "now/M"),
            description="Cumulative cost this month, and last month shifted onto the same days.",
        ),
        Table(
            "Top movers by project",
            24,
            14,
            "Cost of the last 7 complete days against the 7 before, by project, largest increase first (the 50 "
            "projects with the most cost over the 14 days; the rest as Other, costs without a project as "
            "(missing value)).",
            rows=(Terms("openai.base.project_name", 50, "Project", missing=True, rank=_MOVERS_RANK),),
            metrics=_MOVERS,
            sort_by=2,
            time_range=_TWO_WEEKS,
        ),
        Table(
            "Top movers by line item",
            24,
            14,
            "The same comparison by line item (the 50 line items with the most cost over the 14 days).",
            rows=(Terms("openai.costs.line_item", 50, "Line item", rank=_MOVERS_RANK),),
            metrics=_MOVERS,
            sort_by=2,
            time_range=_TWO_WEEKS,
        ),
        Table(
            "Cost by API key",
            24,
            14,
            "Cost in the time range by API key.",
            rows=(
                Terms("openai.base.api_key_id", 50, "API key ID", other=False),
                Terms("openai.base.api_key_name", 1, "Name", missing=True),
                Terms("openai.base.project_name", 1, "Project", missing=True),
            ),
            metrics=(_COST_M,),
            sort_by=0,
        ),
        *_BUDGET_PANELS,
        *_COST_INTELLIGENCE_PANELS,
    ),
)

CHARGEBACK = Dashboard(
    id="usage-collector-chargeback",
    title="[OpenAI] Chargeback by project (usage-collector)",
    description="One project: tokens and cost by model and API key, trend, and its share of the organization.",
    time_from="now-30d/d",
    time_to="now",
    controls=(Control("openai.base.project_name", "Project"),),
    panels=(
        Markdown(
            "",
            24,
            9,
            text=(
                "### Chargeback\n\nPick a project with the **Project** control. Every panel follows it except "
                "the two *share of organization* panels and the *organization* line, which ignore dashboard "
                "filters to show the whole organization.\n\nCost is billed cost (Costs API, USD, UTC days); "
                "tokens and requests come from the Usage API."
            ),
        ),
        Metric("Cost", 8, 9, "Billed cost of the project.", metric=_COST_M),
        Metric("Tokens", 8, 9, "Input plus output tokens.", metric=_TOK),
        Metric("Model requests", 8, 9, "Requests to models.", metric=_REQ, query=_NOT_WEB),
        XY(
            "Daily cost: project and organization",
            24,
            12,
            "The project's daily cost against the whole organization's (which ignores the project filter).",
            layers=(
                XYLayer((M("Project", f"sum({_COST})"),), Histogram(interval="1d"), series="line"),
                XYLayer(
                    (M("Organization", f"sum({_COST})"),),
                    Histogram(interval="1d"),
                    series="line",
                    ignore_global_filters=True,
                ),
            ),
        ),
        Pie(
            "Share of organization cost",
            24,
            12,
            "Every project's share of the organization's cost (this panel ignores the project filter).",
            metric=_COST_M,
            group=_PROJECT,
            ignore_global_filters=True,
        ),
        xy(
            "Tokens by model",
            _TOK,
            split=_MODELS_AZ,
            description="The project's tokens over time by model (the first 20 models by name, the rest as Other).",
        ),
        xy(
            "Daily cost by line item",
            _COST_M,
            x=Histogram(interval="1d"),
            split=Terms("openai.costs.line_item", 15, "Line item"),
            description="The project's cost per day by line item (line items name the model).",
        ),
        Table(
            "By API key",
            24,
            13,
            "Tokens, requests and cost of the project's 20 most expensive API keys.",
            rows=(
                Terms("openai.base.api_key_id", 20, "API key ID", other=False, rank=2),
                Terms("openai.base.api_key_name", 1, "Name", missing=True, rank=2),
            ),
            metrics=(_TOK, _REQ, _COST_M),
            sort_by=2,
        ),
        Table(
            "By model",
            24,
            13,
            "Tokens and requests of the 20 models with the most input tokens, most tokens first.",
            rows=(Terms("openai.base.model", 20, "Model", other=False, rank=1),),
            metrics=(
                _TOK,
                M("Input", "sum(gen_ai.usage.input_tokens)", NUMBER),
                M("Output", "sum(gen_ai.usage.output_tokens)", NUMBER),
                _REQ,
            ),
            sort_by=0,
        ),
        xy("Token trend", _TOK, x=Histogram(interval="1d"), series="line", description="The project's tokens per day."),
        Pie(
            "Share of organization tokens",
            24,
            12,
            "Every project's share of the organization's tokens (ignores the project filter; the first 50 "
            "projects by name, the rest as Other).",
            metric=_TOK,
            group=Terms("openai.base.project_name", 50, "Project", missing=True, alphabetical=True),
            ignore_global_filters=True,
        ),
    ),
)

_UC = "usage_collector"
_WRITTEN = M("Documents written", f"sum({_UC}.documents.created) + sum({_UC}.documents.updated)", NUMBER)
_FAILED = M("Failed runs", "count(kql='event.outcome : \"failure\"')", NUMBER)
_STREAM = Terms(f"{_UC}.stream", 20, "Stream")

HEALTH = Dashboard(
    id="usage-collector-collector-health",
    title="[OpenAI] Collector health (usage-collector)",
    description="Per stream: last complete bucket, lag behind now, documents written and failures.",
    time_from="now-24h",
    time_to="now",
    panels=(
        Markdown(
            "",
            16,
            9,
            text=(
                "### Collector health\n\nFrom the run documents (`logs-usage_collector.runs-*`), one per stream "
                "per cycle. *Last complete bucket* is the end of the newest bucket stored; *lag* is how far it "
                "trails the end of the run that wrote it, so it is normally one bucket width plus the "
                "finalization grace."
            ),
        ),
        Metric("Failed runs", 8, 9, "Stream runs that ended in an error.", metric=_FAILED, dv="runs"),
        Metric(
            "Documents written", 8, 9, "Documents created or updated (revised buckets).", metric=_WRITTEN, dv="runs"
        ),
        Metric(
            "Largest lag",
            8,
            9,
            "The largest lag of any stream in the time range.",
            metric=M("Largest lag", f"max({_UC}.lag_seconds)"),
            dv="runs",
        ),
        Table(
            "Streams",
            48,
            14,
            "One row per organization and stream.",
            dv="runs",
            rows=(
                Terms("organization.id", 10, "Organization", other=False, alphabetical=True),
                Terms(f"{_UC}.stream", 20, "Stream", other=False, alphabetical=True),
            ),
            metrics=(
                M("Last complete bucket", f"last_value({_UC}.position)"),
                M("Lag behind now", f"last_value({_UC}.lag_seconds)"),
                M("Last outcome", "last_value(event.outcome)"),
                M("Last run", "last_value(@timestamp)"),
                M("Created", f"sum({_UC}.documents.created)", NUMBER),
                M("Updated", f"sum({_UC}.documents.updated)", NUMBER),
                _FAILED,
                M("API requests", f"sum({_UC}.requests)", NUMBER),
                M("Retries", f"sum({_UC}.retries)", NUMBER),
            ),
        ),
        xy(
            "Lag behind now by stream",
            M("Lag", f"max({_UC}.lag_seconds)"),
            split=_STREAM,
            series="line",
            dv="runs",
            description="Largest lag per interval; a line that keeps rising is a stream that stopped.",
        ),
        xy(
            "Documents written by stream",
            _WRITTEN,
            split=Terms(f"{_UC}.stream", 20, "Stream", alphabetical=True),
            dv="runs",
            description="Created plus updated documents, stacked by stream.",
        ),
        xy("Failed runs by stream", _FAILED, split=_STREAM, dv="runs", description="Failed runs over time."),
        xy(
            "API requests and retries",
            M("Requests", f"sum({_UC}.requests)", NUMBER),
            M("Retries", f"sum({_UC}.retries)", NUMBER),
            series="line",
            dv="runs",
            description="Requests to the OpenAI API and how many were retries (429, 5xx, timeouts).",
        ),
        SearchPanel(
            "Failed runs, newest first", 48, 12, "Each failed run with its error message.", search_id=FAILED_RUNS_SEARCH
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (USAGE_OVERVIEW, COSTS, CHARGEBACK, HEALTH)
