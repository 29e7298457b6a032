"""Document shape and the deterministic ``_id``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.helpers import T0
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Names, Target, shape

TGT = Target("org-1", "Acme")
ROW = {
    "object": "organization.usage.completions.result",
    "input_tokens": 100,
    "output_tokens": 20,
    "num_model_requests": 3,
    "input_cached_tokens": 40,
    "project_id": "proj_a",
    "user_id": None,
    "api_key_id": "key_a",
    "model": "gpt-4o-2024-08-06",
    "batch": False,
    "service_tier": "default",
}


def _doc(row=ROW, width="1h", start=T0, group_by=None, target=TGT, stream="completions", names=None):
    spec = STREAMS[stream]
    return shape(spec, target, width, start, start + 3600, group_by or spec.group_by, row, names)


def test_document_is_ecs_shaped_and_compatible_with_elastic_field_names():
    src = _doc().source
    assert src["@timestamp"] == "2025-10-15T00:00:00Z"
    assert src["event"]["kind"] == "metric" and src["event"]["dataset"] == "openai.completions"
    assert src["data_stream"] == {"type": "metrics", "dataset": "openai.completions", "namespace": "default"}
    assert src["organization"] == {"id": "org-1", "name": "Acme"}
    base = src["openai"]["base"]
    assert base["project_id"] == "proj_a" and base["model"] == "gpt-4o-2024-08-06"
    assert base["num_model_requests"] == 3
    assert base["usage_object_type"] == "organization.usage.completions.result"
    assert "user_id" not in base  # null dimensions are left out, not written as null
    own = src["openai"]["completions"]
    assert own == {
        "input_tokens": 100,
        "output_tokens": 20,
        "input_cached_tokens": 40,
        "batch": False,
        "service_tier": "default",
    }
    assert src["gen_ai"]["usage"] == {"input_tokens": 100, "output_tokens": 20}
    assert src["gen_ai"]["request"]["model"] == "gpt-4o-2024-08-06"
    assert _doc().index == "metrics-openai.completions-default"


def test_id_ignores_measures_so_a_revision_replaces_the_same_document():
    a, b = _doc(), _doc({**ROW, "input_tokens": 999})
    assert a.id == b.id and a.hash != b.hash


@pytest.mark.parametrize(
    "change",
    [
        {"width": "1d"},
        {"start": T0 + 3600},
        {"group_by": ("project_id", "model")},
        {"row": {**ROW, "model": "gpt-4o-mini"}},
        {"row": {**ROW, "batch": True}},
        {"row": {**ROW, "user_id": "user_x"}},
        {"target": Target("org-2")},
    ],
    ids=["width", "bucket-start", "group-by-set", "model", "batch", "null-vs-value", "organization"],
)
def test_id_changes_with_every_identity_part(change):
    assert _doc(**change).id != _doc().id


def test_id_is_stable_across_collector_versions():
    # Changing this value orphans every document users already have: never change it casually.
    assert _doc().id == "LntBiBF6DmzLxAl9KTJ3GkXXMAQ"


def test_costs_document_keeps_exact_amount_and_hash_ignores_json_type():
    row = {
        "object": "organization.costs.result",
        "amount": {"value": Decimal("12.50"), "currency": "usd"},
        "line_item": "gpt-4o-2024-08-06, input",
        "project_id": "proj_a",
        "api_key_id": None,
        "quantity": Decimal("1000"),
        "quantity_unit": "tokens",
    }
    doc = _doc(row, width="1d", stream="costs")
    costs = doc.source["openai"]["costs"]
    assert costs["amount"] == {"value": Decimal("12.50"), "currency": "usd"}
    assert costs["line_item"] == "gpt-4o-2024-08-06, input" and costs["quantity_unit"] == "tokens"
    same = _doc({**row, "amount": {"value": Decimal("12.5"), "currency": "usd"}}, width="1d", stream="costs")
    assert same.hash == doc.hash


def test_names_are_added_when_known():
    names = Names(projects={"proj_a": "Search"}, api_keys={"key_a": "prod-key"}, users={})
    base = _doc(names=names).source["openai"]["base"]
    assert base["project_name"] == "Search" and base["api_key_name"] == "prod-key"
    assert "user_email" not in base
