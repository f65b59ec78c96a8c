"""`usdcop config validate` and `usdcop --help`: clear output, exit codes, no traceback wall."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from usdcop_platform.cli import app
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("config", "db", "demo", "bench", "ingest", "train", "backtest", "serve", "replay"):
        assert command in result.output


def test_config_validate_ok() -> None:
    result = runner.invoke(app, ["config", "validate", "--config-dir", str(DEFAULT_CONFIG_DIR)])
    assert result.exit_code == 0, result.output
    assert "config OK" in result.output and "experiment smoke" in result.output


def test_config_validate_names_file_key_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    (cfg / "mlops.yaml").write_text((cfg / "mlops.yaml").read_text().replace("min_confidence: 0.60", "min_confidence: high"))
    result = runner.invoke(app, ["config", "validate", "--config-dir", str(cfg)])
    assert result.exit_code == 1
    assert "mlops.yaml: risk.min_confidence:" in result.output
    assert "Traceback" not in result.output
