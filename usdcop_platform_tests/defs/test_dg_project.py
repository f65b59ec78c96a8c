"""The dg CLI sees the same code location as `dagster dev` and the deployment, and `dg check defs` passes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dg_targets_the_deployed_entry_module() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    entry = workspace["load_from"][0]["python_module"]["module_name"]
    assert tool["dg"]["directory_type"] == "project"
    assert tool["dg"]["project"]["code_location_target_module"] == tool["dagster"]["module_name"] == entry
    assert tool["dg"]["project"]["code_location_name"] == tool["dagster"]["code_location_name"]


def test_dg_check_defs_passes(tmp_path: Path) -> None:
    dg = Path(sys.executable).parent / "dg"
    assert dg.exists(), "the dg CLI is missing: pip install -e '.[test]' (dagster-dg-cli)"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "USDCOP_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([str(dg), "check", "defs", "--use-active-venv"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr
