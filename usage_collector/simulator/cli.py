"""``usage-collector simulate``: serve the simulated organization on 127.0.0.1 until Ctrl-C / SIGTERM.

The main CLI calls :func:`register` to add the command; everything heavy is imported inside the command.
"""

from __future__ import annotations

import re

import typer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> int:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"2d"``.

    Raises:
        typer.BadParameter: if the text is not a duration.
    """
    m = _DURATION.match(text)
    if m is None:
        raise typer.BadParameter(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 2d)")
    return int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``.

    Args:
        app: the application's typer app.
    """

    @app.command("simulate")
    def simulate(
        port: int = typer.Option(8080, metavar="N", help="Port on 127.0.0.1 (0 = any free port)."),
        host: str = typer.Option("127.0.0.1", metavar="HOST", help="Interface to bind."),
        seed: int = typer.Option(7, metavar="N", help="Seed of the simulated organization (the same default as demo)."),
        start: str | None = typer.Option(
            None,
            metavar="DATE",
            help="First day with usage (YYYY-MM-DD). Default: so that the last day is today (UTC).",
        ),
        days: int = typer.Option(30, min=1, metavar="N", help="Number of days with usage."),
        admin_key: str | None = typer.Option(
            None, metavar="KEY", help="Admin key to accept (default: the simulator's key)."
        ),
        revision_horizon: str = typer.Option(
            "2h", metavar="DURATION", help="Usage buckets younger than this are still revised."
        ),
        costs_revision_horizon: str = typer.Option(
            "2d", metavar="DURATION", help="Cost days younger than this are still revised."
        ),
        fault_seed: int = typer.Option(0, metavar="N", help="Seed of the probabilistic faults."),
        fault_429: float = typer.Option(0.0, metavar="P", help="Probability of a 429."),
        fault_5xx: float = typer.Option(0.0, metavar="P", help="Probability of a 500/502/503."),
        fault_latency: float = typer.Option(0.0, metavar="P", help="Probability of a slow response."),
        latency: float = typer.Option(0.5, metavar="SECONDS", help="Delay of a slow response (seconds)."),
        fault_truncate: float = typer.Option(0.0, metavar="P", help="Probability of a truncated JSON body."),
        fault_non_json: float = typer.Option(0.0, metavar="P", help="Probability of an HTML 502 page."),
        fault_repeat_cursor: float = typer.Option(
            0.0, metavar="P", help="Probability of a page whose cursor repeats forever."
        ),
        fault_has_more_null: float = typer.Option(
            0.0, metavar="P", help="Probability of has_more=true with next_page=null."
        ),
        fault_401_from: int | None = typer.Option(None, metavar="N", help="Answer 401 from this request number on."),
        fault_at: list[str] = typer.Option(  # noqa: B008 - typer idiom
            [],
            metavar="N:KIND",
            help="Exact faults: N:KIND or N-M:KIND (KIND: 429, 500, 502, 503, latency, truncated, non_json, "
            "repeat_cursor, has_more_no_cursor, 401). Repeatable.",
        ),
        retry_after: float = typer.Option(1.0, metavar="SECONDS", help="Seconds announced by 429 responses."),
        retry_after_format: str = typer.Option("seconds", metavar="FORMAT", help="seconds, http-date, mixed or none."),
        retry_after_ms: bool = typer.Option(False, help="Also send retry-after-ms."),
    ) -> None:
        """Serve a simulated OpenAI organization (Usage, Costs and Admin APIs) until Ctrl-C or SIGTERM.

        Example: usage-collector simulate --port 8080 --seed 7 --days 30 --fault-429 0.05
        """
        import signal
        import threading
        from datetime import UTC, datetime, timedelta

        from .api import DEFAULT_ADMIN_KEY, SimulatedAPI
        from .faults import FaultPlan
        from .org import Organization
        from .server import serve

        if retry_after_format not in ("seconds", "http-date", "mixed", "none"):
            raise typer.BadParameter("--retry-after-format must be seconds, http-date, mixed or none")
        try:
            schedule = FaultPlan.parse_schedule(fault_at)
        except ValueError as e:
            raise typer.BadParameter(f"--fault-at: {e}") from None
        first = start or (datetime.now(UTC).date() - timedelta(days=days - 1)).isoformat()
        org = Organization(seed=seed, start=first, days=days)
        plan = FaultPlan(
            seed=fault_seed,
            rate_limit=fault_429,
            server_error=fault_5xx,
            latency=fault_latency,
            latency_seconds=latency,
            truncated=fault_truncate,
            non_json=fault_non_json,
            repeat_cursor=fault_repeat_cursor,
            has_more_without_cursor=fault_has_more_null,
            unauthorized_from=fault_401_from,
            schedule=schedule,
            retry_after=retry_after,
            retry_after_format=retry_after_format,  # type: ignore[arg-type]
            retry_after_ms=retry_after_ms,
        )
        key = admin_key or DEFAULT_ADMIN_KEY
        api = SimulatedAPI(
            org,
            admin_key=key,
            revision_horizon=parse_duration(revision_horizon),
            costs_revision_horizon=parse_duration(costs_revision_horizon),
            faults=plan,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with serve(api, host=host, port=port) as base_url:
            day = datetime.fromtimestamp(org.start, UTC).date()
            typer.echo(f"Simulated OpenAI organization {org.id} (seed {seed}, {day} + {days} days)")
            typer.echo(f"base URL:  {base_url}")
            typer.echo(f"admin key: {key}")
            typer.echo("Ctrl-C to stop.")
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            snap = api.counters.snapshot()
        typer.echo(f"served {snap['total']} requests; statuses {snap['by_status']}")


__all__ = ["parse_duration", "register"]
