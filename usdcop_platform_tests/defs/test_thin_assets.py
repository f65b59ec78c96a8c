"""Assets are thin (issue 16): every function decorated as a Dagster asset, multi-asset or asset
check is at most MAX_LINES long (its body calls a use case and turns the result into events), and
no other function of defs/ is long enough to hide a use case (MAX_HELPER_LINES: metadata builders)."""

from __future__ import annotations

import ast
from pathlib import Path

import usdcop_platform

DEFS = Path(usdcop_platform.__file__).parent / "defs"
MAX_LINES = 40
MAX_HELPER_LINES = 50
DECORATORS = {"asset", "multi_asset", "asset_check", "multi_asset_check"}


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Name):
        return target.id
    return None


def _asset_functions() -> list[tuple[str, int]]:
    out = []
    for path in sorted(DEFS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                _decorator_name(d) in DECORATORS for d in node.decorator_list
            ):
                body_start = node.body[0].lineno
                out.append((f"{path.relative_to(DEFS.parent)}:{node.lineno} {node.name}", node.end_lineno - body_start + 1))
    return out


def test_every_asset_function_is_short() -> None:
    functions = _asset_functions()
    assert len(functions) >= 15  # the walk finds the graph's assets
    long = [f"{where}: {n} lines" for where, n in functions if n > MAX_LINES]
    assert not long, "\n".join(long)


def test_no_function_of_the_dagster_shell_hides_a_use_case() -> None:
    long = []
    for path in sorted(DEFS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.body[0].lineno + 1
                if n > MAX_HELPER_LINES:
                    long.append(f"{path.relative_to(DEFS.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)
