"""House rules of the source tree: which package holds what, and which way imports run.

`handlers/` holds the operation modules (one per tag of the contract) and what they alone use to
shape answers; `server/` the machinery that serves them. Imports run
handlers -> connectors -> persistence and handlers -> server; server never imports a handler,
persistence imports nothing above it, and no module takes part in an import circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from server.app import API_SPEC, ROOT_SPEC, load_spec

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("handlers", "server", "persistence", "connectors")
# What each package may import of the others (never itself listed: a package imports its own modules).
ALLOWED = {
    "handlers": {"server", "connectors", "persistence"},
    "server": {"connectors", "persistence"},
    "connectors": {"persistence"},
    "persistence": set(),
}
SHAPING_MODULES = {"views", "catalog_cursor", "keyset_cursor"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every first-party module `path` imports, at module level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


MODULES = _modules()
GRAPH = {name: {imported for imported in _imports(path) if imported in MODULES} for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    """A module imports only from its own package and the packages below it."""
    package = module.split(".")[0]
    wrong = sorted(name for name in GRAPH[module]
                   if name.split(".")[0] != package and name.split(".")[0] not in ALLOWED[package])
    assert wrong == [], f"{module} imports {wrong}"


def test_no_import_circles():
    """No module reaches itself through its imports (lazy imports inside functions included)."""
    circles = []
    for start in GRAPH:
        seen, stack = set(), [(start, (start,))]
        while stack:
            node, trail = stack.pop()
            for nxt in GRAPH[node]:
                if nxt == start:
                    circles.append(" -> ".join(trail + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + (nxt,)))
    assert circles == []


def test_handlers_holds_only_the_operation_modules():
    """handlers/ = one module per tag of the contracts, plus the modules that shape their answers."""
    tags = {op["tags"][0].replace("-", "_")
            for spec in (load_spec(API_SPEC), load_spec(ROOT_SPEC))
            for item in spec["paths"].values() for method, op in item.items() if isinstance(op, dict) and "tags" in op}
    present = {path.stem for path in (ROOT / "handlers").glob("*.py")} - {"__init__"}
    assert present - SHAPING_MODULES == tags

