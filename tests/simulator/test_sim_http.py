"""Over real HTTP on 127.0.0.1 with httpx: encodings on the wire, cursors, concurrency, counters, faults."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from usage_collector.simulator import DEFAULT_ADMIN_KEY, FaultKind, FaultPlan, serve

DAY = 86400
AUTH = {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"}


def test_serve_gives_a_v1_base_url_and_pages_over_http(api, org):
    with serve(api) as base_url, httpx.Client(base_url=base_url, headers=AUTH) as client:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        params: dict[str, Any] = {
            "start_time": org.start,
            "end_time": org.end,
            "bucket_width": "1h",
            "limit": 50,
            "group_by[]": ["project_id", "model"],
        }
        buckets, pages = [], 0
        while True:
            r = client.get("/organization/usage/completions", params=params)
            assert r.status_code == 200
            body = r.json()
            buckets += body["data"]
            pages += 1
            if not body["has_more"]:
                break
            params["page"] = body["next_page"]  # standard base64: httpx URL-encodes '+', '/', '='
    truth = org.truth("completions", org.start, org.end, "1h", ["project_id", "model"])
    assert len(buckets) == len(truth) and pages == -(-len(truth) // 50)
    assert [[{k: v for k, v in r.items() if k != "organization_id"} for r in b["results"]] for b in buckets] == [
        b["results"] for b in truth
    ]
    assert api.counters.by_path["/v1/organization/usage/completions"] == pages


def test_concurrent_requests_and_counters(api, org):
    paths = ["/organization/usage/embeddings", "/organization/usage/moderations", "/organization/costs"]

    def worker(i: int) -> list[int]:
        with httpx.Client(base_url=base_url, headers=AUTH) as client:
            return [
                client.get(paths[(i + j) % 3], params={"start_time": org.start, "limit": 7}).status_code
                for j in range(15)
            ]

    with serve(api) as base_url, ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(worker, range(8)) for s in batch]
    assert statuses == [200] * 120
    snap = api.counters.snapshot()
    assert snap["total"] == 120 and snap["by_status"] == {200: 120}
    assert sum(snap["by_path"].values()) == 120


@pytest.mark.parametrize(
    ("kind", "status"),
    [(FaultKind.TRUNCATED, 200), (FaultKind.NON_JSON, 502), (FaultKind.RATE_LIMIT, 429)],
    ids=["truncated", "html-502", "429"],
)
def test_faults_over_http(make_api, org, kind, status):
    api = make_api(FaultPlan(schedule={1: kind}, retry_after=3))
    with serve(api) as base_url, httpx.Client(base_url=base_url, headers=AUTH) as client:
        r = client.get("/organization/usage/completions", params={"start_time": org.start})
        assert r.status_code == status
        assert int(r.headers["content-length"]) == len(r.content)
        if kind is FaultKind.RATE_LIMIT:
            assert r.headers["retry-after"] == "3"
        else:
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.content)
        assert client.get("/organization/usage/completions", params={"start_time": org.start}).status_code == 200


def test_unauthorized_over_http(api, org):
    with serve(api) as base_url:
        r = httpx.get(f"{base_url}/organization/costs", params={"start_time": org.start})
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("You didn't provide an API key")
