"""Train one experiment: the use case behind `usdcop train` and the model stage of `usdcop run`.

Launches datasets/experiment_dataset -> models/ppo_policy for the experiment's partition through
`launch` (the shells pass an adapters.dagster_runs.DagsterAssetsLauncher) and returns what the run
produced. The training itself (dataset split, PPO seeds, ONNX, parity, MLflow) is app/training.py,
inside the assets.
"""

from __future__ import annotations

from typing import Any, Protocol

from usdcop_platform.app.experiments import DynamicPartitionStore, ensure_experiment_partitions
from usdcop_platform.contracts.assets import DATASET, MODEL, AssetPath, key_string
from usdcop_platform.contracts.platform import PlatformConfig


class RunFailed(RuntimeError):
    """A launched run failed or stopped (not a domain error of its step): one line naming the run."""


class AssetsRunLike(Protocol):
    run_id: str
    success: bool
    metadata: dict[str, dict[str, Any]]
    failed_checks: list[str]
    stopped: str | None


class LaunchAssets(Protocol):
    """Materialize assets (contracts.assets paths) of one partition; raises the failing step's own
    error; a run Dagster stopped itself (a failed blocking check) has `stopped` set."""

    def __call__(self, paths: list[AssetPath], *, partition_key: str, op_config: dict[AssetPath, dict[str, Any]],
                 tags: dict[str, str]) -> AssetsRunLike: ...


def train_run(
    name: str,
    *,
    config: PlatformConfig,
    config_dir: str,
    partitions: DynamicPartitionStore,
    launch: LaunchAssets,
    total_timesteps: int | None = None,
    progress_bar: bool = False,
    use_ray: bool = False,
) -> dict[str, Any]:
    """Materialize dataset -> model for experiment `name`; returns the model id and lineage.

    Raises ConfigError
    (unknown name), RunFailed (bad budget, failed or stopped run) or the failing step's domain
    error (DatasetError, ExperimentContractConflict, ...)."""
    config.experiment(name)  # unknown name: ConfigError before any work
    if total_timesteps is not None and total_timesteps < 1:
        raise RunFailed(f"--timesteps must be >= 1, got {total_timesteps}")
    ensure_experiment_partitions(partitions, config_dir)
    run = launch([DATASET, MODEL], partition_key=name, tags={"usdcop/command": "train"}, op_config={
        MODEL: {"total_timesteps": total_timesteps, "progress_bar": progress_bar, "use_ray": use_ray}})
    if run.stopped is not None:
        raise RunFailed(f"training of {name!r} stopped: {run.stopped}")
    if not run.success:
        raise RunFailed(f"training of {name!r} failed (dagster run {run.run_id})")
    dataset = run.metadata.get(key_string(DATASET), {})
    model = run.metadata.get(key_string(MODEL), {})
    return {
        "experiment": name,
        "dagster_run_id": run.run_id,
        "failed_checks": run.failed_checks,
        **{k: model.get(k) for k in (
            "model_id", "model_hash", "onnx_hash", "servable", "selected_seed", "val_reward",
            "val_return_pct",  # percent, as the asset's metadata shows it
            "timesteps", "train_seconds", "mlflow_run_id", "mlflow_model_version", "artifact_dir")},
        **{k: dataset.get(k) for k in ("dataset_hash", "norm_stats_hash", "feature_order_hash", "config_hash")},
        "rows": {k.removeprefix("rows_"): v for k, v in dataset.items() if k.startswith("rows_")},
    }
