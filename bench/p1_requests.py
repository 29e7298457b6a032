"""P1 requests: API requests for a 90-day backfill of every stream, ours vs Elastic's integration pattern.

Both sides run against the same in-process simulator (fixed clock, same organization), and both are
counted by the simulator's own request counters (usage and costs paths only; name enrichment is off).

* **ours**: the real ``Collector.backfill`` (``limit`` at the API maximum, ``end_time`` sent, windows of
  1440 / 168 / 31 buckets; costs ``planning.COSTS_WINDOW_DAYS`` days), into a null sink.
* **theirs**: a re-implementation of the request pattern of Elastic's ``openai`` integration
  (``packages/openai/data_stream/*/agent/stream/cel.yml.hbs``): per stream ``start_time``, ``bucket_width``,
  ``group_by`` comma-joined, **no** ``limit`` (API default 60 / 24 / 7 buckets a page; costs 7), **no**
  ``end_time`` (the API clips to now), following ``next_page`` while ``has_more``.

Costs are always ``1d`` (the API allows nothing else) on both sides.

Each count is also computed analytically (pages = ceil(buckets / buckets per page)); the analytic figures
must equal the measured ones. When the 1m range is shortened (``--days-1m``), the 90-day 1m figures are
the analytic ones, verified on the measured shorter range.

    python bench/p1_requests.py [--days 90] [--days-1m 30]

At 1m the default measures 30 days (the 90-day 1m backfill moves 1.6 million documents through the
collector and takes ~95 s here on its own, too close to the 2-minute budget on a shared machine);
``--days-1m 90`` measures all 90 days (it matched the analytic counts exactly).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import orjson
from _common import ADMIN_KEY, DAY, SEED, NullSink, emit, table, verdict

from usage_collector.catalogue import STREAMS
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector
from usage_collector.config import load_settings
from usage_collector.planning import COSTS_WINDOW_DAYS, BackfillRange
from usage_collector.simulator import Organization, SimulatedAPI, serve

WIDTH_S = {"1m": 60, "1h": 3600, "1d": 86400}
#: Elastic's default page sizes are the API defaults (ref §0): 1m 60, 1h 24, 1d 7; costs 7.
API_DEFAULT = {"1m": 60, "1h": 24, "1d": 7}
OUR_LIMIT = {"1m": 1440, "1h": 168, "1d": 31}
COSTS_DEFAULT = 7
#: group_by as Elastic's integration sends it (one comma-joined value); streams it lacks: every default dimension.
ELASTIC_GROUP_BY = {
    "completions": "project_id,user_id,api_key_id,model,batch",
    "embeddings": "project_id,user_id,api_key_id,model",
    "moderations": "project_id,user_id,api_key_id,model",
    "images": "project_id,user_id,api_key_id,model,size,source",
    "audio_speeches": "project_id,user_id,api_key_id,model",
    "audio_transcriptions": "project_id,user_id,api_key_id,model",
    "vector_stores": "project_id",
    "code_interpreter_sessions": "project_id",
}
GOALS = {"1m": 1 / 20, "1h": 1 / 6, "1d": 1 / 4}
GRACE = 900  # our default finalization grace (usage); costs 0


def stream_width(name: str, width: str) -> str:
    return "1d" if STREAMS[name].is_costs else width


# --- analytic counts ------------------------------------------------------------------------------------
def n_buckets(start: int, end: int, w: int) -> int:
    """UTC-aligned buckets of ``w`` seconds intersecting ``[start, end)``."""
    if end <= start:
        return 0
    return (math.ceil(end / w) * w - (start - start % w)) // w


def theirs_analytic(name: str, width: str, start: int, now: int) -> int:
    w = stream_width(name, width)
    per_page = COSTS_DEFAULT if STREAMS[name].is_costs else API_DEFAULT[w]
    first = start - start % 60  # the API floors start_time to the minute
    return max(1, math.ceil(n_buckets(first, now, WIDTH_S[w]) / per_page))


def ours_analytic(name: str, width: str, start: int, now: int) -> int:
    w = stream_width(name, width)
    ws = WIDTH_S[w]
    grace = 0 if STREAMS[name].is_costs else GRACE
    edge = (now - grace) // ws * ws
    s = start - start % ws
    per_page = COSTS_WINDOW_DAYS if STREAMS[name].is_costs else OUR_LIMIT[w]
    return math.ceil(max(0, edge - s) // ws / per_page)


# --- the two sides -----------------------------------------------------------------------------------------
def usage_requests(snap: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for path, n in snap["by_path"].items():
        if path.startswith(("/v1/organization/usage/", "/v1/organization/costs")):
            out[path.rsplit("/", 1)[1]] = n
    return out


def run_ours(api: SimulatedAPI, base_url: str, now: int, start: int, width: str) -> tuple[dict[str, int], int]:
    api.counters.reset()
    settings = load_settings(
        None,
        openai_admin_key=ADMIN_KEY,
        openai_base_url=base_url,
        rate_limit=100000.0,
        initial_backoff=0.0,
        max_backoff=0.0,
        enrich_names=False,
        concurrency=4,
    )
    sink = NullSink()
    result = Collector(settings, sink, clock=FakeClock(now)).backfill(BackfillRange(start, None, bucket_width=width))
    failed = [f"{r.stream}: {r.error}" for r in result.failed]
    if failed:
        raise SystemExit(f"our backfill failed: {failed}")
    return usage_requests(api.counters.snapshot()), sink.docs


def run_theirs(api: SimulatedAPI, base_url: str, start: int, width: str) -> dict[str, int]:
    """Elastic's CEL program, one stream after the other, each from ``start_time`` until ``has_more`` is false."""
    api.counters.reset()
    with httpx.Client(
        base_url=base_url + "/", headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    ) as http:
        for name, spec in STREAMS.items():
            params = {
                "start_time": str(int(start)),
                "bucket_width": stream_width(name, width),
                "group_by": ELASTIC_GROUP_BY.get(name, ",".join(spec.request_group_by)),
            }
            page = None
            while True:
                q = dict(params, page=page) if page else params
                r = http.get(spec.path, params=q)
                r.raise_for_status()
                body = orjson.loads(r.content)
                if not body.get("has_more"):
                    break
                page = body["next_page"]
    return usage_requests(api.counters.snapshot())


def measure(api: SimulatedAPI, base_url: str, now: int, days: int, width: str) -> list[dict]:
    start = now - days * DAY
    t0 = time.perf_counter()
    ours, docs = run_ours(api, base_url, now, start, width)
    t1 = time.perf_counter()
    theirs = run_theirs(api, base_url, start, width)
    t2 = time.perf_counter()
    rows = []
    for name in STREAMS:
        rows.append(
            {
                "stream": name,
                "width": stream_width(name, width),
                "days": days,
                "ours": ours.get(name, 0),
                "ours_calc": ours_analytic(name, width, start, now),
                "theirs": theirs.get(name, 0),
                "theirs_calc": theirs_analytic(name, width, start, now),
            }
        )
    print(f"  [{width}, {days} d: ours {t1 - t0:.1f}s ({docs:,} documents), theirs {t2 - t1:.1f}s]")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument(
        "--days-1m",
        type=int,
        default=30,
        help="measured range at 1m; the 90-day figures are analytic, verified on it (90 = measure all)",
    )
    args = ap.parse_args()

    org = Organization(seed=SEED, start="2026-01-01", days=args.days + 2)
    now = org.start + (args.days + 1) * DAY + 12 * 3600 + 17 * 60 + 23  # mid-day, not aligned
    api = SimulatedAPI(org, clock=lambda: now)
    results = []
    summary = []
    with serve(api) as base_url:
        for width in ("1m", "1h", "1d"):
            days = args.days_1m if width == "1m" else args.days
            rows = measure(api, base_url, now, days, width)
            bad = [r["stream"] for r in rows if r["ours"] != r["ours_calc"] or r["theirs"] != r["theirs_calc"]]
            print(f"\nP1 {width}: requests for a {days}-day backfill (measured on the simulator; *_calc analytic)")
            print(
                table(
                    ["stream", "width", "ours", "ours_calc", "theirs", "theirs_calc"],
                    [[r["stream"], r["width"], r["ours"], r["ours_calc"], r["theirs"], r["theirs_calc"]] for r in rows],
                )
            )
            if bad:
                print(f"  analytic != measured for {bad}: not scaling")
            ours_m, theirs_m = sum(r["ours"] for r in rows), sum(r["theirs"] for r in rows)
            if days != args.days:
                start90 = now - args.days * DAY
                if bad:
                    raise SystemExit("cannot extrapolate: the analytic counts do not match the measured sample")
                ours90 = sum(ours_analytic(s, width, start90, now) for s in STREAMS)
                theirs90 = sum(theirs_analytic(s, width, start90, now) for s in STREAMS)
                print(
                    f"  measured {days} d: ours {ours_m}, theirs {theirs_m} (ratio {ours_m / theirs_m:.4f}); "
                    f"{args.days} d analytic (verified on the {days}-day sample): ours {ours90}, theirs {theirs90}"
                )
                ours_t, theirs_t, how = ours90, theirs90, f"analytic, verified on {days} d"
            else:
                ours_t, theirs_t, how = ours_m, theirs_m, "measured"
            ratio = ours_t / theirs_t
            summary.append([width, ours_t, theirs_t, ratio, f"1/{1 / ratio:.1f}", f"1/{1 / GOALS[width]:.0f}", how])
            results.append(
                verdict(f"P1 requests {width} ({args.days} d, ours/theirs)", ratio, GOALS[width], at_most=True)
            )
    print(f"\nP1 summary: all {len(STREAMS)} streams, {args.days}-day backfill")
    print(table(["width", "ours", "theirs", "ratio", "= 1/x", "goal", "how"], summary))
    emit(results)


if __name__ == "__main__":
    main()
