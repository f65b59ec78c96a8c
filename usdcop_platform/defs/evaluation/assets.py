"""Evaluation assets on experiment partitions: evaluation/backtest -> evaluation/promotion_proposal.

(No `from __future__ import annotations` here: Dagster resolves the Config annotations at runtime.)

The use cases are app/evaluation.py (backtest beside production and the baselines, live-rule column,
significance and overfitting statistics; the first vote and its proposal row) and
app/backtest_requests.py (a run tagged with a reviewer's REQUEST_MORE_TESTS backtests the requested
period and attaches it to the proposal). These assets wire the resources in, call them, and turn the
results into metadata, MLflow tags and log lines.
"""


from typing import Any

import dagster as dg

from usdcop_platform.adapters.store.tables import PromotionProposal
from usdcop_platform.adapters.tracking import RunAnnotation
from usdcop_platform.app import backtest_requests
from usdcop_platform.app import evaluation as ev
from usdcop_platform.contracts import assets as A
from usdcop_platform.contracts.evaluation import DEFAULT_EVALUATION
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.core import promotion
from usdcop_platform.core.charts import equity_drawdown_png, markdown_image
from usdcop_platform.core.display import metric_entries, metric_text, num, num_text, pct_text, prob
from usdcop_platform.core.schema import BACKTEST_SERIES_SCHEMA, BACKTEST_TRADES_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import MlflowResource, PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY, MODEL_KEY

BACKTEST_KEY = dg.AssetKey(list(A.BACKTEST))
PROPOSAL_KEY = dg.AssetKey(list(A.PROPOSAL))
GROUP = "evaluation"


class BacktestRunConfig(dg.Config):
    """Run-time choices of a backtest (the experiment YAML stays the source of truth)."""

    model_id: str | None = None  # default: the newest registered model of the experiment
    start: str | None = None  # YYYY-MM-DD; with `end`, backtest these sessions instead of the test split
    end: str | None = None
    # A period the lake covers only in part is refused (naming the missing sessions) unless this is set;
    # then the covered sessions are backtested and the coverage is stated wherever the result appears.
    allow_partial: bool = False


class ProposalRunConfig(dg.Config):
    model_id: str | None = None  # default: the model of the experiment's newest backtest


def evaluation_inputs(platform: PlatformResource, store: Any = None) -> ev.EvaluationInputs:
    """The use cases' adapters and config, from the platform resource (no store: a use case that
    needs none, the walk-forward)."""
    return ev.EvaluationInputs(store=store, lake=platform.lake, calendar=platform.calendar, config=platform.config,
                               models_root=platform.models_path, evaluation=DEFAULT_EVALUATION)


# ---- metadata (presentation only) ----------------------------------------------------------------
TABLE_METRICS = (
    "sharpe", "sortino", "session_sharpe", "total_return", "annual_return", "max_drawdown", "volatility",
    "trades", "win_rate", "profit_factor", "avg_trade", "exposure", "turnover_per_session", "total_costs",
    "final_equity", "psr", "dsr", "min_track_record_years", "certifiable_sharpe",
)


def metrics_markdown(summary: dict[str, Any]) -> str:
    """Candidate beside its benchmarks, one metric per row."""
    cols = [("candidate", summary["metrics"])]
    if summary.get("live_rule"):  # the same model under the live rule (threshold, sizing, risk, next-open fill)
        cols.append(("candidate, live rule", summary["live_rule"]))
    cols.append(("buy & hold", summary["benchmarks"]["buy_and_hold"]))
    if summary["benchmarks"].get("baseline") is not None:
        cols.append(("production", summary["benchmarks"]["baseline"]))
    cols.append(("flat", summary["benchmarks"]["flat"]))
    lines = ["| metric | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for k in TABLE_METRICS:
        lines.append(f"| {k} | " + " | ".join(metric_text(k, m.get(k)) for _, m in cols) + " |")
    return "\n".join(lines)


def sweep_markdown(sweep: list[dict[str, Any]]) -> str:
    lines = ["| cost bps | sharpe | total return | max drawdown | final equity |", "|---|---|---|---|---|"]
    for r in sweep:
        lines.append(
            f"| {r['cost_bps']:g} | {metric_text('sharpe', r['sharpe'])} | {metric_text('total_return', r['total_return'])} | "
            f"{metric_text('max_drawdown', r['max_drawdown'])} | {metric_text('final_equity', r['final_equity'])} |"
        )
    return "\n".join(lines)


def walk_forward_markdown(wf: dict[str, Any]) -> str:
    lines = ["| fold | sessions | sharpe | total return | max drawdown | trades |", "|---|---|---|---|---|---|"]
    for f in wf["folds"]:
        lines.append(
            f"| {f['fold']} | {f['n_sessions']} | {metric_text('sharpe', f['sharpe'])} | "
            f"{metric_text('total_return', f['total_return'])} | {metric_text('max_drawdown', f['max_drawdown'])} | "
            f"{f['trades']} |"
        )
    agg = wf["aggregate"]
    lines.append(
        f"\nmean Sharpe {num_text(agg['sharpe_mean'])}, median {num_text(agg['sharpe_median'])}, "
        f"min {num_text(agg['sharpe_min'])}, positive in {pct_text(agg['positive_share'])} of folds, "
        f"worst drawdown {pct_text(agg['max_drawdown_worst'])}"
    )
    return "\n".join(lines)


def criteria_markdown(decision: promotion.PromotionDecision) -> str:
    lines = ["| criterion | kind | value | threshold | result |", "|---|---|---|---|---|"]
    for c in decision.criteria:
        lines.append(f"| {c.name} | {c.kind} | {metric_text(c.metric, c.value)} | {c.comparator} "
                     f"{metric_text(c.metric, c.threshold)} | {c.status} |")
    return "\n".join(lines)


def vote_text(period: dict[str, Any]) -> str:
    role = ev.backtest_role(period)
    if role == "vote":
        return "test split, out of sample: votes"
    if role == "in_sample_diagnostic":
        return f"IN-SAMPLE diagnostic, never votes: {period['in_sample_reason']}"
    return ("out-of-sample diagnostic of an explicit period, never votes: only the test split and the "
            "walk-forward folds vote")


def _vote_metadata(period: dict[str, Any]) -> dict[str, Any]:
    """How the backtest counts: the vote, or an IN-SAMPLE diagnostic; and its coverage if partial."""
    out: dict[str, Any] = {"vote": vote_text(period)}
    cov = period.get("coverage")
    if cov:
        out["coverage"] = coverage_text(cov)
    return out


def coverage_text(cov: dict[str, Any]) -> str:
    return (f"{pct_text(cov['coverage'])} of the requested sessions ({cov['covered_sessions']} of "
            f"{cov['requested_sessions']}; missing {ev.named(cov['missing_sessions'])}), run with --allow-partial")


overfitting_markdown = ev.overfitting_text


def mlflow_metadata(context: dg.AssetExecutionContext, note: RunAnnotation | None, run_id: str | None) -> dict[str, Any]:
    """Link to the model's MLflow run, or a warning when the tracking store does not have it."""
    if note is None:
        if run_id:
            context.log.warning(f"MLflow run {run_id} of the model is not in this tracking store: nothing written to it")
        return {}
    return {"mlflow_run": dg.MetadataValue.url(note.url), "mlflow_run_id": note.run_id}


def track_backtest(
    context: dg.AssetExecutionContext, mlflow: MlflowResource, rec: Any, report: dict[str, Any]
) -> dict[str, Any]:
    """The backtest's metrics and tags on the model's training run (and its LoggedModel)."""
    run_id = rec.get("mlflow_run_id")
    note = mlflow.log_backtest(run_id, report, dagster_run_id=context.run_id) if run_id else None
    return mlflow_metadata(context, note, run_id)




def backtest_metadata(result: ev.BacktestResult, tracked: dict[str, Any], exp: ExperimentConfig) -> dict[str, Any]:
    """The backtest asset's metadata: headline numbers, the live-rule column, the vote, the tables."""
    report, rec, evaluation, live_rule, period = result.report, result.rec, result.evaluation, result.live_rule, result.period
    assert evaluation is not None and result.family is not None
    m = evaluation.candidate.metrics
    test_start, test_end = report["test_start"], report["test_end"]
    png = equity_drawdown_png(
        evaluation.candidate.equity, evaluation.candidate.drawdown, times=result.times,
        benchmarks={"buy & hold": evaluation.buy_and_hold.equity,
                    "production": None if evaluation.baseline is None else evaluation.baseline.equity},
        title=f"{report['experiment']} · {rec['model_id']} · {test_start} → {test_end} · {exp.backtest.cost_bps:g} bps",
    )
    request_id = report.get("backtest_request_id")
    return {
        "model_id": rec["model_id"],
        "baseline_model_id": report["baseline_model_id"] or "none",
        "test_period": f"{test_start} .. {test_end}",
        "period_source": period["source"],
        "out_of_sample": period["out_of_sample"],
        **_vote_metadata(period),
        "lake_partition": result.partition,
        **({} if request_id is None else {"backtest_request_id": request_id}),
        "n_bars": report["n_bars"],
        **metric_entries({"sharpe": float(m["sharpe"]), "max_drawdown": float(m["max_drawdown"]),
                          "total_return": float(m["total_return"])}),
        "trades": int(m["trades"]),
        # The same model under the live rule (diagnostic column; the argmax result above votes).
        **metric_entries({"live_rule_sharpe": float(live_rule["sharpe"]),
                          "live_rule_total_return": float(live_rule["total_return"])}),
        "live_rule_trades": int(live_rule["trades"]),
        "live_rule_fill": live_rule["fill"],
        **metric_entries({"psr": float(m["psr"]), "dsr": float(m["dsr"])}),
        "n_trials": int(m["n_trials"]),
        "n_trials_source": result.family.source(),
        "trial_sharpe_variance_annual": num(float(m["trial_sharpe_variance_annual"])),
        "trial_variance_source": m["trial_variance_source"],
        "overfitting": dg.MetadataValue.md(overfitting_markdown(report["overfitting"], exp.success_criteria.p_min)),
        "backtest_hash": report["backtest_hash"],
        "metrics": dg.MetadataValue.md(metrics_markdown(report)),
        "equity_drawdown": dg.MetadataValue.md(markdown_image(png, f"equity and drawdown of {rec['model_id']}")),
        "cost_sweep": dg.MetadataValue.md(sweep_markdown(evaluation.cost_sweep)),
        "series_path": dg.MetadataValue.path(report["series_path"]),
        **tracked,
        **({"walk_forward": dg.MetadataValue.md(walk_forward_markdown(evaluation.walk_forward))}
           if evaluation.walk_forward else {}),
    }


# ---- assets --------------------------------------------------------------------------------------
@dg.asset(
    key=BACKTEST_KEY,
    partitions_def=experiment_partitions,
    deps=[DATASET_KEY, MODEL_KEY],
    group_name=GROUP,
    kinds={"onnx", "polars", "parquet"},
    owners=[catalog.OWNER_RESEARCH],
    # the per-bar series (equity, drawdown, positions); the trades table beside it
    metadata=catalog.columns(catalog.table_schema(BACKTEST_SERIES_SCHEMA),
                             trades_columns=catalog.table_schema(BACKTEST_TRADES_SCHEMA)),
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
    description=(
        "Out-of-sample backtest of the experiment's model (ONNX, serving inference code) on the test split, "
        "beside buy-and-hold, flat and the production model: series, trades, metrics, cost sweep, bootstrap."
    ),
)
def backtest(
    context: dg.AssetExecutionContext, config: BacktestRunConfig, platform: PlatformResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    store = platform.store()
    request = backtest_requests.request_of_run(store, context.run.tags)
    with backtest_requests.failure_recorded(store, request, context.run_id):
        if request is None:
            return _backtest(context, config, platform, store, None, mlflow)
        model_id, start, end = backtest_requests.request_period(request, config.model_id, config.start, config.end)
        return _backtest(context, BacktestRunConfig(model_id=model_id, start=start, end=end,
                                                    allow_partial=config.allow_partial), platform, store,
                         request["id"], mlflow)


def _backtest(
    context: dg.AssetExecutionContext, config: BacktestRunConfig, platform: PlatformResource, store: Any,
    request_id: int | None, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    result = ev.run_backtest(
        evaluation_inputs(platform, store), name, model_id=config.model_id, start=config.start, end=config.end,
        allow_partial=config.allow_partial, request_id=request_id, dagster_run_id=context.run_id,
    )
    rec, report = result.rec, result.report
    if result.insufficient is not None:
        context.log.warning(result.insufficient)
        return dg.MaterializeResult(
            metadata={"model_id": rec["model_id"], "n_bars": report["n_bars"], "insufficient": result.insufficient,
                      "lake_partition": result.partition, **_vote_metadata(result.period),
                      **track_backtest(context, mlflow, rec, report)}
        )
    tracked = track_backtest(context, mlflow, rec, report)
    m = report["metrics"]
    context.log.info(
        f"backtest {name}/{rec['model_id']}: {report['n_bars']} bars, sharpe {m['sharpe']:.3f}, "
        f"max dd {m['max_drawdown']:.3%}, {m['trades']} trades, baseline {report['baseline_model_id']}"
    )
    return dg.MaterializeResult(
        metadata=backtest_metadata(result, tracked, platform.config.experiment(name)),
        data_version=dg.DataVersion(report["backtest_hash"]),
    )


@dg.asset(
    key=PROPOSAL_KEY,
    partitions_def=experiment_partitions,
    deps=[BACKTEST_KEY, dg.AssetKey(list(A.WALK_FORWARD))],
    group_name=GROUP,
    kinds={"sql"},
    owners=[catalog.OWNER_RESEARCH],
    metadata=catalog.columns(catalog.sql_table_schema(PromotionProposal.__table__)),
    automation_condition=dg.AutomationCondition.eager(),
    description=(
        "First vote: the success criteria of the experiment applied to its latest backtest -> PROMOTE / REVIEW / "
        "REJECT, written as a PENDING_APPROVAL proposal (one per model id) with lineage and statistical statement."
    ),
)
def promotion_proposal(
    context: dg.AssetExecutionContext, config: ProposalRunConfig, platform: PlatformResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    name = context.partition_key
    store = platform.store()
    request = backtest_requests.request_of_run(store, context.run.tags)
    if request is not None:
        with backtest_requests.failure_recorded(store, request, context.run_id):
            return _complete_backtest_request(context, platform, store, request)
    outcome = ev.propose(evaluation_inputs(platform, store), name, config.model_id)
    if isinstance(outcome, ev.Diagnostic):
        context.log.warning(outcome.note)
        existing = outcome.existing
        return dg.MaterializeResult(
            metadata={
                "proposal_id": existing["proposal_id"] if existing is not None else "",
                "model_id": outcome.model_id,
                "recommendation": existing["recommendation"] if existing is not None else "none",
                "status": existing["status"] if existing is not None else "no proposal",
                "diagnostic": outcome.note,
            }
        )
    row, rec, decision = outcome.row, outcome.rec, outcome.decision
    context.log.info(
        f"proposal {row['proposal_id']} for {rec['model_id']}: {decision.recommendation} "
        f"({decision.confidence:.2f}), status {row['status']}"
    )
    run_id = rec.get("mlflow_run_id")
    note = mlflow.tag_model_run(run_id, {
        "proposal/id": row["proposal_id"], "proposal/recommendation": decision.recommendation,
        "proposal/status": row["status"], **mlflow.dagster_tags(context.run_id, prefix="proposal/"),
    }) if run_id else None
    p_min = platform.config.experiment(name).success_criteria.p_min
    return dg.MaterializeResult(metadata={**proposal_metadata(outcome, p_min), **mlflow_metadata(context, note, run_id)})


def proposal_metadata(outcome: ev.Proposal, p_min: float) -> dict[str, Any]:
    """The proposal asset's metadata: the vote, its criteria and reasons, the trial family, PBO and SPA."""
    decision, metrics, over = outcome.decision, outcome.metrics, outcome.overfitting
    return {
        "proposal_id": outcome.row["proposal_id"],
        "model_id": outcome.rec["model_id"],
        "recommendation": decision.recommendation,
        "confidence": prob(decision.confidence),
        "status": outcome.row["status"],
        "criteria": dg.MetadataValue.md(criteria_markdown(decision)),
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in outcome.reasons)),
        "statistical_statement": dg.MetadataValue.md(outcome.statement),
        "backtest_hash": outcome.report.get("backtest_hash") or "",
        "n_trials": int(metrics.get("n_trials") or 0),
        "n_trials_source": str(metrics.get("n_trials_source") or ""),
        "trial_sharpe_variance_annual": num(metrics.get("trial_sharpe_variance_annual")),
        "trial_variance_source": str(metrics.get("trial_variance_source") or ""),
        "pbo": prob((over.get("pbo") or {}).get("pbo")),
        "spa_pvalue": prob((over.get("spa") or {}).get("pvalue")),
        "overfitting": dg.MetadataValue.md(overfitting_markdown(over, p_min)),
    }


def _complete_backtest_request(
    context: dg.AssetExecutionContext, platform: PlatformResource, store: Any, request: Any
) -> dg.MaterializeResult:
    """Attach the requested period's backtest to the proposal (no new first vote)."""
    done = backtest_requests.complete_from_lake(
        store, platform.lake, context.partition_key, request, run_id=context.run_id,
        review_days=DEFAULT_EVALUATION.promotion.proposal_ttl_days,
    )
    proposal = done.outcome["proposal"]
    status = proposal["status"] if proposal is not None else "no proposal"
    context.log.info(
        f"backtest request {request['id']} ({done.model_id}, {done.start}..{done.end}) done; proposal "
        f"{proposal['proposal_id'] if proposal is not None else '-'} is {status}"
    )
    metrics = done.report.get("metrics") or {}
    return dg.MaterializeResult(
        metadata={
            "proposal_id": proposal["proposal_id"] if proposal is not None else "",
            "model_id": done.model_id,
            "status": status,
            "backtest_request_id": request["id"],
            "request_period": f"{done.start} .. {done.end}",
            "reopened": bool(done.outcome["reopened"]),
            "lake_partition": done.partition,
            "n_bars": int(done.report.get("n_bars") or 0),
            **metric_entries({k: float(metrics[k]) for k in ("sharpe", "max_drawdown", "total_return")
                              if metrics.get(k) is not None}),
        }
    )


__all__ = [
    "BACKTEST_KEY",
    "PROPOSAL_KEY",
    "BacktestRunConfig",
    "ProposalRunConfig",
    "backtest",
    "promotion_proposal",
]
