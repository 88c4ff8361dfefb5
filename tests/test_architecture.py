"""The shape of zoo_ray's code: small modules and classes, no import cycle, no import up to
the package from below it. Read from the source with ``ast``; nothing is imported."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "zoo_ray"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 350


def _modules() -> dict[str, Path]:
    """Every module under zoo_ray/ by its dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, in functions too, but not under ``if TYPE_CHECKING:`` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                yield branch
                yield from _runtime_nodes(branch)
            continue
        yield node
        yield from _runtime_nodes(node)


def _resolve(base: str, name: str) -> str:
    """``base.name`` if that is a zoo_ray module (``from base import name``), else ``base``."""
    return f"{base}.{name}" if f"{base}.{name}" in MODULES else base


def _imports(module: str) -> list[tuple[str, int]]:
    """The zoo_ray modules ``module`` imports when it runs, with the line of each import:
    ``import``, ``from ... import`` (relative too) and ``import_module("...")`` with a
    literal name."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{node.module}" if node.module else anchor
            targets += [(_resolve(base, alias.name), node.lineno) for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_module"
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            anchor_arg = node.args[1] if len(node.args) > 1 else None
            if name.startswith(".") and getattr(anchor_arg, "id", None) == "__name__":
                name = module + name
            targets.append((name, node.lineno))
    # A name that is no zoo_ray module (an attribute, another package) counts as the
    # longest zoo_ray module it starts with, if any.
    edges = []
    for target, line in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != module:
            edges.append((target, line))
    return edges


GRAPH = {module: _imports(module) for module in MODULES}


def _oversized(module: str) -> list[str]:
    path = MODULES[module]
    text = path.read_text()
    found = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        found.append(f"module {module}: {len(text.splitlines())} lines "
                     f"(at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or node.lineno) - first + 1
            if size > MAX_CLASS_LINES:
                found.append(f"class {module}.{node.name}: {size} lines "
                             f"(at most {MAX_CLASS_LINES})")
    return found


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target, _ in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, list[tuple[str, int]]], group: set[str]) -> list[str]:
    """The shortest import path from the group's first module back to itself."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target, _ in sorted(graph[node]):
            if target == start:
                return paths[node] + [start]
            if target in group and target not in paths:
                paths[target] = paths[node] + [target]
                frontier.append(target)
    raise AssertionError(f"no cycle in {group}")


@pytest.mark.parametrize("module", list(MODULES))
def test_modules_and_classes_stay_small(module):
    offenders = _oversized(module)
    assert not offenders, "Split by concern:\n" + "\n".join(offenders)


def test_no_import_cycle_among_zoo_ray_modules():
    cycles = _cycles(GRAPH)
    assert not cycles, "Import cycles (imports inside functions count):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_no_module_below_the_package_imports_the_package_itself():
    upward = [f"{module} (line {line})" for module, edges in GRAPH.items()
              for target, line in edges if target == PACKAGE]
    assert not upward, (
        "These import zoo_ray/__init__.py; import the module that defines the name "
        "instead:\n" + "\n".join(upward))
