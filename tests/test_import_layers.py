"""The package's import order, read from the source with ``ast`` (nothing is imported).

The layers, lowest first: ``einspace.blocks`` <- core (``einspace``) <- ``einspace.tasks`` <-
``einspace.search`` <- ``einspace.export`` <- the command line.  A module may import its own layer
and the layers below it, never one above: that is what lets a layer be read, tested and reused
without the ones above it.

What counts as an import:

* the layer rule counts every import statement wherever it stands (module level, inside a function,
  under ``if TYPE_CHECKING:``): a lazy import is still a dependency, only a deferred one;
* the cycle check counts the imports that run when the module is imported (module level, outside
  ``if TYPE_CHECKING:``): an import inside a function runs after every module it names has finished
  loading, so it cannot take part in a circular import.

An import edge goes to the most specific module named: ``from einspace.blocks import registry``
is an edge to ``einspace.blocks.registry``, ``from einspace.blocks import Terminal`` one to the
package ``einspace.blocks`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("blocks", "core", "tasks", "search", "export", "cli")
#: Modules of the command-line layer: the entry point and ``python -m einspace``, and each
#: package's argparse subcommand module, which only the entry point may import.
CLI_MODULES = frozenset(
    {"einspace.cli", "einspace.__main__", "einspace.search.commands", "einspace.export.command"}
)
PACKAGE_LAYERS = {
    "einspace.blocks": "blocks",
    "einspace.tasks": "tasks",
    "einspace.search": "search",
    "einspace.export": "export",
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it stands, and whether it runs at import time."""

    source: str
    target: str
    line: int
    at_import_time: bool


#: The folder of each top-level package (pyproject's ``package-dir`` mapping); subpackages are
#: the folders below them that hold an ``__init__.py``.
PACKAGE_ROOTS = {
    "einspace": ROOT / "einspace",
    "einspace.blocks": ROOT / "blocks",
    "einspace.search": ROOT / "search",
    "einspace.tasks": ROOT / "tasks",
}


def package_folders() -> dict[str, Path]:
    """Every package and subpackage of the distribution, by dotted name, and its folder."""
    folders = {}
    for package, root in PACKAGE_ROOTS.items():
        for init in sorted(root.rglob("__init__.py")):
            folders[".".join((package, *init.parent.relative_to(root).parts))] = init.parent
    return folders


def module_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (``__init__`` names the package)."""
    modules = {}
    for package, folder in package_folders().items():
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def layer_of(module: str) -> str:
    if module in CLI_MODULES:
        return "cli"
    for package, layer in PACKAGE_LAYERS.items():
        if module == package or module.startswith(package + "."):
            return layer
    return "core"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, at_import_time: bool):
    """Yield ``(import node, runs at import time)`` for every import below ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, at_import_time
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), False)
            for statement in child.orelse:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), at_import_time)
        else:
            yield from _walk(child, at_import_time)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """The package-internal imports of one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node, at_import_time in _walk(tree, True):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve(module, path.stem == "__init__", node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append(Import(module, target, node.lineno, at_import_time))
    return found


def all_imports() -> list[Import]:
    files = module_files()
    known = set(files)
    return [found for module, path in files.items() for found in imports_of(module, path, known)]


def test_every_package_module_is_scanned():
    assert "einspace.export" in package_folders()
    modules = module_files()
    assert {"einspace.cli", "einspace.blocks.registry", "einspace.tasks.trainer",
            "einspace.search.engine", "einspace.export.pipeline"} <= set(modules)
    assert {layer_of(module) for module in modules} == set(LAYERS)


def test_no_module_imports_a_layer_above_its_own():
    files = module_files()
    against = [
        f"{found.source} ({layer_of(found.source)}) imports {found.target} "
        f"({layer_of(found.target)}) at {files[found.source].relative_to(ROOT)}:{found.line}"
        for found in all_imports()
        if LAYERS.index(layer_of(found.target)) > LAYERS.index(layer_of(found.source))
    ]
    assert not against, "imports against the order " + " <- ".join(LAYERS) + ":\n" + "\n".join(
        against
    )


def test_no_import_cycles_among_modules():
    graph = nx.DiGraph()
    graph.add_nodes_from(module_files())
    graph.add_edges_from(
        (found.source, found.target) for found in all_imports() if found.at_import_time
    )
    cycles = [" -> ".join(cycle + cycle[:1]) for cycle in nx.simple_cycles(graph)]
    assert not cycles, "import cycles at import time:\n" + "\n".join(sorted(cycles))


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("einspace.blocks.gating", "from .registry import Terminal", "einspace.blocks.registry"),
        ("einspace.blocks", "from . import routing", "einspace.blocks.routing"),
        ("einspace.search.engine", "from einspace.tasks import registry",
         "einspace.tasks.registry"),
        ("einspace.export.source", "from ..blocks import Terminal", "einspace.blocks"),
        ("einspace.cli", "import einspace.search.engine as engine", "einspace.search.engine"),
    ],
)
def test_imports_resolve_to_the_most_specific_module(tmp_path, module, source, expected):
    path = tmp_path / ("__init__.py" if module == "einspace.blocks" else "m.py")
    path.write_text(source + "\n")
    (found,) = imports_of(module, path, set(module_files()))
    assert found.target == expected


def test_function_and_type_checking_imports_do_not_run_at_import_time(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "import einspace.blocks\n"
        "if TYPE_CHECKING:\n"
        "    import einspace.tasks\n"
        "def f():\n"
        "    import einspace.search\n"
    )
    found = imports_of("einspace.analysis", path, set(module_files()))
    assert [(i.target, i.at_import_time) for i in found] == [
        ("einspace.blocks", True), ("einspace.tasks", False), ("einspace.search", False)
    ]
