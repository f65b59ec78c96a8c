"""evaluation/walk_forward: expanding-window walk-forward of an experiment (retrain per fold).

The maths is core.walk_forward; this asset reads the experiment's feature rows from the lake,
runs the folds and stores the report in the lake (dataset "evaluation/walk_forward/<experiment>",
partition = the experiment's config hash), where the promotion proposal reads its per-fold metrics
and the stability criterion (share of positive folds). An experiment with 0 folds records "off".
"""

import json
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import polars as pl

from usdcop_platform.adapters.backtests import report_json
from usdcop_platform.core import datasets as ds
from usdcop_platform.core import walk_forward as wf
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.core.display import metric_entries, metric_text
from usdcop_platform.defs import catalog
from usdcop_platform.defs.partitions import experiment_partitions, session_key
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY

WALK_FORWARD_KEY = dg.AssetKey(["evaluation", "walk_forward"])
DATASET = "evaluation/walk_forward/{experiment}"


class WalkForwardRunConfig(dg.Config):
    total_timesteps: int | None = None  # per seed and fold; default: the experiment's
    use_ray: bool = False  # folds as Ray tasks (RAY_ADDRESS joins a cluster; else a local instance)


def report_partition(config_hash: str) -> str:
    return config_hash[:16]


def save_report(lake: Any, experiment: str, config_hash: str, report: dict[str, Any]) -> None:
    row = pl.DataFrame({"config_hash": [config_hash], "created_at": [datetime.now(timezone.utc).isoformat()],
                        "report": [report_json(report)]})
    lake.write(DATASET.format(experiment=experiment), report_partition(config_hash), row)


def load_report(
    lake: Any, experiment: str, config_hash: str, *, total_timesteps: int | None = None
) -> dict[str, Any] | None:
    """The walk-forward report of this exact experiment config (None when never run); with
    `total_timesteps`, only one whose folds were trained on that budget (a quick run's folds never
    stand in for a full-budget model's)."""
    df = lake.read(DATASET.format(experiment=experiment), report_partition(config_hash))
    if df is None or df.height == 0 or df.get_column("config_hash")[0] != config_hash:
        return None
    report = json.loads(df.get_column("report")[0])
    if total_timesteps is not None and report.get("folds") and report.get("total_timesteps") != total_timesteps:
        return None
    return report


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
    cfg = platform.config
    exp, contract = cfg.experiment(name), cfg.features
    lake = platform.lake
    if exp.backtest.walk_forward.folds == 0:
        save_report(lake, name, exp.config_hash, {"kind": "off", "folds": [], "aggregate": {}})
        return dg.MaterializeResult(metadata={"folds": 0, "note": "walk-forward is off for this experiment"})
    calendar = platform.calendar
    span = calendar.sessions(exp.date_ranges.train.start, exp.date_ranges.test.end)
    present = [d for d in ds.source_sessions(exp, span) if lake.exists(ds.SOURCE_DATASET, session_key(d))]
    folds = wf.plan_folds(present, exp, ds.effective_embargo(exp, contract), calendar.bars_per_session)
    frame = lake.read_many(ds.SOURCE_DATASET, [session_key(d) for d in present])
    if frame is None:
        raise wf.WalkForwardError(f"no {ds.SOURCE_DATASET} rows for experiment {name!r}: materialize the features first")
    frame = frame.select(ds.dataset_columns(contract)).sort("time")
    runner = None
    if config.use_ray:  # Ray loads only in the run that asks for it
        from usdcop_platform.app.execution import executor_for

        runner = executor_for(True, None, num_cpus=len(folds))
    report = wf.run_walk_forward(
        frame, folds, exp, contract, Annualization.from_calendar(calendar), total_timesteps=config.total_timesteps,
        runner=runner,
    )
    report["config_hash"] = exp.config_hash
    report["total_timesteps"] = config.total_timesteps or exp.algorithm.total_timesteps
    save_report(lake, name, exp.config_hash, report)
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
