"""Duplicate YAML keys are refused, naming the file, the line and the key (issue 19)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from usdcop_platform.cli import app
from usdcop_platform.contracts.base import DuplicateKeyError, load_yaml_text, read_yaml
from usdcop_platform.contracts.errors import ConfigError
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, load_platform_config


def _config_with_appended(tmp_path: Path, name: str, extra: str) -> Path:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    path = cfg / name
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\n" + extra, encoding="utf-8")
    return cfg


def test_appended_duplicate_seeds_are_refused(tmp_path: Path) -> None:
    cfg = _config_with_appended(tmp_path, "experiments/smoke.yaml", "seeds: [7]\n")
    lines = (cfg / "experiments/smoke.yaml").read_text().splitlines()
    first, last = lines.index("seeds: [0]") + 1, len(lines)
    with pytest.raises(ConfigError) as info:
        load_platform_config(cfg)
    err = info.value
    assert err.file.endswith("smoke.yaml") and err.key == "seeds"
    assert f"line {last}" in err.reason and f"first at line {first}" in err.reason


def test_nested_and_flow_duplicates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DuplicateKeyError, match=r"'max_drawdown_pct' at line 3 \(first at line 2\)"):
        load_yaml_text("risk:\n  max_drawdown_pct: 5.0\n  max_drawdown_pct: 50.0\n")
    with pytest.raises(DuplicateKeyError, match="'a'"):
        load_yaml_text("x: {a: 1, a: 2}\n")
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(ConfigError, match=r"f\.yaml: a: duplicate key at line 3 \(first at line 1\)"):
        read_yaml(path)


def test_merge_keys_may_still_be_overridden() -> None:
    assert load_yaml_text("base: &b {p: 1, q: 2}\nd:\n  <<: *b\n  p: 3\n")["d"] == {"p": 3, "q": 2}


def test_every_shipped_config_file_is_duplicate_free() -> None:
    for path in sorted(DEFAULT_CONFIG_DIR.rglob("*.yaml")):
        read_yaml(path)


def test_config_validate_reports_the_duplicate_in_one_line(tmp_path: Path) -> None:
    cfg = _config_with_appended(tmp_path, "mlops.yaml", "risk:\n  min_confidence: 0.1\n")
    result = CliRunner().invoke(app, ["config", "validate", "--config-dir", str(cfg)])
    assert result.exit_code == 1
    assert "mlops.yaml: risk: duplicate key at line" in result.output and "Traceback" not in result.output
