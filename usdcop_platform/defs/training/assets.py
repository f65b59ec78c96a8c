"""Training assets on experiment partitions: datasets/experiment_dataset -> models/ppo_policy.

The assets orchestrate; the maths lives in core.datasets, core.training and core.onnx_export.
Both validate before they publish: a bad dataset raises before anything is written, and a
model is registered `servable` only when its blocking ONNX parity check passes.
"""


from typing import Any

import dagster as dg
import numpy as np

from usdcop_platform.adapters.tracking import CHALLENGER_ALIAS, MlflowResource, training_datasets
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.display import metric_entries, num
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.defs import catalog
from usdcop_platform.app.trials import record_training_trials
from usdcop_platform.defs.features.assets import CONTRACT, empty_features
from usdcop_platform.defs.partitions import experiment_partitions, session_key
from usdcop_platform.defs.resources import PlatformResource

FEATURES_KEY = dg.AssetKey(["features", "m5_features"])
DATASET_KEY = dg.AssetKey(["datasets", "experiment_dataset"])
MODEL_KEY = dg.AssetKey(["models", "ppo_policy"])
GROUP = "training"

DATASET_CHECKS = {
    "splits_ordered_disjoint": "train < val < test in time, no shared bar, embargo applied",
    "norm_stats_match_train": "norm stats recomputed from the stored train split equal the stored ones",
    "no_nan_inf": "no NaN/inf in any split",
    "min_rows": "every split has at least config/quality.yaml dataset.min_rows_<split> rows",
}
PARITY_CHECK = "onnx_parity"
PACKAGE_ARTIFACT_PATH = "package"  # under the run's artifact root (which MLflow already calls artifacts/)
# Each split (train/val/test) is a table of these columns: the features' key, price and contract columns.
_FEATURE_TYPES = dict(empty_features(CONTRACT).schema)
DATASET_SCHEMA = {c: _FEATURE_TYPES[c] for c in ds.dataset_columns(CONTRACT)}


class TrainingRunConfig(dg.Config):
    """Run-time overrides of a training (the experiment YAML stays the source of truth)."""

    total_timesteps: int | None = None
    progress_bar: bool = False
    # Seeds as Ray tasks (one CPU each) on RAY_ADDRESS's cluster or a local instance; same params_hash.
    use_ray: bool = False


def _min_rows(platform: PlatformResource) -> dict[str, int]:
    q = platform.config.quality.dataset
    return {"train": q.min_rows_train, "val": q.min_rows_val, "test": q.min_rows_test}


@dg.asset(
    key=DATASET_KEY,
    partitions_def=experiment_partitions,
    deps=[dg.AssetDep(FEATURES_KEY, partition_mapping=dg.AllPartitionMapping())],
    check_specs=[
        dg.AssetCheckSpec(n, asset=DATASET_KEY, description=d, blocking=True) for n, d in DATASET_CHECKS.items()
    ],
    group_name=GROUP,
    kinds={"parquet", "polars"},
    owners=[catalog.OWNER_RESEARCH],
    metadata=catalog.columns(catalog.table_schema(DATASET_SCHEMA, catalog.feature_descriptions(CONTRACT))),
    description="Train/val/test splits of an experiment with embargo, train-only norm stats and lineage.",
)
def experiment_dataset(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    name = context.partition_key
    cfg = platform.config
    exp, contract = cfg.experiment(name), cfg.features
    # The experiment contract is immutable per name+version: a changed YAML raises here, first.
    platform.store().contracts.record(exp, contract.feature_order_hash)

    lake = platform.lake
    span = platform.calendar.sessions(exp.date_ranges.train.start, exp.date_ranges.test.end)
    keys = [session_key(d) for d in ds.source_sessions(exp, span)]
    present = [k for k in keys if lake.exists(ds.SOURCE_DATASET, k)]
    features = lake.read_many(ds.SOURCE_DATASET, present)
    if features is None:
        raise ds.DatasetError(
            f"no {ds.SOURCE_DATASET} partitions between {exp.date_ranges.train.start} and "
            f"{exp.date_ranges.test.end}: materialize the features for those sessions first "
            f"(`usdcop run -e {name}` ingests, builds them and goes on to a proposal)"
        )
    min_rows = _min_rows(platform)
    built = ds.build_dataset(features, exp, contract, min_rows=min_rows, source_partitions=present)
    folder = ds.save_dataset(built, lake, name)

    # Checks run on what was written, read back from the lake.
    stored = ds.load_dataset(lake, name, contract, verify=False)
    outcomes = {
        "splits_ordered_disjoint": ds.check_splits_ordered(stored),
        "norm_stats_match_train": ds.check_norm_stats(stored, contract),
        "no_nan_inf": ds.check_all_finite(stored, contract),
        "min_rows": ds.check_min_rows(stored, min_rows),
    }
    lineage = built.lineage
    rows = {s: v["rows"] for s, v in lineage["splits"].items()}
    context.log.info(
        f"dataset {name}: rows {rows}, embargo {lineage['embargo_bars']} bars, hash {built.dataset_hash[:12]}"
    )
    return dg.MaterializeResult(
        metadata={
            "dataset_hash": built.dataset_hash,
            "config_hash": lineage["config_hash"],
            "feature_order_hash": lineage["feature_order_hash"],
            "norm_stats_hash": lineage["norm_stats_hash"],
            "embargo_bars": lineage["embargo_bars"],
            **{f"rows_{s}": n for s, n in rows.items()},
            **{
                f"range_{s}": f"{v['first_session']} .. {v['last_session']}" for s, v in lineage["splits"].items()
            },
            "source_partitions": len(present),
            "path": dg.MetadataValue.path(str(folder)),
        },
        check_results=[
            dg.AssetCheckResult(check_name=n, passed=ok, metadata={"detail": msg}) for n, (ok, msg) in outcomes.items()
        ],
        data_version=dg.DataVersion(built.dataset_hash),
    )


@dg.asset(
    key=MODEL_KEY,
    partitions_def=experiment_partitions,
    deps=[DATASET_KEY],
    check_specs=[
        dg.AssetCheckSpec(
            PARITY_CHECK,
            asset=MODEL_KEY,
            blocking=True,
            description="ONNX vs SB3 over >= 1,000 random and real observations: max |dp| <= 1e-5, same argmax",
        )
    ],
    group_name=GROUP,
    kinds={"pytorch", "onnx", "mlflow"},
    owners=[catalog.OWNER_RESEARCH],
    description="PPO policy (median-validation seed) exported to ONNX, logged to MLflow, registered as staging.",
)
def ppo_policy(
    context: dg.AssetExecutionContext,
    config: TrainingRunConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    cfg = platform.config
    exp, contract = cfg.experiment(name), cfg.features
    store = platform.store()
    store.contracts.record(exp, contract.feature_order_hash)

    dataset = ds.load_dataset(platform.lake, name, contract)  # refuses another feature order
    if dataset.lineage.get("config_hash") != exp.config_hash:
        raise ds.DatasetError(
            f"dataset of {name!r} was built from config {str(dataset.lineage.get('config_hash'))[:12]}…, "
            f"the experiment is now {exp.config_hash[:12]}…: rematerialize datasets/experiment_dataset"
        )
    position_index = contract.names.index("position")
    # torch + SB3 load only in the run that trains: every run process imports this module
    from usdcop_platform.core.training import TrainingData, package_model, train_experiment

    data = TrainingData(
        train=dataset.market_data("train", contract),
        val=dataset.market_data("val", contract),
        obs_bound=contract.normalization_clip,
    )
    parity_obs = np.vstack([dataset.normalized("val", contract), dataset.normalized("test", contract)])
    total = config.total_timesteps or exp.algorithm.total_timesteps

    with mlflow.run(
        name,
        run_name=f"{name}-{exp.version}-{context.run_id[:8]}",
        tags={"experiment": name, "experiment_version": exp.version},
        dagster_run_id=context.run_id,  # tags dagster_run_id + dagster_run_url
    ) as run:
        run.log_params(
            {
                **exp.canonical(),
                "run": {"total_timesteps": total, "seeds": list(exp.seeds)},
                "lineage": {k: dataset.lineage[k] for k in ("dataset_hash", "feature_order_hash", "norm_stats_hash")},
            }
        )
        for ref, data_context in training_datasets(name, dataset.lineage):
            run.log_dataset(ref, data_context)
        if config.use_ray:
            from usdcop_platform.app.execution import executor_for, train_experiment_with

            executor = executor_for(True, None, num_cpus=len(exp.seeds))
            result = train_experiment_with(executor, exp, data, total_timesteps=total)
            for seed_result in result.seeds:  # remote seeds report their validation history afterwards
                for point in seed_result.history:
                    metrics = {f"seed_{seed_result.seed}/{k}": v for k, v in point.items() if k != "timesteps"}
                    run.log_metrics(metrics, step=int(point["timesteps"]))
        else:
            result = train_experiment(
                exp, data, total_timesteps=total, progress_bar=config.progress_bar, sink=run.log_metrics
            )
        package = package_model(
            exp,
            result,
            models_dir=platform.models_path,
            norm_stats=dataset.norm_stats,
            dataset_lineage=dataset.lineage,
            parity_obs=parity_obs,
            position_index=position_index,
            mlflow_run_id=run.run_id,
        )
        selected = result.selected
        run.set_tags({"model_id": package.model_id, "servable": package.servable})
        run.rename(package.model_id)  # the run's name is the model id (minted only after training)
        for path in (package.lineage_path, package.config_path, package.norm_stats_path, package.model_path):
            run.log_artifact(path, PACKAGE_ARTIFACT_PATH)
        # The packaged (parity-checked) ONNX file becomes the run's LoggedModel; only a model that
        # passed parity is offered to the registry as the challenger.
        logged = run.log_onnx_model(
            package.onnx_path,
            mlflow.registered_model_name(name),
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
        model_version = logged.version

    metrics: dict[str, Any] = {
        **selected.val_metrics,
        "selected_seed": selected.seed,
        "seed_val_rewards": {str(s.seed): s.val_metrics["val_reward"] for s in result.seeds},
    }
    record = dict(
        experiment_name=name,
        experiment_version=exp.version,
        servable=package.servable,
        onnx_hash=package.onnx_hash,
        norm_stats_hash=dataset.norm_stats.hash,
        feature_order_hash=contract.feature_order_hash,
        dataset_hash=dataset.dataset_hash,
        config_hash=exp.config_hash,
        reward_config_hash=exp.reward_config_hash,
        mlflow_run_id=run.run_id,
        mlflow_model_version=model_version,
        artifact_dir=str(package.artifact_dir),
        model_path=str(package.model_path),
        onnx_path=str(package.onnx_path),
        norm_stats_path=str(package.norm_stats_path),
        metrics=metrics,
        lineage=package.lineage,
        parity=package.parity.as_dict(),
    )
    row = store.models.register(model_id=package.model_id, model_hash=package.model_hash, **record)
    if row["mlflow_run_id"] != run.run_id:
        # Same data, config and seed retrained: same model id; point it at the newest run.
        store.models.update(
            package.model_id,
            servable=package.servable,
            mlflow_run_id=run.run_id,
            mlflow_model_version=model_version,
            metrics=metrics,
            lineage=package.lineage,
            parity=package.parity.as_dict(),
            onnx_hash=package.onnx_hash,
            onnx_path=str(package.onnx_path),
        )

    # Every seed of every training is a trial of the family: the deflated Sharpe counts them.
    trials = record_training_trials(
        store=store, lake=platform.lake, ann=Annualization.from_calendar(platform.calendar), exp=exp,
        contract=contract, dataset=dataset, result=result, model_id=package.model_id, run_id=context.run_id,
        mlflow_run_id=run.run_id,
    )

    context.log.info(
        f"model {package.model_id}: seed {selected.seed} of {list(exp.seeds)}, val_reward "
        f"{selected.val_metrics['val_reward']:.4f}, parity {'PASS' if package.servable else 'FAIL'}"
    )
    parity = package.parity
    return dg.MaterializeResult(
        metadata={
            "model_id": package.model_id,
            "model_hash": package.model_hash,
            "onnx_hash": package.onnx_hash,
            "dataset_hash": dataset.dataset_hash,
            "config_hash": exp.config_hash,
            "servable": package.servable,
            "selected_seed": selected.seed,
            "seeds": list(exp.seeds),
            **metric_entries({"val_reward": selected.val_metrics["val_reward"],
                              "val_return": selected.val_metrics["val_return"]}),
            "timesteps": selected.timesteps,
            "train_seconds": round(sum(s.seconds for s in result.seeds), 2),  # PPO learning, every seed
            "stopped_early": selected.stopped_early,
            "mlflow_run_id": run.run_id,
            "mlflow_model_version": model_version,
            "ledger_trials": len(trials),
            "ledger_family_trials": store.trials.count(name),
            "mlflow_run": dg.MetadataValue.url(run.url),
            "mlflow_logged_model": dg.MetadataValue.url(logged.url),
            "mlflow_logged_model_id": logged.model_id,
            "artifact_dir": dg.MetadataValue.path(str(package.artifact_dir)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PARITY_CHECK,
                passed=parity.passed,
                metadata={
                    "n_observations": parity.n_observations,
                    "n_real": parity.n_real,
                    "max_abs_diff_probs": num(parity.max_abs_diff_probs),
                    "max_abs_diff_value": num(parity.max_abs_diff_value),
                    "argmax_mismatches": parity.argmax_mismatches,
                    "tolerance": num(parity.tolerance),
                },
            )
        ],
        data_version=dg.DataVersion(package.model_hash),
    )
