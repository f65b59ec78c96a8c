"""No shell imports another shell (issue 16): defs/, api/, commands/ and bench/ each import only
core/, contracts/, adapters/, app/ and settings. Launching is not reaching into: the CLI and the
benchmarks may import another shell's entry point to start it — the Dagster definitions to launch
runs, the API's app factory to serve it — and the CLI the benchmark runner. app/ imports no shell
and no Dagster."""

from __future__ import annotations

import ast
from pathlib import Path

import usdcop_platform

PACKAGE = Path(usdcop_platform.__file__).parent
SHELLS = ("defs", "api", "commands", "bench")
# entry point -> the shells that may import it (and only it, of that shell)
ENTRY_POINTS = {
    "usdcop_platform.definitions": ("commands", "bench"),
    "usdcop_platform.api.app": ("commands", "bench"),
    "usdcop_platform.bench.harness": ("commands",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (top level or inside functions), absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "usdcop_platform" else None


def _entry_point(module: str) -> str | None:
    return next((e for e in ENTRY_POINTS if module == e or module.startswith(e + ".")), None)


def _violations(layer: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in _imports(path):
            entry = _entry_point(module)
            if entry is not None and layer in ENTRY_POINTS[entry]:
                continue
            if entry == "usdcop_platform.definitions":
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
                continue
            other = _layer(module)
            if other in SHELLS and other != layer:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_no_shell_imports_another_shell() -> None:
    found = [v for shell in SHELLS for v in _violations(shell)]
    assert not found, "\n".join(found)


def test_the_application_layer_imports_no_shell_and_no_dagster() -> None:
    found = _violations("app")
    for path in sorted((PACKAGE / "app").rglob("*.py")):
        found += [f"{path.relative_to(PACKAGE.parent)}:{line} imports {m}" for line, m in _imports(path)
                  if m == "dagster" or m.startswith("dagster.") or m.startswith("dagster_")]
    assert not found, "\n".join(found)


def test_the_walk_sees_imports_inside_functions(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from usdcop_platform.api.app import create_app\n")
    assert (2, "usdcop_platform.api.app") in _imports(src)


def test_importing_the_use_cases_loads_no_dagster() -> None:
    """Not through the adapters they import either (the MLflow adapter used to be a Dagster
    resource; now defs/resources.MlflowResource is the adapter configured for Dagster)."""
    import subprocess
    import sys

    modules = [f"usdcop_platform.app.{p.stem}" for p in sorted((PACKAGE / "app").glob("*.py")) if p.stem != "__init__"]
    modules.append("usdcop_platform.adapters.tracking")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster' or m.startswith('dagster_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
