"""Document shape and the deterministic ``_id``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.helpers import T0
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Names, Shaper, Target, shape

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
    assert src["gen_ai"]["usage"] == {"input_tokens": 100, "output_tokens": 20, "cache_read": {"input_tokens": 40}}
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


#: The group_by set of completions before api_source existed.
OLD_GROUP_BY = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")


def test_id_is_stable_across_collector_versions():
    # Changing this value orphans every document users already have: never change it casually. An optional
    # dimension added later (api_source) takes part in the _id only when it is requested.
    assert _doc(group_by=OLD_GROUP_BY).id == "LntBiBF6DmzLxAl9KTJ3GkXXMAQ"


def test_requesting_api_source_starts_a_new_series():
    assert _doc().id != _doc(group_by=OLD_GROUP_BY).id
    a = _doc({**ROW, "api_source": "agents_api"})
    b = _doc({**ROW, "api_source": "unlabeled"})
    assert a.id != b.id
    assert a.source["openai"]["completions"]["api_source"] == "agents_api"


def test_cache_measures_carry_their_otel_names_and_each_measure_is_stored_as_reported():
    row = {
        **ROW,
        "input_cache_write_tokens": 30,
        "input_cache_write_30m_tokens": 10,
        "input_cache_write_12h_tokens": 25,  # not the difference: stored as reported, never derived
    }
    src = _doc(row).source
    own = src["openai"]["completions"]
    assert own["input_cache_write_tokens"] == 30
    assert own["input_cache_write_30m_tokens"] == 10 and own["input_cache_write_12h_tokens"] == 25
    assert src["gen_ai"]["usage"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read": {"input_tokens": 40},
        "cache_creation": {"input_tokens": 30},
    }
    assert "input_uncached_tokens" not in own  # absent stays absent


def test_an_unknown_numeric_field_is_kept_under_its_own_name_and_hashed():
    shaper = Shaper(STREAMS["completions"], TGT, "1h", OLD_GROUP_BY)
    plain = shaper.row(T0, "t", "t", ROW)
    row = {
        **ROW,
        "output_reasoning_tokens": 7,
        "cost_ratio": 0.25,
        "organization_id": "org-x",
        "Bad-Name": 3,
        "input_tokens_details": {"cached": 5, "note": "x", "deep": {"n": 1}},
    }
    doc = shaper.row(T0, "t", "t", row)
    own = doc.source["openai"]["completions"]
    assert own["output_reasoning_tokens"] == 7 and own["cost_ratio"] == 0.25
    assert own["input_tokens_details"] == {"cached": 5, "deep": {"n": 1}}
    assert "organization_id" not in own and "Bad-Name" not in own
    assert doc.id == plain.id and doc.hash != plain.hash
    assert shaper.new_fields == {"output_reasoning_tokens", "cost_ratio", "input_tokens_details"}
    assert shaper.skipped_fields == {"Bad-Name"}


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


def test_the_canonical_text_of_a_decimal_in_the_hash_is_normalize_then_f_for_every_form():
    """``measure_hash`` writes a Decimal as ``format(value.normalize(), "f")``; the shortcut that returns ``str()``
    when it is already that must agree on every form: signs, zeros, trailing zeros, exponents, 28 digits and
    more, NaN and Infinity, and a context that writes a small ``e``."""
    import decimal
    import random

    from usage_collector.documents import _canon_default

    forms = [
        "0",
        "-0",
        "0.0",
        "-0.00",
        "0E+3",
        "0E-9",
        "1",
        "-1",
        "10",
        "100",
        "-2500",
        "1.0",
        "1.50",
        "0.02799",
        "25.000000",
        "123456.789",
        "1E+2",
        "1.5E-7",
        "0.000001",
        "0.0000001",
        "-0.0000010",
        "9" * 28,
        "9" * 29,
        "1" + "0" * 27,
        "1" + "0" * 28,
        "0." + "1" * 26,
        "0." + "1" * 27,
        "-" + "9" * 27,
        "12345678901234567890.12345678",
        "NaN",
        "-Infinity",
        "Infinity",
        "1e3",
        "2.50e-2",
    ]
    rng = random.Random(7)
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 32)))
        forms.append(f"{rng.choice(['', '-'])}{digits}E{rng.randint(-40, 10)}")
        cut = rng.randint(0, len(digits))
        forms.append(f"{rng.choice(['', '-'])}{digits[:cut] or '0'}.{digits[cut:] or '0'}")
    for capitals in (1, 0):
        with decimal.localcontext() as ctx:
            ctx.capitals = capitals
            for text in forms:
                value = decimal.Decimal(text)
                assert _canon_default(value) == format(value.normalize(), "f"), text


def test_a_bucket_edge_is_formatted_as_clock_iso_formats_it() -> None:
    # the shaper formats an edge's time of day itself, its day's text from clock.iso
    from usage_collector.clock import iso
    from usage_collector.documents import _iso

    edges = [0, 59, 60, 3599, 3600, 86399, 86400, -1, -86400, -86401, T0, T0 + 86399, 253402300799]
    edges += range(T0 - 2 * 86400, T0 + 2 * 86400, 59)
    assert [_iso(t) for t in edges] == [iso(t) for t in edges]
    assert _iso(T0 + 0.5) == iso(T0 + 0.5)  # type: ignore[arg-type]  # not an int: formatted by clock.iso
