"""The package's import graph has no cycle.

Every module of ``usage_collector`` is parsed with :mod:`ast`; every import counts, wherever it stands: at module
level, inside a function, or under ``if TYPE_CHECKING:``. ``from pkg import name`` imports ``pkg.name`` when that
is a submodule, else ``pkg``. The implicit import of a parent package's ``__init__`` (Python runs
``usage_collector/sinks/__init__.py`` before ``usage_collector/sinks/base.py``) is not an edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import usage_collector

PACKAGE = "usage_collector"
ROOT = Path(usage_collector.__file__).resolve().parent


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # path:line
    kind: str  # "module", "function" or "type-checking"


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((package, *parts))] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it stands: ``module``, ``function`` or ``type-checking``."""

    def walk(node: ast.AST, kind: str) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, kind
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, "type-checking" if kind == "type-checking" else "function")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                yield from walk(child, kind)

    return walk(tree, "module")


def import_graph(mods: Mapping[str, Path], package: str = PACKAGE) -> list[Edge]:
    """The import edges between modules of the package."""
    edges = []
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node, kind in _imports(tree):
            where = f"{path.relative_to(ROOT.parent) if path.is_relative_to(ROOT.parent) else path}:{node.lineno}"
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    # `import a.b.c` binds `a` but names `a.b.c`: the edge goes to the deepest module of ours
                    parts = alias.name.split(".")
                    found = next(
                        (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in mods), None
                    )
                    if found:
                        targets.append(found)
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                if origin != package and not origin.startswith(package + "."):
                    continue
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    targets.append(sub if sub in mods else origin)
            for target in targets:
                if target in mods and target != name:
                    edges.append(Edge(name, target, where, kind))
    return edges


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (each holds at least one cycle), sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def describe(component: list[str], edges: Iterable[Edge]) -> str:
    inside = sorted((e for e in edges if e.source in component and e.target in component), key=lambda e: e.where)
    lines = [" <-> ".join(component)]
    lines += [f"    {e.source} -> {e.target}  ({e.where}, {e.kind})" for e in inside]
    return "\n".join(lines)


def test_the_package_imports_have_no_cycle():
    edges = import_graph(modules())
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(describe(c, edges) for c in found)


def test_the_graph_sees_module_function_local_and_type_checking_imports():
    """The walker finds each kind of import, so the test above can fail."""
    kinds = {(e.source, e.target): e.kind for e in import_graph(modules())}
    assert kinds[("usage_collector.elastic.sink", "usage_collector.sinks.base")] == "module"
    assert kinds[("usage_collector.sinks", "usage_collector.elastic.sink")] == "function"
    assert kinds[("usage_collector.elastic.objects", "usage_collector.config")] == "type-checking"
    assert kinds[("usage_collector.simulator.truth", "usage_collector.simulator.prices")] == "module"  # from . import
    # the implicit import of a parent package is no edge: elastic.sink does not import usage_collector.sinks
    assert ("usage_collector.elastic.sink", "usage_collector.sinks") not in kinds


def test_cycles_are_found_and_named(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import B\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.b import B\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import sub\n")  # sub -> b, not d: no cycle through d
    mods = modules(pkg, "pkg")
    edges = import_graph(mods, "pkg")
    assert {(e.source, e.target, e.kind) for e in edges} == {
        ("pkg.sub", "pkg.sub.b", "module"),
        ("pkg.a", "pkg.sub.b", "type-checking"),
        ("pkg.sub.b", "pkg.c", "function"),
        ("pkg.c", "pkg.a", "module"),
        ("pkg.d", "pkg.sub", "module"),
    }
    assert cycles(edges) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert describe(["pkg.a", "pkg.c", "pkg.sub.b"], edges).splitlines()[0] == "pkg.a <-> pkg.c <-> pkg.sub.b"
