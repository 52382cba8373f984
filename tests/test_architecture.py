"""The shape of the code (docs/architecture.md): no import cycles among qcompile's modules
(schedules/ included, as qcompile.schedules), and each room importing only what sits below it.
Imports inside functions count: a lazy import hides a cycle, it does not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"qcompile": REPO / "qcompile", "qcompile.schedules": REPO / "schedules"}

# room -> what it must never import (module prefixes; "torch" is the PyTorch package)
FORBIDDEN = {
    "qcompile.schedules": ("qcompile.deploy", "qcompile.cli", "qcompile.compiler",
                           "qcompile.frontend", "qcompile.passes", "qcompile.tuning", "torch"),
    "qcompile.tuning": ("qcompile.compiler", "qcompile.cli", "qcompile.frontend", "torch"),
    "qcompile.frontend": ("qcompile.numerics", "qcompile.passes", "qcompile.schedules",
                          "qcompile.compiler", "qcompile.cli"),
    "qcompile.passes": ("qcompile.schedules.targets", "qcompile.compiler", "qcompile.cli",
                        "torch"),
    "qcompile.numerics": ("qcompile.frontend", "qcompile.passes", "qcompile.compiler",
                          "qcompile.schedules", "qcompile.cli"),
    "qcompile.zoo": ("qcompile.frontend", "qcompile.passes", "qcompile.numerics",
                     "qcompile.compiler", "qcompile.schedules", "qcompile.cli"),
    "qcompile.compiler": ("qcompile.cli",),
    "qcompile.deploy": ("qcompile.cli", "qcompile.compiler"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set) -> set[str]:
    """The modules `name` imports (known ones, or external top-level packages)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets = set()

    def resolve(dotted: str) -> str:
        while dotted and dotted not in known and "." in dotted:
            dotted = dotted.rpartition(".")[0]
        return dotted

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(resolve(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in known else resolve(base))
    targets.discard(name)
    return targets


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles(graph):
    assert not _cycles(graph), _cycles(graph)


def _room(module: str) -> str:
    """qcompile.X (a subpackage or a top-level module), qcompile.schedules, or qcompile."""
    parts = module.split(".")
    if parts[:2] == ["qcompile", "schedules"]:
        return "qcompile.schedules"
    return ".".join(parts[:2])


def test_no_cycles_between_rooms(graph):
    """Rooms (qcompile's subpackages and top-level modules) import each other one way only:
    compiler -> tuning and tuning -> compiler would be a circle even between other modules."""
    rooms = {}
    for name, targets in graph.items():
        rooms.setdefault(_room(name), set()).update(
            _room(t) for t in targets if t in graph and _room(t) != _room(name))
    assert not _cycles(rooms), _cycles(rooms)


def test_the_graph_sees_lazy_and_relative_imports(graph):
    """The test itself can fail: a function-level import and a relative one are edges."""
    assert "qcompile.compiler.tune" in graph["qcompile"]  # lazy, inside qcompile.tune()
    assert "qcompile.numerics.contracts" in graph["qcompile.passes.lower_dynamic"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_what_sits_below_them(graph, room):
    bad = {name: sorted(t for t in targets if any(t == f or t.startswith(f + ".")
                                                  for f in FORBIDDEN[room]))
           for name, targets in graph.items() if name == room or name.startswith(room + ".")}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_schedules_never_reach_deploy_or_the_cli(graph):
    """Not even through another module."""
    seen, todo = set(), [m for m in graph if m.startswith("qcompile.schedules")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(t for t in graph.get(m, ()) if t in graph)
    assert not [m for m in seen if m.startswith(("qcompile.deploy", "qcompile.cli"))], seen
