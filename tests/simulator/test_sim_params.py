"""Request parameters: limits per width, required/invalid params, group_by encodings and filters (ref §0, §1.1-§1.4)."""

from __future__ import annotations

from typing import Any

import pytest

from usage_collector.simulator import STREAMS, Organization

DAY = 86400
USAGE_STREAMS = [s for s in STREAMS if s != "costs"]


@pytest.mark.parametrize(
    ("stream", "width", "limit", "status", "buckets"),
    [
        ("completions", "1d", None, 200, 7),
        ("completions", "1d", 31, 200, 31),
        ("completions", "1d", 32, 400, None),
        ("completions", "1d", 0, 400, None),
        ("embeddings", "1h", None, 200, 24),
        ("embeddings", "1h", 168, 200, 168),
        ("embeddings", "1h", 169, 400, None),
        ("images", "1m", None, 200, 60),
        ("images", "1m", 1440, 200, 1440),
        ("images", "1m", 1441, 400, None),
        ("costs", "1d", None, 200, 7),
        ("costs", "1d", 180, 200, 180),
        ("costs", "1d", 181, 400, None),
        ("costs", "1d", 0, 400, None),
    ],
    ids=[
        "1d-default-7",
        "1d-max-31",
        "1d-over-max",
        "1d-zero",
        "1h-default-24",
        "1h-max-168",
        "1h-over-max",
        "1m-default-60",
        "1m-max-1440",
        "1m-over-max",
        "costs-default-7",
        "costs-max-180",
        "costs-over-max",
        "costs-zero",
    ],
)
def test_limit_defaults_and_maxima(call, org, stream, width, limit, status, buckets):
    params = [("start_time", org.start - 200 * DAY), ("bucket_width", width)]
    if limit is not None:
        params.append(("limit", limit))
    reply = call(stream, params)
    assert reply.status == status, reply.body
    if status == 200:
        assert len(reply.json["data"]) == buckets
        assert reply.json["has_more"] is True
    else:
        err = reply.json["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["param"] == "limit"


@pytest.mark.parametrize(
    ("stream", "params", "param"),
    [
        ("completions", [], "start_time"),
        ("completions", [("start_time", "yesterday")], "start_time"),
        ("completions", [("start_time", 0), ("end_time", "x")], "end_time"),
        ("completions", [("start_time", 0), ("bucket_width", "1w")], "bucket_width"),
        ("costs", [("start_time", 0), ("bucket_width", "1h")], "bucket_width"),
        ("completions", [("start_time", 0), ("batch", "maybe")], "batch"),
        ("images", [("start_time", 0), ("sizes", "999x999")], "sizes"),
        ("images", [("start_time", 0), ("sources", "image.remix")], "sources"),
        ("web_search_calls", [("start_time", 0), ("context_levels", "extreme")], "context_levels"),
        ("completions", [("start_time", 0), ("page", "!!not-a-cursor!!")], "page"),
    ],
    ids=[
        "missing-start",
        "start-not-int",
        "end-not-int",
        "bad-width",
        "costs-1h",
        "bad-batch",
        "bad-size-enum",
        "bad-source-enum",
        "bad-context-level",
        "garbage-cursor",
    ],
)
def test_invalid_parameters_are_400_with_openai_error_shape(call, stream, params, param):
    reply = call(stream, params)
    assert reply.status == 400
    err = reply.json["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


def _group_by_encodings(values: list[str]) -> dict[str, list[tuple[str, str]]]:
    return {
        "repeated": [("group_by", v) for v in values],
        "brackets": [("group_by[]", v) for v in values],
        "comma": [("group_by", ",".join(values))],
        "indices": [(f"group_by[{i}]", v) for i, v in enumerate(values)],
    }


@pytest.mark.parametrize("encoding", ["repeated", "brackets", "comma", "indices"])
@pytest.mark.parametrize(
    ("stream", "values"),
    [
        ("completions", ["project_id", "model", "batch", "service_tier"]),
        ("images", ["size", "source"]),
        ("costs", ["project_id", "line_item"]),
    ],
    ids=["completions", "images", "costs"],
)
def test_group_by_encodings_are_equivalent(call, org, encoding, stream, values):
    base = [("start_time", org.start), ("end_time", org.start + 3 * DAY)]
    reference = call(stream, [*base, *_group_by_encodings(values)["repeated"]])
    reply = call(stream, [*base, *_group_by_encodings(values)[encoding]])
    assert reply.status == 200
    assert [r for b in reply.json["data"] for r in b["results"]] == [
        r for b in reference.json["data"] for r in b["results"]
    ]
    grouped = [r for b in reply.json["data"] for r in b["results"]]
    # every grouped column is populated (costs' org-level scale tier item has project_id null, ref §4.8)
    assert grouped and all(any(r[v] is not None for r in grouped) for v in values)


@pytest.mark.parametrize(
    ("stream", "value"),
    [
        ("completions", "size"),
        ("embeddings", "batch"),
        ("vector_stores", "model"),
        ("code_interpreter_sessions", "user_id"),
        ("file_search_calls", "model"),
        ("web_search_calls", "vector_store_id"),
        ("costs", "model"),
        ("embeddings", "api_source"),
    ],
    ids=lambda v: str(v),
)
def test_group_by_value_not_allowed_is_400(call, stream, value):
    reply = call(stream, [("start_time", 0), ("group_by", value)])
    assert reply.status == 400
    assert reply.json["error"]["param"] == "group_by"


@pytest.mark.parametrize("stream", [*USAGE_STREAMS, "costs"])
def test_ungrouped_dimensions_are_null(call, org, stream):
    reply = call(stream, [("start_time", org.start), ("end_time", org.start + 2 * DAY)])
    results = [r for b in reply.json["data"] for r in b["results"]]
    assert results
    for r in results:
        for dim in STREAMS[stream].group_by:
            assert dim in r and r[dim] is None
        assert r["object"] == STREAMS[stream].object


@pytest.mark.parametrize("stream", USAGE_STREAMS)
def test_grouping_by_one_dimension_leaves_the_others_null(call, org, stream):
    dims = STREAMS[stream].group_by
    reply = call(stream, [("start_time", org.start), ("end_time", org.start + DAY), ("group_by", dims[-1])])
    results = [r for b in reply.json["data"] for r in b["results"]]
    assert results
    for r in results:
        assert r[dims[-1]] is not None
        assert all(r[d] is None for d in dims[:-1])


def _values(org: Organization, stream: str, dim: str) -> list[Any]:
    return sorted({s.dims[dim] for s in org.series[stream]}, key=str)


@pytest.mark.parametrize("encoding", ["repeated", "brackets", "comma"])
@pytest.mark.parametrize(
    ("stream", "param", "dim"),
    [
        ("completions", "project_ids", "project_id"),
        ("completions", "user_ids", "user_id"),
        ("completions", "api_key_ids", "api_key_id"),
        ("completions", "models", "model"),
        ("embeddings", "models", "model"),
        ("images", "sizes", "size"),
        ("images", "sources", "source"),
        ("file_search_calls", "vector_store_ids", "vector_store_id"),
        ("web_search_calls", "context_levels", "context_level"),
        ("vector_stores", "project_ids", "project_id"),
        ("costs", "project_ids", "project_id"),
        ("costs", "api_key_ids", "api_key_id"),
    ],
    ids=lambda v: str(v),
)
def test_filters_restrict_results_in_every_encoding(call, org, strip, encoding, stream, param, dim):
    values = _values(org, stream if stream != "costs" else "completions", dim)
    if param == "sizes":
        values = [v for v in values if v in ("256x256", "512x512", "1024x1024", "1792x1792", "1024x1792")]
    chosen = values[:2]
    enc = {
        "repeated": [(param, v) for v in chosen],
        "brackets": [(f"{param}[]", v) for v in chosen],
        "comma": [(param, ",".join(chosen))],
    }[encoding]
    base = [("start_time", org.start), ("end_time", org.start + 3 * DAY), ("group_by", dim)]
    filtered = [strip(r) for b in call(stream, [*base, *enc]).json["data"] for r in b["results"]]
    everything = [strip(r) for b in call(stream, base).json["data"] for r in b["results"]]
    assert filtered
    assert {r[dim] for r in filtered} <= set(chosen)
    assert len(filtered) < len(everything)
    assert filtered == [r for r in everything if r[dim] in chosen]


def test_batch_filter_partitions_completions(call, org):
    base = [("start_time", org.start), ("end_time", org.start + 7 * DAY), ("limit", 31)]

    def total(extra: list[tuple[str, str]]) -> int:
        return sum(
            r["num_model_requests"] for b in call("completions", [*base, *extra]).json["data"] for r in b["results"]
        )

    batch, online, both = total([("batch", "true")]), total([("batch", "false")]), total([])
    assert batch > 0 and online > 0
    assert batch + online == both
