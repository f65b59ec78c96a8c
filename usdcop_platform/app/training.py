"""Train an experiment's PPO policy: the use case behind models/ppo_policy.

Loads the experiment's stored dataset (refusing one built from another config or feature order),
trains every seed (in process, or as Ray tasks), packages the median-validation seed (ONNX export +
parity check, core.training.package_model), logs the run to MLflow through the tracking adapter
passed in (params, datasets, per-seed metrics, the package as artifacts, the ONNX file as the run's
LoggedModel; challenger alias only when servable), registers the model as staging and records every
seed as a trial of the family (the deflated Sharpe counts them).

No Dagster here: the asset passes a `TrainingInputs` built from its resources and turns the
`TrainedPolicy` into metadata and the parity check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usdcop_platform.app.trials import record_training_trials
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.metrics import Annualization

PACKAGE_ARTIFACT_PATH = "package"  # under the run's artifact root (which MLflow already calls artifacts/)


@dataclass(frozen=True)
class TrainingInputs:
    """What a training reads and writes: the experiment and its feature contract, the store, the lake,
    the models directory, the calendar's annualization and the tracking adapter
    (adapters.tracking.MlflowTracking: `run(...)`, `registered_model_name(name)`)."""

    name: str
    exp: ExperimentConfig
    contract: FeatureContract
    store: Any
    lake: Any  # adapters.lake.ParquetLake
    models_dir: Path
    annualization: Annualization
    tracking: Any


@dataclass(frozen=True)
class TrainingOptions:
    """Run-time overrides of a training (the experiment YAML stays the source of truth)."""

    total_timesteps: int | None = None
    progress_bar: bool = False
    use_ray: bool = False  # seeds as Ray tasks (one CPU each) on RAY_ADDRESS's cluster or a local instance


@dataclass(frozen=True)
class TrainedPolicy:
    package: Any  # core.training.ModelPackage
    result: Any  # core.training.ExperimentResult
    dataset: Any  # core.datasets.StoredDataset
    mlflow_run_id: str
    mlflow_run_url: str
    model_version: Any
    logged_model_url: str
    logged_model_id: str
    trials_recorded: int
    family_trials: int

    @property
    def selected(self) -> Any:
        return self.result.selected


def load_training_dataset(inputs: TrainingInputs) -> Any:
    """The experiment's stored dataset; refuses one built from another feature order or config."""
    dataset = ds.load_dataset(inputs.lake, inputs.name, inputs.contract)  # refuses another feature order
    if dataset.lineage.get("config_hash") != inputs.exp.config_hash:
        raise ds.DatasetError(
            f"dataset of {inputs.name!r} was built from config {str(dataset.lineage.get('config_hash'))[:12]}…, "
            f"the experiment is now {inputs.exp.config_hash[:12]}…: rematerialize datasets/experiment_dataset"
        )
    return dataset


def train_policy(inputs: TrainingInputs, options: TrainingOptions, *, dagster_run_id: str) -> TrainedPolicy:
    """Train, package, log and register the experiment's policy; `dagster_run_id` tags the MLflow run
    and the trial ledger's rows."""
    name, exp, contract, store = inputs.name, inputs.exp, inputs.contract, inputs.store
    store.contracts.record(exp, contract.feature_order_hash)
    dataset = load_training_dataset(inputs)
    # torch + SB3 load only in the run that trains: every run process imports the code location.
    # adapters.tracking also holds the MLflow Dagster resource: imported here, not with this module.
    from usdcop_platform.adapters.tracking import training_datasets
    from usdcop_platform.core.training import TrainingData

    data = TrainingData(train=dataset.market_data("train", contract), val=dataset.market_data("val", contract),
                        obs_bound=contract.normalization_clip)
    total = options.total_timesteps or exp.algorithm.total_timesteps
    with inputs.tracking.run(
        name,
        run_name=f"{name}-{exp.version}-{dagster_run_id[:8]}",
        tags={"experiment": name, "experiment_version": exp.version},
        dagster_run_id=dagster_run_id,  # tags dagster_run_id + dagster_run_url
    ) as run:
        run.log_params({
            **exp.canonical(),
            "run": {"total_timesteps": total, "seeds": list(exp.seeds)},
            "lineage": {k: dataset.lineage[k] for k in ("dataset_hash", "feature_order_hash", "norm_stats_hash")},
        })
        for ref, data_context in training_datasets(name, dataset.lineage):
            run.log_dataset(ref, data_context)
        result = _train_seeds(exp, data, total, options, run)
        package, logged = _package_and_log(inputs, dataset, result, run)
    model_version = logged.version
    _register(store, inputs, dataset, result, package, run.run_id, model_version)
    # Every seed of every training is a trial of the family: the deflated Sharpe counts them.
    trials = record_training_trials(
        store=store, lake=inputs.lake, ann=inputs.annualization, exp=exp, contract=contract, dataset=dataset,
        result=result, model_id=package.model_id, run_id=dagster_run_id, mlflow_run_id=run.run_id,
    )
    return TrainedPolicy(
        package=package, result=result, dataset=dataset, mlflow_run_id=run.run_id, mlflow_run_url=run.url,
        model_version=model_version, logged_model_url=logged.url, logged_model_id=logged.model_id,
        trials_recorded=len(trials), family_trials=store.trials.count(name),
    )


def _train_seeds(exp: ExperimentConfig, data: Any, total: int, options: TrainingOptions, run: Any) -> Any:
    if options.use_ray:
        from usdcop_platform.app.execution import executor_for, train_experiment_with

        executor = executor_for(True, None, num_cpus=len(exp.seeds))
        result = train_experiment_with(executor, exp, data, total_timesteps=total)
        for seed_result in result.seeds:  # remote seeds report their validation history afterwards
            for point in seed_result.history:
                metrics = {f"seed_{seed_result.seed}/{k}": v for k, v in point.items() if k != "timesteps"}
                run.log_metrics(metrics, step=int(point["timesteps"]))
        return result
    from usdcop_platform.core.training import train_experiment

    return train_experiment(exp, data, total_timesteps=total, progress_bar=options.progress_bar, sink=run.log_metrics)


def _package_and_log(inputs: TrainingInputs, dataset: Any, result: Any, run: Any) -> tuple[Any, Any]:
    """ONNX package of the selected seed (parity-checked), logged to the MLflow run: the package files
    as artifacts, the ONNX file as the run's LoggedModel (the challenger only when it passed parity)."""
    from usdcop_platform.adapters.tracking import CHALLENGER_ALIAS
    from usdcop_platform.core.training import package_model

    name, exp, contract = inputs.name, inputs.exp, inputs.contract
    parity_obs = np.vstack([dataset.normalized("val", contract), dataset.normalized("test", contract)])
    package = package_model(
        exp, result, models_dir=inputs.models_dir, norm_stats=dataset.norm_stats, dataset_lineage=dataset.lineage,
        parity_obs=parity_obs, position_index=contract.names.index("position"), mlflow_run_id=run.run_id,
    )
    selected = result.selected
    run.set_tags({"model_id": package.model_id, "servable": package.servable})
    run.rename(package.model_id)  # the run's name is the model id (minted only after training)
    for path in (package.lineage_path, package.config_path, package.norm_stats_path, package.model_path):
        run.log_artifact(path, PACKAGE_ARTIFACT_PATH)
    logged = run.log_onnx_model(
        package.onnx_path,
        inputs.tracking.registered_model_name(name),
        alias=CHALLENGER_ALIAS if package.servable else None,
        name=package.model_id,
        tags={"model_id": package.model_id, "model_hash": package.model_hash, "onnx_hash": package.onnx_hash,
              "servable": package.servable, "experiment": name, "experiment_version": exp.version},
        metrics={
            **{f"selected/{k}": v for k, v in selected.val_metrics.items()},
            "parity/max_abs_diff_probs": package.parity.max_abs_diff_probs,
            "parity/argmax_mismatches": package.parity.argmax_mismatches,
        },
        step=selected.timesteps,
    )
    return package, logged


def _register(store: Any, inputs: TrainingInputs, dataset: Any, result: Any, package: Any, mlflow_run_id: str,
              model_version: Any) -> None:
    """Register the model as staging; a retrain of the same data, config and seed (same model id)
    points the existing row at the newest run."""
    exp, selected = inputs.exp, result.selected
    metrics: dict[str, Any] = {
        **selected.val_metrics,
        "selected_seed": selected.seed,
        "seed_val_rewards": {str(s.seed): s.val_metrics["val_reward"] for s in result.seeds},
    }
    record = dict(
        experiment_name=inputs.name, experiment_version=exp.version, servable=package.servable,
        onnx_hash=package.onnx_hash, norm_stats_hash=dataset.norm_stats.hash,
        feature_order_hash=inputs.contract.feature_order_hash, dataset_hash=dataset.dataset_hash,
        config_hash=exp.config_hash, reward_config_hash=exp.reward_config_hash, mlflow_run_id=mlflow_run_id,
        mlflow_model_version=model_version, artifact_dir=str(package.artifact_dir), model_path=str(package.model_path),
        onnx_path=str(package.onnx_path), norm_stats_path=str(package.norm_stats_path), metrics=metrics,
        lineage=package.lineage, parity=package.parity.as_dict(),
    )
    row = store.models.register(model_id=package.model_id, model_hash=package.model_hash, **record)
    if row["mlflow_run_id"] != mlflow_run_id:
        store.models.update(
            package.model_id, servable=package.servable, mlflow_run_id=mlflow_run_id,
            mlflow_model_version=model_version, metrics=metrics, lineage=package.lineage,
            parity=package.parity.as_dict(), onnx_hash=package.onnx_hash, onnx_path=str(package.onnx_path),
        )


# ---- the experiment's dataset ----------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetBuild:
    built: Any  # core.datasets.BuiltDataset
    folder: Path
    source_partitions: int
    # check name -> (passed, detail), run on what was written, read back from the lake
    checks: dict[str, tuple[bool, str]]


def build_training_dataset(
    name: str, exp: ExperimentConfig, contract: FeatureContract, *, store: Any, lake: Any, calendar: Any,
    min_rows: dict[str, int],
) -> DatasetBuild:
    """Train/val/test splits of experiment `name` from the features of its span (embargo, train-only
    norm stats, lineage), written to the lake and checked as stored. Raises before writing anything
    when the experiment contract changed under the same name+version or no feature partition exists."""
    # The experiment contract is immutable per name+version: a changed YAML raises here, first.
    store.contracts.record(exp, contract.feature_order_hash)
    span = calendar.sessions(exp.date_ranges.train.start, exp.date_ranges.test.end)
    keys = [d.isoformat() for d in ds.source_sessions(exp, span)]
    present = [k for k in keys if lake.exists(ds.SOURCE_DATASET, k)]
    features = lake.read_many(ds.SOURCE_DATASET, present)
    if features is None:
        raise ds.DatasetError(
            f"no {ds.SOURCE_DATASET} partitions between {exp.date_ranges.train.start} and "
            f"{exp.date_ranges.test.end}: materialize the features for those sessions first "
            f"(`usdcop run -e {name}` ingests, builds them and goes on to a proposal)"
        )
    built = ds.build_dataset(features, exp, contract, min_rows=min_rows, source_partitions=present)
    folder = ds.save_dataset(built, lake, name)
    stored = ds.load_dataset(lake, name, contract, verify=False)
    checks = {
        "splits_ordered_disjoint": ds.check_splits_ordered(stored),
        "norm_stats_match_train": ds.check_norm_stats(stored, contract),
        "no_nan_inf": ds.check_all_finite(stored, contract),
        "min_rows": ds.check_min_rows(stored, min_rows),
    }
    return DatasetBuild(built=built, folder=folder, source_partitions=len(present), checks=checks)
