"""`usdcop run` end to end on the synthetic source: every stage through Dagster on the local instance,
a re-run skips what is current, `--json` prints the proposal; one instance and a log file for all."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


def test_run_then_rerun_skips_everything(isolated_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from usdcop_platform.adapters.store import clear_store_cache
    from usdcop_platform.cli import app
    from usdcop_platform.commands.common import open_local_instance
    from usdcop_platform.defs.features.assets import FEATURES_KEY
    from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY

    from usdcop_platform.settings import get_settings

    monkeypatch.setenv("USDCOP_SYNTHETIC_SEED", "7")
    get_settings.cache_clear()  # importing defs above read the settings (the partitions' calendar) before the seed was set
    clear_store_cache()
    runner = CliRunner()
    first = runner.invoke(app, ["run", "-e", "smoke", "--timesteps", "512"])
    assert first.exit_code == 0, first.output + str(first.exception)
    assert "STEP_START" not in first.output and "RUN_SUCCESS" not in first.output  # Dagster logs: the file
    log = isolated_settings.state_dir / "logs" / "usdcop.log"
    assert "RUN_SUCCESS" in log.read_text()
    assert "Dagster UI" in first.output and str(isolated_settings.resolved_dagster_home) in first.output
    assert "train_seconds=" in first.output  # the PPO learning inside the model stage, as the asset measured it

    again = runner.invoke(app, ["run", "-e", "smoke", "--timesteps", "512", "--json"])
    assert again.exit_code == 0, again.output
    out = json.loads(again.output.strip().splitlines()[-1])
    assert set(out["stages"].values()) == {"skipped (current)"}
    assert out["training_seconds"] == 0.0  # nothing trained on a re-run
    assert out["recommendation"] in {"PROMOTE", "REVIEW", "REJECT"} and out["criteria"]
    assert set(out["test_metrics"]) == {"sharpe", "total_return", "max_drawdown", "turnover", "n_trades"}
    assert all(v is not None for v in out["test_metrics"].values())

    # the UI's instance shows the session partitions with their own metadata
    with open_local_instance(isolated_settings) as instance:
        assert len(instance.get_materialized_partitions(RAW_BARS_KEY)) > 100
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FEATURES_KEY, asset_partitions=["2024-03-05"]), limit=1).records[0]
        meta = rec.asset_materialization.metadata
        assert meta["dagster/row_count"].value == 60 and meta["published"].value is True
    clear_store_cache()


def test_run_unknown_experiment_and_missing_file_are_one_line_errors(isolated_settings) -> None:
    from usdcop_platform.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["run", "-e", "nope"])
    assert out.exit_code == 1 and "nope" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["run", "-e", "smoke", "--source", "file"])
    assert out.exit_code == 1 and "--bars" in out.output and "Traceback" not in out.output


def test_run_uses_the_config_dir_of_usdcop_config_dir(isolated_settings, monkeypatch, tmp_path) -> None:
    """An experiment that exists only in another config folder goes through every step."""
    import shutil

    from usdcop_platform.adapters.store import clear_store_cache
    from usdcop_platform.cli import app
    from usdcop_platform.settings import PROJECT_ROOT, get_settings

    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    smoke = (config / "experiments" / "smoke.yaml").read_text()
    (config / "experiments" / "elsewhere.yaml").write_text(smoke.replace("name: smoke", "name: elsewhere", 1))
    monkeypatch.setenv("USDCOP_CONFIG_DIR", str(config))
    monkeypatch.setenv("USDCOP_SYNTHETIC_SEED", "7")
    get_settings.cache_clear()
    clear_store_cache()
    out = CliRunner().invoke(app, ["run", "-e", "elsewhere", "--timesteps", "512", "--json"])
    assert out.exit_code == 0, out.output + str(out.exception)
    proposal = json.loads(out.output.strip().splitlines()[-1])
    assert proposal["experiment"] == "elsewhere" and proposal["model_id"].startswith("elsewhere-")
    clear_store_cache()
    get_settings.cache_clear()
