"""`usdcop train --experiment NAME`: dataset -> PPO policy through Dagster, on the local instance.

`train_experiment()` is the reusable entry (the demo calls it): it materializes
datasets/experiment_dataset and models/ppo_policy for one experiment partition with the
definitions' own assets and resources, and returns what was produced.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, open_local_instance
from usdcop_platform.settings import Settings, get_settings


def _metadata_values(result: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        out["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
    return out


def train_experiment(
    name: str,
    settings: Settings | None = None,
    total_timesteps: int | None = None,
    *,
    progress_bar: bool = False,
    use_ray: bool = False,
) -> dict[str, Any]:
    """Materialize dataset -> model for experiment `name`; returns the model id and lineage.

    Raises the domain error of the failing step (DatasetError, ExperimentContractConflict,
    ConfigError, ...) or UserFacingError for a failed blocking check."""
    from usdcop_platform.contracts.platform import load_platform_config

    s = settings or get_settings()
    load_platform_config(s.config_dir).experiment(name)  # unknown name: ConfigError before any work
    if total_timesteps is not None and total_timesteps < 1:
        raise UserFacingError(f"--timesteps must be >= 1, got {total_timesteps}")

    import dagster as dg

    from usdcop_platform.app.experiments import ensure_experiment_partitions
    from usdcop_platform.contracts.assets import DATASET, MODEL, key_string
    from usdcop_platform.definitions import asset_def, build_resources

    instance = open_local_instance(s)
    try:
        ensure_experiment_partitions(instance, str(s.config_dir))
        model = asset_def(MODEL)
        run_config = {"ops": {model.op.name: {"config": {
            "total_timesteps": total_timesteps, "progress_bar": progress_bar, "use_ray": use_ray}}}}
        try:
            result = dg.materialize(
                [asset_def(DATASET), model],
                partition_key=name,
                instance=instance,
                resources=build_resources(s),
                run_config=run_config,
                tags={"usdcop/command": "train"},
            )
        except dg.DagsterExecutionStepExecutionError as exc:
            if exc.user_exception is not None:
                raise exc.user_exception from None
            raise
        except dg.DagsterError as exc:  # a failed blocking check (e.g. ONNX parity): model not servable
            raise UserFacingError(f"training of {name!r} stopped: {exc}") from exc
        if not result.success:
            raise UserFacingError(f"training of {name!r} failed (dagster run {result.run_id})")
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        meta = _metadata_values(result)
    finally:
        instance.dispose()
    dataset = meta.get(key_string(DATASET), {})
    model = meta.get(key_string(MODEL), {})
    return {
        "experiment": name,
        "dagster_run_id": result.run_id,
        "failed_checks": failed,
        "model_id": model.get("model_id"),
        "model_hash": model.get("model_hash"),
        "onnx_hash": model.get("onnx_hash"),
        "servable": model.get("servable"),
        "selected_seed": model.get("selected_seed"),
        "val_reward": model.get("val_reward"),
        "val_return_pct": model.get("val_return_pct"),  # percent, as the asset's metadata shows it
        "timesteps": model.get("timesteps"),
        "train_seconds": model.get("train_seconds"),
        "mlflow_run_id": model.get("mlflow_run_id"),
        "mlflow_model_version": model.get("mlflow_model_version"),
        "artifact_dir": model.get("artifact_dir"),
        "dataset_hash": dataset.get("dataset_hash"),
        "norm_stats_hash": dataset.get("norm_stats_hash"),
        "feature_order_hash": dataset.get("feature_order_hash"),
        "config_hash": dataset.get("config_hash"),
        "rows": {k.removeprefix("rows_"): v for k, v in dataset.items() if k.startswith("rows_")},
    }


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        experiment: str = typer.Option(..., "--experiment", "-e", help="name of a config/experiments/*.yaml"),
        timesteps: int = typer.Option(None, "--timesteps", help="override algorithm.total_timesteps"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show the SB3 progress bar"),
        ray: bool = typer.Option(False, "--ray", help="train the seeds as Ray tasks (RAY_ADDRESS or a local instance)"),
    ) -> None:
        """Build the experiment's dataset and train its PPO policy (ONNX + parity + MLflow + registry)."""
        from usdcop_platform.adapters.store import StoreError
        from usdcop_platform.core.datasets import DatasetError

        with cli_errors():
            try:
                out = train_experiment(experiment, total_timesteps=timesteps, progress_bar=progress and not ray, use_ray=ray)
            except (DatasetError, StoreError) as exc:
                raise UserFacingError(str(exc)) from exc
        table = Table(title=f"trained {experiment}")
        table.add_column("item")
        table.add_column("value")
        for key in (
            "model_id", "servable", "selected_seed", "val_reward", "val_return_pct", "timesteps",
            "dataset_hash", "model_hash", "mlflow_run_id", "mlflow_model_version", "artifact_dir", "dagster_run_id",
        ):
            table.add_row(key, str(out[key]))
        table.add_row("rows", ", ".join(f"{k}={v}" for k, v in out["rows"].items()))
        console.print(table)
        state = "servable" if out["servable"] else "NOT servable (ONNX parity failed)"
        console.print(f"model {out['model_id']} registered as staging, {state}", soft_wrap=True)
