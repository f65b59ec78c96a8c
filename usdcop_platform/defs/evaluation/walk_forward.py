"""evaluation/walk_forward: expanding-window walk-forward of an experiment (retrain per fold).

The use case is app/evaluation.run_walk_forward (the maths core.walk_forward): it reads the
experiment's feature rows from the lake, runs the folds and stores the report in the lake
(adapters/walk_forward_reports.py: dataset "evaluation/walk_forward/<experiment>", partition = the
experiment's config hash), where the promotion proposal reads its per-fold metrics and the stability
criterion (share of positive folds). An experiment with 0 folds records "off".
"""

from typing import Any

import dagster as dg

from usdcop_platform.app import evaluation as ev
from usdcop_platform.contracts import assets as A
from usdcop_platform.core.display import metric_entries, metric_text
from usdcop_platform.defs import catalog
from usdcop_platform.defs.evaluation.assets import evaluation_inputs
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY

WALK_FORWARD_KEY = dg.AssetKey(list(A.WALK_FORWARD))


class WalkForwardRunConfig(dg.Config):
    total_timesteps: int | None = None  # per seed and fold; default: the experiment's
    use_ray: bool = False  # folds as Ray tasks (RAY_ADDRESS joins a cluster; else a local instance)


def _ray_executor(n_folds: int) -> Any:
    from usdcop_platform.app.execution import executor_for  # Ray loads only in the run that asks for it

    return executor_for(True, None, num_cpus=n_folds)


def folds_markdown(report: dict[str, Any]) -> str:
    lines = ["| fold | train | test | sharpe | total return | max drawdown | trades |", "|---|---|---|---|---|---|---|"]
    for f in report["folds"]:
        lines.append(f"| {f['fold']} | {f['train_start']} .. {f['train_end']} | {f['test_start']} .. {f['test_end']} | "
                     f"{metric_text('sharpe', f['sharpe'])} | {metric_text('total_return', f['total_return'])} | "
                     f"{metric_text('max_drawdown', f['max_drawdown'])} | {f['trades']} |")
    agg = report["aggregate"]
    lines.append(f"\npositive in {metric_text('positive_share', agg['positive_share'])} of {agg['folds']} folds; "
                 f"mean Sharpe {metric_text('sharpe', agg['sharpe_mean'])}, min {metric_text('sharpe', agg['sharpe_min'])}")
    return "\n".join(lines)


@dg.asset(
    key=WALK_FORWARD_KEY,
    partitions_def=experiment_partitions,
    deps=[DATASET_KEY],
    group_name="evaluation",
    kinds={"pytorch", "polars"},
    owners=[catalog.OWNER_RESEARCH],
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
    description=(
        "Expanding-window walk-forward: each fold retrains on a growing window with its own train-only "
        "normalization and is scored on the next unseen block; per-fold metrics and the share of positive folds."
    ),
)
def walk_forward(
    context: dg.AssetExecutionContext, config: WalkForwardRunConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    name = context.partition_key
    report = ev.run_walk_forward(
        evaluation_inputs(platform), name, total_timesteps=config.total_timesteps,
        executor=_ray_executor if config.use_ray else None,
    )
    if report["kind"] == "off":
        return dg.MaterializeResult(metadata={"folds": 0, "note": "walk-forward is off for this experiment"})
    agg = report["aggregate"]
    context.log.info(f"walk-forward {name}: {agg['folds']} folds, positive share {agg['positive_share']:.0%}")
    return dg.MaterializeResult(
        metadata={
            "folds": agg["folds"],
            **metric_entries({"positive_share": agg["positive_share"], "sharpe_mean": agg["sharpe_mean"],
                              "sharpe_min": agg["sharpe_min"]}),
            "per_fold": dg.MetadataValue.md(folds_markdown(report)),
            "norm_stats_hashes": [f["norm_stats_hash"][:12] for f in report["folds"]],
            "train_seconds": round(sum(f.get("train_seconds", 0.0) for f in report["folds"]), 2),
        }
    )
