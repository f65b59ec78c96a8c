"""MLflow resource: explicit run ids, no global state, runs always ended, ONNX model registered."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from usdcop_platform.adapters.tracking import CHALLENGER_ALIAS, MlflowTracking, flatten
from usdcop_platform_tests.training_synth import fresh_mlflow_uri


@pytest.fixture
def tracking(tmp_path: Path) -> MlflowTracking:
    return MlflowTracking(tracking_uri=fresh_mlflow_uri(tmp_path), artifact_root=str(tmp_path / "art"))


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(path), dynamo=False, opset_version=17)
    return path


def test_defaults_come_from_settings(isolated_settings) -> None:
    res = MlflowTracking.from_settings(isolated_settings)
    assert res.tracking_uri == isolated_settings.resolved_mlflow_uri
    assert res.tracking_uri.startswith("sqlite:///")
    assert res.artifact_root == str(isolated_settings.mlflow_artifact_root)


def test_flatten_nests_keys_and_bounds_values() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x" * 10_000}) == {
        "a.b": "1", "a.c.d": "[1, 2]", "e": "x" * 6000
    }


def test_two_runs_in_one_process_stay_separate(tracking: MlflowTracking, tmp_path: Path, onnx_file: Path) -> None:
    other = MlflowTracking(tracking_uri=fresh_mlflow_uri(tmp_path / "other"), artifact_root=str(tmp_path / "art2"))
    with tracking.run("smoke", "first", tags={"k": "1"}) as first:
        first.log_params({"algorithm": {"n_envs": 4}})
        for step in range(3):
            first.log_metrics({"seed_0/val_reward": float(step)}, step=step * 100)
        with other.run("smoke", "second") as second:
            second.log_metrics({"seed_0/val_reward": 42.0}, step=7)
        assert mlflow.active_run() is None  # nothing went through the fluent, process-global API
        logged = first.log_onnx_model(onnx_file, tracking.registered_model_name("smoke"), alias=CHALLENGER_ALIAS)

    assert first.run_id != second.run_id
    c1, c2 = tracking.client(), other.client()
    run = c1.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["algorithm.n_envs"] == "4"
    assert run.data.tags["k"] == "1"
    history = c1.get_metric_history(first.run_id, "seed_0/val_reward")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (100, 1.0), (200, 2.0)]
    assert [(m.step, m.value) for m in c2.get_metric_history(second.run_id, "seed_0/val_reward")] == [(7, 42.0)]
    assert c2.get_experiment_by_name("usdcop/smoke").experiment_id == second.experiment_id
    assert c2.search_registered_models() == []  # the model went to the first store only

    mv = c1.get_model_version_by_alias("usdcop-smoke", CHALLENGER_ALIAS)
    assert str(mv.version) == logged.version and mv.run_id == first.run_id
    assert mv.source == f"models:/{logged.model_id}"  # the version points at the LoggedModel
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "art")
    assert Path(c1.get_logged_model(logged.model_id).artifact_location.removeprefix("file://")).is_relative_to(tmp_path / "art")


def test_a_failing_body_ends_the_run_failed(tracking: MlflowTracking) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.run("smoke", "fails") as run:
            run.log_metrics({"x": 1.0})
            raise RuntimeError("boom")
    got = tracking.client().get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert [m.value for m in tracking.client().get_metric_history(run.run_id, "x")] == [1.0]  # flushed anyway


def test_no_alias_for_a_model_that_is_not_servable(tracking: MlflowTracking, onnx_file: Path) -> None:
    with tracking.run("smoke", "unservable") as run:
        logged = run.log_onnx_model(onnx_file, "usdcop-smoke", alias=None)
    client = tracking.client()
    assert client.get_model_version("usdcop-smoke", logged.version).run_id == run.run_id
    assert client.get_registered_model("usdcop-smoke").aliases == {}


def test_run_url_is_always_an_mlflow_ui_link() -> None:
    """A local sqlite store is opened with `mlflow ui` (port 5000): its runs get a link too."""
    from usdcop_platform.adapters.tracking import TrackedRun

    def run(ui: str) -> TrackedRun:
        return TrackedRun(client=None, run_id="r1", experiment_id="3", tracking_uri="sqlite:///x.db", ui_url=ui)  # type: ignore[arg-type]

    view = "?workflowType=machine_learning"  # MLflow's "Model training" navigation, not GenAI's
    assert run("http://mlflow:5000/").url == f"http://mlflow:5000/#/experiments/3/runs/r1{view}"
    assert run("http://127.0.0.1:5000").url == f"http://127.0.0.1:5000/#/experiments/3/runs/r1{view}"
