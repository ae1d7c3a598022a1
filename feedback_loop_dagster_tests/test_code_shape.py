"""The code's shape, which ruff does not check: `lib`'s import graph has no cycle (each package can
be read, tested and moved from the bottom up; DESIGN.md section 1), and no function of the package
is longer than a screen."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import feedback_loop_dagster.lib as lib

LIB = Path(lib.__file__).parent
PACKAGE = LIB.parent
MAX_FUNCTION_LINES = 80
PREFIX = "feedback_loop_dagster.lib."


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIB).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PREFIX.rstrip("."), *parts))


MODULES = {_module_name(path) for path in LIB.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:` (annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> Iterator[str]:
    """Every module of `lib` that `path` imports when it runs, at the top or inside a function,
    absolute or relative."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = f"{base}.{node.module or ''}".rstrip(".") if node.level else node.module or ""
            # `from package import submodule` imports the submodule
            names = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        yield from (name for name in names if name.startswith(PREFIX))


def _unit(module: str) -> str:
    """The package (or loose module) of `lib` that `module` belongs to: `stats`, `settings`."""
    return module[len(PREFIX):].split(".")[0]


def _graph(unit_of) -> dict[str, set[str]]:
    """Who imports whom, between the units `unit_of` names. A package's `__init__` importing its
    own modules (to re-export them) is the package, not an edge."""
    graph: dict[str, set[str]] = {}
    for path in LIB.rglob("*.py"):
        module = _module_name(path)
        source = unit_of(module)
        inside = module + "." if path.name == "__init__.py" else None
        graph.setdefault(source, set()).update(
            unit_of(target)
            for target in _imports(path)
            if unit_of(target) != source and not (inside and target.startswith(inside))
        )
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the path that closes it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_packages_of_lib_import_each_other_without_a_cycle():
    graph = _graph(_unit)
    assert {"registry", "experiment", "operator_actions", "stats"} <= graph.keys()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_module_of_lib_imports_itself_back():
    graph = _graph(lambda module: module)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_of_the_package_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_no_test_module_imports_another_test_module():
    """Shared helpers live in fixture modules (conftest.py, factories.py, builders, demo_scenario.py)."""
    tests = Path(__file__).parent
    offenders = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(tests)}:{node.lineno} imports {node.module}")
    assert not offenders, "\n".join(offenders)
