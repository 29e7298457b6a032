"""OpenAI's own Python SDK as the oracle of the API's shapes (``openai`` 3.57, a test-only dependency).

Every endpoint of the simulator is read across bucket widths, ``group_by`` sets and pages, and each response is
validated **strictly** (pydantic ``strict=True``) against the SDK's typed models, which are generated from OpenAI's
current spec (``openai-usage-api-2026-11.md``). Then every field those models define that the simulator never
served is compared with a short, explicit list: when OpenAI's SDK gains a field, this test says so.

Known, deliberate deviations: ``amount.value`` is sometimes a numeric string (ref §4.6, seen in production; the SDK
types it as a float), and results carry unknown extra fields (ref §4.7).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from typing import Any

import orjson
import pytest

from usage_collector.simulator import Organization, SimulatedAPI
from usage_collector.simulator.streams import STREAMS

openai = pytest.importorskip("openai", minversion="3.57")

DAY = 86400
#: Extra fields the simulator adds on purpose (ref §4.7 ``organization_id``; the undocumented-field option).
KNOWN_EXTRAS = {"organization_id", "output_reasoning_tokens"}
#: SDK model fields the simulator knowingly never serves (the SDK types them; nothing here models them).
KNOWN_UNSERVED: set[str] = set()

_MODULE = "openai.types.admin.organization"


def _response_model(stream: str) -> Any:
    mod = importlib.import_module(f"{_MODULE}.usage_{stream}_response")
    name = "Usage" + "".join(part.title() for part in stream.split("_")) + "Response"
    return getattr(mod, name)


@pytest.fixture(scope="module")
def api():
    org = Organization(seed=3, start="2026-11-01", days=2)
    return SimulatedAPI(
        org, admin_key="sk-admin-sdk", clock=lambda: org.end + 3 * DAY, undocumented_fields=True, sleep=lambda s: 0
    )


def _get(api: SimulatedAPI, path: str, params: list[tuple[str, str]]) -> Any:
    status, _, body = api.handle("GET", path, params, {"Authorization": "Bearer sk-admin-sdk"})
    assert status == 200, body
    return orjson.loads(body)


def _group_by_sets(stream: str) -> list[tuple[str, ...]]:
    gb = STREAMS[stream].group_by
    sets: list[tuple[str, ...]] = [(), *((g,) for g in gb)]
    if stream == "costs":  # user_id with project_id is refused (a 400): every other dimension together
        sets += [tuple(g for g in gb if g != "user_id"), tuple(g for g in gb if g != "project_id")]
    else:
        sets.append(gb)
    return sets


def _pages(api: SimulatedAPI, stream: str, width: str, group_by: tuple[str, ...]) -> list[Any]:
    org = api.org
    start = org.start if width != "1m" else org.start + 10 * 3600
    end = org.end if width != "1m" else start + 3 * 3600
    params = [("start_time", str(start)), ("end_time", str(end)), ("bucket_width", width), ("limit", "2")]
    params += [("group_by[]", g) for g in group_by]
    pages, cursor = [], None
    while True:
        page = _get(api, STREAMS[stream].path, params + ([("page", cursor)] if cursor else []))
        pages.append(page)
        if not page["has_more"]:
            return pages
        cursor = page["next_page"]


def _sdk_form(page: Any) -> Any:
    """The one deliberate deviation made SDK-shaped: a numeric-string ``amount.value`` becomes its number."""
    for bucket in page["data"]:
        for r in bucket["results"]:
            amount = r.get("amount")
            if amount and isinstance(amount.get("value"), str):
                float(amount["value"])  # it must be numeric
                amount["value"] = float(amount["value"])
    return page


@pytest.fixture(scope="module")
def served(api):
    """Validate every response; returns {SDK model name: fields served non-null} and the extras seen."""
    fields: dict[str, set[str]] = defaultdict(set)
    models: dict[str, Any] = {}
    extras: set[str] = set()
    pages = 0
    for stream, sdef in STREAMS.items():
        model = _response_model(stream)
        for width in sdef.widths:
            for gb in _group_by_sets(stream):
                for page in _pages(api, stream, width, gb):
                    parsed = model.model_validate(_sdk_form(page), strict=True)
                    pages += 1
                    for bucket in parsed.data:
                        for r in bucket.results:
                            assert r.object == sdef.object
                            key = f"{stream}:{type(r).__name__}"
                            models[key] = type(r)
                            fields[key] |= {f for f in type(r).model_fields if getattr(r, f) is not None}
                            extras |= set(r.model_extra or {})
    # spend controls
    admin = f"{_MODULE}"
    checks = [
        ("/v1/organization/spend_limit", f"{admin}.organization_spend_limit", "OrganizationSpendLimit", False),
        ("/v1/organization/spend_alerts", f"{admin}.organization_spend_alert", "OrganizationSpendAlert", True),
    ]
    for p in api.org.projects:
        if p.archived_at is not None:
            continue
        base = f"/v1/organization/projects/{p.id}"
        checks += [
            (f"{base}/spend_alerts", f"{admin}.projects.project_spend_alert", "ProjectSpendAlert", True),
            (f"{base}/rate_limits", f"{admin}.projects.project_rate_limit", "ProjectRateLimit", True),
        ]
        if api.org.spend_limit(p.id) is not None:
            checks.append((f"{base}/spend_limit", f"{admin}.projects.project_spend_limit", "ProjectSpendLimit", False))
    for path, module, name, is_list in checks:
        model = getattr(importlib.import_module(module), name)
        body = _get(api, path, [])
        for obj in body["data"] if is_list else [body]:
            parsed = model.model_validate(obj, strict=True)
            models[name] = model
            fields[name] |= {f for f in model.model_fields if getattr(parsed, f) is not None}
            pages += 1
    return fields, models, extras, pages


def test_every_response_validates_strictly_against_the_sdk_models(served):
    _, models, extras, pages = served
    assert pages > 300
    assert extras <= KNOWN_EXTRAS, f"unexpected extra fields: {extras - KNOWN_EXTRAS}"
    assert {k.split(":")[0] for k in models if ":" in k} == set(STREAMS)


def test_every_sdk_field_is_served_except_a_short_known_list(served):
    fields, models, _, _ = served
    unserved = {f"{key}.{f}" for key, model in models.items() for f in model.model_fields if f not in fields[key]}
    assert unserved == KNOWN_UNSERVED, (
        "the simulator does not serve these SDK fields (a field OpenAI added? model it, or list it as known): "
        + ", ".join(sorted(unserved - KNOWN_UNSERVED))
        + (f"; now served: {sorted(KNOWN_UNSERVED - unserved)}" if KNOWN_UNSERVED - unserved else "")
    )


def test_the_sdk_knows_every_endpoint_and_group_by_the_simulator_serves():
    params = importlib.import_module(f"{_MODULE}.usage_costs_params")
    assert "line_items" in params.UsageCostsParams.__annotations__
    for stream, sdef in STREAMS.items():
        mod = importlib.import_module(f"{_MODULE}.usage_{stream}_params")
        cls = next(v for k, v in vars(mod).items() if k.endswith("Params") and k.startswith("Usage"))
        text = repr(cls.__annotations__["group_by"])
        assert all(f"'{g}'" in text for g in sdef.group_by), (stream, text)
