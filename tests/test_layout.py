"""The architecture of DESIGN.md, checked: layers, import rules, no cycles, the public face.

Only module-level imports count (not those under ``if TYPE_CHECKING:``, nor those
inside functions, which are how a higher layer may hand itself to a lower one).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import tidings

PACKAGE = Path(tidings.__file__).parent

#: Modules every layer may use: the error classes, counters, codecs, small helpers.
SHARED = ("tidings.errors", "tidings._stats", "tidings._util", "tidings.protocols")
#: What each layer may import from tidings (itself included).
RULES = {
    "tidings.policies": ("tidings.policies",),
    "tidings.actors": ("tidings.actors", "tidings.policies", "tidings.brokers.base", *SHARED),
    "tidings.supervisors": (
        "tidings.supervisors",
        "tidings.policies",
        "tidings.brokers.base",
        *SHARED,
    ),
    "tidings.brokers": ("tidings.brokers", "tidings.policies", "tidings.errors", "tidings._util"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Absolute names of what a module imports at import time."""
    tree = ast.parse(path.read_text())
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                prefix = f"{base}.{node.module}" if node.module else base
            else:
                prefix = node.module or ""
            found.add(prefix)
            # "from . import x" / "from .pkg import module": the modules themselves
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: top_level_imports(path) for name, path in MODULES.items()}


def ours(name: str) -> str | None:
    """The tidings module an import refers to, if it is one of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_layer_imports_only_what_it_may(module: str) -> None:
    layer = next((layer for layer in RULES if module.startswith(layer)), None)
    if layer is None:
        return  # the facades compose everything
    for imported in IMPORTS[module]:
        target = ours(imported)
        if target is None:
            if layer == "tidings.policies":
                root = imported.partition(".")[0]
                assert root in sys.stdlib_module_names or root == "__future__", (
                    f"{module} imports {imported}: policies use the standard library only"
                )
            continue
        assert target.startswith(RULES[layer]), f"{module} may not import {target}"


def test_actors_and_supervisors_never_import_each_other() -> None:
    for module, imported in IMPORTS.items():
        targets = {ours(name) for name in imported} - {None}
        if module.startswith("tidings.actors"):
            assert not any(t.startswith("tidings.supervisors") for t in targets if t), module
        if module.startswith("tidings.supervisors"):
            assert not any(t.startswith("tidings.actors") for t in targets if t), module


def test_no_import_cycles() -> None:
    graph = {
        module: {t for t in (ours(name) for name in imported) if t and t != module}
        for module, imported in IMPORTS.items()
    }
    # A package's __init__ importing its own children is how packages work.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module or not t.startswith(module + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module)


@pytest.mark.parametrize("name", tidings.__all__)
def test_exports_show_the_public_module(name: str) -> None:
    obj = getattr(tidings, name)
    assert getattr(obj, "__module__", "tidings") == "tidings", f"tidings.{name}"


@pytest.mark.parametrize(
    "name", [n for n in tidings.__all__ if isinstance(getattr(tidings, n), type)]
)
def test_exported_classes_keep_their_type_hints(name: str) -> None:
    """Moving ``__module__`` must not break typing tools that resolve annotations."""
    import typing

    typing.get_type_hints(getattr(tidings, name))
