"""The import graph of the project's own code: every import of every .py file (function-local ones included),
read with ast, without importing anything. Packages never import a top-level script, configs/ imports nothing
from utils/ or models/, and the graph has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("configs", "models", "utils")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """{module name: file} of the top-level scripts and every module of the packages."""
    found = {_module_name(p): p for p in ROOT.glob("*.py")}
    for package in PACKAGES:
        found.update({_module_name(p): p for p in (ROOT / package).rglob("*.py")})
    return found


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports anywhere in its body (``from a import b``: ``a.b`` when
    that is a module, else ``a``)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolved against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:  # ``import a.b.c`` of a package: the deepest project module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def _scripts(graph) -> set[str]:
    return {name for name in graph if "." not in name and name not in PACKAGES}


def test_the_graph_is_read(graph):
    """The reader sees module-level, package and function-local imports (else the checks below prove nothing)."""
    assert {"main", "images_augment", "captions_embed", "captions_augment", "search", "evaluate"} <= _scripts(graph)
    assert "utils.preprocess.image_features" in graph["images_augment"]
    assert "utils.errors" in graph["configs.train"] or "configs.errors" in graph["configs.train"]
    assert "utils.demo.pipeline" in graph["utils.train.command"]  # a function-local import (main.py's run)


def test_no_package_module_imports_a_script(graph):
    scripts = _scripts(graph)
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items() if name.split(".")[0] in PACKAGES
                   for target in targets & scripts)
    assert wrong == []


def test_configs_import_nothing_from_utils_or_models(graph):
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items() if name.split(".")[0] == "configs"
                   for target in targets if target.split(".")[0] in ("utils", "models"))
    assert wrong == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_the_import_graph_has_no_cycle(graph):
    assert find_cycle(graph) is None
