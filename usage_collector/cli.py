"""The ``usage-collector`` command line (typer). A thin layer over :mod:`usage_collector.collector`.

Exit status: 0 success (also when another run holds the lease: it says who, until when, on one line);
1 a stream failed (the last lines say which and why); 2 bad configuration or input (one line naming it).
Heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    import threading

    from .collector import Collector, CycleResult
    from .config import Settings
    from .sinks.base import Sink

log = logging.getLogger("usage_collector")

app = typer.Typer(
    name="usage-collector",
    help="Collect an OpenAI organization's usage and billed cost into Elasticsearch, DuckDB or NDJSON.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold the Admin key
    rich_markup_mode=None,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (env USAGE_COLLECTOR_CONFIG).", show_default=False),
]
SinkOpt = Annotated[
    str | None,
    typer.Option(
        "--sink",
        help="duckdb:PATH | ndjson:PATH | elasticsearch (env USAGE_COLLECTOR_SINK; default duckdb:usage.duckdb, "
        "or elasticsearch when ELASTICSEARCH_URL is set).",
        show_default=False,
    ),
]


class _State:
    config: Path | None = None
    log_format: str | None = None
    log_level: str | None = None


_state = _State()


def _fail(message: str, code: int = 2) -> NoReturn:
    from .secrets import redact

    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    from .config import load_settings
    from .errors import ConfigError

    try:
        settings = load_settings(_state.config, log_format=_state.log_format, log_level=_state.log_level, **overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _configure_logging(settings)
    return settings


def _configure_logging(settings: Settings) -> None:
    from . import secrets
    from .logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    secrets.register(settings)


def parse_when(value: str, option: str) -> int:
    """``YYYY-MM-DD`` (UTC midnight) or an ISO-8601 instant (naive means UTC) -> Unix seconds.

    Raises:
        typer.Exit: status 2 with a message naming ``option`` and the accepted forms.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            dt = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
    except ValueError:
        _fail(
            f"{option}: {value!r} is not a date; use YYYY-MM-DD (UTC) or an ISO-8601 instant "
            "such as 2026-10-01T12:00:00Z"
        )
    return int(dt.timestamp())


@app.callback()
def _main(
    config: ConfigOpt = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="json | text | auto (text on a TTY).", show_default=False)
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG | INFO | WARNING | ERROR.", show_default=False)
    ] = None,
) -> None:
    """Collect OpenAI usage and costs. Example: usage-collector run --sink duckdb:usage.duckdb"""
    _state.config = config
    _state.log_format = log_format
    _state.log_level = log_level.upper() if log_level else None


def _require_keys(settings: Settings, sink: Sink) -> None:
    """Fail with exit status 2, before anything is written, if an organization has no usable Admin key."""
    from .errors import ConfigError

    try:
        for org in settings.orgs():
            org.resolve_key()
    except ConfigError as exc:
        sink.close()
        _fail(str(exc))


def _open_sink(settings: Settings, spec: str | None = None) -> Sink:
    """The configured sink, opened; a bad spec exits 2, a sink that cannot be opened (Elasticsearch unreachable,
    TLS or credentials refused) exits 1, each with one line (the cause's traceback only at DEBUG)."""
    from .errors import CollectorError, ConfigError
    from .sinks import make_sink

    try:
        sink = make_sink(spec or settings.sink_spec(), settings)
        sink.open()
    except ConfigError as exc:
        _fail(str(exc))
    except CollectorError as exc:
        log.debug("opening the sink failed", exc_info=True)
        _fail(str(exc), 1)
    return sink


def _report_result(result: CycleResult, *, title: str) -> int:
    from .clock import iso

    for line in result.skipped:
        typer.echo(f"skipped: {line}")
    if result.stopped:
        typer.echo("stopped by a signal: the windows listed were written and checkpointed; the next run resumes")
    rows = []
    for r in result.streams:
        rows.append(
            (
                r.org_id,
                r.stream,
                r.bucket_width,
                str(r.windows_done),
                str(r.stats.created),
                str(r.stats.updated),
                str(r.stats.unchanged),
                str(r.requests.requests),
                iso(r.position) if r.position is not None else "-",
                "ok" if r.ok else "FAILED",
            )
        )
    if rows:
        header = (
            "org",
            "stream",
            "width",
            "windows",
            "created",
            "updated",
            "unchanged",
            "requests",
            "checkpoint",
            "status",
        )
        _print_table(title, header, rows)
    failed = result.failed
    if failed:
        typer.echo(f"{len(failed)} stream(s) failed:", err=True)
        for r in failed:
            typer.echo(f"  {r.org_id}/{r.stream}: {r.error}", err=True)
        return 1
    return 0


def _print_table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in header:
            table.add_column(h)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    typer.echo(title)
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _collector(settings: Settings, sink: Sink) -> Collector:
    """A collector whose SIGTERM/SIGINT finish the window being written (its checkpoint lands), then stop.

    A CronJob deadline or a systemd stop sends SIGTERM: the run ends cleanly, releases its lease, and the
    next run resumes from the checkpoint.
    """
    import signal
    import threading

    from .collector import Collector

    collector = Collector(settings, sink)
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: object) -> None:
            if collector.stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now (the lease expires by its TTL)
            log.warning("received %s: finishing the current window, then stopping", signal.Signals(signum).name)
            collector.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    return collector


@app.command()
def run(
    sink: SinkOpt = None,
    stream: Annotated[
        list[str] | None, typer.Option("--stream", "-s", help="Only this stream (repeatable).", show_default=False)
    ] = None,
) -> None:
    """One cycle for every configured organization and stream, then exit (cron, systemd timer, CronJob).

    Reads every final bucket since the checkpoint plus the restatement window, writes what changed.
    Example: usage-collector run --sink ndjson:usage.ndjson
    """
    settings = _settings(sink=sink, streams=stream or None)
    snk = _open_sink(settings)
    _require_keys(settings, snk)
    try:
        result = _collector(settings, snk).run_cycle()
    finally:
        snk.close()
    raise typer.Exit(_report_result(result, title="usage-collector run"))


@app.command()
def serve(
    sink: SinkOpt = None,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Time between cycles (default 5m).", show_default=False)
    ] = None,
    jitter: Annotated[
        str | None,
        typer.Option("--jitter", help="Random delay before the first cycle (default 30s).", show_default=False),
    ] = None,
) -> None:
    """Run the `run` cycle every interval until SIGTERM/SIGINT (APScheduler, coalesced, never overlapping).

    On SIGTERM the window being written finishes and its checkpoint lands, then the process exits 0.
    Example: usage-collector serve --interval 5m
    """
    from .schedule import serve as serve_forever

    settings = _settings(sink=sink, interval=interval, jitter=jitter)
    probe = _open_sink(settings)  # fail fast on a bad sink or key, before the first cycle
    _require_keys(settings, probe)
    probe.close()

    def cycle(stop: threading.Event) -> int:
        from .collector import Collector

        snk = _open_sink(settings)
        try:
            result = Collector(settings, snk, stop=stop).run_cycle()
        finally:
            snk.close()
        for r in result.failed:
            log.error("%s/%s failed: %s", r.org_id, r.stream, r.error)
        log.info(
            "cycle done: %d stream(s), %d failed, %d document(s) written",
            len(result.streams),
            len(result.failed),
            sum(r.stats.written for r in result.streams),
        )
        return 1 if result.failed else 0

    raise typer.Exit(
        serve_forever(cycle, interval=settings.interval, jitter=settings.jitter, stop_timeout=settings.stop_timeout)
    )


@app.command()
def setup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be created or changed.")] = False,
    retention_days: Annotated[
        int | None,
        typer.Option(
            "--retention-days", help="Delete data this many days after rollover (default: keep).", show_default=False
        ),
    ] = None,
    kibana_url: Annotated[
        str | None,
        typer.Option(
            "--kibana-url", help="Also import the dashboards into this Kibana (env KIBANA_URL).", show_default=False
        ),
    ] = None,
    space: Annotated[str | None, typer.Option("--space", help="Kibana space id.", show_default=False)] = None,
    with_rules: Annotated[
        bool, typer.Option("--with-rules", help="Also create the alert rules (off by default).")
    ] = False,
    daily_cost_threshold: Annotated[
        float | None,
        typer.Option(
            "--daily-cost-threshold",
            help="Rule: alert when a day's billed cost exceeds this (USD).",
            show_default=False,
        ),
    ] = None,
    spike_factor: Annotated[
        float, typer.Option("--spike-factor", help="Rule: alert when a day costs this many times its trailing median.")
    ] = 3.0,
    stale_intervals: Annotated[
        int,
        typer.Option(
            "--stale-intervals", help="Rule: alert when a stream has no new complete bucket for this many intervals."
        ),
    ] = 3,
) -> None:
    """Install or update Elasticsearch templates, ILM policy, data streams, state index, and Kibana
    dashboards (and, with --with-rules, alert rules); idempotent.

    Needs ELASTICSEARCH_URL (or ELASTICSEARCH_CLOUD_ID) and credentials with the setup privileges listed in
    docs/elasticsearch.md; Kibana is used when KIBANA_URL / --kibana-url is set. A second run changes nothing
    and says so. Example: usage-collector setup --dry-run --kibana-url https://kibana.example:5601
    """
    from .errors import CollectorError

    settings = _settings(retention_days=retention_days, kibana_url=kibana_url, kibana_space=space)
    if not (settings.elasticsearch_url or settings.elasticsearch_cloud_id):
        _fail("setup prepares Elasticsearch: set ELASTICSEARCH_URL or ELASTICSEARCH_CLOUD_ID")
    from .elastic import setup as elastic_setup

    try:
        report = elastic_setup.setup(settings, dry_run=dry_run, out=typer.echo, retention_days=settings.retention_days)
        if settings.kibana_url:
            from .elastic import kibana

            kibana.install(settings, dry_run=dry_run, out=typer.echo, report=report)
            if with_rules:
                kibana.install_rules(
                    settings,
                    dry_run=dry_run,
                    out=typer.echo,
                    report=report,
                    stale_intervals=stale_intervals,
                    daily_cost_threshold=daily_cost_threshold,
                    spike_factor=spike_factor,
                )
        else:
            typer.echo("Kibana: skipped (set KIBANA_URL or --kibana-url to import the dashboards)")
    except CollectorError as exc:
        _fail(str(exc), 1)


@app.command()
def backfill(
    start: Annotated[str, typer.Option("--start", help="First UTC day (YYYY-MM-DD) or ISO-8601 instant.")],
    end: Annotated[
        str | None, typer.Option("--end", help="Exclusive end (default: now, final buckets only).", show_default=False)
    ] = None,
    stream: Annotated[
        list[str] | None, typer.Option("--stream", "-s", help="Only this stream (repeatable).", show_default=False)
    ] = None,
    bucket_width: Annotated[
        str | None, typer.Option("--bucket-width", help="1m | 1h | 1d (costs are always 1d).", show_default=False)
    ] = None,
    sink: SinkOpt = None,
) -> None:
    """Collect a past range; resumable (re-running an interrupted backfill continues where it stopped).

    Example: usage-collector backfill --start 2026-10-01 --end 2026-10-15 --sink ndjson:out.ndjson
    """
    t0 = parse_when(start, "--start")
    t1 = parse_when(end, "--end") if end else None
    if t1 is not None and t1 <= t0:
        _fail(f"--end ({end}) must be after --start ({start})")
    if bucket_width is not None and bucket_width not in ("1m", "1h", "1d"):
        _fail(f"--bucket-width: {bucket_width!r} is not allowed; use 1m, 1h or 1d")
    settings = _settings(sink=sink, streams=stream or None)
    snk = _open_sink(settings)
    _require_keys(settings, snk)
    try:
        from .planning import BackfillRange
        from .progress import progress_reporter

        span = BackfillRange(t0, t1, bucket_width)
        collector = _collector(settings, snk)
        with progress_reporter(sum(p.windows for p in collector.plan(backfill=span))) as progress:
            collector.progress = progress
            result = collector.backfill(span)
    finally:
        snk.close()
    raise typer.Exit(_report_result(result, title="usage-collector backfill"))


def _stream_notes(cps: list[Any]) -> list[str]:
    """Lines for ``status``: streams whose endpoint is unavailable (404), dimensions the API refused (400)."""
    from .clock import iso

    notes = []
    for cp in sorted(cps, key=lambda c: (c.org_id, c.stream, c.bucket_width, c.scope)):
        if cp.unavailable:
            since = iso(cp.unavailable_since) if cp.unavailable_since else "-"
            notes.append(f"unavailable: {cp.org_id} {cp.stream} since {since} (tried again daily): {cp.unavailable}")
        if cp.dropped_group_by:
            notes.append(
                f"dropped dimension: {cp.org_id} {cp.stream} without {', '.join(cp.dropped_group_by)} "
                "(the API refused it; asked again daily)"
            )
    return notes


@app.command()
def status(sink: SinkOpt = None) -> None:
    """Checkpoints, lag behind now and the last error of every organization and stream.

    Example: usage-collector status --sink duckdb:usage.duckdb
    """
    import time

    from .clock import iso
    from .errors import CollectorError

    settings = _settings(sink=sink)
    snk = _open_sink(settings)
    try:
        cps = snk.list_checkpoints()
        runs = snk.list_runs(200)
        retention = snk.retention()
    except CollectorError as exc:
        _fail(str(exc), 1)
    finally:
        snk.close()
    if not cps:
        typer.echo(f"no checkpoints in {snk.description} yet: run `usage-collector run` or `backfill` first")
        return
    now = time.time()
    last_run: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        uc = r.get("usage_collector", {})
        last_run.setdefault((r.get("organization", {}).get("id", ""), uc.get("stream", "")), r)
    rows = []
    for cp in sorted(cps, key=lambda c: (c.org_id, c.stream, c.bucket_width, c.scope)):
        lag = f"{(now - cp.position) / 3600:.1f}h" if cp.position else "-"
        run_doc = last_run.get((cp.org_id, cp.stream))
        last = run_doc["@timestamp"] if run_doc else "-"
        rows.append(
            (
                cp.org_id,
                cp.stream,
                cp.bucket_width,
                cp.scope,
                iso(cp.position) if cp.position else "-",
                lag,
                last,
                ("complete" if cp.complete else "partial") if cp.scope == "backfill" else "",
                (cp.last_error or "")[:120],
            )
        )
    _print_table(
        f"usage-collector status ({snk.description})",
        ("org", "stream", "width", "scope", "checkpoint", "lag", "last run", "backfill", "last error"),
        rows,
    )
    for note in _stream_notes(cps):
        typer.echo(note)
    if retention:
        typer.echo(f"retention: {retention}")


@app.command()
def demo(
    sink: Annotated[str, typer.Option("--sink", help="Where the demo writes.")] = "duckdb:demo.duckdb",
    days: Annotated[int, typer.Option("--days", min=1, max=400, help="Simulated days to collect.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated organization.")] = 7,
) -> None:
    """Collect a simulated organization (real HTTP on 127.0.0.1) into a local DuckDB file, then report.

    Needs no configuration and no API key. Example: usage-collector demo
    """
    import time

    from pydantic import SecretStr

    from .collector import Collector
    from .config import OrgConfig
    from .planning import BackfillRange
    from .report import build_report, render_terminal
    from .simulator import Organization, SimulatedAPI, serve

    today = int(time.time()) // 86400 * 86400
    org = Organization(seed=seed, start=today - days * 86400, days=days)
    demo_key = "sk-admin-demo-" + "0" * 24
    api = SimulatedAPI(org, admin_key=demo_key)
    if _state.log_level is None:
        _state.log_level = "WARNING"  # the demo prints its own summary
    settings = _settings(sink=sink, rate_limit=200.0, concurrency=4)
    with serve(api) as base_url:
        settings.organizations = [OrgConfig(id=org.id, name=org.name, admin_key=SecretStr(demo_key), base_url=base_url)]
        typer.echo(f"Simulated organization {org.id} ({days} days) serving at {base_url}")
        snk = _open_sink(settings)
        t0 = time.monotonic()
        try:
            collector = Collector(settings, snk)
            result = collector.backfill(BackfillRange(org.start, None))
            code = _report_result(result, title=f"demo backfill into {snk.description}")
            typer.echo(
                f"{sum(r.stats.created + r.stats.updated + r.stats.unchanged for r in result.streams):,} documents "
                f"from {api.counters.snapshot().get('total', 0):,} requests in {time.monotonic() - t0:.1f}s"
            )
            render_terminal(build_report(snk))
        finally:
            snk.close()
    typer.echo(
        "\nAgainst your organization:  export OPENAI_ADMIN_KEY=sk-admin-...  then  "
        "usage-collector backfill --start YYYY-MM-DD  and  usage-collector run  (see README.md)."
    )
    raise typer.Exit(code)


@app.command()
def report(
    sink: SinkOpt = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Also write an offline HTML report here.", show_default=False)
    ] = None,
) -> None:
    """Spend and usage tables from the sink; optionally an offline HTML report with charts.

    Example: usage-collector report --sink duckdb:usage.duckdb --html report.html
    """
    from .errors import CollectorError
    from .report import build_report, render_html, render_terminal

    settings = _settings(sink=sink)
    snk = _open_sink(settings)
    try:
        rep = build_report(snk)
    except CollectorError as exc:
        _fail(str(exc), 1)
    finally:
        snk.close()
    render_terminal(rep)
    if html_out is not None:
        html_out.write_text(render_html(rep))
        typer.echo(f"HTML report: {html_out}")


def main() -> None:
    """Console-script entry point."""
    from .simulator.cli import register

    register(app)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
