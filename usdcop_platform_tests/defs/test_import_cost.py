"""Every Dagster run is a fresh process that imports the code location, and the live path starts
one per 5-minute bar: the location must not import the heavy ML libraries at module level (they
cost ~7 s of every run's launch before they were made lazy)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "stable_baselines3", "mlflow", "matplotlib", "great_expectations", "onnx")


def test_the_code_location_imports_no_heavy_library():
    code = ("import json, sys, usdcop_platform.definitions; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing the code location loads {loaded}: import them inside the functions that use them"
