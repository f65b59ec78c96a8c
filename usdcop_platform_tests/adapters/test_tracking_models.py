"""MLflow 3 objects of a policy (real MLflow on a temp sqlite store): the LoggedModel with its onnx
flavour and the packaged bytes, the registry version pointing at it, exact aliases, backtest
metrics on the model's run, and the links between MLflow and Dagster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.onnx
import numpy as np
import onnxruntime as ort
import pytest

from usdcop_platform.adapters.tracking import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    MODEL_VERSIONS_TAG,
    MlflowTracking,
    backtest_dataset,
    backtest_metrics,
    logged_model_name,
)
from usdcop_platform.bench.backtest import mlp_policy_onnx
from usdcop_platform.contracts.base import file_hash
from usdcop_platform.core.onnx_policy import INPUT_NAME
from usdcop_platform.settings import Settings
from usdcop_platform_tests.training_synth import fresh_mlflow_uri

N_FEATURES = 5
VIEW = "workflowType=machine_learning"  # links open MLflow's "Model training" navigation


@pytest.fixture
def tracking(tmp_path: Path) -> MlflowTracking:
    return MlflowTracking(
        tracking_uri=fresh_mlflow_uri(tmp_path), artifact_root=str(tmp_path / "art"),
        ui_url="http://mlflow.example:5000", dagster_ui_url="http://dagster.example:3000/",
    )


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(N_FEATURES, 8)), rng.normal(size=8)), (rng.normal(size=(8, 3)), rng.normal(size=3))]
    return mlp_policy_onnx(tmp_path / "policy.onnx", layers, {"model_id": "smoke-1.0.0-abc", "feature_order_hash": "f"})


def _report(**over) -> dict:
    report = {
        "experiment": "smoke", "period_source": "test_split", "test_start": "2024-05-01", "test_end": "2024-06-28",
        "n_bars": 2400, "role": "vote", "backtest_hash": "bh1", "lineage": {"dataset_hash": "d" * 64},
        "metrics": {"sharpe": 1.25, "total_return": 0.031, "max_drawdown": 0.012, "turnover": 14.0, "trades": 7,
                    "psr": 0.91, "dsr": 0.62, "n_trials": 4, "trial_variance_source": "ledger",
                    "trial_family": {"n": 4}, "skew": float("nan"), "flag": True},
        "live_rule": {"sharpe": 0.8, "trades": 5, "fill": "open 1 bar(s) after the signal"},
        "walk_forward": {"aggregate": {"sharpe_mean": 0.7}, "folds": []},
        "overfitting": {"pbo": {"pbo": 0.25}, "spa": {"pvalue": None}},
    }
    return {**report, **over}


def test_the_policy_is_a_logged_model_with_its_onnx_flavour_and_bytes(tracking, policy_file, tmp_path) -> None:
    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    with tracking.run("smoke", "smoke-1.0.0-abc", dagster_run_id="0123456789abcdef") as run:
        logged = run.log_onnx_model(
            policy_file, tracking.registered_model_name("smoke"), alias=CHALLENGER_ALIAS, name="smoke-1.0.0-abc",
            tags={"model_id": "smoke-1.0.0-abc"}, metrics={"selected/val_reward": 0.5}, step=1024,
        )
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before  # the scoped global is restored
    client = tracking.client()

    model = client.get_logged_model(logged.model_id)
    assert str(model.status) == "READY" and model.source_run_id == run.run_id
    assert model.name == logged_model_name("smoke-1.0.0-abc") == "smoke-1_0_0-abc"
    assert model.tags["model_id"] == "smoke-1.0.0-abc"
    assert [(m.key, m.value, m.step) for m in model.metrics] == [("selected/val_reward", 0.5, 1024)]
    # the "Models" tab of the experiment lists it; the run names it as its output
    assert [m.model_id for m in client.search_logged_models([run.experiment_id])] == [logged.model_id]
    assert [(o.model_id, o.step) for o in client.get_run(run.run_id).outputs.model_outputs] == [(logged.model_id, 1024)]
    assert logged.url == (
        f"http://mlflow.example:5000/#/experiments/{run.experiment_id}/models/{logged.model_id}?workflowType=machine_learning"
    )

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp_path / "dl")))
    assert file_hash(local / "model.onnx") == file_hash(policy_file)  # the packaged bytes, not a re-export
    mlmodel = (local / "MLmodel").read_text()
    assert "onnx:" in mlmodel and f"model_id: {logged.model_id}" in mlmodel and INPUT_NAME in mlmodel
    obs = np.random.default_rng(1).normal(size=(64, N_FEATURES)).astype(np.float32)
    loaded = ort.InferenceSession(mlflow.onnx.load_model(str(local)).SerializeToString())
    original = ort.InferenceSession(str(policy_file))
    for got, want in zip(loaded.run(None, {INPUT_NAME: obs}), original.run(None, {INPUT_NAME: obs})):
        np.testing.assert_array_equal(got, want)

    name = tracking.registered_model_name("smoke")
    mv = client.get_model_version(name, logged.version)
    assert mv.source == f"models:/{logged.model_id}" and mv.run_id == run.run_id
    assert json.loads(model.tags[MODEL_VERSIONS_TAG]) == [{"name": name, "version": logged.version}]
    assert {k: str(v) for k, v in client.get_registered_model(name).aliases.items()} == {CHALLENGER_ALIAS: logged.version}


def test_aliases_are_exactly_champion_and_challenger() -> None:
    from usdcop_platform.app import champion

    assert (CHAMPION_ALIAS, CHALLENGER_ALIAS) == (champion.CHAMPION_ALIAS, champion.CHALLENGER_ALIAS) == (
        "champion", "challenger"
    )


def test_training_run_links_its_dagster_run(tracking) -> None:
    with tracking.run("smoke", "r", dagster_run_id="0123456789abcdef") as run:
        pass
    tags = tracking.client().get_run(run.run_id).data.tags
    assert tags["dagster_run_id"] == "0123456789abcdef"
    assert tags["dagster_run_url"] == "http://dagster.example:3000/runs/0123456789abcdef"
    assert "(http://dagster.example:3000/runs/0123456789abcdef)" in tags["mlflow.note.content"]
    assert run.url == f"http://mlflow.example:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}?{VIEW}"


def test_backtest_metrics_land_on_the_models_run_and_logged_model(tracking, policy_file) -> None:
    with tracking.run("smoke", "m") as run:
        logged = run.log_onnx_model(policy_file, "usdcop-smoke", alias=None, name="m")
    note = tracking.log_backtest(run.run_id, _report(), dagster_run_id="bt-run-1")
    assert note is not None and note.logged_model_id == logged.model_id and note.url == run.url

    client = tracking.client()
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"  # written to the finished training run, not a new one
    m = got.data.metrics
    assert {k: m[f"test/{k}"] for k in ("sharpe", "total_return", "max_drawdown", "turnover", "trades", "psr", "dsr")} == {
        "sharpe": 1.25, "total_return": 0.031, "max_drawdown": 0.012, "turnover": 14.0, "trades": 7.0, "psr": 0.91,
        "dsr": 0.62,
    }
    assert m["test/n_bars"] == 2400 and m["test/live_rule/sharpe"] == 0.8 and m["test/pbo"] == 0.25
    assert m["test/walk_forward/sharpe_mean"] == 0.7
    assert "test/skew" not in m and "test/flag" not in m and "test/spa_pvalue" not in m  # NaN, bool, None
    tags = got.data.tags
    assert tags["test/dagster_run_url"] == "http://dagster.example:3000/runs/bt-run-1"
    assert tags["test/backtest_hash"] == "bh1" and tags["test/period"] == "2024-05-01..2024-06-28"

    dataset = backtest_dataset(_report())
    [inp] = got.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == (dataset.name, dataset.digest) == ("smoke/test", dataset.digest)
    assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "test")]
    model_metrics = {x.key: x for x in client.get_logged_model(logged.model_id).metrics}
    assert model_metrics["test/sharpe"].value == 1.25 and model_metrics["test/sharpe"].dataset_name == "smoke/test"

    # the proposal tags the same run
    voted = tracking.tag_model_run(run.run_id, {"proposal/recommendation": "PROMOTE"})
    assert voted is not None and client.get_run(run.run_id).data.tags["proposal/recommendation"] == "PROMOTE"


def test_a_run_this_store_does_not_have_is_skipped(tracking) -> None:
    assert tracking.log_backtest("0" * 32, _report(), dagster_run_id="x") is None
    assert tracking.tag_model_run("0" * 32, {"a": "b"}) is None


def test_an_explicit_period_has_its_own_metric_names_and_dataset() -> None:
    report = _report(period_source="custom", test_start="2024-06-03", test_end="2024-06-14", role="oos_diagnostic")
    metrics = backtest_metrics(report)
    assert metrics["period_2024-06-03_2024-06-14/sharpe"] == 1.25 and not any(k.startswith("test/") for k in metrics)
    ds = backtest_dataset(report)
    assert ds.name == "smoke/period_2024-06-03_2024-06-14" and ds.digest != backtest_dataset(_report()).digest
    assert backtest_metrics(_report(metrics=None, live_rule=None, walk_forward=None, overfitting=None)) == {
        "test/n_bars": 2400.0
    }


def test_ui_urls_come_from_settings(tmp_path) -> None:
    s = Settings(USDCOP_STATE_DIR=str(tmp_path), MLFLOW_TRACKING_URI=None, USDCOP_DAGSTER_URL=None)
    res = MlflowTracking.from_settings(s)
    assert (res.ui_url, res.dagster_ui_url) == ("http://127.0.0.1:5000", "http://127.0.0.1:3000")
    # a tracking / Dagster server is its own UI, unless a browser URL is given
    server = Settings(MLFLOW_TRACKING_URI="https://mlflow.corp/", USDCOP_DAGSTER_URL="http://dagster.corp:3000")
    assert (server.resolved_mlflow_ui_url, server.resolved_dagster_ui_url) == ("https://mlflow.corp", "http://dagster.corp:3000")
    explicit = Settings(MLFLOW_TRACKING_URI="http://mlflow:5000", USDCOP_MLFLOW_UI_URL="http://localhost:5001/",
                        USDCOP_DAGSTER_UI_URL="http://localhost:3001")
    assert (explicit.resolved_mlflow_ui_url, explicit.resolved_dagster_ui_url) == ("http://localhost:5001", "http://localhost:3001")
    assert res.run_url("abc") == f"http://127.0.0.1:5000/#/runs/abc?{VIEW}"
    with pytest.raises(ValueError, match="USDCOP_MLFLOW_UI_URL"):
        Settings(USDCOP_MLFLOW_UI_URL="mlflow:5000")
