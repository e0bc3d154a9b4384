"""The import graph of ``mmzoo/`` has no circle: every ``mmzoo/**/*.py`` is
read with ``ast`` (nothing is imported), and its imports become edges.

Module-level imports count (those inside ``if TYPE_CHECKING:`` do not, as
they never run); imports inside functions run late and are listed apart
(:func:`import_graph` with ``functions=True``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmzoo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], functions: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (and, with
    ``functions``, those inside its functions too)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if functions:
                found += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif isinstance(node, ast.If) and _type_checking(node):
            found += _imports(node.orelse, functions)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None) or []
                found += _imports([c for c in children if isinstance(c, ast.stmt)] +
                                  [s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body],
                                  functions)
    return found


def import_graph(functions: bool = False) -> dict[str, set[str]]:
    """module -> the ``mmzoo`` modules it imports."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, functions):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # "from mmzoo import hookspecs" imports the module mmzoo.hookspecs
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


CORE = {"mmzoo", "mmzoo.registry", "mmzoo.plugins", "mmzoo.hookspecs", "mmzoo.api", "mmzoo._sort", "mmzoo.errors"}


def test_the_graph_is_read():
    graph = import_graph()
    assert graph["mmzoo.registry"] == {"mmzoo._sort", "mmzoo.errors"}
    assert "mmzoo.hookspecs" in graph["mmzoo.plugins"]  # "from mmzoo import hookspecs"
    assert "mmzoo.testing.registries" in graph["mmzoo.testing.plugins"]
    assert "mmzoo" not in graph["mmzoo.plugins"] and "mmzoo" in import_graph(functions=True)["mmzoo.plugins"]
    assert "mmzoo.builder" not in graph["mmzoo"]  # the TYPE_CHECKING imports never run
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_circle_through_the_registry_and_discovery_even_inside_functions():
    circles = cycles(import_graph(functions=True))
    touching = [c for c in circles if set(c) & CORE or any(m.startswith("mmzoo.testing") for m in c)]
    assert not touching, f"import circles: {touching}"


def test_the_registry_is_a_passive_container():
    """It imports no discovery, builder or public API, not even inside a function."""
    assert import_graph(functions=True)["mmzoo.registry"] <= {"mmzoo._sort", "mmzoo.errors", "mmzoo.names"}


def test_no_import_circle_even_inside_functions():
    assert cycles(import_graph(functions=True)) == []
