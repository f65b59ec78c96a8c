"""Training assets on experiment partitions: datasets/experiment_dataset -> models/ppo_policy.

The assets wire resources and metadata; the training use case is app/training.py, the maths
core.datasets, core.training and core.onnx_export.
Both validate before they publish: a bad dataset raises before anything is written, and a
model is registered `servable` only when its blocking ONNX parity check passes.
"""


from typing import Any

import dagster as dg

from usdcop_platform.app.training import (
    TrainedPolicy,
    TrainingInputs,
    TrainingOptions,
    build_training_dataset,
    train_policy,
)
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.display import metric_entries, num
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.defs import catalog
from usdcop_platform.app.features import empty_features
from usdcop_platform.defs.features.assets import CONTRACT
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import MlflowResource, PlatformResource

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
    name, cfg = context.partition_key, platform.config
    out = build_training_dataset(name, cfg.experiment(name), cfg.features, store=platform.store(), lake=platform.lake,
                                 calendar=platform.calendar, min_rows=_min_rows(platform))
    built, lineage = out.built, out.built.lineage
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
            "source_partitions": out.source_partitions,
            "path": dg.MetadataValue.path(str(out.folder)),
        },
        check_results=[
            dg.AssetCheckResult(check_name=n, passed=ok, metadata={"detail": msg}) for n, (ok, msg) in out.checks.items()
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
    name, cfg = context.partition_key, platform.config
    inputs = TrainingInputs(
        name=name, exp=cfg.experiment(name), contract=cfg.features, store=platform.store(), lake=platform.lake,
        models_dir=platform.models_path, annualization=Annualization.from_calendar(platform.calendar), tracking=mlflow,
    )
    options = TrainingOptions(total_timesteps=config.total_timesteps, progress_bar=config.progress_bar,
                              use_ray=config.use_ray)
    trained = train_policy(inputs, options, dagster_run_id=context.run_id)
    package, selected = trained.package, trained.selected
    context.log.info(
        f"model {package.model_id}: seed {selected.seed} of {list(inputs.exp.seeds)}, val_reward "
        f"{selected.val_metrics['val_reward']:.4f}, parity {'PASS' if package.servable else 'FAIL'}"
    )
    return dg.MaterializeResult(
        metadata=_model_metadata(inputs, trained),
        check_results=[_parity_result(package.parity)],
        data_version=dg.DataVersion(package.model_hash),
    )


def _model_metadata(inputs: TrainingInputs, trained: TrainedPolicy) -> dict[str, Any]:
    package, selected, exp = trained.package, trained.selected, inputs.exp
    return {
        "model_id": package.model_id,
        "model_hash": package.model_hash,
        "onnx_hash": package.onnx_hash,
        "dataset_hash": trained.dataset.dataset_hash,
        "config_hash": exp.config_hash,
        "servable": package.servable,
        "selected_seed": selected.seed,
        "seeds": list(exp.seeds),
        **metric_entries({"val_reward": selected.val_metrics["val_reward"],
                          "val_return": selected.val_metrics["val_return"]}),
        "timesteps": selected.timesteps,
        "train_seconds": round(sum(s.seconds for s in trained.result.seeds), 2),  # PPO learning, every seed
        "stopped_early": selected.stopped_early,
        "mlflow_run_id": trained.mlflow_run_id,
        "mlflow_model_version": trained.model_version,
        "ledger_trials": trained.trials_recorded,
        "ledger_family_trials": trained.family_trials,
        "mlflow_run": dg.MetadataValue.url(trained.mlflow_run_url),
        "mlflow_logged_model": dg.MetadataValue.url(trained.logged_model_url),
        "mlflow_logged_model_id": trained.logged_model_id,
        "artifact_dir": dg.MetadataValue.path(str(package.artifact_dir)),
    }


def _parity_result(parity: Any) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
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
