"""Training assets with materialize_to_memory: dataset -> model against temporary MLflow + SQL store.

One tiny training (smoke experiment, synthetic features, one PPO rollout) is shared by the
module; bad-input cases each get a fresh lake and database and must leave nothing registered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import onnx
import pytest
import yaml

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.adapters.store import ExperimentContractConflict, get_store
from usdcop_platform.adapters.tracking import CHALLENGER_ALIAS
from usdcop_platform.defs.resources import MlflowResource
from usdcop_platform.contracts.base import file_hash
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR
from usdcop_platform.core import training as tr
from usdcop_platform.core.datasets import DatasetError, dataset_dir
from usdcop_platform.core.onnx_policy import OnnxPolicy
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.defs.training import assets as ta
from usdcop_platform.defs.training.definitions import defs as training_defs
from usdcop_platform.defs.training.sensors import experiment_partitions_sensor
from usdcop_platform_tests.training_synth import fresh_mlflow_uri, synthetic_features, write_feature_partitions

EXPERIMENT = "smoke"
BUDGET = 1024  # one rollout of the smoke experiment (4 envs x 256 steps)


@dataclass
class Env:
    root: Path
    platform: PlatformResource
    mlflow: MlflowResource

    @property
    def resources(self) -> dict:
        return {"platform": self.platform, "mlflow": self.mlflow}

    def store(self):
        return self.platform.store()


def make_env(
    root: Path, calendar, contract, *, features=None, seed: int = 0, database_url: str | None = None
) -> Env:
    platform = PlatformResource(
        data_dir=str(root / "lake"),
        models_dir=str(root / "models"),
        config_dir=str(DEFAULT_CONFIG_DIR),
        database_url=database_url or f"sqlite:///{root / 'usdcop.db'}",
        state_dir=str(root / "state"),
    )
    mlflow = MlflowResource(tracking_uri=fresh_mlflow_uri(root / "state"), artifact_root=str(root / "state" / "mlartifacts"))
    exp = platform.config.experiment(EXPERIMENT)
    frame = features if features is not None else synthetic_features(
        calendar, contract, exp.date_ranges.train.start, exp.date_ranges.test.end, seed=seed
    )
    write_feature_partitions(platform.lake, frame)
    return Env(root, platform, mlflow)


def materialize(env: Env, instance: dg.DagsterInstance, assets=None, timesteps: int = BUDGET, **kw):
    assets = assets or [ta.experiment_dataset, ta.ppo_policy]
    ops = {ta.ppo_policy.op.name: ta.TrainingRunConfig(total_timesteps=timesteps)} if ta.ppo_policy in assets else {}
    return dg.materialize_to_memory(
        assets,
        partition_key=EXPERIMENT,
        instance=instance,
        resources=env.resources,
        run_config=dg.RunConfig(ops=ops),
        **kw,
    )


def metadata(result, key: dg.AssetKey) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("experiments", [EXPERIMENT])
        yield inst


@pytest.fixture(scope="module")
def trained(tmp_path_factory, calendar, platform_config, instance):
    env = make_env(tmp_path_factory.mktemp("trained"), calendar, platform_config.features)
    result = materialize(env, instance)
    return env, result


def test_dataset_and_model_materialize_with_passing_checks(trained) -> None:
    _, result = trained
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {**{name: True for name in ta.DATASET_CHECKS}, ta.PARITY_CHECK: True}


def test_dataset_is_written_with_lineage(trained, platform_config) -> None:
    env, result = trained
    meta = metadata(result, ta.DATASET_KEY)
    folder = dataset_dir(env.platform.data_dir, EXPERIMENT)
    lineage = json.loads((folder / "lineage.json").read_text())
    assert meta["dataset_hash"] == lineage["dataset_hash"]
    assert meta["feature_order_hash"] == platform_config.features.feature_order_hash
    assert {s: meta[f"rows_{s}"] for s in ("train", "val", "test")} == {s: v["rows"] for s, v in lineage["splits"].items()}
    assert lineage["source"]["n_partitions"] == meta["source_partitions"] > 0
    assert sorted(env.platform.lake.partitions(f"datasets/{EXPERIMENT}")) == ["test", "train", "val"]


def test_model_artefacts_registry_row_and_lineage_agree(trained, platform_config) -> None:
    env, result = trained
    meta = metadata(result, ta.MODEL_KEY)
    exp = platform_config.experiment(EXPERIMENT)
    model_id = meta["model_id"]
    assert model_id == tr.mint_model_id(exp, meta["model_hash"])
    folder = Path(env.platform.models_dir) / EXPERIMENT / model_id
    expected = {"model.zip", "policy.onnx", "norm_stats.json", "config.yaml", "lineage.json"}
    assert {p.name for p in folder.iterdir()} >= expected
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["model_id"] == model_id and lineage["model_hash"] == meta["model_hash"]
    assert lineage["mlflow_run_id"] == meta["mlflow_run_id"]
    assert lineage["dataset_hash"] == metadata(result, ta.DATASET_KEY)["dataset_hash"]
    assert [s["seed"] for s in lineage["seeds"]] == list(exp.seeds)
    assert yaml.safe_load((folder / "config.yaml").read_text()) == exp.canonical()

    policy = OnnxPolicy(folder / "policy.onnx")  # the model id travels inside the ONNX file
    assert policy.model_id == model_id
    assert policy.feature_order_hash == platform_config.features.feature_order_hash

    row = env.store().models.require(model_id)
    assert (row.stage, row.servable) == ("staging", True)
    assert row.model_hash == meta["model_hash"] and row.onnx_hash == meta["onnx_hash"]
    assert row.dataset_hash == lineage["dataset_hash"] and row.config_hash == exp.config_hash
    assert row.norm_stats_hash == lineage["norm_stats_hash"]
    assert row.feature_order_hash == platform_config.features.feature_order_hash
    assert row.mlflow_run_id == meta["mlflow_run_id"] and row.parity["passed"] is True
    contract = env.store().contracts.get(EXPERIMENT, exp.version)
    assert contract["config_hash"] == exp.config_hash


def test_mlflow_run_has_params_metrics_over_time_and_the_challenger(trained) -> None:
    env, result = trained
    meta = metadata(result, ta.MODEL_KEY)
    client = env.mlflow.client()
    run = client.get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.hyperparameters.n_steps"] == "256"
    assert run.data.params["run.total_timesteps"] == str(BUDGET)
    assert run.data.tags["model_id"] == meta["model_id"]
    history = client.get_metric_history(run.info.run_id, "seed_0/val_reward")
    assert history and history[-1].step == BUDGET
    mv = client.get_model_version_by_alias(env.mlflow.registered_model_name(EXPERIMENT), CHALLENGER_ALIAS)
    assert mv.run_id == run.info.run_id and str(mv.version) == meta["mlflow_model_version"]
    names = {f.path for f in client.list_artifacts(run.info.run_id, "package")}
    assert "package/lineage.json" in names  # not artifacts/artifacts/: the run root is already artifacts/
    assert run.info.run_name == meta["model_id"]  # the run is named by the model id


def test_the_policy_is_the_runs_logged_model_and_the_runs_link_both_ways(trained) -> None:
    env, result = trained
    meta = metadata(result, ta.MODEL_KEY)
    client = env.mlflow.client()
    run = client.get_run(meta["mlflow_run_id"])
    logged = client.get_logged_model(meta["mlflow_logged_model_id"])
    assert logged.source_run_id == run.info.run_id and str(logged.status) == "READY"
    assert logged.tags["model_id"] == meta["model_id"] and logged.tags["onnx_hash"] == meta["onnx_hash"]
    assert {m.key for m in logged.metrics} >= {"selected/val_reward", "parity/max_abs_diff_probs"}
    mv = client.get_model_version(env.mlflow.registered_model_name(EXPERIMENT), meta["mlflow_model_version"])
    assert mv.source == f"models:/{logged.model_id}"
    local = Path(logged.artifact_location.removeprefix("file://")) / "model.onnx"
    assert file_hash(local) == meta["onnx_hash"]  # the parity-checked file, byte for byte
    assert {(i.dataset.name, i.tags[0].value) for i in run.inputs.dataset_inputs} == {
        (f"{EXPERIMENT}/train", "training"), (f"{EXPERIMENT}/val", "validation")
    }
    # Dagster -> MLflow (asset metadata) and MLflow -> Dagster (run tags)
    ui = env.mlflow.ui_url
    view = "?workflowType=machine_learning"
    assert meta["mlflow_run"] == f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}{view}"
    assert meta["mlflow_logged_model"] == f"{ui}/#/experiments/{run.info.experiment_id}/models/{logged.model_id}{view}"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["dagster_run_url"] == f"{env.mlflow.dagster_ui_url}/runs/{result.run_id}"


def test_backtest_and_proposal_write_to_the_models_run(trained, instance) -> None:
    """The out-of-sample backtest's metrics go on the model's training run and its LoggedModel;
    backtest and proposal link that run, the run links their Dagster run."""
    from usdcop_platform.defs.evaluation.assets import (
        BACKTEST_KEY, PROPOSAL_KEY, BacktestRunConfig, ProposalRunConfig, backtest, promotion_proposal,
    )

    env, trained_result = trained
    model_id = metadata(trained_result, ta.MODEL_KEY)["model_id"]
    result = dg.materialize_to_memory(
        [backtest, promotion_proposal], partition_key=EXPERIMENT, instance=instance, resources=env.resources,
        run_config=dg.RunConfig(ops={backtest.op.name: BacktestRunConfig(model_id=model_id),
                                     promotion_proposal.op.name: ProposalRunConfig(model_id=model_id)}),
    )
    bt, prop = metadata(result, BACKTEST_KEY), metadata(result, PROPOSAL_KEY)
    report = bt_store.latest_backtest_report(env.platform.lake, EXPERIMENT, model_id)
    client = env.mlflow.client()
    run = client.get_run(metadata(trained_result, ta.MODEL_KEY)["mlflow_run_id"])
    m = run.data.metrics
    for key in ("sharpe", "total_return", "max_drawdown", "turnover", "trades", "psr", "dsr"):
        assert m[f"test/{key}"] == pytest.approx(float(report["metrics"][key]), rel=1e-12)
    assert m["test/n_bars"] == report["n_bars"] and m["test/live_rule/sharpe"] == pytest.approx(report["live_rule"]["sharpe"])
    assert run.data.tags["test/backtest_hash"] == report["backtest_hash"]
    assert run.data.tags["test/dagster_run_url"] == f"{env.mlflow.dagster_ui_url}/runs/{result.run_id}"
    assert run.data.tags["proposal/recommendation"] == prop["recommendation"]
    assert run.data.tags["proposal/id"] == str(prop["proposal_id"])
    logged = client.get_logged_model(metadata(trained_result, ta.MODEL_KEY)["mlflow_logged_model_id"])
    on_model = {x.key: x for x in logged.metrics}
    assert on_model["test/sharpe"].value == pytest.approx(float(report["metrics"]["sharpe"]), rel=1e-12)
    assert on_model["test/sharpe"].dataset_name == f"{EXPERIMENT}/test"
    assert bt["mlflow_run"] == prop["mlflow_run"] == env.mlflow.run_url(run.info.run_id, run.info.experiment_id)
    # the evaluation run is in the lineage the review page links (report and proposal)
    assert report["lineage"]["dagster_run_id"] == result.run_id
    stored = env.store().proposals.by_model(model_id)
    assert stored["lineage"]["dagster_run_id"] == result.run_id


def test_retraining_gives_the_same_model_hash_and_id(trained, instance) -> None:
    env, result = trained
    first = metadata(result, ta.MODEL_KEY)
    again = materialize(env, instance, assets=[ta.ppo_policy])
    second = metadata(again, ta.MODEL_KEY)
    assert second["model_hash"] == first["model_hash"] and second["model_id"] == first["model_id"]
    assert second["mlflow_run_id"] != first["mlflow_run_id"]  # a new MLflow run per training
    rows = env.store().models.list(experiment=EXPERIMENT)
    assert [r.model_id for r in rows].count(first["model_id"]) == 1
    assert env.store().models.require(first["model_id"]).mlflow_run_id == second["mlflow_run_id"]
    # Audit finding 1: a retraining is a trial too, even when it reproduces the same model.
    seeds = len(env.platform.config.experiment(EXPERIMENT).seeds)
    assert second["ledger_family_trials"] == env.store().trials.count(EXPERIMENT) == 2 * seeds


def test_every_training_seed_is_a_ledger_trial_with_its_returns(trained) -> None:
    from usdcop_platform.adapters import trial_returns

    env, result = trained
    meta = metadata(result, ta.MODEL_KEY)
    exp = env.platform.config.experiment(EXPERIMENT)
    rows = [r for r in env.store().trials.family(EXPERIMENT) if r.run_id == result.run_id]
    assert meta["ledger_trials"] == len(rows) == len(exp.seeds)
    [chosen] = [r for r in rows if r.selected]
    assert chosen.model_id == meta["model_id"] and chosen.seed == meta["selected_seed"]
    for r in rows:
        assert (r.kind, r.family, r.experiment_version) == ("training_seed", EXPERIMENT, exp.version)
        assert r.config_hash == exp.config_hash and r.data_hash == meta["dataset_hash"] and r.mlflow_run_id
        assert r.val_sharpe is not None and r.test_sharpe is not None and r.test_bars > 0
        series = trial_returns.load_trial_returns(env.platform.lake, EXPERIMENT, [r.returns_partition])
        assert series[r.returns_partition].height > 0  # one return per test session


def test_failed_parity_registers_the_model_as_not_servable(trained, instance, monkeypatch) -> None:
    env, _ = trained
    real = tr.check_parity
    monkeypatch.setattr(tr, "check_parity", lambda *a, **k: real(*a, **{**k, "tolerance": -1.0}))
    result = materialize(env, instance, assets=[ta.ppo_policy], timesteps=2 * BUDGET, raise_on_error=False)
    assert not result.success  # the blocking check stops the run: nothing downstream executes
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == ta.PARITY_CHECK and not check.passed
    meta = metadata(result, ta.MODEL_KEY)
    row = env.store().models.require(meta["model_id"])
    assert row.servable is False and row.parity["passed"] is False
    client = env.mlflow.client()
    versions = client.search_model_versions(f"name='{env.mlflow.registered_model_name(EXPERIMENT)}'")
    failed = [v for v in versions if v.run_id == meta["mlflow_run_id"]]
    assert failed and not failed[0].aliases  # never the challenger


@pytest.mark.postgres
def test_training_registers_on_postgresql(tmp_path, calendar, platform_config, instance, postgres_url) -> None:
    env = make_env(tmp_path, calendar, platform_config.features, database_url=postgres_url)
    result = materialize(env, instance)
    meta = metadata(result, ta.MODEL_KEY)
    row = env.store().models.require(meta["model_id"])
    assert (row.stage, row.servable, row.mlflow_run_id) == ("staging", True, meta["mlflow_run_id"])
    assert row.lineage["model_hash"] == meta["model_hash"] and row.parity["n_observations"] >= 1000
    exp = platform_config.experiment(EXPERIMENT)
    assert env.store().contracts.get(EXPERIMENT, exp.version)["config_hash"] == exp.config_hash


# ---- bad input: clear error, nothing registered --------------------------------------------------
def assert_nothing_registered(env: Env) -> None:
    assert env.store().models.list() == []
    assert not (Path(env.platform.models_dir) / EXPERIMENT).exists()


def test_changed_experiment_under_the_same_version_is_refused(tmp_path, calendar, platform_config, instance) -> None:
    env = make_env(tmp_path, calendar, platform_config.features)
    exp = platform_config.experiment(EXPERIMENT)
    edited = exp.model_copy(update={"description": "someone edited the YAML"})
    env.store().contracts.record(edited, platform_config.features.feature_order_hash)
    with pytest.raises(ExperimentContractConflict, match="bump `version`"):
        materialize(env, instance)
    assert_nothing_registered(env)
    assert not dataset_dir(env.platform.data_dir, EXPERIMENT).exists()


def test_nan_in_a_split_is_refused(tmp_path, calendar, platform_config, instance) -> None:
    import polars as pl

    exp = platform_config.experiment(EXPERIMENT)
    frame = synthetic_features(calendar, platform_config.features, exp.date_ranges.train.start, exp.date_ranges.test.end)
    frame = frame.with_columns(
        pl.when(pl.col("session") == exp.date_ranges.train.end).then(float("nan")).otherwise(pl.col("dxy_z")).alias("dxy_z")
    )
    env = make_env(tmp_path, calendar, platform_config.features, features=frame)
    with pytest.raises(DatasetError, match="split 'train' holds NaN"):
        materialize(env, instance)
    assert_nothing_registered(env)
    assert not (dataset_dir(env.platform.data_dir, EXPERIMENT) / "lineage.json").exists()


def test_empty_split_is_refused(tmp_path, calendar, platform_config, instance) -> None:
    import polars as pl

    exp = platform_config.experiment(EXPERIMENT)
    frame = synthetic_features(calendar, platform_config.features, exp.date_ranges.train.start, exp.date_ranges.test.end)
    no_test = frame.filter(pl.col("session") < exp.date_ranges.test.start)
    env = make_env(tmp_path, calendar, platform_config.features, features=no_test)
    with pytest.raises(DatasetError, match="split 'test'.*empty"):
        materialize(env, instance)
    assert_nothing_registered(env)


def test_dataset_with_another_feature_order_is_refused(tmp_path, calendar, platform_config, instance) -> None:
    env = make_env(tmp_path, calendar, platform_config.features)
    assert materialize(env, instance, assets=[ta.experiment_dataset]).success
    path = dataset_dir(env.platform.data_dir, EXPERIMENT) / "lineage.json"
    lineage = json.loads(path.read_text())
    path.write_text(json.dumps({**lineage, "feature_order_hash": "0" * 64}))
    with pytest.raises(DatasetError, match="feature_order_hash"):
        materialize(env, instance, assets=[ta.ppo_policy])
    assert_nothing_registered(env)
    assert env.mlflow.client().search_runs([e.experiment_id for e in env.mlflow.client().search_experiments()]) == []


# ---- definitions, sensor, graph ------------------------------------------------------------------
def test_sensor_adds_a_partition_per_experiment_yaml(platform_config) -> None:
    platform = PlatformResource(data_dir="x", models_dir="x", config_dir=str(DEFAULT_CONFIG_DIR),
                                database_url="sqlite://", state_dir="x")
    with dg.instance_for_test() as inst:
        ctx = dg.build_sensor_context(instance=inst, resources={"platform": platform})
        result = experiment_partitions_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        [request] = result.dynamic_partitions_requests
        assert request.partitions_def_name == "experiments"
        assert sorted(request.partition_keys) == sorted(platform_config.experiments)
        inst.add_dynamic_partitions("experiments", list(request.partition_keys))
        again = experiment_partitions_sensor(dg.build_sensor_context(instance=inst, resources={"platform": platform}))
        assert isinstance(again, dg.SkipReason)


def test_definitions_load_and_graph_snapshot() -> None:
    from usdcop_platform.defs.resources import build_resources

    merged = dg.Definitions.merge(training_defs, dg.Definitions(resources=build_resources()))
    dg.Definitions.validate_loadable(merged)
    graph = merged.resolve_asset_graph()
    assert ta.DATASET_KEY in graph.get_all_asset_keys() and ta.MODEL_KEY in graph.get_all_asset_keys()
    assert graph.get(ta.MODEL_KEY).parent_keys == {ta.DATASET_KEY}
    assert graph.get(ta.DATASET_KEY).parent_keys == {ta.FEATURES_KEY}
    for key in (ta.DATASET_KEY, ta.MODEL_KEY):
        assert graph.get(key).partitions_def.name == "experiments"
    checks = {(k.asset_key, k.name) for k in graph.asset_check_keys}
    assert checks == {(ta.DATASET_KEY, n) for n in ta.DATASET_CHECKS} | {(ta.MODEL_KEY, ta.PARITY_CHECK)}
    assert merged.resolve_job_def("train_experiment_job") is not None
    assert "mlflow" in build_resources() and "platform" in build_resources()


def test_onnx_file_metadata_lists_the_action_encoding(trained) -> None:
    env, result = trained
    meta = metadata(result, ta.MODEL_KEY)
    graph = onnx.load(str(Path(meta["artifact_dir"]) / "policy.onnx"))
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["action_encoding"] == "0=SELL(-1),1=HOLD(0),2=BUY(+1)"
    assert props["model_id"] == meta["model_id"]


def test_store_url_is_the_platform_one(trained) -> None:
    env, _ = trained
    assert env.store() is get_store(env.platform.database_url)
