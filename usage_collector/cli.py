"""The ``usage-collector`` command line (typer). A thin layer over :mod:`usage_collector.collector`.

Exit status: 0 success (also when another run holds the lease: it says who, until when, on one line);
1 a stream failed, or the environment refused (Elasticsearch unreachable, a busy port; the last line says
which and why); 2 bad configuration or input (one ``error:`` line naming the input and what to do).
No traceback unless ``--debug``/``-v``: :func:`main` turns every error that reaches it into one line.
Global options (``--config``, ``--log-format``, ``--log-level``, ``--debug``) are accepted before or after the
command. Heavy modules are imported inside the commands so ``--help`` stays fast.

No ``from __future__ import annotations`` here: typer reads the annotations of every command at every start,
and a string annotation costs an ``eval`` (get_type_hints: 16 -> 5 ms per start, P3). Names imported only
for type checking are quoted.
"""

import errno
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    import threading

    from .collector import Collector, CycleResult
    from .config import Settings
    from .sinks.base import Checkpoint, Sink

log = logging.getLogger("usage_collector")

#: The command-line flag of each setting a command sets from a flag (errors name the flag).
FLAGS = {
    "sink": "--sink",
    "streams": "--stream",
    "interval": "--interval",
    "jitter": "--jitter",
    "retention_days": "--retention-days",
    "kibana_url": "--kibana-url",
    "kibana_space": "--space",
    "stale_intervals": "--stale-intervals",
    "log_format": "--log-format",
    "log_level": "--log-level",
}
#: Global options: accepted before or after the command (:func:`hoist_global_options`).
GLOBAL_VALUED = ("--config", "-c", "--log-format", "--log-level")
GLOBAL_FLAGS = ("--debug", "-v")
GLOBAL_EPILOG = (
    "Global options, before or after the command: -c/--config PATH, --log-format json|text|auto, "
    "--log-level LEVEL, -v/--debug (tracebacks and DEBUG logs)."
)
#: errno values that mean "the path given is wrong" (exit 2) rather than "the machine refused" (exit 1).
INPUT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS})


class _Group(TyperGroup):
    """The top-level group: the command list shows each command's whole first sentence, never cut."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="usage-collector",
    cls=_Group,
    help="Collect an OpenAI organization's usage and billed cost into Elasticsearch, DuckDB or NDJSON.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold the Admin key
    rich_markup_mode=None,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="TOML configuration file (env USAGE_COLLECTOR_CONFIG).",
        show_default=False,
    ),
]
SinkOpt = Annotated[
    str | None,
    typer.Option(
        "--sink",
        metavar="SPEC",
        help="duckdb:PATH | ndjson:PATH | elasticsearch (env USAGE_COLLECTOR_SINK; default duckdb:usage.duckdb, "
        "or elasticsearch when ELASTICSEARCH_URL is set).",
        show_default=False,
    ),
]
StreamOpt = Annotated[
    list[str] | None,
    typer.Option("--stream", "-s", metavar="NAME", help="Only this stream (repeatable).", show_default=False),
]


class _State:
    """The global options of one invocation."""

    def __init__(self) -> None:
        self.config: Path | None = None
        self.log_format: str | None = None
        self.log_level: str | None = None
        self.debug = False


_state = _State()


def _fail(message: str, code: int = 2) -> NoReturn:
    from .secrets import redact

    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> "Settings":
    from .config import load_settings
    from .errors import ConfigError

    level = "DEBUG" if _state.debug else _state.log_level
    try:
        settings = load_settings(_state.config, flags=FLAGS, log_format=_state.log_format, log_level=level, **overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _configure_logging(settings)
    return settings


def _configure_logging(settings: "Settings") -> None:
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


@app.callback(epilog="Global options are accepted after the command too: usage-collector run --log-format text")
def _main(
    config: ConfigOpt = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", metavar="FORMAT", help="json | text | auto (text on a TTY).", show_default=False),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", metavar="LEVEL", help="DEBUG | INFO | WARNING | ERROR.", show_default=False),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", "-v", help="DEBUG logs, and the traceback of an error (for bug reports).")
    ] = False,
) -> None:
    """Collect OpenAI usage and costs. Example: usage-collector run --sink duckdb:usage.duckdb"""
    _state.config = config
    _state.log_format = log_format
    _state.log_level = log_level.upper() if log_level else None
    _state.debug = debug


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Move global options given after the command to before it (click takes a group's options only there).

    ``["run", "--log-format", "text", "-s", "costs"]`` -> ``["--log-format", "text", "run", "-s", "costs"]``.
    Nothing after ``--`` moves.
    """
    args = list(argv)
    i = 0
    while i < len(args):  # skip the global options already before the command
        name = args[i].split("=", 1)[0]
        if args[i] in GLOBAL_VALUED:
            i += 2
        elif name in GLOBAL_VALUED or args[i] in GLOBAL_FLAGS:
            i += 1
        else:
            break
    if i >= len(args) or args[i].startswith("-"):
        return args
    moved: list[str] = []
    kept: list[str] = []
    rest = args[i + 1 :]
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            kept += rest[j:]
            break
        if arg in GLOBAL_VALUED and j + 1 < len(rest):
            moved += rest[j : j + 2]
            j += 2
            continue
        if (arg.split("=", 1)[0] in GLOBAL_VALUED and "=" in arg) or arg in GLOBAL_FLAGS:
            moved.append(arg)
        else:
            kept.append(arg)
        j += 1
    return args[:i] + moved + [args[i]] + kept


def _require_keys(settings: "Settings") -> None:
    """Fail with exit status 2, before the sink is opened (nothing created or written), if an organization has no
    usable Admin key."""
    from .errors import ConfigError

    try:
        for org in settings.orgs():
            org.resolve_key()
    except ConfigError as exc:
        _fail(str(exc))


def _open_sink(settings: "Settings", spec: str | None = None, *, existing: bool = False, keys: bool = False) -> "Sink":
    """The configured sink, opened, with one ``error:`` line for whatever stops it.

    A bad spec, a file sink whose directory cannot be created or written (or that names a directory) exit 2,
    naming the path; with ``existing`` (``status``, ``report``) a file sink that does not exist exits 2 and is
    not created. A sink that cannot be opened (Elasticsearch unreachable, TLS or credentials refused) exits 1.
    With ``keys``, an organization without a usable Admin key exits 2 once the spec is known good and before the
    sink is opened (nothing is created). The cause's traceback is logged at DEBUG only.
    """
    from .errors import CollectorError, ConfigError
    from .sinks import make_sink

    spec = spec or settings.sink_spec()
    path = _file_sink_path(spec)
    if path is not None:
        if existing:
            _require_existing(spec, path)
        else:
            _require_writable(spec, path)
    try:
        sink = make_sink(spec, settings)
        if keys:
            _require_keys(settings)
        sink.open()
    except ConfigError as exc:
        _fail(str(exc))
    except CollectorError as exc:
        log.debug("opening the sink failed", exc_info=True)
        _fail(str(exc), 1)
    except OSError as exc:
        log.debug("opening the sink failed", exc_info=True)
        _fail(f"sink {spec}: {_os_reason(exc)}", 2 if exc.errno in INPUT_ERRNOS else 1)
    return sink


def _file_sink_path(spec: str) -> Path | None:
    """The file of a ``duckdb:PATH`` / ``ndjson:PATH`` spec (as :func:`usage_collector.sinks.make_sink` reads it)."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "duckdb":
        return Path(arg or "usage.duckdb")
    if kind == "ndjson" and arg:
        return Path(arg)
    return None


def _os_reason(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _require_writable(spec: str, path: Path) -> None:
    """Exit 2 unless the sink file (and its ``.lease`` beside it) can be written: checked before anything runs."""
    import tempfile

    kind = spec.partition(":")[0]
    if path.is_dir():
        _fail(f"--sink {spec}: {path} is a directory; name a file in it, e.g. --sink {kind}:{path / f'usage.{kind}'}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--sink {spec}: cannot create the directory {parent} ({exc.strerror}); choose a writable directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".usage-collector-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _fail(
            f"--sink {spec}: cannot write in {parent} ({exc.strerror}); the sink and its .lease file need a "
            "directory you can write to"
        )
    if path.exists() and not os.access(path, os.W_OK):
        _fail(f"--sink {spec}: {path} is read-only; make it writable or choose another file")


def _require_existing(spec: str, path: Path) -> None:
    """Exit 2 if a file sink to read does not exist (never create one); suggest the files that do."""
    kind = spec.partition(":")[0]
    state = path.with_name(path.name + ".state.json")
    if path.is_dir():
        _fail(f"--sink {spec}: {path} is a directory; name the sink file")
    if path.exists() or (kind == "ndjson" and state.exists()):
        return
    others = sorted(p for p in path.parent.glob(f"*.{kind}") if p.is_file())
    hint = (
        f"; did you mean --sink {kind}:{shlex.quote(str(others[0]))}?"
        if others
        else "; collect into it first with `usage-collector run` or `backfill` (or `demo`)"
    )
    _fail(f"sink {spec}: {path} does not exist (nothing was collected there){hint}")


def _report_result(result: "CycleResult", *, title: str) -> int:
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
                "FAILED" if not r.ok else "stopped" if r.stopped else "unavailable" if r.unavailable else "ok",
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
    code = 0
    if result.deadline is not None:
        left = ", ".join(f"{r.org_id}/{r.stream}" for r in result.unfinished)
        typer.echo(
            f"run_deadline ({result.deadline:.0f}s) reached: {len(result.unfinished)} stream(s) not finished ({left}); "
            "what was written is checkpointed and the next run resumes them",
            err=True,
        )
        code = 1
    failed = result.failed
    if failed:
        # a refused key or an unreachable host fails every stream of an organization alike: one line for them
        by_cause: dict[tuple[str, str], list[str]] = {}
        for r in failed:
            cause = (r.error or "").removeprefix("not collected: ")
            by_cause.setdefault((r.org_id, cause), []).append(r.stream)
        typer.echo(f"{len(failed)} stream(s) failed:", err=True)
        for (org_id, cause), names in by_cause.items():
            which = names[0] if len(names) == 1 else f"{len(names)} streams ({', '.join(names)})"
            typer.echo(f"  {org_id}/{which}: {cause}", err=True)
        code = 1
    return code


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


def _collector(settings: "Settings", sink: "Sink") -> "Collector":
    """A collector whose SIGTERM/SIGINT finish the window being written (its checkpoint lands), then stop.

    A CronJob deadline or a systemd stop sends SIGTERM: the run ends cleanly, releases its lease, and the
    next run resumes from the checkpoint.
    """
    import signal
    import threading

    from .collector import Collector

    collector = Collector(settings, sink)
    settle()
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: object) -> None:
            if collector.stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now (the lease expires by its TTL)
            log.warning("received %s: finishing the current window, then stopping", signal.Signals(signum).name)
            collector.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    return collector


@app.command(epilog=GLOBAL_EPILOG)
def run(sink: SinkOpt = None, stream: StreamOpt = None) -> None:
    """One cycle for every configured organization and stream, then exit (cron, systemd timer, CronJob).

    Reads every final bucket since the checkpoint plus the restatement window, writes what changed.
    Example: usage-collector run --sink ndjson:usage.ndjson
    """
    settings = _settings(sink=sink, streams=stream or None)
    snk = _open_sink(settings, keys=True)
    try:
        result = _collector(settings, snk).run_cycle()
        _write_budgets(settings, snk, result)
    finally:
        snk.close()
    raise typer.Exit(_report_result(result, title="usage-collector run"))


def _write_budgets(settings: "Settings", sink: "Sink", result: "CycleResult") -> None:
    """One budget document per configured budget after a cycle that ran (a failure is logged, not fatal)."""
    if not settings.budgets or not result.streams:
        return
    from .budgets import write_budget_documents
    from .errors import CollectorError

    try:
        stats = write_budget_documents(sink, settings, datetime.now(UTC))
    except CollectorError as exc:
        log.warning("budget documents not written: %s", exc)
        return
    if stats is not None:
        log.info("budgets: %d document(s) written, %d unchanged", stats.written, stats.unchanged)


@app.command(epilog=GLOBAL_EPILOG)
def serve(
    sink: SinkOpt = None,
    interval: Annotated[
        str | None,
        typer.Option("--interval", metavar="DURATION", help="Time between cycles (default 5m).", show_default=False),
    ] = None,
    jitter: Annotated[
        str | None,
        typer.Option(
            "--jitter",
            metavar="DURATION",
            help="Random delay before the first cycle (default 30s).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the `run` cycle every interval until SIGTERM/SIGINT (APScheduler, coalesced, never overlapping).

    On SIGTERM the window being written finishes and its checkpoint lands, then the process exits 0.
    Example: usage-collector serve --interval 5m
    """
    from .errors import ConfigError
    from .schedule import serve as serve_forever

    settings = _settings(sink=sink, interval=interval, jitter=jitter)
    _open_sink(settings, keys=True).close()  # fail fast on a bad sink or key, before the first cycle

    from .client import NameCache
    from .collector import Collector

    names_cache = NameCache()  # names are re-read every NAMES_TTL (10 min), not every cycle
    settle()

    def cycle(stop: "threading.Event") -> int:
        snk = _open_sink(settings)
        try:
            result = Collector(settings, snk, stop=stop, names_cache=names_cache).run_cycle()
            _write_budgets(settings, snk, result)
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

    try:
        code = serve_forever(
            cycle, interval=settings.interval, jitter=settings.jitter, stop_timeout=settings.stop_timeout
        )
    except ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command(epilog=GLOBAL_EPILOG)
def setup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be created or changed.")] = False,
    retention_days: Annotated[
        int | None,
        typer.Option(
            "--retention-days",
            metavar="N",
            help="Delete data this many days after rollover (default: keep).",
            show_default=False,
        ),
    ] = None,
    kibana_url: Annotated[
        str | None,
        typer.Option(
            "--kibana-url",
            metavar="URL",
            help="Also import the dashboards into this Kibana (env KIBANA_URL).",
            show_default=False,
        ),
    ] = None,
    space: Annotated[
        str | None, typer.Option("--space", metavar="ID", help="Kibana space id.", show_default=False)
    ] = None,
    with_rules: Annotated[
        bool, typer.Option("--with-rules", help="Also create the alert rules (off by default).")
    ] = False,
    daily_cost_threshold: Annotated[
        float | None,
        typer.Option(
            "--daily-cost-threshold",
            metavar="USD",
            help="Rule: alert when a day's billed cost exceeds this (USD).",
            show_default=False,
        ),
    ] = None,
    spike_factor: Annotated[
        float,
        typer.Option(
            "--spike-factor",
            metavar="X",
            help="Rule: alert when a day costs this many times its trailing median.",
        ),
    ] = 3.0,
    stale_intervals: Annotated[
        int | None,
        typer.Option(
            "--stale-intervals",
            metavar="N",
            help="Rule: alert when a stream has no new complete bucket for this many intervals (default 3, "
            "setting stale_intervals).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Install or update Elasticsearch templates, ILM policy, data streams, state index, and Kibana
    dashboards (and, with --with-rules, alert rules); idempotent.

    Needs ELASTICSEARCH_URL (or ELASTICSEARCH_CLOUD_ID) and credentials with the setup privileges listed in
    docs/elasticsearch.md; Kibana is used when KIBANA_URL / --kibana-url is set. A second run changes nothing
    and says so. Example: usage-collector setup --dry-run --kibana-url https://kibana.example:5601
    """
    from .errors import CollectorError

    settings = _settings(
        retention_days=retention_days, kibana_url=kibana_url, kibana_space=space, stale_intervals=stale_intervals
    )
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
                    stale_intervals=settings.stale_intervals,
                    daily_cost_threshold=daily_cost_threshold,
                    spike_factor=spike_factor,
                )
        else:
            typer.echo("Kibana: skipped (set KIBANA_URL or --kibana-url to import the dashboards)")
    except CollectorError as exc:
        _fail(str(exc), 1)


@app.command(epilog=GLOBAL_EPILOG)
def backfill(
    start: Annotated[
        str, typer.Option("--start", metavar="DATE", help="First UTC day (YYYY-MM-DD) or ISO-8601 instant.")
    ],
    end: Annotated[
        str | None,
        typer.Option(
            "--end", metavar="DATE", help="Exclusive end (default: now, final buckets only).", show_default=False
        ),
    ] = None,
    stream: StreamOpt = None,
    bucket_width: Annotated[
        str | None,
        typer.Option("--bucket-width", metavar="WIDTH", help="1m | 1h | 1d (costs are always 1d).", show_default=False),
    ] = None,
    sink: SinkOpt = None,
) -> None:
    """Collect a past range; resumable (re-running an interrupted backfill continues where it stopped).

    Example: usage-collector backfill --start 2026-10-01 --end 2026-10-15 --sink ndjson:out.ndjson
    """
    import time

    from .clock import iso

    t0 = parse_when(start, "--start")
    t1 = parse_when(end, "--end") if end else None
    if t0 >= time.time():
        _fail(f"--start {start} is in the future (now {iso(time.time())}); a backfill collects past days")
    if t1 is not None and t1 <= t0:
        _fail(f"--end ({end}) must be after --start ({start})")
    if bucket_width is not None and bucket_width not in ("1m", "1h", "1d"):
        _fail(f"--bucket-width: {bucket_width!r} is not allowed; use 1m, 1h or 1d")
    settings = _settings(sink=sink, streams=stream or None)
    snk = _open_sink(settings, keys=True)
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


@dataclass
class StreamStatus:
    """One row of ``status``: a stream of an organization, its scheduled cursor and its backfill together."""

    org_id: str
    stream: str
    bucket_width: str
    cursor: int | None = None  # the scheduled (run) cursor: every final bucket before it is written
    lag: float | None = None  # seconds behind now; None until a scheduled run has succeeded
    last_success: float | None = None
    last_error: str | None = None  # the error of the last run, if it failed
    failed: bool = False
    stale: bool = False
    behind: float = 0.0  # seconds the cursor trails the last complete bucket
    backfill: str = "-"


def stream_statuses(
    checkpoints: "Sequence[Checkpoint]", runs: Sequence[dict[str, Any]], settings: "Settings", now: float
) -> list[StreamStatus]:
    """``status``'s rows: one per (organization, stream), newest run document first in ``runs``.

    ``lag`` is shown only once a scheduled ``run`` has collected the stream: the cursor a finished backfill
    leaves behind (its end) is where runs will start, not a lag. ``stale``: the cursor trails the last complete
    bucket by more than ``stale_intervals`` x ``interval``. ``failed``: the stream's latest run document (or,
    without one, its checkpoint) carries an error.
    """
    from .catalogue import STREAMS
    from .planning import final_edge

    grouped: dict[tuple[str, str], list[Checkpoint]] = {}
    for cp in checkpoints:
        grouped.setdefault((cp.org_id, cp.stream), []).append(cp)
    latest_run: dict[tuple[str, str], dict[str, Any]] = {}
    last_ok: dict[tuple[str, str], str] = {}
    for r in runs:
        key = (str(r.get("organization", {}).get("id", "")), str(r.get("usage_collector", {}).get("stream", "")))
        latest_run.setdefault(key, r)
        if r.get("event", {}).get("outcome") == "success":
            last_ok.setdefault(key, str(r.get("@timestamp", "")))
    rows = []
    for (org_id, stream), cps in sorted(grouped.items()):
        known = stream in STREAMS
        width = settings.width_for(stream) if known else cps[0].bucket_width
        scheduled = [c for c in cps if c.scope == "run"]
        run_cp = next((c for c in scheduled if c.bucket_width == width), None) or max(
            scheduled, key=lambda c: c.position or 0, default=None
        )
        row = StreamStatus(org_id, stream, run_cp.bucket_width if run_cp else width)
        if run_cp is not None and run_cp.position is not None:
            row.cursor = run_cp.position
            if run_cp.last_success_at is not None:
                row.lag = max(0.0, now - run_cp.position)
                grace = settings.grace_for(stream) if known else 0.0
                row.behind = max(0.0, final_edge(now, row.bucket_width, grace) - run_cp.position)
                row.stale = row.behind > settings.stale_intervals * settings.interval
        successes = [c.last_success_at for c in cps if c.last_success_at is not None]
        row.last_success = max(successes) if successes else None
        run_doc = latest_run.get((org_id, stream))
        if run_doc is not None:
            if run_doc.get("event", {}).get("outcome") == "failure":
                row.failed = True
                row.last_error = str(run_doc.get("error", {}).get("message") or "failed")
        else:
            errored = [c for c in cps if c.last_error]
            if errored:
                newest = max(errored, key=lambda c: c.last_error_at or 0)
                row.failed, row.last_error = True, newest.last_error
        bf = [c for c in cps if c.scope == "backfill"]
        if bf:
            cp = max(bf, key=lambda c: c.updated_at or 0)
            start = cp.range_start
            if cp.complete:
                row.backfill = f"done {_when(start) if start else '?'} .. {_when(cp.range_end or cp.position or 0)}"
            elif start is not None and cp.position is not None:
                end = cp.range_end or final_edge(now, cp.bucket_width, 0)
                share = 100 * (cp.position - start) / max(1, end - start)
                row.backfill = f"{share:.0f}% of {_when(start)} .. {_when(end)}"
            else:
                row.backfill = "started"
        rows.append(row)
    return rows


def _when(t: float) -> str:
    """``2026-11-30T19:00Z``; a UTC midnight is just its day."""
    from .clock import iso

    text = iso(t)
    return text[:10] if text.endswith("T00:00:00Z") else text[:16] + "Z"


def _ago(seconds: float) -> str:
    """``3720`` -> ``"1h02m"``; ``200000`` -> ``"2d07h"``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@app.command(epilog=GLOBAL_EPILOG)
def status(
    sink: SinkOpt = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 if a stream is stale or its last run failed, naming each (monitoring)."),
    ] = False,
    stale_intervals: Annotated[
        int | None,
        typer.Option(
            "--stale-intervals",
            metavar="N",
            help="--check: stale when the cursor trails the last complete bucket by more than N intervals "
            "(setting interval, default 5m); default 3 (setting stale_intervals).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """One row per organization and stream: run cursor, lag, last success, last error, backfill progress.

    Reads the sink only (a file sink that does not exist is an error, never created). With --check it exits 1
    when a stream is stale or its last run failed, one line each, for monitoring.
    Example: usage-collector status --sink duckdb:usage.duckdb --check
    """
    import time

    from .clock import iso
    from .errors import CollectorError

    settings = _settings(sink=sink, stale_intervals=stale_intervals)
    snk = _open_sink(settings, existing=True)
    try:
        cps = snk.list_checkpoints()
        runs = snk.list_runs(500)
        retention = snk.retention()
    except CollectorError as exc:
        _fail(str(exc), 1)
    finally:
        snk.close()
    now = time.time()
    title = f"usage-collector status: {snk.description}, as of {iso(now)}"
    if not cps:
        typer.echo(f"{title}\nno checkpoints yet: run `usage-collector run` or `backfill` first")
        if check:
            _fail(f"--check: nothing collected in {snk.description} yet", 1)
        return
    rows = stream_statuses(cps, runs, settings, now)
    _print_table(
        title,
        ("org", "stream", "width", "cursor", "lag", "last success", "backfill", "last error"),
        [
            (
                r.org_id,
                r.stream,
                r.bucket_width,
                _when(r.cursor) if r.cursor is not None else "-",
                (_ago(r.lag) + (" STALE" if r.stale else "")) if r.lag is not None else "-",
                _when(r.last_success) if r.last_success is not None else "-",
                r.backfill,
                (r.last_error or "-")[:100],
            )
            for r in rows
        ],
    )
    for note in _stream_notes(cps):
        typer.echo(note)
    if retention:
        typer.echo(f"retention: {retention}")
    if not check:
        return
    limit = settings.stale_intervals * settings.interval
    problems = []
    for r in rows:
        if r.stale:
            problems.append(
                f"{r.org_id}/{r.stream}: stale: no new complete bucket for {_ago(r.behind)} "
                f"(more than {settings.stale_intervals} x {_ago(settings.interval)} = {_ago(limit)})"
            )
        if r.failed:
            problems.append(f"{r.org_id}/{r.stream}: last run failed: {(r.last_error or '')[:200]}")
    if problems:
        for line in problems:
            typer.echo(f"check: {line}", err=True)
        raise typer.Exit(1)
    typer.echo(f"check: ok ({len(rows)} stream(s) fresh, none failed)")


#: The simulated organization's seed when none is given, for ``demo`` and ``simulate`` alike.
DEFAULT_SEED = 7


@app.command(epilog=GLOBAL_EPILOG)
def demo(
    sink: Annotated[str, typer.Option("--sink", metavar="SPEC", help="Where the demo writes.")] = "duckdb:demo.duckdb",
    days: Annotated[int, typer.Option("--days", metavar="N", min=1, max=400, help="Simulated days to collect.")] = 30,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Seed of the simulated organization.")
    ] = DEFAULT_SEED,
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
    typer.echo(demo_next_steps(sink))
    raise typer.Exit(code)


def demo_next_steps(sink: str) -> str:
    """What to type after ``demo``: the same sink named, since ``status`` and ``report`` default elsewhere."""
    spec = shlex.quote(sink)
    return (
        "\nNext, on what the demo collected (name its sink: the default is duckdb:usage.duckdb):\n"
        f"  usage-collector report --sink {spec} --html report.html\n"
        f"  usage-collector status --sink {spec}\n"
        "Against your organization:\n"
        "  export OPENAI_ADMIN_KEY=sk-admin-...\n"
        "  usage-collector backfill --start YYYY-MM-DD\n"
        "  usage-collector run"
    )


@app.command(epilog=GLOBAL_EPILOG)
def report(
    sink: SinkOpt = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", metavar="PATH", help="Also write an offline HTML report here.", show_default=False),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--start", metavar="DATE", help="First UTC day (YYYY-MM-DD; default: the first in the sink)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", metavar="DATE", help="Exclusive end day (YYYY-MM-DD, UTC; default: after the last)."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", metavar="INSTANT", help="Report as it stood at this UTC day or ISO-8601 instant (default: now)."
        ),
    ] = None,
    csv_dir: Annotated[
        Path | None,
        typer.Option(
            "--csv", metavar="DIR", help="Also write each table, every row, as a CSV file in DIR.", show_default=False
        ),
    ] = None,
) -> None:
    """Billed cost for a period: per day, month to date, month-end forecast, top movers, by project, model, line
    item and API key; tokens by model. Optionally an offline HTML report with charts, and CSV files.

    Reads the sink only (a file sink that does not exist is an error, never created).
    Example: usage-collector report --sink duckdb:usage.duckdb --start 2026-10-01 --html report.html --csv report
    """
    from .errors import CollectorError
    from .report import build_report, render_html, render_terminal, write_csv

    day0, day1 = (
        datetime.fromtimestamp(parse_when(v, o), UTC).date() if v else None
        for v, o in ((start, "--start"), (end, "--end"))
    )
    if day0 is not None and day1 is not None and day1 <= day0:
        _fail(f"--end ({end}) must be after --start ({start})")
    instant = datetime.fromtimestamp(parse_when(as_of, "--as-of") if as_of else int(datetime.now(UTC).timestamp()), UTC)
    settings = _settings(sink=sink)
    if html_out is not None:
        _require_output_file("--html", html_out)
    snk = _open_sink(settings, existing=True)
    try:
        rep = build_report(snk, start=day0, end=day1, as_of=instant, budgets=settings.budgets)
    except CollectorError as exc:
        _fail(str(exc), 1)
    finally:
        snk.close()
    render_terminal(rep)
    if html_out is not None:
        try:
            html_out.write_text(render_html(rep))
        except OSError as exc:
            _fail(f"--html {html_out}: cannot write it ({exc.strerror}); choose a path in a writable directory")
        typer.echo(f"HTML report: {html_out}")
    if csv_dir is not None:
        paths = write_csv(rep, csv_dir)
        typer.echo(f"CSV: {len(paths)} tables in {csv_dir}")


@app.command(epilog=GLOBAL_EPILOG)
def budgets(
    sink: SinkOpt = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 1 if a budget's spend or forecast passes 100 %, naming each (cron, monitoring).",
        ),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="INSTANT",
            help="Stand on this UTC day or ISO-8601 instant: what the forecast said then (default: now).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Each [[budgets]] entry: month-to-date spend, month-end forecast with its interval, percent of the budget,
    OpenAI's own spend limit and alerts of that scope, status.

    Month to date is the billed cost of the month's closed UTC days (Costs API) plus today's estimate from usage
    when documents carry one. Reads the sink only (a file sink that does not exist is an error, never created).
    Example: usage-collector budgets --sink duckdb:usage.duckdb --check
    """
    from .budgets import evaluate_sink, pct, usd
    from .clock import iso
    from .errors import CollectorError

    instant = datetime.fromtimestamp(parse_when(as_of, "--as-of") if as_of else int(datetime.now(UTC).timestamp()), UTC)
    settings = _settings(sink=sink)
    if not settings.budgets:
        _fail(
            "no budgets configured: add [[budgets]] tables (name, amount in USD per month, optional project_id, "
            "alert_at) to the TOML file given with --config or USAGE_COLLECTOR_CONFIG"
        )
    snk = _open_sink(settings, existing=True)
    try:
        statuses = evaluate_sink(snk, settings, instant)
    except CollectorError as exc:
        _fail(str(exc), 1)
    finally:
        snk.close()
    month = instant.date().replace(day=1)
    closed = instant.date() - timedelta(days=1)
    through = f"closed days through {closed.isoformat()}" if closed >= month else "no closed day yet"
    coverage = next((f"{s.forecast.coverage:.0%}" for s in statuses if s.forecast is not None), "80%")
    rows = []
    for s in statuses:
        f = s.forecast
        mtd = usd(s.month_to_date) + (f" (today est. {usd(s.today_estimate)})" if s.today_estimate else "")
        rows.append(
            (
                s.name,
                s.scope,
                mtd,
                f"{usd(f.point)} [{usd(f.lower)} .. {usd(f.upper)}]" if f is not None else "-",
                usd(s.amount),
                pct(s.spend_percent),
                pct(s.forecast_percent),
                s.controls.describe(),
                s.status.upper() if s.spend_over or s.forecast_over else s.status,
            )
        )
    _print_table(
        f"usage-collector budgets: {snk.description}, as of {iso(instant.timestamp())} "
        f"({month:%Y-%m}, {through}; forecast interval {coverage})",
        ("budget", "scope", "month to date", "forecast [interval]", "budget", "spent", "forecast", "OpenAI", "status"),
        rows,
    )
    for s in statuses:
        if s.note:
            typer.echo(f"{s.name}: {s.note}")
    if not check:
        return
    problems = [p for s in statuses if (p := s.problem()) is not None]
    if problems:
        for line in problems:
            typer.echo(f"check: {line}", err=True)
        raise typer.Exit(1)
    blind = sum(s.forecast is None for s in statuses)
    unknown = f"; {blind} without a forecast (too little history)" if blind else ""
    typer.echo(f"check: ok ({len(statuses)} budget(s): month to date and forecast within the amount{unknown})")


@app.command()
def prices(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="MODEL",
            help="Only this model (snapshots resolve to their entry).",
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", metavar="DATE", help="The table in force on this UTC day (default: today).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="PATH",
            help="A TOML or JSON file overriding or extending prices (env USAGE_COLLECTOR_PRICES_FILE).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The price table in force for estimated cost: USD per unit, by model, with each price's source.

    Prices are transcribed from the sources named in usage_collector/prices/*.toml; "no" under verified means
    nobody checked it against OpenAI's price list: override it with --file. A model or unit that is not listed
    has no price (estimates leave it out, never guess). Example: usage-collector prices --model gpt-4o-2024-08-06
    """
    from .pricing import PriceTable, PriceTableError, user_file_from_env

    if as_of is not None and len(as_of.strip()) != 10:
        _fail(f"--as-of: {as_of!r} is not a date; use YYYY-MM-DD (UTC)")
    day = datetime.fromtimestamp(parse_when(as_of, "--as-of"), UTC).date() if as_of else None
    try:
        table = PriceTable.load(day, file or user_file_from_env())
    except PriceTableError as exc:
        _fail(str(exc))
    if model is not None and table.resolve_model(model) is None:
        typer.echo(f"{model}: no price in the table in force on {table.as_of} (estimates leave it out)")
        return
    rows = table.rows(model)
    body = [
        (
            p.model,
            p.tier or "",
            p.unit.name,
            format(p.usd, "f"),
            f"per {p.unit.per:,} {p.unit.measure}" if p.unit.per != 1 else f"per {p.unit.measure.rstrip('s')}",
            str(p.checked or "-"),
            "yes" if p.verified else "no",
            p.source or "-",
        )
        for p in rows
    ]
    _print_table(
        f"prices in force on {table.as_of} (USD; {' + '.join(table.origins)}, effective {table.effective})",
        ("model", "tier", "unit", "price", "basis", "checked", "verified", "source"),
        body,
    )
    for m in sorted(table.multipliers.values(), key=lambda m: m.tier):
        typer.echo(
            f"{m.tier}: x{m.factor} on token prices of models without their own {m.tier} price "
            f"(source {m.source or '-'}, checked {m.checked or '-'}, verified {'yes' if m.verified else 'no'})"
        )
    urls = sorted({(p.source, p.source_url) for p in rows if p.source and p.source_url})
    for name, url in urls:
        typer.echo(f"  {name}: {url}")


@app.command()
def export(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="PATH", help="File to write: .csv or .parquet (by suffix).", show_default=False
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", metavar="FORMAT", help="Export format (only focus: FOCUS 1.2).")
    ] = "focus",
    start: Annotated[
        str | None,
        typer.Option("--start", metavar="DATE", help="First charge day (YYYY-MM-DD, UTC).", show_default=False),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", metavar="DATE", help="Exclusive end day (YYYY-MM-DD, UTC).", show_default=False),
    ] = None,
    sink: SinkOpt = None,
) -> None:
    """Billed cost (Costs API documents in the sink) as a FOCUS 1.2 dataset: one row per day, project,
    line item and API key, every mandatory FOCUS column plus x_ columns (line item, model, unit, API key).

    BilledCost is the Costs API amount, exact (CSV without float artefacts, Parquet DECIMAL).
    Example: usage-collector export --format focus --start 2026-10-01 --output focus-2026-10.parquet
    """
    from decimal import Decimal

    from .errors import CollectorError, ConfigError
    from .focus import focus_rows, write_focus

    if fmt.strip().lower() != "focus":
        _fail(f"--format: {fmt!r} is not supported; allowed: focus")
    if output.suffix.lower() not in (".csv", ".parquet"):
        _fail(f"--output: {output} must end in .csv or .parquet")
    t0 = parse_when(start, "--start") if start else None
    t1 = parse_when(end, "--end") if end else None
    if t0 is not None and t1 is not None and t1 <= t0:
        _fail(f"--end ({end}) must be after --start ({start})")
    _require_output_file("--output", output)
    settings = _settings(sink=sink)
    snk = _open_sink(settings, existing=True)
    try:
        rows = focus_rows(snk.iter_documents("costs"), t0, t1)
    except CollectorError as exc:
        _fail(str(exc), 1)
    finally:
        snk.close()
    try:
        written = write_focus(rows, output)
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"--output: cannot write {output}: {exc.strerror or exc}", 1)
    if not rows:
        typer.echo(
            f"no billed cost lines in {snk.description} for that range: run `usage-collector backfill` first "
            f"(wrote the header only to {output})",
            err=True,
        )
        return
    total = sum((r["BilledCost"] for r in rows), Decimal(0))
    days = len({r["ChargePeriodStart"] for r in rows})
    typer.echo(
        f"wrote {len(rows):,} FOCUS 1.2 rows ({written}) to {output}: {days} day(s), "
        f"BilledCost {total:,.2f} {rows[0]['BillingCurrency']} (exact: {total})"
    )


def _require_output_file(option: str, path: Path) -> None:
    """Exit 2, before any work, unless ``path`` can be written: its directory exists and it is not one."""
    if path.is_dir():
        _fail(f"{option} {path}: is a directory; name a file, e.g. {option} {path / 'report.html'}")
    parent = path.parent
    if not parent.is_dir():
        _fail(f"{option} {path}: the directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        _fail(f"{option} {path}: not writable; choose a path in a directory you can write to")


#: Modules that dependencies import when installed but that no command uses; :func:`main` keeps them out
#: (P3, ``bench/p3_startup.py``: together about as long as ``import httpx`` itself).
#:
#: * ``trio``: httpcore imports it, for async clients under trio; every HTTP client here is synchronous.
#: * ``httpx._main``: httpx's own command-line client, imported by ``import httpx`` with click, rich and
#:   pygments when they are installed (httpx falls back to a stub ``httpx.main`` without them).
UNUSED_MODULES = ("trio", "httpx._main")


def skip_unused_modules() -> None:
    """Make :data:`UNUSED_MODULES` unimportable in this process (``sys.modules[name] = None``: an ``import``
    raises ``ImportError``, which httpcore treats as "not installed"). Only the console script calls this;
    one already imported is left alone."""
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


#: Allocations between two collections of the youngest generation while the process starts (CPython's
#: default is 700): the imports create tens of thousands of objects that live until exit (modules, classes,
#: functions), none of them garbage, and collecting every 700 allocations walked them again and again.
#: :func:`settle` restores the default once the command's imports are done.
STARTUP_GC_THRESHOLD = 50_000
_gc_thresholds: tuple[int, int, int] | None = None


def start_quietly() -> None:
    """Collect garbage rarely while the process starts (:data:`STARTUP_GC_THRESHOLD`); see :func:`settle`."""
    import gc

    global _gc_thresholds
    if _gc_thresholds is None:
        _gc_thresholds = gc.get_threshold()
        gc.set_threshold(STARTUP_GC_THRESHOLD, *_gc_thresholds[1:])


def settle() -> None:
    """The command's imports are done: move every object alive now (the modules, the settings) into the
    permanent generation (``gc.freeze``), so no collection walks them again, and collect at CPython's usual
    pace from here on. A no-op ``run`` made one full collection that walked them all (~30 ms, P3); ``serve``
    would walk them in every full collection for as long as it runs. Objects alive now still go when their
    last reference does; only a reference cycle among them would stay until exit. Only in a process that
    :func:`main` started (tests and other callers of :func:`run_cli` keep their collector as it was)."""
    import gc

    global _gc_thresholds
    if _gc_thresholds is None:
        return
    gc.freeze()
    gc.set_threshold(*_gc_thresholds)
    _gc_thresholds = None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: exits with :func:`run_cli`'s status."""
    from .simulator.cli import register

    skip_unused_modules()
    start_quietly()
    if not any((c.name or "") == "simulate" for c in app.registered_commands):
        register(app)
        guard_simulate(app)
    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))


def run_cli(argv: Sequence[str]) -> int:
    """Run the command line and return its exit status; every error ends in one ``error:`` line.

    Usage mistakes (an unknown option, a bad value) exit 2; a :class:`~usage_collector.errors.ConfigError`
    2; another collector error 1; an ``OSError`` 2 when it names a path that is wrong (missing, a directory,
    not writable), else 1. Anything else is a bug: one line saying so, and its traceback with ``--debug``.
    """
    from .errors import CollectorError, ConfigError

    _state.debug = any(a in GLOBAL_FLAGS for a in argv)
    try:
        rv = app(args=hoist_global_options(argv), prog_name="usage-collector", standalone_mode=False)
    except typer.Exit as exc:  # raised by click's machinery in some typer versions
        return int(exc.exit_code)
    except Exception as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # no command given: the help
            typer.echo(ctx.get_help())
            return 0
        return _report_error(exc, ConfigError, CollectorError)
    except KeyboardInterrupt:
        typer.echo("error: interrupted (a second signal): stopped at once; the next run resumes", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


def _report_error(exc: Exception, config_error: type[Exception], collector_error: type[Exception]) -> int:
    from .secrets import redact

    usage = _usage_error(exc)
    if usage is not None:
        message, code = usage
    elif isinstance(exc, config_error):
        message, code = str(exc), 2
    elif isinstance(exc, collector_error):
        message, code = str(exc), 1
    elif isinstance(exc, OSError):
        message, code = _os_reason(exc), 2 if exc.errno in INPUT_ERRNOS else 1
    else:
        message, code = f"unexpected {type(exc).__name__}: {exc} (a bug: run again with --debug and report it)", 1
    if _state.debug:
        import traceback

        typer.echo(redact("".join(traceback.format_exception(exc))), err=True)
    else:
        log.debug("error", exc_info=exc)
    typer.echo(f"error: {redact(message)}", err=True)
    return code


def _usage_error(exc: Exception) -> tuple[str, int] | None:
    """A click usage error (unknown option, bad value, missing argument) as one line; ``None`` for others."""
    if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
        return None
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "usage-collector"
    return f"{exc.format_message()} (see `{path} --help`)", int(exc.exit_code)


def guard_simulate(target: typer.Typer) -> None:
    """``simulate --port N`` on a busy port: one line naming the port (exit 1) instead of the bind traceback."""
    import functools

    def guard(inner: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(inner)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return inner(*args, **kwargs)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                    raise
                port = kwargs.get("port")
                _fail(
                    f"--port {port}: cannot listen on {kwargs.get('host', '127.0.0.1')}:{port} ({exc.strerror}); "
                    "choose another port, or --port 0 for any free one",
                    1,
                )

        return guarded

    for info in target.registered_commands:
        if (info.name or "") == "simulate" and info.callback is not None:
            info.callback = guard(info.callback)


if __name__ == "__main__":  # pragma: no cover
    main()
