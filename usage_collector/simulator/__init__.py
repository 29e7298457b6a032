"""A simulated OpenAI organization: Usage API, Costs API and Admin list endpoints, with ground truth.

An independent model of OpenAI's API (it shares no code with the collector it is used to test). Typical use::

    from usage_collector.simulator import Organization, SimulatedAPI, FaultPlan, serve

    org = Organization(seed=7, start="2025-03-01", days=30)
    api = SimulatedAPI(org, clock=lambda: org.end + 3 * 86400, faults=FaultPlan(seed=1, rate_limit=0.05))
    with serve(api) as base_url:       # http://127.0.0.1:PORT/v1
        ...                            # point the collector at base_url with api.admin_key
    org.truth("completions", org.start, org.end, "1d", ["project_id", "model"])   # the final values

Every modelled behaviour cites ``shared/reference/openai-usage-api.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562), so ``usage-collector --help`` and every other command that only registers
# ``simulate`` do not load the whole simulator.
_WHERE = {
    "DEFAULT_ADMIN_KEY": "api",
    "DEFAULT_COSTS_REVISION_HORIZON": "api",
    "DEFAULT_REVISION_HORIZON": "api",
    "ApiError": "api",
    "RequestCounters": "api",
    "SimulatedAPI": "api",
    "FaultKind": "faults",
    "FaultPlan": "faults",
    "ApiKey": "org",
    "Bucket": "org",
    "Organization": "org",
    "Project": "org",
    "ServiceAccount": "org",
    "User": "org",
    "VectorStore": "org",
    "SimServer": "server",
    "serve": "server",
    "STREAMS": "streams",
    "StreamDef": "streams",
    "revision_factor": "truth",
}

if TYPE_CHECKING:
    from .api import (
        DEFAULT_ADMIN_KEY,
        DEFAULT_COSTS_REVISION_HORIZON,
        DEFAULT_REVISION_HORIZON,
        ApiError,
        RequestCounters,
        SimulatedAPI,
    )
    from .faults import FaultKind, FaultPlan
    from .org import ApiKey, Bucket, Organization, Project, ServiceAccount, User, VectorStore
    from .server import SimServer, serve
    from .streams import STREAMS, StreamDef
    from .truth import revision_factor


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_ADMIN_KEY",
    "DEFAULT_COSTS_REVISION_HORIZON",
    "DEFAULT_REVISION_HORIZON",
    "STREAMS",
    "ApiError",
    "ApiKey",
    "Bucket",
    "FaultKind",
    "FaultPlan",
    "Organization",
    "Project",
    "RequestCounters",
    "ServiceAccount",
    "SimServer",
    "SimulatedAPI",
    "StreamDef",
    "User",
    "VectorStore",
    "revision_factor",
    "serve",
]
