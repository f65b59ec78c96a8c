"""`usdcop train --experiment NAME` and train_experiment(): dataset -> model on the local instance."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from usdcop_platform.adapters.store import clear_store_cache, get_store
from usdcop_platform.commands.common import UserFacingError
from usdcop_platform.commands.training import register, train_experiment
from usdcop_platform_tests.training_synth import command_app, seed_smoke_features


def cli():
    return command_app(register)


@pytest.fixture
def settings(isolated_settings, platform_config, calendar):
    assert seed_smoke_features(isolated_settings, platform_config, calendar) == isolated_settings.resolved_mlflow_uri
    yield isolated_settings
    clear_store_cache()


def test_unknown_experiment_is_a_clear_error(isolated_settings) -> None:
    result = CliRunner().invoke(cli(), ["train", "--experiment", "nope"])
    assert result.exit_code == 1
    assert "no experiment named 'nope'" in result.output and "Traceback" not in result.output


def test_bad_budget_is_refused(isolated_settings) -> None:
    with pytest.raises(UserFacingError, match="timesteps"):
        train_experiment("smoke", isolated_settings, total_timesteps=0)


def test_missing_features_is_a_clear_error(isolated_settings) -> None:
    result = CliRunner().invoke(cli(), ["train", "--experiment", "smoke", "--timesteps", "1024", "--no-progress"])
    assert result.exit_code == 1
    assert "materialize the features" in result.output and "usdcop run -e smoke" in result.output


@pytest.mark.slow
def test_train_command_runs_dataset_to_model(settings) -> None:
    result = CliRunner().invoke(cli(), ["train", "--experiment", "smoke", "--timesteps", "1024", "--no-progress"])
    assert result.exit_code == 0, result.output
    [row] = get_store(settings.resolved_database_url).models.list(experiment="smoke")
    assert f"model {row.model_id} registered as staging, servable" in result.output
    assert row.stage == "staging" and row.servable
    # the reusable entry point returns the same model (same data, config and seed)
    out = train_experiment("smoke", settings, total_timesteps=1024)
    assert out["model_id"] == row.model_id and out["servable"] is True and out["failed_checks"] == []
    assert out["dataset_hash"] and out["mlflow_run_id"] and set(out["rows"]) == {"train", "val", "test"}
    assert (settings.resolved_dagster_home).is_dir()
