"""`usdcop tune --experiment NAME --trials N [--workers K] [--address ADDR] [--nodes M]`.

Materializes datasets/experiment_dataset and models/search for the experiment partition on the
local Dagster instance, printing each finished trial as it lands. Trials run:
  * in this process when --workers 1 and no cluster is named;
  * on Ray otherwise: the cluster at --address / RAY_ADDRESS, or a local Ray instance, or with
    --nodes M a local M-node cluster (head + M-1 worker nodes as separate processes, one CPU each)
    started for the command and stopped after it.
The study lives in the platform's SQL database: the same command again resumes it (up to N
finished trials). The best configuration is written as an ordinary experiment version; it is
trained and proposed like any other model, never promoted from here.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, open_local_instance
from usdcop_platform.settings import Settings, get_settings


def tune_experiment(
    name: str, *, trials: int, workers: int, address: str | None = None, nodes: int = 0,
    settings: Settings | None = None, progress: Any = None,
) -> dict[str, Any]:
    """dataset -> models/search for `name`; returns the asset's metadata values."""
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.search import space_of

    s = settings or get_settings()
    space_of(load_platform_config(s.config_dir).experiment(name))  # no search section: clear error first
    if trials < 1 or workers < 1:
        raise UserFacingError(f"--trials and --workers must be >= 1 (got {trials}, {workers})")

    import dagster as dg

    from usdcop_platform.adapters.ray_cluster import LocalCluster, disconnect
    from usdcop_platform.app.search import progress_listener
    from usdcop_platform.app.experiments import ensure_experiment_partitions
    from usdcop_platform.contracts.assets import DATASET, SEARCH
    from usdcop_platform.definitions import asset_def, build_resources

    with contextlib.ExitStack() as stack:
        if nodes:
            cluster = stack.enter_context(LocalCluster(workers=nodes - 1, cpus_per_node=1))
            address = cluster.address
        use_ray = workers > 1 or bool(address or os.environ.get("RAY_ADDRESS"))
        stack.callback(disconnect)
        if progress is not None:
            stack.enter_context(progress_listener(progress))
        instance = open_local_instance(s)
        stack.callback(instance.dispose)
        ensure_experiment_partitions(instance, str(s.config_dir))
        model_search = asset_def(SEARCH)
        run_config = {"ops": {model_search.op.name: {"config": {
            "trials": trials, "workers": workers, "use_ray": use_ray, "address": address}}}}
        try:
            result = dg.materialize(
                [asset_def(DATASET), model_search], partition_key=name, instance=instance,
                resources=build_resources(s), run_config=run_config, tags={"usdcop/command": "tune"},
            )
        except dg.DagsterExecutionStepExecutionError as exc:
            if exc.user_exception is not None:
                raise exc.user_exception from None
            raise
        if not result.success:
            raise UserFacingError(f"search of {name!r} failed (dagster run {result.run_id})")
        [event] = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == dg.AssetKey(list(SEARCH))]
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
    return {**meta, "dagster_run_id": result.run_id, "ray": address or ("local" if use_ray else None)}


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_cmd(
        experiment: str = typer.Option(..., "--experiment", "-e", help="name of a config/experiments/*.yaml with a search section"),
        trials: int = typer.Option(8, "--trials", "-n", help="finished trials the study should hold (a study resumes)"),
        workers: int = typer.Option(1, "--workers", "-w", help="trials at a time (> 1: on Ray)"),
        address: str = typer.Option(None, "--address", help="Ray cluster to join (default: RAY_ADDRESS, else local)"),
        nodes: int = typer.Option(0, "--nodes", help="start a local Ray cluster of this many nodes for the command"),
    ) -> None:
        """Hyperparameter search (Optuna TPE + median pruning) with the study in the SQL store; trials on Ray."""
        from usdcop_platform.adapters.store import StoreError
        from usdcop_platform.core.datasets import DatasetError
        from usdcop_platform.core.search import SearchSpaceError

        def show(p: dict) -> None:
            last, best = p.get("last") or {}, p.get("best") or {}
            what = p["error"] or f"trial {last.get('number')} {last.get('state')} value={last.get('value')}"
            console.print(f"[{p['finished']}/{p['target']}] {what} | best: trial {best.get('number')} "
                          f"value={best.get('value')}", soft_wrap=True)

        with cli_errors():
            try:
                out = tune_experiment(experiment, trials=trials, workers=workers, address=address, nodes=nodes, progress=show)
            except (DatasetError, StoreError, SearchSpaceError) as exc:
                raise UserFacingError(str(exc)) from exc
        table = Table(title=f"search {out['study']}")
        table.add_column("item")
        table.add_column("value")
        for key in ("executor", "ray", "trials_finished", "trials_complete", "trials_pruned", "trials_failed",
                    "best_trial", "best_value", "best_params", "ledger_family_trials", "mlflow_parent_run_id", "seconds"):
            table.add_row(key, str(out.get(key)))
        console.print(table)
        if out.get("best_config"):
            console.print(
                f"best config written to {out['best_config']} (an ordinary experiment version, never promoted directly).\n"
                "Next: copy it to config/experiments/ under a new name or version, then "
                "`usdcop train --experiment <name>` and `usdcop backtest --experiment <name>` (proposal -> votes).",
                soft_wrap=True,
            )
