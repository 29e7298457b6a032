"""A recursive-descent parser for the subset of Lens formulas the dashboards use.

``+ - * /``, parentheses, numbers, the aggregations of ``_AGGS`` (``sum(f)``, ``count(kql='...')``,
``sum(f, shift='7d')``) and ``cumulative_sum`` around one of them. Arithmetic becomes a tinymath tree;
every aggregation a :class:`_Call` that :mod:`.lens` turns into a column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_AGGS = {"sum", "average", "min", "max", "median", "count", "last_value", "unique_count"}
_WRAPPERS = {"cumulative_sum"}
_OPS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_@][\w.@]*)|(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<op>[-+*/(),=]))"
)


@dataclass
class _Call:
    """An aggregation (or a wrapper around one) found in a formula."""

    op: str
    field: str | None
    kwargs: dict[str, str]
    inner: _Call | None
    start: int
    end: int


Node = str | float | int | dict[str, Any] | _Call


class _Parser:
    """Recursive descent over the Lens formula subset used here: + - * /, parentheses, numbers, calls."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[tuple[str, str, int, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise ValueError(f"formula {text!r}: cannot parse at {pos}")
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind), m.start(kind), m.end(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str, int, int]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ValueError(f"formula {self.text!r}: expected {value or 'more'}")
        self.i += 1
        return tok

    def parse(self) -> tuple[Node, int, int]:
        node = self.expr()
        if self.peek() is not None:
            raise ValueError(f"formula {self.text!r}: trailing input")
        return node

    def expr(self) -> tuple[Node, int, int]:
        return self._binary(self.term, "+-")

    def term(self) -> tuple[Node, int, int]:
        return self._binary(self.factor, "*/")

    def _binary(self, sub: Callable[[], tuple[Node, int, int]], ops: str) -> tuple[Node, int, int]:
        left, start, end = sub()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in ops:
            self.take()
            right, _, end = sub()
            left = {
                "type": "function",
                "name": _OPS[tok[1]],
                "args": [left, right],
                "location": {"min": start, "max": end},
                "text": self.text[start:end],
            }
        return left, start, end

    def factor(self) -> tuple[Node, int, int]:
        kind, value, start, end = self.take()
        if kind == "num":
            return (float(value) if "." in value else int(value)), start, end
        if value == "(":
            node, _, _ = self.expr()
            _, _, _, end = self.take(")")
            return node, start, end
        if kind == "name":
            return self.call(value, start)
        raise ValueError(f"formula {self.text!r}: unexpected {value!r}")

    def call(self, name: str, start: int) -> tuple[Node, int, int]:
        if name not in _AGGS | _WRAPPERS:
            raise ValueError(f"formula {self.text!r}: unsupported function {name}")
        self.take("(")
        fld: str | None = None
        inner: _Call | None = None
        kwargs: dict[str, str] = {}
        while (tok := self.peek()) is not None and tok[1] != ")":
            if tok[1] == ",":
                self.take()
                continue
            nxt = self.toks[self.i + 1] if self.i + 1 < len(self.toks) else None
            if tok[0] == "name" and nxt is not None and nxt[1] == "=":
                self.i += 2
                kwargs[tok[1]] = self.take()[1][1:-1].replace("\\'", "'")
            elif name in _WRAPPERS:
                node, _, _ = self.factor()
                if not isinstance(node, _Call):
                    raise ValueError(f"formula {self.text!r}: {name} takes an aggregation")
                inner = node
            else:
                fld = self.take()[1]
        _, _, _, end = self.take(")")
        return _Call(name, fld, kwargs, inner, start, end), start, end
