"""models/search: the hyperparameter search of an experiment partition (app.search does the work).

Depends on datasets/experiment_dataset (lineage: the dataset hash is in the metadata and every
trial's ledger row). Launches its trials on Ray when `use_ray` (a local instance, or the cluster
named by `address` / RAY_ADDRESS), otherwise in this process. The best configuration is written as
an ordinary experiment version (best.yaml): it is trained and proposed like any other, never
promoted from here.
"""


import base64
from pathlib import Path

import dagster as dg

from usdcop_platform.core.display import num, num_text
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.defs import catalog
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import MlflowResource, PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY, GROUP

SEARCH_KEY = dg.AssetKey(["models", "search"])


class SearchRunConfig(dg.Config):
    trials: int = 8
    workers: int = 2
    use_ray: bool = True
    address: str | None = None


def _params_text(params: dict) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={num_text(v) if isinstance(v, float) else v}" for k, v in params.items())


def _trials_markdown(rows: list[dict]) -> str:
    head = "| trial | state | value | val Sharpe | test Sharpe | params_hash | parameters |\n|---|---|---|---|---|---|---|\n"

    def f(v: object) -> str:
        return "" if v is None else num_text(v)

    return head + "\n".join(
        f"| {r['number']} | {r['state']} | {f(r['value'])} | {f(r['val_sharpe'])} | {f(r['test_sharpe'])} | "
        f"{(r['params_hash'] or '')[:12]} | {_params_text(r['params'])} |"
        for r in rows
    )


@dg.asset(
    key=SEARCH_KEY,
    partitions_def=experiment_partitions,
    deps=[DATASET_KEY],
    group_name=GROUP,
    kinds={"optuna", "ray", "mlflow"},
    owners=[catalog.OWNER_RESEARCH],
    description="Optuna search (TPE + median pruning, study in the SQL store) over the experiment's search space; "
    "trials on Ray; every trial in the trial ledger and MLflow; best config = an ordinary experiment version.",
)
def model_search(
    context: dg.AssetExecutionContext, config: SearchRunConfig, platform: PlatformResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from usdcop_platform.app.search import search_experiment

    name, cfg = context.partition_key, platform.config

    def log(p: dict) -> None:
        context.log.info(f"search {name}: {p['finished']}/{p['target']} trials finished; best {p['best']}")

    out = search_experiment(
        name, cfg.experiment(name), cfg.features, store=platform.store(), lake=platform.lake, tracking=mlflow,
        ann=Annualization.from_calendar(platform.calendar), database_url=platform.sql_url,
        dagster_run_id=context.run_id, trials=config.trials, workers=config.workers, use_ray=config.use_ray,
        address=config.address, out_dir=Path(platform.state_dir) / "search", progress=log,
    )
    return dg.MaterializeResult(metadata=_search_metadata(out),
                                data_version=dg.DataVersion(f"{out['study_name']}:{out['finished']}"))


def _search_metadata(out: dict) -> dict:
    best = out["best"] or {}
    importances = out["importances"]
    metadata: dict = {
        "study": out["study_name"],
        "dataset_hash": out["dataset_hash"],
        "executor": out["executor"],
        "trials_finished": out["finished"],
        "trials_complete": out["complete"],
        "trials_pruned": out["pruned"],
        "trials_failed": out["failed"],
        "best_trial": best.get("number"),
        "best_value": num(best.get("value")),
        "best_params": dg.MetadataValue.json(best.get("params") or {}),
        "trials": dg.MetadataValue.md(_trials_markdown(out["trials"])),
        "parameter_importances": dg.MetadataValue.md(
            "| parameter | importance |\n|---|---|\n" + "\n".join(f"| {k} | {v:.3f} |" for k, v in importances.items())
            if importances else "fewer than two complete trials: no importances yet"
        ),
        "ledger_family_trials": out["ledger_family_trials"],
        "mlflow_parent_run_id": out["parent_run_id"] or "",
        "seconds": num(out["seconds"]),
        "next_step": "train the best config as an ordinary experiment version (never promoted directly): "
        f"{out['best_config_path']}",
    }
    if out["importance_plot"]:
        metadata["importance_plot"] = dg.MetadataValue.path(out["importance_plot"])
        png = base64.b64encode(Path(out["importance_plot"]).read_bytes()).decode("ascii")
        metadata["importance_chart"] = dg.MetadataValue.md(f"![parameter importances](data:image/png;base64,{png})")
    if out["best_config_path"]:
        metadata["best_config"] = dg.MetadataValue.path(out["best_config_path"])
    return metadata
