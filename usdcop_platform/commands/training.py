"""`usdcop train --experiment NAME`: dataset -> PPO policy through Dagster, on the local instance.

`train_experiment()` wires the use case (app/train_run.py: datasets/experiment_dataset ->
models/ppo_policy for one experiment partition) to the local instance and the definitions' own
assets and resources.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, open_local_instance, run_deps
from usdcop_platform.settings import Settings, get_settings


def train_experiment(
    name: str,
    settings: Settings | None = None,
    total_timesteps: int | None = None,
    *,
    progress_bar: bool = False,
    use_ray: bool = False,
) -> dict[str, Any]:
    """app.train_run.train_run on the local instance with the definitions' assets and resources.

    Raises the domain error of the failing step (DatasetError, ExperimentContractConflict,
    ConfigError, ...) or UserFacingError for a bad budget or a failed run."""
    from usdcop_platform.app.train_run import RunFailed, train_run

    s = settings or get_settings()
    with open_local_instance(s) as instance:
        try:
            return train_run(name, **run_deps(s, instance), total_timesteps=total_timesteps,
                             progress_bar=progress_bar, use_ray=use_ray)
        except RunFailed as exc:
            raise UserFacingError(str(exc)) from None


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
