"""Imports run one way: from the CLI down to errors/paths/atomic. This test reads the code (AST only,
nothing is imported) and fails on an import that goes up or sideways, on a cycle, and on an import
placed inside a function to hide one.

The layer table below is the map of the code base: one line per package, what it may import besides
its own modules. A new package or top-level module needs a line here; a new import direction needs a
reason good enough to change this table in review.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("appliance", "provisioning")

# The bottom layer: every package may import these, and they import nothing of the project (except
# ``appliance.versions``, which reads ``appliance.__version__``).
BASE = ("appliance", "appliance.errors", "appliance.paths", "appliance.atomic", "appliance.versions")

# package -> what it may import besides itself and BASE. Listed from the top down.
LAYERS: dict[str, tuple[str, ...]] = {
    "appliance.cli": (
        "appliance.tui",
        "appliance.client",
        "appliance.service",
        "appliance.bench_runner",
        "provisioning",
        "appliance.models",
        "appliance.generation",
        "appliance.config",
        "appliance.engine",
        "appliance.bmodel",
        "appliance.compile",
    ),
    "appliance.tui": ("appliance.client", "appliance.generation.types"),
    # the service's clients (httpx) and the private `llm-tpu serve` child; no aiohttp, no model code
    "appliance.client": ("appliance.generation.types", "appliance.config.schema"),
    # /api/status shows the live ION heaps through a probe that `llm-tpu serve` passes in from provisioning
    "appliance.service": ("appliance.models", "appliance.generation", "appliance.config"),
    "appliance.bench_runner": ("appliance.generation",),
    "provisioning": ("appliance.models", "appliance.config", "appliance.bmodel"),
    # the bmodel compiler: writes MLIR, drives the vendor tools; a GGUF source goes through models
    "appliance.compile": ("appliance.models",),
    # the loader turns a config `model:` section into a running generator
    "appliance.models": ("appliance.generation", "appliance.engine", "appliance.bmodel", "appliance.config"),
    "appliance.generation": ("appliance.engine", "appliance.config"),
    "appliance.config": ("appliance.engine.options",),
    "appliance.engine": ("appliance.bmodel",),
    "appliance.bmodel": (),
    "appliance.versions": (),
    "appliance.atomic": (),
    "appliance.errors": (),
    "appliance.paths": (),
    "appliance": (),  # the package itself: __version__ only
}

# Imports inside a function are for heavy or optional third-party stacks (torch, transformers, safetensors,
# sophon.sail, systemd, textual), never for the project's own modules, except these, which exist to keep
# such a stack out of commands that do not need it.
LAZY_PROJECT_IMPORTS: dict[str, str] = {
    "appliance.tui": "Textual: only the full-screen chat needs it",
    "appliance.service.server": "aiohttp and the systemd glue: only `llm-tpu serve` needs them",
}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    lazy: bool  # inside a function body
    type_only: bool  # under `if TYPE_CHECKING:`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, lazy, type_only)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    yield Import(name, sub if sub in modules else base, child.lineno, lazy, type_only)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            else:
                yield from visit(child, lazy, type_only)

    yield from visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)


def _within(module: str, prefix: str) -> bool:
    # "appliance" in a list means the package module itself, not everything under it.
    return module == prefix or (prefix != "appliance" and module.startswith(prefix + "."))


def layer_of(module: str) -> str | None:
    matches = [key for key in LAYERS if _within(module, key)]
    return max(matches, key=len) if matches else None


@functools.cache
def _project_imports() -> tuple[Import, ...]:
    modules = _modules()
    return tuple(
        imp
        for name, path in modules.items()
        for imp in _imports(name, path, modules)
        if imp.target.split(".")[0] in PACKAGES
    )


def test_every_module_has_a_layer() -> None:
    missing = sorted(name for name in _modules() if layer_of(name) is None)
    assert not missing, f"add these to LAYERS in tests/test_layers.py: {missing}"


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for imp in _project_imports():
        layer = layer_of(imp.importer)
        assert layer is not None
        allowed = (layer, *BASE, *LAYERS[layer])
        if not any(_within(imp.target, a) for a in allowed):
            wrong.append(f"{imp.importer}:{imp.line} imports {imp.target} ({layer} may import {allowed})")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_no_project_import_hidden_in_a_function() -> None:
    hidden = [
        f"{imp.importer}:{imp.line} imports {imp.target} inside a function"
        for imp in _project_imports()
        if imp.lazy and imp.target not in LAZY_PROJECT_IMPORTS
    ]
    assert not hidden, "move these imports to the top of the module:\n" + "\n".join(hidden)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for imp in _project_imports():
        if not imp.type_only and imp.target != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.target)
    done: set[str] = set()
    cycles: list[str] = []

    def walk(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(" -> ".join([*stack[stack.index(node) :], node]))
            return
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package imports its own modules from its __init__; that is not a cycle.
            if not nxt.startswith(node + "."):
                walk(nxt, stack)
        stack.pop()
        done.add(node)

    for start in sorted(graph):
        walk(start, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The checks above are only worth something if they can fail: feed them a bad module."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from appliance.cli import main\n    return main\n")
    found = list(_imports("appliance.engine.bad", bad, {"appliance.cli.main": bad}))
    assert [(i.target, i.lazy) for i in found] == [("appliance.cli.main", True)]
    layer = layer_of("appliance.engine.bad")
    assert layer == "appliance.engine"
    assert not any(_within("appliance.cli.main", a) for a in (layer, *BASE, *LAYERS[layer]))
