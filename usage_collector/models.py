"""Parsing the Usage/Costs API pages: decode with msgspec, then check only the fields the shaper uses.

Tolerant by design (ref ``openai-usage-api.md`` §4.6, §4.7, §4.12):

* unknown fields are never an error, and they are kept as they came: the shaper keeps the numeric ones (a
  measure OpenAI added after this catalogue) and ignores the rest;
* integer measures may arrive as numeric strings (``"12"``) and are coerced;
* ``amount.value`` may be a JSON number or a numeric string; it is kept as :class:`~decimal.Decimal`.
  Costs pages are decoded with ``float_hook=Decimal``, so a JSON number keeps every digit (no float on the way);
* optional measures that are absent stay absent, so a 2025-era response without ``input_cache_write_tokens``
  is not reported as 0.

Why not a schema library: a page is decoded by msgspec (C, as fast as ``orjson.loads``, integers of any size
kept exact) into plain dicts, and each result is checked against a table built once per stream from the
catalogue (field name -> expected Python type). A row first goes through a checker generated once per set of
keys (``_checker``: straight-line type tests, and the coercions that make an integer ``quantity`` and a text
``amount.value`` Decimals), the last one used tried first. A row it does not take is planned by its shape (its
keys and value types, and those of a costs ``amount``): the first row of a shape is looked at field by field, and
the fields it needs coerced (a numeric string, a float where an integer is expected, ...) are remembered for the
shape, so such a row costs one dict lookup of its shape, then only its own coercions, each run on its value.
The types and coercions are those of the pydantic ``TypedDict`` adapters this replaces (lax mode): a known
field with a value that cannot be coerced is a :class:`~usage_collector.errors.FatalApiError` naming the field.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, TypedDict

import msgspec

from .catalogue import StreamSpec
from .errors import FatalApiError, RetriableApiError


class _PageBase(TypedDict):
    data: list[dict[str, Any]]
    has_more: bool


class Page(_PageBase, total=False):
    """``UsageResponse``: ``object: "page"``, ``data``, ``has_more``, ``next_page`` (ref §1.5)."""

    next_page: str | None


#: Usage pages: floats stay floats (unknown float fields kept as they came). Costs: every float a Decimal.
_USAGE = msgspec.json.Decoder()
_COSTS = msgspec.json.Decoder(float_hook=Decimal)


class _Amount:
    """Marker type of the costs ``amount`` object (never the type of a decoded value)."""


class _Malformed(Exception):
    def __init__(self, where: str, msg: str) -> None:
        super().__init__(f"{where}: {msg}")
        self.where, self.msg = where, msg


def _result_types(spec: StreamSpec) -> dict[str, type]:
    """Field name -> the Python type a decoded value has when it needs no coercion (``None`` always allowed)."""
    types: dict[str, type] = {"object": str}
    for dim in spec.dimensions:
        types[dim.name] = bool if dim.type == "boolean" else str
    for measure in spec.measures:
        if "." not in measure.name:  # amount.value: inside the _Amount object
            types[measure.name] = Decimal if measure.value_type == "decimal" else int
    for attr in spec.attributes:
        if "." not in attr:
            types[attr] = str
    if spec.is_costs:
        types["amount"] = _Amount
    return types


_TYPES: dict[str, dict[str, type]] = {}
#: Per type table (one per stream, kept for the process): row shape (keys and value types, and the ``amount``
#: object's) -> what rows of that shape need: ``(field, coercion)`` pairs, none when every known field has its
#: expected type or is null. At most _MAX_SHAPES per stream; a row of a shape past those is checked field by field.
_SHAPES: dict[int, dict[tuple[Any, ...], tuple[tuple[str, Callable[[Any], Any]], ...]]] = {}
_MAX_SHAPES = 256


def _types(spec: StreamSpec) -> dict[str, type]:
    types = _TYPES.get(spec.name)
    if types is None:
        types = _TYPES[spec.name] = _result_types(spec)
    return types


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
    try:
        page: Any = (_COSTS if spec.is_costs else _USAGE).decode(body)
    except msgspec.DecodeError:
        # A cut-off or non-JSON body on a 2xx is a transport fault: worth another try.
        raise RetriableApiError(f"{spec.name}: response body is not valid JSON (truncated?)") from None
    except msgspec.MsgspecError as exc:  # a number out of range
        raise FatalApiError(f"{spec.name}: malformed page: {exc}") from None
    try:
        _check_page(page, _types(spec))
    except _Malformed as exc:
        raise FatalApiError(f"{spec.name}: malformed page: {exc}") from None
    return page  # type: ignore[no-any-return]


def _check_page(page: Any, types: dict[str, type]) -> None:
    shapes = _SHAPES.setdefault(id(types), {})
    checks = _CHECKS.setdefault(id(types), {})
    last: Callable[[Any], bool] = _no_check
    if not isinstance(page, dict):
        raise _Malformed("page", "not an object")
    if "data" not in page or "has_more" not in page:
        raise _Malformed("page", "'data' and 'has_more' are required")
    if type(page["has_more"]) is not bool:
        page["has_more"] = _coerce(bool, page["has_more"], "has_more")
    nxt = page.get("next_page")
    if nxt is not None and type(nxt) is not str:
        raise _Malformed("next_page", "not a string")
    data = page["data"]
    if type(data) is not list:
        raise _Malformed("data", "not a list")
    costs = "amount" in types
    for b, bucket in enumerate(data):
        if type(bucket) is not dict:
            raise _Malformed(f"data.{b}", "not an object")
        for key in ("start_time", "end_time"):
            value = bucket.get(key)
            if type(value) is not int:
                bucket[key] = _coerce(int, value, f"data.{b}.{key}", missing=key not in bucket)
        results = bucket.get("results")
        if type(results) is not list:
            raise _Malformed(f"data.{b}.results", "missing" if results is None else "not a list")
        for r, row in enumerate(results):
            if last(row):
                continue  # checked (and coerced) by the checker of the row before
            if type(row) is not dict:
                raise _Malformed(f"data.{b}.results.{r}", "not an object")
            keys = tuple(row)
            check = checks.get(keys)
            if check is None:
                check = _no_check
                if len(checks) < _MAX_SHAPES:
                    check = checks[keys] = _checker(keys, types)
            if check(row):
                last = check
                continue
            # the shape, flat: keys (text), then value types; a costs amount object's keys and types after them
            amount = row.get("amount") if costs else None
            if type(amount) is dict:
                shape = (*row, *map(type, row.values()), *amount, *map(type, amount.values()))
            else:
                shape = (*row, *map(type, row.values()))
            plan = shapes.get(shape)
            if plan is None:
                plan = _plan(row, types)
                if len(shapes) < _MAX_SHAPES:
                    shapes[shape] = plan
            if plan:
                for key, coerce in plan:
                    try:
                        row[key] = coerce(row[key])  # same key: no resize
                    except _Malformed as exc:
                        raise _Malformed(f"data.{b}.results.{r}.{key}{exc.where}", exc.msg) from None


#: Per type table: a row's keys -> its checker (:func:`_checker`), at most _MAX_SHAPES per stream.
_CHECKS: dict[int, dict[tuple[str, ...], Callable[[Any], bool]]] = {}
#: Rows with more keys than this are left to the shape plans (a checker is a function of one local per key).
_MAX_CHECKED_KEYS = 64


def _no_check(row: Any) -> bool:
    return False


def _checker(keys: tuple[str, ...], types: dict[str, type]) -> Callable[[Any], bool]:
    """A function that checks, and coerces, a row with these keys (in any order) as the shape plans would, for
    the values they take without question: every known field ``null`` or of its type, an integer where a Decimal
    is expected (``quantity``: ``Decimal(value)``, exact), and a costs ``amount`` as :func:`_coerce` makes it (its
    ``value`` a Decimal, from text or a number; :func:`_amount_value`). It returns ``False``, having changed
    nothing, for a row with other keys or any other value: :func:`_check_page` then plans the row by its shape
    (the other coercions of :func:`_coerce`, and the errors). Generated code: one local per key (``repr``
    literals only), tests with ``is``, no loop."""
    if len(keys) > _MAX_CHECKED_KEYS:
        return _no_check
    lines = [
        "def check(row):",
        f"    if type(row) is not dict or len(row) != {len(keys)}:",
        "        return False",
        "    try:",
        *(f"        v{n} = row[{key!r}]" for n, key in enumerate(keys)),
        "    except KeyError:",
        "        return False",
    ]
    tests: list[str] = []
    coercions: list[str] = []
    for n, key in enumerate(keys):
        want = types.get(key)
        v = f"v{n}"
        if want is None:
            continue
        if want is _Amount:
            lines.append(f"    a{n} = AMOUNT({v}) if {v} is not None else OK")
            tests.append(f"a{n} is None")
            coercions += [f"    if a{n} is not OK:", f"        {v}['value'] = a{n}"]
        elif want is Decimal:
            tests.append(f"({v} is not None and type({v}) is not Decimal and type({v}) is not int)")
            coercions += [f"    if type({v}) is int:", f"        row[{key!r}] = Decimal({v})"]
        elif want in (str, bool, int):
            tests.append(f"({v} is not None and type({v}) is not {want.__name__})")
        else:
            return _no_check
    if tests:
        lines += [f"    if {' or '.join(tests)}:", "        return False"]
    lines += [*coercions, "    return True"]
    env: dict[str, Any] = {"Decimal": Decimal, "AMOUNT": _amount_value, "OK": _OK}
    exec("\n".join(lines), env)
    check: Callable[[Any], bool] = env["check"]
    return check


def _plan(row: dict[str, Any], types: dict[str, type]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """The coercions a row needs, from its keys and value types only (so rows of one shape share them): each
    known field whose value is neither null nor of the expected type, with the function that coerces it."""
    plan: list[tuple[str, Callable[[Any], Any]]] = []
    for key, value in row.items():
        want = types.get(key)
        if want is None or value is None or type(value) is want:
            continue
        if want is _Amount and type(value) is dict and _amount_ok(value):
            continue
        if want is Decimal and type(value) is int:
            plan.append((key, Decimal))  # exact, never fails
        else:
            plan.append((key, functools.partial(_coerce, want, where="")))
    return tuple(plan)


def _amount_value(amount: Any) -> Any:
    """For a checker (:func:`_checker`): what :func:`_coerce` makes of a costs ``amount``, without changing it:
    ``_OK`` when it needs nothing, the Decimal its ``value`` becomes, ``None`` when it is not one _coerce takes."""
    if type(amount) is not dict:
        return None
    value, currency = amount.get("value"), amount.get("currency")
    if currency is not None and type(currency) is not str:
        return None
    if value is None or type(value) is Decimal:
        return _OK
    try:
        return _decimal(value, "")
    except _Malformed:
        return None


_OK: Any = object()


def _amount_ok(amount: dict[str, Any]) -> bool:
    """A costs ``amount`` that needs no coercion: ``value`` a Decimal, ``currency`` text (either may be null)."""
    value, currency = amount.get("value"), amount.get("currency")
    return (value is None or type(value) is Decimal) and (currency is None or type(currency) is str)


def _coerce(want: type, value: Any, where: str, *, missing: bool = False) -> Any:
    """``value`` as ``want`` (pydantic's lax rules), or :class:`_Malformed`."""
    if missing:
        raise _Malformed(where, "field required")
    if want is int:
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        elif (type(value) is float and value.is_integer()) or (
            type(value) is Decimal and value == value.to_integral_value()
        ):
            return int(value)
        raise _Malformed(where, "not an integer")
    if want is bool:
        if type(value) is int and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.lower()]
        raise _Malformed(where, "not a boolean")
    if want is Decimal:
        return _decimal(value, where)
    if want is _Amount:
        if not isinstance(value, dict):
            raise _Malformed(where, "not an object")
        amount = value.get("value")
        if amount is not None and type(amount) is not Decimal:
            value["value"] = _decimal(amount, where + ".value")
        currency = value.get("currency")
        if currency is not None and type(currency) is not str:
            raise _Malformed(where + ".currency", "not a string")
        return value
    raise _Malformed(where, f"not a {'string' if want is str else want.__name__}")


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True, "off": False}


def _decimal(value: Any, where: str) -> Decimal:
    if type(value) is Decimal:
        return value
    if type(value) is int or type(value) is float:
        return Decimal(value) if type(value) is int else Decimal(repr(value))
    if isinstance(value, str):
        try:
            out = Decimal(value.strip())
        except InvalidOperation:
            pass
        else:
            if out.is_finite():
                return out
    raise _Malformed(where, "not a decimal number")


# --- pages a bucket at a time -----------------------------------------------------------------------------------------

#: A page's top level, each value left undecoded (``msgspec.Raw`` views into the body, no copy).
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAWS = msgspec.json.Decoder(list[msgspec.Raw])


class LazyBuckets:
    """A page's ``data`` held as the raw JSON of each bucket, decoded and checked when it is reached.

    A 180-day costs page (the API's largest) is ~4 MB of JSON and ~15 MB decoded at once, a 7-day 1h completions
    page a few MB (``bench/p4_memory.py``, four streams at once); held this way a page costs its body and one bucket
    at a time."""

    __slots__ = ("_check", "_checks", "_decoder", "_name", "_raws", "_types")

    def __init__(self, spec: StreamSpec, raws: list[msgspec.Raw], decoder: msgspec.json.Decoder[Any]) -> None:
        self._name = spec.name
        self._raws = raws
        self._types = _types(spec)
        self._decoder = decoder
        self._checks = _CHECKS.setdefault(id(self._types), {})
        #: the checker of the last row checked (:func:`_checker`), tried first on the next bucket's rows
        self._check: Callable[[Any], bool] = _no_check

    def __len__(self) -> int:
        return len(self._raws)

    def __bool__(self) -> bool:
        return bool(self._raws)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._bucket(self._raws[index], index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, raw in enumerate(self._raws):
            yield self._bucket(raw, index)

    def _bucket(self, raw: msgspec.Raw, index: int) -> dict[str, Any]:
        """One bucket, checked as :func:`parse_page` checks it (the same error, naming the bucket's index).

        The usual bucket (integer start and end, every row taken by a checker already made for its keys) is checked
        here, without :func:`_check_page`'s per-page setup: a 1m bucket holds a few rows (P8, ~3.6). Any other is
        checked by :func:`_check_page` from its first row: a checker that took a row changed it into a row it takes
        again unchanged, so the rows checked here are not coerced twice."""
        bucket = self._decoder.decode(raw)
        if type(bucket) is dict and type(bucket.get("start_time")) is int and type(bucket.get("end_time")) is int:
            results = bucket.get("results")
            if type(results) is list:
                check = self._check
                for row in results:
                    if check(row):
                        continue
                    found = self._checks.get(tuple(row)) if type(row) is dict else None
                    if found is None or not found(row):
                        break
                    check = self._check = found
                else:
                    return bucket
        one: dict[str, Any] = {"data": [bucket], "has_more": False}
        try:
            _check_page(one, self._types)
        except _Malformed as exc:
            where = str(exc).replace("data.0", f"data.{index}", 1)
            raise FatalApiError(f"{self._name}: malformed page: {where}") from None
        return one["data"][0]  # type: ignore[no-any-return]


def parse_page_lazily(spec: StreamSpec, body: bytes, *, check: bool | None = None) -> Page:
    """:func:`parse_page` with ``data`` a :class:`LazyBuckets`: the buckets are decoded one at a time where they
    are used instead of all at once.

    The whole body is checked to be JSON here (a truncated body raises :class:`RetriableApiError` as
    :func:`parse_page` does), and a page that is not an object with a ``data`` list is handed to
    :func:`parse_page` for its error. With ``check`` (the default for costs, whose page grows with the days
    asked for: up to 180) every bucket is also decoded and checked once here, so a page with a malformed field
    fails before any of it is used, with :func:`parse_page`'s error; without it (usage pages: a fixed number
    of buckets, decoded once) a malformed bucket raises :class:`FatalApiError` where it is reached."""
    try:
        top = _TOP.decode(body)
        raws = _RAWS.decode(top["data"]) if "data" in top else None
    except msgspec.ValidationError:  # not an object, or data not a list: parse_page names what is wrong
        return parse_page(spec, body)
    except msgspec.DecodeError:
        raise RetriableApiError(f"{spec.name}: response body is not valid JSON (truncated?)") from None
    if raws is None:
        return parse_page(spec, body)
    types = _types(spec)
    decoder = _COSTS if spec.is_costs else _USAGE
    try:
        page: Any = {key: decoder.decode(value) for key, value in top.items() if key != "data"}
        page["data"] = []
        _check_page(page, types)
        if spec.is_costs if check is None else check:
            for raw in raws:  # every bucket decoded and checked once, then let go
                _check_page({"data": [decoder.decode(raw)], "has_more": False}, types)
    except (msgspec.MsgspecError, _Malformed):
        return parse_page(spec, body)  # raises with the bucket's own index in the message
    page["data"] = LazyBuckets(spec, raws, decoder)
    return page  # type: ignore[no-any-return]
