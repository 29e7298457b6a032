"""Pydantic v2 models of the Usage/Costs API pages.

Tolerant by design (ref ``openai-usage-api.md`` §4.6, §4.7, §4.12):

* unknown fields are never an error, and they are kept as they came (``extra="allow"``): the shaper keeps the
  numeric ones (a measure OpenAI added after this catalogue) and ignores the rest;
* integer measures may arrive as numeric strings (``"12"``) and are coerced;
* ``amount.value`` may be a JSON number or a numeric string; it is kept as :class:`~decimal.Decimal`.
  Costs pages are decoded with ``json.loads(parse_float=Decimal)`` so a JSON number keeps every digit;
* optional measures that are absent stay absent (the result is a ``TypedDict`` with ``total=False``), so
  a 2025-era response without ``input_cache_write_tokens`` is not reported as 0.

Results are validated by a ``TypeAdapter`` built once per stream from the catalogue.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from .catalogue import StreamSpec
from .errors import FatalApiError, RetriableApiError


class _PageBase(TypedDict):
    data: list[dict[str, Any]]
    has_more: bool


class Page(_PageBase, total=False):
    """``UsageResponse``: ``object: "page"``, ``data``, ``has_more``, ``next_page`` (ref §1.5)."""

    next_page: str | None


class _Amount(TypedDict, total=False):
    value: Decimal | None
    currency: str | None


def _result_fields(spec: StreamSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {"object": str | None}
    for dim in spec.dimensions:
        fields[dim.name] = (bool if dim.type == "boolean" else str) | None
    for measure in spec.measures:
        if "." in measure.name:
            continue  # amount.value: handled by the nested _Amount type
        fields[measure.name] = (Decimal if measure.value_type == "decimal" else int) | None
    for attr in spec.attributes:
        if "." not in attr:
            fields[attr] = str | None
    if spec.is_costs:
        fields["amount"] = _Amount | None
    return fields


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _page_adapter(spec: StreamSpec) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(spec.name)
    if adapter is None:
        adapter = _ADAPTERS[spec.name] = _build_adapter(spec.name, spec)
    return adapter


def _build_adapter(stream: str, spec: StreamSpec) -> TypeAdapter[Any]:
    # Built at run time from the catalogue, so mypy cannot follow these TypedDicts.
    make: Any = TypedDict
    list_of: Any = list
    result_td = make(f"{stream}_result", _result_fields(spec), total=False)
    result_td.__pydantic_config__ = ConfigDict(extra="allow")  # unknown fields kept, see the module docstring
    bucket_td = make(f"{stream}_bucket", {"start_time": int, "end_time": int, "results": list_of[result_td]})
    page_td = make(
        f"{stream}_page", {"data": list_of[bucket_td], "has_more": bool, "next_page": str | None}, total=False
    )
    return TypeAdapter(page_td)


def parse_page(spec: StreamSpec, body: bytes) -> Page:
    """Parse one page of ``spec``'s endpoint.

    Args:
        spec: the stream whose endpoint answered.
        body: the raw response body.

    Returns:
        The page; each bucket's ``results`` holds the fields the catalogue knows, coerced, and any unknown ones
        as they came (numbers, strings, objects).

    Raises:
        RetriableApiError: the body is not valid JSON (a truncated or HTML error body).
        FatalApiError: the JSON does not have the page shape; the message says which field is wrong
            (never the body, which could be large).

    Example::

        {"object": "page", "has_more": false, "next_page": null,
         "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
                   "results": [{"object": "organization.usage.completions.result",
                                "input_tokens": 1000, "output_tokens": 500, "num_model_requests": 5}]}]}
    """
    adapter = _page_adapter(spec)
    try:
        if spec.is_costs:
            page: Any = adapter.validate_python(json.loads(body, parse_float=Decimal))
        else:
            page = adapter.validate_json(body)
    except (ValueError, ValidationError) as exc:
        if _is_json_syntax_error(exc):
            # A cut-off or non-JSON body on a 2xx is a transport fault: worth another try.
            raise RetriableApiError(f"{spec.name}: response body is not valid JSON (truncated?)") from None
        raise FatalApiError(f"{spec.name}: malformed page: {_describe(exc)}") from None
    if "data" not in page or "has_more" not in page:
        raise FatalApiError(f"{spec.name}: malformed page: 'data' and 'has_more' are required")
    return page  # type: ignore[no-any-return]


def _is_json_syntax_error(exc: Exception) -> bool:
    if isinstance(exc, ValidationError):
        return any(e["type"] == "json_invalid" for e in exc.errors(include_url=False, include_input=False))
    return isinstance(exc, ValueError)  # json.JSONDecodeError, UnicodeDecodeError


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errs = exc.errors(include_url=False, include_input=False)
        first = errs[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc}: {first['msg']} ({len(errs)} error(s))"
    return f"not valid JSON ({type(exc).__name__})"
