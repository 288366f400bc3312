"""The architecture of DESIGN.md, checked: layers, import rules, no cycles, the public face.

Every import counts: at module level, under ``if TYPE_CHECKING:``, and inside functions
(the whole syntax tree is walked). A cycle hidden in a function is still a cycle: it
fails at run time, when the function first runs, instead of at import time, and it
couples the layers just the same. A name a lower layer only needs for its annotations
comes from a lower module (a protocol, a base class), not from the layer above.

``from P import a`` is read as ``P.a``: the module ``P.a`` when there is one
(``from . import x``, ``from .. import errors``), else a name from ``P`` itself. That
``P``'s ``__init__`` runs first is implicit, as for ``import P.a``, and is not counted.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import textwrap
import typing
from collections import deque
from collections.abc import Collection
from itertools import pairwise
from pathlib import Path

import pytest

# Found, not imported: the layout can be checked on a tree that no longer imports (the
# error may be a cycle) with ``pytest -p no:tidings --noconftest``, as the plugin and
# the conftest import tidings. Only the tests of the public face import it.
_SPEC = importlib.util.find_spec("tidings")
assert _SPEC is not None
assert _SPEC.origin is not None
PACKAGE = Path(_SPEC.origin).parent

#: The facades: they compose the layers, and no layer imports them. ``"tidings"`` is the
#: top-level ``tidings/__init__.py`` only; the others with their submodules, if any.
FACADES = (
    "tidings",
    "tidings.channels",
    "tidings.pubsub",
    "tidings.store",
    "tidings.testing",
    "tidings.asgi",
    "tidings.cli",
    "tidings._runner",
    "tidings._demo",
)
#: Modules every layer may use: the error classes, counters, codecs, small helpers.
SHARED = ("tidings.errors", "tidings.stats", "tidings._util", "tidings.protocols")
#: The types users are handed (events, iterators, channels, options): public modules,
#: so that type checkers name them by a public path, below the runtime that makes them.
PUBLIC_TYPES = ("tidings.types", "tidings.options")
#: What each layer may import from tidings (itself included; with submodules). On top
#: of these, no layer imports a facade: that is all the runtime's rule says.
RULES = {
    "tidings.policies": ("tidings.policies",),  # and the standard library only
    "tidings.actors": ("tidings.actors", "tidings.policies", "tidings.brokers.base", *SHARED),
    "tidings.supervisors": (
        "tidings.supervisors",
        "tidings.policies",
        "tidings.brokers.base",
        *SHARED,
    ),
    "tidings.brokers": ("tidings.brokers", "tidings.policies", "tidings.errors", "tidings._util"),
    "tidings._runtime": ("tidings",),  # everything but the facades
    **{
        module: (module, "tidings.actors", "tidings.policies", *SHARED)
        for module in PUBLIC_TYPES
    },
}


def within(module: str, prefix: str) -> bool:
    """Whether ``module`` is ``prefix`` or one of its submodules."""
    return module == prefix or module.startswith(prefix + ".")


def is_facade(module: str) -> bool:
    return module == "tidings" or any(within(module, f) for f in FACADES if f != "tidings")


def layer_of(module: str) -> str | None:
    return next((layer for layer in RULES if within(module, layer)), None)


def may_import(layer: str, target: str) -> bool:
    return not is_facade(target) and any(within(target, allowed) for allowed in RULES[layer])


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, package: str) -> dict[str, list[int]]:
    """Every absolute name some source imports, anywhere in it, with the lines that do.

    ``package`` is where relative imports start: the package a module is in, or the
    package itself for an ``__init__``. ``from P import a`` gives ``P.a``, which
    ``ours()`` reads as the module ``P.a`` if there is one, else as ``P``.
    """
    found: dict[str, list[int]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                prefix = f"{base}.{node.module}" if node.module else base
            else:
                prefix = node.module or ""
            names = [prefix if a.name == "*" else f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            found.setdefault(name, []).append(node.lineno)
    return {name: sorted(lines) for name, lines in found.items()}


def imports_of(path: Path) -> dict[str, list[int]]:
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    return imports_in(path.read_text(), package)


# A package shadows a module of the same name (``_runtime/`` over ``_runtime.py``), as
# it does for Python: the ``__init__.py`` files come last and win.
FILES = sorted(PACKAGE.rglob("*.py"), key=lambda path: (path.name == "__init__.py", path))
MODULES = {module_name(path): path for path in FILES}
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def ours(name: str, known: Collection[str] = MODULES) -> str | None:
    """The tidings module an import refers to, if it is one of ours: the longest known."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def missing(name: str, known: Collection[str] = MODULES) -> bool:
    """Whether an import names a tidings module that is not there (a file moved).

    ``ours()`` would read it as a name from the longest module known, often ``tidings``
    itself; two or more names past that module cannot be a name from it.
    """
    target = ours(name, known)
    return target is not None and "." in name[len(target) + 1 :]


def where(module: str, lines: list[int]) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{','.join(map(str, lines))}"


def targets(module: str) -> dict[str, str]:
    """The other tidings modules a module imports, each with where it does."""
    found: dict[str, set[int]] = {}
    for name, lines in IMPORTS[module].items():
        target = ours(name)
        if target is not None and target != module and not missing(name):
            found.setdefault(target, set()).update(lines)
    return {target: where(module, sorted(lines)) for target, lines in sorted(found.items())}


EDGES = {module: targets(module) for module in MODULES}


# The collector itself, on sources made up for it.


def test_every_import_is_collected() -> None:
    source = textwrap.dedent(
        """
        from __future__ import annotations
        import os.path
        from typing import TYPE_CHECKING

        from .sibling import Thing
        from .. import errors, __version__

        if TYPE_CHECKING:
            from ..pubsub import PubSub

        def run():
            from . import lazy
            try:
                import json
            except ImportError:
                pass

        class Box:
            async def open(self):
                from ..brokers import base
                from ..pubsub import PubSub
                from .star import *
        """
    )
    found = imports_in(source, "tidings.actors")
    assert found == {
        "__future__.annotations": [2],
        "os.path": [3],
        "typing.TYPE_CHECKING": [4],
        "tidings.actors.sibling.Thing": [6],
        "tidings.errors": [7],
        "tidings.__version__": [7],
        "tidings.pubsub.PubSub": [10, 22],  # under TYPE_CHECKING, and in a method
        "tidings.actors.lazy": [13],  # in a function
        "json": [15],  # in a try in a function
        "tidings.brokers.base": [21],  # in a method
        "tidings.actors.star": [23],
    }


def test_imports_resolve_to_the_longest_module_known() -> None:
    known = {"tidings", "tidings.errors", "tidings.actors", "tidings.actors.lazy"}
    # "from . import lazy" in tidings/actors/x.py: the module, not the package
    assert ours("tidings.actors.lazy", known) == "tidings.actors.lazy"
    # "from .. import errors": the module, not the facade tidings/__init__.py
    assert ours("tidings.errors", known) == "tidings.errors"
    # "from .. import __version__", "from . import Actor": names from the package itself
    assert ours("tidings.__version__", known) == "tidings"
    assert ours("tidings.actors.Actor", known) == "tidings.actors"
    assert ours("anyio.abc", known) is None
    # "from .moved import Thing" in tidings/actors/x.py, once moved.py has gone
    assert missing("tidings.actors.moved.Thing", known)
    assert not missing("tidings.actors.Actor", known)
    assert not missing("tidings.errors", known)
    assert not missing("tidings.actors.lazy.Thing", known)
    assert not missing("anyio.abc.TaskGroup", known)


def test_the_collector_sees_a_real_package() -> None:
    """The tree is read at all: the top-level package imports its facades."""
    assert {"tidings.channels", "tidings.pubsub", "tidings.errors"} <= set(EDGES["tidings"])
    assert set(RULES) <= {layer_of(module) for module in MODULES}


# The rules.


def test_every_import_of_ours_is_there() -> None:
    wrong = [
        f"{module} imports {name}, which is not there ({where(module, lines)})"
        for module, imported in IMPORTS.items()
        for name, lines in imported.items()
        if missing(name)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_layer_imports_only_what_it_may(module: str) -> None:
    layer = layer_of(module)
    if layer is None:
        return  # the facades compose everything
    wrong = [
        f"{module} may not import {target} ({at})"
        for target, at in EDGES[module].items()
        if not may_import(layer, target)
    ]
    if layer == "tidings.policies":
        for imported, lines in IMPORTS[module].items():
            root = imported.partition(".")[0]
            if ours(imported) is None and root not in (*sys.stdlib_module_names, "__future__"):
                wrong.append(
                    f"{module} imports {imported} ({where(module, lines)}): "
                    "policies use the standard library only"
                )
    assert not wrong, "\n".join(wrong)


def test_runtime_never_imports_a_facade() -> None:
    wrong = [
        f"{module} imports the facade {target} ({at})"
        for module in MODULES
        if within(module, "tidings._runtime")
        for target, at in EDGES[module].items()
        if is_facade(target)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_layer_imports_a_facade() -> None:
    """Implied by the rules (none lets a layer import a facade), and said outright."""
    layers = (
        "tidings.actors",
        "tidings.supervisors",
        "tidings.policies",
        "tidings.brokers",
        "tidings._runtime",
    )
    wrong = [
        f"{module} imports the facade {target} ({at})"
        for module in MODULES
        if any(within(module, layer) for layer in layers)
        for target, at in EDGES[module].items()
        if is_facade(target)
    ]
    assert not wrong, "\n".join(wrong)


def test_actors_and_supervisors_never_import_each_other() -> None:
    wrong = [
        f"{module} imports {target} ({at})"
        for module, edges in EDGES.items()
        for target, at in edges.items()
        if (within(module, "tidings.actors") and within(target, "tidings.supervisors"))
        or (within(module, "tidings.supervisors") and within(target, "tidings.actors"))
    ]
    assert not wrong, "\n".join(wrong)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of a graph, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is on no cycle")


def test_no_import_cycles() -> None:
    # A package's __init__ importing its own children is how packages work.
    graph = {
        module: {target for target in edges if not within(target, module)}
        for module, edges in EDGES.items()
    }
    cycles = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        cycle = shortest_cycle(graph, component[0])
        lines = ["import cycle: " + " -> ".join(cycle)]
        lines += [f"  {a} -> {b} ({EDGES[a][b]})" for a, b in pairwise(cycle)]
        if len(component) > len(cycle) - 1:
            lines.append(f"  (one of the cycles among {', '.join(component)})")
        cycles.append("\n".join(lines))
    assert not cycles, "\n".join(cycles)


# The public face.


def exports() -> list[str]:
    """``tidings.__all__``, read from the source."""
    for node in ast.parse((PACKAGE / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            return list(ast.literal_eval(node.value))
    raise AssertionError("tidings/__init__.py has no __all__")


@pytest.mark.parametrize("name", exports())
def test_exports_show_the_public_module(name: str) -> None:
    obj = getattr(importlib.import_module("tidings"), name)
    assert getattr(obj, "__module__", "tidings") == "tidings", f"tidings.{name}"


@pytest.mark.parametrize("name", exports())
def test_exported_classes_keep_their_type_hints(name: str) -> None:
    """Moving ``__module__`` must not break typing tools that resolve annotations."""
    obj = getattr(importlib.import_module("tidings"), name)
    if isinstance(obj, type):
        typing.get_type_hints(obj)
