"""The store's modules import each other without cycles, and every audit row is written by the leaf audit module."""

from __future__ import annotations

import ast
from pathlib import Path

import usdcop_platform.adapters.store as store_pkg

STORE = Path(store_pkg.__file__).parent
PREFIX = "usdcop_platform.adapters.store."


def _imports() -> dict[str, set[str]]:
    """module -> store modules it imports anywhere (module level or inside functions; TYPE_CHECKING excluded)."""
    graph: dict[str, set[str]] = {}
    for path in STORE.glob("*.py"):
        tree = ast.parse(path.read_text())
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = {node.module.removeprefix(PREFIX) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX)
                and id(node) not in type_only}
        graph[path.stem] = deps - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*trail, node, dep]
            if dep not in state and (found := visit(dep, [*trail, node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_store_modules_have_no_import_cycle() -> None:
    graph = _imports()
    assert "registry" in graph and "approvals" in graph["__init__"] | graph["store"]
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_audit_is_a_leaf_and_the_only_audit_writer() -> None:
    graph = _imports()
    assert graph["audit"] <= {"_sql", "tables", "types"}
    writers = {m for m, deps in graph.items() if "audit" in deps}
    assert {"approvals", "registry", "operations", "proposals", "api_keys"} <= writers
    for path in STORE.glob("*.py"):
        if path.stem not in ("audit", "tables"):
            assert "ApprovalAuditLog(" not in path.read_text(), f"{path.name} builds audit rows itself"
