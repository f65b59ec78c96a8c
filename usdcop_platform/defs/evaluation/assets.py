"""Evaluation assets on experiment partitions: evaluation/backtest -> evaluation/promotion_proposal.

(No `from __future__ import annotations` here: Dagster resolves the Config annotations at runtime.)

The backtest replays the experiment's model over the out-of-sample test split through the
serving code (core.inference verifies and loads the model exactly as the live path does;
core.policy_runner makes the per-bar decisions), beside the current production model on the
same bars, and stores series, trades and a report in the lake (adapters.backtests; an explicit
period gets its own partition). The proposal applies the first-vote rules (core.promotion) and
upserts one row per model id. A run tagged with a reviewer's backtest request (REQUEST_MORE_TESTS)
backtests the requested period and attaches it to the proposal instead (app/backtest_requests.py).
The maths lives in core/; these functions only fetch, call and store.

Issue #13 rules kept here: the deflated Sharpe's N and V come from the trial ledger of the family
(app/trials.py); an explicit period starting on or before the model's training end is an
IN-SAMPLE diagnostic that the proposal never votes on; a period the lake covers only in part is
refused naming the missing sessions unless `allow_partial` (coverage then stated everywhere); PBO
(CSCV) and Hansen's SPA are stored in the report; an experiment with walk-forward folds votes with
its expanding walk-forward (defs/evaluation/walk_forward.py).
"""


from datetime import date, datetime, timedelta, timezone
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.adapters.store.tables import PromotionProposal
from usdcop_platform.adapters.tracking import MlflowResource, RunAnnotation
from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.evaluation import DEFAULT_EVALUATION, EvaluationConfig
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.core import datasets as ds
from usdcop_platform.core import live_rule as live_rule_core
from usdcop_platform.core import overfitting, promotion
from usdcop_platform.core.backtest import BacktestInputError, check_prices, evaluate
from usdcop_platform.core.charts import equity_drawdown_png, markdown_image
from usdcop_platform.core.display import metric_entries, metric_text, num, num_text, pct_text, prob
from usdcop_platform.core.features import feature_matrix
from usdcop_platform.core.inference import InferenceEngine, ModelVerificationError, ServingModel
from usdcop_platform.core.metrics import Annualization, BootstrapInterval
from usdcop_platform.core.policy_runner import PolicyRun, run_policy_over_bars
from usdcop_platform.core.schema import BACKTEST_SERIES_SCHEMA, BACKTEST_TRADES_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.app import backtest_requests
from usdcop_platform.app import trials
from usdcop_platform.defs.evaluation import walk_forward as wf_asset
from usdcop_platform.defs.partitions import experiment_partitions, session_key
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY, MODEL_KEY

BACKTEST_KEY = dg.AssetKey(["evaluation", "backtest"])
PROPOSAL_KEY = dg.AssetKey(["evaluation", "promotion_proposal"])
GROUP = "evaluation"
# The evaluation settings shared by all experiments (contracts.evaluation).
EVALUATION: EvaluationConfig = DEFAULT_EVALUATION


class EvaluationError(RuntimeError):
    """The evaluation cannot run as asked; the message says why and what to do."""


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


# ---- helpers (fetching and shaping; no maths) ----------------------------------------------------
def resolve_model(store: Any, experiment: str, model_id: str | None) -> Any:
    """The registry row to evaluate: the given id, or the experiment's newest model."""
    if model_id:
        rec = store.models.get(model_id)
        if rec is None:
            raise EvaluationError(f"model {model_id!r} is not in the registry")
        if rec["experiment_name"] != experiment:
            raise EvaluationError(f"model {model_id!r} belongs to experiment {rec['experiment_name']!r}, not {experiment!r}")
        return rec
    rows = store.models.list(experiment=experiment)
    if not rows:
        raise EvaluationError(
            f"no model for {experiment!r}: run `usdcop train -e {experiment}` (or `usdcop run -e {experiment}`); "
            f"experiment {experiment!r} has no registered model (models/ppo_policy not materialized)"
        )
    return rows[0]


def load_member(engine: InferenceEngine, rec: Any, role: str) -> ServingModel:
    """Verify (file present, sha256 = registry, feature order, norm stats) and load, as serving does."""
    try:
        return engine.load_member(rec, 1.0)
    except ModelVerificationError as exc:
        raise EvaluationError(f"refusing to backtest the {role} model: {exc}") from exc


def training_end(exp: ExperimentConfig, rec: Any) -> date:
    """The last session the model learned from or was selected on: the later of the experiment's
    configured validation end and the model's own recorded train/val splits."""
    ends = [exp.date_ranges.val.end]
    splits = (rec.get("lineage") or {}).get("dataset_splits") or {}
    for split in ("train", "val"):
        last = (splits.get(split) or {}).get("last_session")
        if last:
            ends.append(date.fromisoformat(str(last)[:10]))
    return max(ends)


MISSING_SHOWN = 10  # missing sessions named in an error; the rest are counted


def coverage(requested: list[str], present: list[str]) -> dict[str, Any]:
    have = set(present)
    missing = [k for k in requested if k not in have]
    return {
        "requested_sessions": len(requested),
        "covered_sessions": len(requested) - len(missing),
        "coverage": (len(requested) - len(missing)) / len(requested) if requested else 0.0,
        "missing_sessions": missing,
    }


def _named(missing: list[str]) -> str:
    shown = ", ".join(missing[:MISSING_SHOWN])
    return shown + (f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else "")


def period_frame(
    platform: PlatformResource,
    exp: ExperimentConfig,
    rec: Any,
    start: str | None,
    end: str | None,
    allow_partial: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Feature rows to backtest and where they come from. Default: the dataset's test split (never
    seen in training), refused if the dataset is no longer the one the model was trained with.
    An explicit period must be covered by the lake (or `allow_partial`), and is out of sample only
    when it starts after the model's training end; otherwise it is an IN-SAMPLE diagnostic."""
    contract = platform.config.features
    lake = platform.lake
    if (start is None) != (end is None):
        raise EvaluationError("give both --start and --end, or neither")
    if start is None:
        dataset = ds.load_dataset(lake, exp.name, contract, verify=False)
        test = dataset.splits["test"]
        # Prices first, so a NaN close is reported with its bar (the split hash check would only
        # say that the split changed).
        check_prices(test.get_column("close").cast(pl.Float64).to_numpy(), test.get_column("time").to_numpy())
        ds.verify_dataset(dataset, contract)
        if rec.get("dataset_hash") and rec["dataset_hash"] != dataset.dataset_hash:
            raise EvaluationError(
                f"model {rec['model_id']!r} was trained on dataset {rec['dataset_hash'][:12]}…, the stored dataset of "
                f"{exp.name!r} is now {dataset.dataset_hash[:12]}…: its test split may overlap what the model saw. "
                "Retrain, or pass an explicit --start/--end period"
            )
        return test, {"source": "test_split", "out_of_sample": True, "in_sample_reason": None, "coverage": None}
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    if d1 < d0:
        raise EvaluationError(f"end {end} is before start {start}")
    keys = [session_key(d) for d in platform.calendar.sessions(d0, d1)]
    if not keys:
        raise EvaluationError(f"{start}..{end} holds no trading session: nothing to backtest")
    present = [k for k in keys if lake.exists(ds.SOURCE_DATASET, k)]
    cov = coverage(keys, present)
    if not present:
        raise EvaluationError(
            f"the lake holds no {ds.SOURCE_DATASET} data for any of the {len(keys)} sessions of {start}..{end} "
            f"(missing: {_named(keys)}): materialize the features for them first"
        )
    if cov["missing_sessions"] and not allow_partial:
        raise EvaluationError(
            f"the lake covers {cov['covered_sessions']} of {len(keys)} sessions ({cov['coverage']:.1%}) of "
            f"{start}..{end}; missing: {_named(cov['missing_sessions'])}. Materialize them, or pass --allow-partial "
            "to backtest the covered sessions with the coverage stated"
        )
    frame = lake.read_many(ds.SOURCE_DATASET, present)
    if frame is None:  # pragma: no cover - present partitions were just listed
        frame = pl.DataFrame(schema={"time": pl.Datetime("us", "UTC"), "session": pl.Date(), "close": pl.Float64()})
    frame = frame.sort("time")
    end_of_training = training_end(exp, rec)
    oos = d0 > end_of_training
    reason = None if oos else (
        f"the period starts {d0}, on or before the model's training end {end_of_training} (last train/validation "
        "session): it touches data the model learned from or was selected on"
    )
    return frame, {"source": "custom", "out_of_sample": oos, "in_sample_reason": reason,
                   "coverage": cov if cov["missing_sessions"] else None}


def overfitting_statistics(
    lake: Any, family_name: str, ledger_rows: list[Any], evaluation: Any, stats: Any
) -> dict[str, Any]:
    """PBO (CSCV over the family's trials' test returns, aligned on their common sessions) and
    Hansen's SPA of the candidate's session returns against production, buy-and-hold and flat.
    A statistic that cannot be computed is recorded with the reason, never silently left out."""
    out: dict[str, Any] = {}
    series = trials.family_test_returns(lake, family_name, ledger_rows)
    if len(series) < 2:
        out["pbo"] = {"pbo": None, "n_trials": len(series),
                      "reason": f"the family has {len(series)} trial(s) with a recorded return series; CSCV needs 2 or more"}
    else:
        joined = None
        for i, df in enumerate(series.values()):
            df = df.rename({"session_return": f"t{i}"})
            joined = df if joined is None else joined.join(df, on="session", how="inner")
        matrix = joined.drop("session").to_numpy()
        s = overfitting.partitions_for(matrix.shape[0], stats.pbo_partitions)
        if s == 0:
            out["pbo"] = {"pbo": None, "n_trials": len(series),
                          "reason": f"the trials share only {matrix.shape[0]} session(s); CSCV needs at least 4"}
        else:
            out["pbo"] = overfitting.pbo_cscv(matrix, s).as_dict()
    cand = evaluation.candidate.session_returns
    benchmarks = {"buy_and_hold": evaluation.buy_and_hold.session_returns, "flat": np.zeros_like(cand)}
    if evaluation.baseline is not None:
        benchmarks = {"baseline": evaluation.baseline.session_returns, **benchmarks}
    if cand.size < overfitting.MIN_SPA_PERIODS:
        out["spa"] = {"pvalue": None,
                      "reason": f"{cand.size} session(s); the SPA test needs {overfitting.MIN_SPA_PERIODS} or more"}
    else:
        out["spa"] = overfitting.spa_test(
            cand, benchmarks, block_size=min(stats.spa_block_sessions, cand.size), reps=stats.spa_reps,
            seed=stats.bootstrap_seed,
        ).as_dict()
    return out


def _arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = frame.get_column("time").to_numpy()
    sessions = frame.get_column("session").cast(pl.Date).cast(pl.Int32).to_numpy().astype(np.int64)
    close = frame.get_column("close").cast(pl.Float64).to_numpy()
    return times, sessions, close


def _run(member: ServingModel, raw: np.ndarray, sessions: np.ndarray, flat_eod: bool, position_index: int) -> PolicyRun:
    return run_policy_over_bars(
        member.policy, member.normalizer, raw, sessions, flat_at_session_end=flat_eod, position_index=position_index
    )


def _live_rule(
    platform: PlatformResource, member: ServingModel, frame: pl.DataFrame, raw: np.ndarray, times: np.ndarray,
    sessions: np.ndarray, close: np.ndarray, exp: ExperimentConfig, position_index: int,
) -> dict[str, Any]:
    """The live decision rule over the same bars (core.live_rule): threshold, sizing and risk checks
    of core/risk.py with mlops.yaml's limits, filled at the next open with the experiment's costs.
    Shown beside the argmax/full-size/close-fill candidate (docs/architecture.md says which votes)."""
    mlops = platform.config.mlops
    delay = EVALUATION.live_rule.fill_delay_bars
    lr = live_rule_core.run_live_rule(
        member.policy, member.normalizer, raw, times, close, limits=mlops.risk, hours=mlops.trading_hours,
        calendar=platform.calendar, flat_at_session_end=exp.environment.flat_at_session_end,
        position_index=position_index)
    equity = live_rule_core.live_rule_equity(
        frame.get_column("open").cast(pl.Float64).to_numpy(), close, sessions, lr.exposure,
        cost_bps=exp.backtest.cost_bps, initial_capital=exp.backtest.initial_capital, fill_delay_bars=delay)
    return live_rule_core.live_rule_metrics(
        lr, equity, sessions, initial_capital=exp.backtest.initial_capital,
        annualization=Annualization.from_calendar(platform.calendar), fill_delay_bars=delay)


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


def vote_walk_forward(lake: Any, exp: ExperimentConfig, report: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The walk-forward the vote uses, and a note when it is missing: the expanding-window report of
    this experiment config when the experiment has walk-forward folds, else the test split's folds."""
    k = exp.backtest.walk_forward.folds
    if not k:
        return report.get("walk_forward"), None
    found = wf_asset.load_report(lake, exp.name, exp.config_hash)
    if found and found.get("folds"):
        return found, None
    note = (f"walk-forward ({k} expanding folds) has not run for this config of {exp.name!r}: materialize "
            "evaluation/walk_forward; without it the stability criterion fails")
    return {"kind": "expanding", "folds": [], "aggregate": {}, "missing": note}, note


def backtest_role(period: dict[str, Any]) -> str:
    """Only the test split votes; an explicit period is a diagnostic, in or out of sample."""
    if period["source"] == "test_split":
        return "vote"
    return "oos_diagnostic" if period["out_of_sample"] else "in_sample_diagnostic"


def vote_text(period: dict[str, Any]) -> str:
    role = backtest_role(period)
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
            f"{cov['requested_sessions']}; missing {_named(cov['missing_sessions'])}), run with --allow-partial")


def overfitting_markdown(over: dict[str, Any], confidence: float) -> str:
    return "\n\n".join(
        [overfitting.pbo_sentence(over.get("pbo")), overfitting.spa_sentence(over.get("spa"), 1.0 - confidence)]
    )


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
    context: dg.AssetExecutionContext,
    config: BacktestRunConfig,
    platform: PlatformResource,
    store: Any,
    request_id: int | None,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    cfg = platform.config
    exp, contract = cfg.experiment(name), cfg.features
    rec = resolve_model(store, name, config.model_id)
    engine = InferenceEngine(store, contract, cfg.mlops.ensemble, models_root=platform.models_path)
    member = load_member(engine, rec, "candidate")

    frame, period = period_frame(platform, exp, rec, config.start, config.end, config.allow_partial)
    # An explicit period is stored beside the test-split backtest, never over it.
    partition = bt_store.backtest_partition(
        rec["model_id"], *(None if d is None else date.fromisoformat(d).isoformat() for d in (config.start, config.end))
    )
    n = frame.height
    stats = EVALUATION.statistics
    base_report: dict[str, Any] = {
        "experiment": name,
        "experiment_version": rec["experiment_version"],
        "model_id": rec["model_id"],
        "model_hash": rec["model_hash"],
        "onnx_hash": rec.get("onnx_hash"),
        "period_source": period["source"],
        "out_of_sample": period["out_of_sample"],
        # An in-sample backtest is kept as a diagnostic: it is shown, never voted on.
        "role": backtest_role(period),
        "in_sample_reason": period["in_sample_reason"],
        "coverage": period["coverage"],
        "n_bars": n,
        "min_test_bars": exp.backtest.min_test_bars,
        "lake_partition": partition,
        "backtest_request_id": request_id,
    }
    lineage = {
        "config_hash": rec.get("config_hash"),
        "dataset_hash": rec.get("dataset_hash"),
        "feature_order_hash": rec.get("feature_order_hash"),
        "norm_stats_hash": rec.get("norm_stats_hash"),
        "model_hash": rec["model_hash"],
        "onnx_hash": rec.get("onnx_hash"),
        "mlflow_run_id": rec.get("mlflow_run_id"),
        "experiment_version": rec["experiment_version"],
        "backtest_partition": partition,
    }
    if n < 2:
        # Nothing to trade on: record why, so the proposal can REJECT with that reason.
        reason = f"the backtest period holds {n} bar(s); at least 2 are needed (min_test_bars {exp.backtest.min_test_bars})"
        report = {**base_report, "test_start": config.start, "test_end": config.end, "metrics": None,
                  "benchmarks": {"flat": None, "buy_and_hold": None, "baseline": None}, "bootstrap": {},
                  "cost_sweep": [], "walk_forward": None, "insufficient": reason, "baseline_model_id": None}
        report["backtest_hash"] = content_hash({k: report[k] for k in ("model_id", "model_hash", "n_bars", "test_start", "test_end")})
        report["lineage"] = {**lineage, "backtest_hash": report["backtest_hash"], "test_start": config.start, "test_end": config.end}
        empty = pl.DataFrame()
        bt_store.save_backtest(
            platform.lake, name, rec["model_id"], series=empty, trades=empty, report=report, partition=partition
        )
        context.log.warning(reason)
        return dg.MaterializeResult(
            metadata={"model_id": rec["model_id"], "n_bars": n, "insufficient": reason, "lake_partition": partition,
                      **_vote_metadata(period), **track_backtest(context, mlflow, rec, report)}
        )

    times, sessions, close = _arrays(frame)
    check_prices(close, times)
    raw = feature_matrix(frame, contract)
    position_index = contract.names.index("position")
    run = _run(member, raw, sessions, exp.environment.flat_at_session_end, position_index)
    live_rule = _live_rule(platform, member, frame, raw, times, sessions, close, exp, position_index)

    baseline_run: PolicyRun | None = None
    prod = store.models.production()
    if prod is not None and prod["model_id"] != rec["model_id"]:
        prod_member = load_member(engine, prod, "production baseline")
        prod_exp = cfg.experiments.get(prod["experiment_name"], exp)
        baseline_run = _run(prod_member, raw, sessions, prod_exp.environment.flat_at_session_end, position_index)

    ann = Annualization.from_calendar(platform.calendar)
    # N and V of the deflated Sharpe come from the trial ledger of the family, never from the config.
    family, ledger_rows = trials.family(store, name)
    folds, folds_skipped = exp.backtest.walk_forward_folds, None
    n_sessions = int(np.unique(sessions).size)
    if folds > n_sessions:
        msg = f"walk-forward folds do not fit: {folds} folds need at least {folds} sessions, the period has {n_sessions}"
        if period["out_of_sample"] and period["source"] == "test_split":
            raise EvaluationError(f"{msg}: lower backtest.walk_forward_folds of {name!r} or lengthen its test split")
        folds, folds_skipped = 0, f"{msg}; not run for this explicit period"
    evaluation = evaluate(
        close,
        run.positions,
        sessions,
        times=times,
        cost_bps=exp.backtest.cost_bps,
        initial_capital=exp.backtest.initial_capital,
        annualization=ann,
        confidence=stats.confidence_level,
        cost_sweep_bps=exp.backtest.cost_sweep_bps,
        bootstrap_block_bars=stats.bootstrap_block_bars or platform.calendar.bars_per_session,
        bootstrap_samples=stats.bootstrap_samples,
        bootstrap_seed=stats.bootstrap_seed,
        baseline_positions=None if baseline_run is None else baseline_run.positions,
        n_trials=family.n_trials,
        trial_sharpes=family.per_bar_sharpes(ann),
        walk_forward_folds=folds,
    )
    cand = evaluation.candidate
    cand.metrics["n_trials_source"] = family.source()
    cand.metrics["trial_family"] = family.as_dict()
    summary = evaluation.summary()
    if folds_skipped:
        summary["walk_forward_skipped"] = folds_skipped
    summary["overfitting"] = overfitting_statistics(platform.lake, name, ledger_rows, evaluation, stats)
    summary["live_rule"] = live_rule
    session_dates = frame.get_column("session").cast(pl.Date)
    test_start, test_end = session_dates.min().isoformat(), session_dates.max().isoformat()
    backtest_hash = content_hash(
        {
            "series": cand.fingerprint(),
            "model_hash": rec["model_hash"],
            "onnx_hash": rec.get("onnx_hash"),
            "baseline_model_id": None if baseline_run is None else prod["model_id"],
            "baseline_positions": None if baseline_run is None else content_hash(baseline_run.positions.tolist()),
        }
    )
    lake = platform.lake
    series_path = lake.path(bt_store.series_dataset(name), partition)
    trades_path = lake.path(bt_store.trades_dataset(name), partition)
    action_counts = np.bincount(run.actions, minlength=3)
    report = {
        **base_report,
        **summary,
        "test_start": test_start,
        "test_end": test_end,
        "baseline_model_id": None if baseline_run is None else prod["model_id"],
        "insufficient": None,
        "policy": {
            "flat_at_session_end": exp.environment.flat_at_session_end,
            "mean_confidence": float(run.confidence.mean()),
            "action_counts": {"SELL": int(action_counts[0]), "HOLD": int(action_counts[1]), "BUY": int(action_counts[2])},
        },
        "backtest_hash": backtest_hash,
        "series_path": str(series_path),
        "trades_path": str(trades_path),
        "lineage": {**lineage, "backtest_hash": backtest_hash, "test_start": test_start, "test_end": test_end},
    }
    bt_store.save_backtest(
        lake, name, rec["model_id"], series=evaluation.series_frame(), trades=cand.trades_frame(), report=report,
        partition=partition,
    )

    png = equity_drawdown_png(
        cand.equity,
        cand.drawdown,
        times=times,
        benchmarks={
            "buy & hold": evaluation.buy_and_hold.equity,
            "production": None if evaluation.baseline is None else evaluation.baseline.equity,
        },
        title=f"{name} · {rec['model_id']} · {test_start} → {test_end} · {exp.backtest.cost_bps:g} bps",
    )
    tracked = track_backtest(context, mlflow, rec, report)
    m = cand.metrics
    context.log.info(
        f"backtest {name}/{rec['model_id']}: {n} bars, sharpe {m['sharpe']:.3f}, max dd {m['max_drawdown']:.3%}, "
        f"{m['trades']} trades, baseline {report['baseline_model_id']}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_id": rec["model_id"],
            "baseline_model_id": report["baseline_model_id"] or "none",
            "test_period": f"{test_start} .. {test_end}",
            "period_source": period["source"],
            "out_of_sample": period["out_of_sample"],
            **_vote_metadata(period),
            "lake_partition": partition,
            **({} if request_id is None else {"backtest_request_id": request_id}),
            "n_bars": n,
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
            "n_trials_source": family.source(),
            "trial_sharpe_variance_annual": num(float(m["trial_sharpe_variance_annual"])),
            "trial_variance_source": m["trial_variance_source"],
            "overfitting": dg.MetadataValue.md(overfitting_markdown(summary["overfitting"], exp.success_criteria.p_min)),
            "backtest_hash": backtest_hash,
            "metrics": dg.MetadataValue.md(metrics_markdown(summary)),
            "equity_drawdown": dg.MetadataValue.md(markdown_image(png, f"equity and drawdown of {rec['model_id']}")),
            "cost_sweep": dg.MetadataValue.md(sweep_markdown(evaluation.cost_sweep)),
            "series_path": dg.MetadataValue.path(str(series_path)),
            **tracked,
            **(
                {"walk_forward": dg.MetadataValue.md(walk_forward_markdown(evaluation.walk_forward))}
                if evaluation.walk_forward
                else {}
            ),
        },
        data_version=dg.DataVersion(backtest_hash),
    )


@dg.asset(
    key=PROPOSAL_KEY,
    partitions_def=experiment_partitions,
    deps=[BACKTEST_KEY, wf_asset.WALK_FORWARD_KEY],
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
    cfg = platform.config
    exp = cfg.experiment(name)
    store = platform.store()
    lake = platform.lake
    request = backtest_requests.request_of_run(store, context.run.tags)
    if request is not None:
        with backtest_requests.failure_recorded(store, request, context.run_id):
            return _complete_backtest_request(context, platform, store, request)
    newest = bt_store.latest_backtest_report(lake, name, config.model_id, votes_only=False)
    report = bt_store.latest_backtest_report(lake, name, config.model_id)
    if newest is None:
        who = f"model {config.model_id!r}" if config.model_id else f"experiment {name!r}"
        raise EvaluationError(f"no backtest for {who}: materialize evaluation/backtest first")
    if not bt_store.votes(newest):
        # A diagnostic (an explicit period) never changes a vote: nothing is written.
        kind = "IN-SAMPLE diagnostic" if not newest.get("out_of_sample", True) else "out-of-sample diagnostic"
        why = newest.get("in_sample_reason") or "an explicit period; only the test split and walk-forward folds vote"
        note = (f"{kind} {newest.get('lake_partition')} of {newest['model_id']} ({why}): shown as a diagnostic, "
                "never votes; the proposal is unchanged")
        context.log.warning(note)
        existing = store.proposals.by_model(newest["model_id"])
        return dg.MaterializeResult(
            metadata={
                "proposal_id": existing["proposal_id"] if existing is not None else "",
                "model_id": newest["model_id"],
                "recommendation": existing["recommendation"] if existing is not None else "none",
                "status": existing["status"] if existing is not None else "no proposal",
                "diagnostic": note,
            }
        )
    assert report is not None  # the newest report votes
    rec = store.models.get(report["model_id"])
    if rec is None:
        raise EvaluationError(f"backtested model {report['model_id']!r} is no longer in the registry")

    ann = Annualization.from_calendar(platform.calendar)
    stats = EVALUATION.statistics
    boots = {k: BootstrapInterval(**v) for k, v in (report.get("bootstrap") or {}).items()}
    statement = promotion.statistical_statement(
        report.get("metrics"), ann=ann, confidence=stats.confidence_level,
        test_start=report.get("test_start"), test_end=report.get("test_end"), bootstrap=boots,
    )
    walk, walk_note = vote_walk_forward(lake, exp, report)
    over = report.get("overfitting") or {}
    statement += " " + overfitting_markdown(over, exp.success_criteria.p_min).replace("\n\n", " ")
    decision = promotion.decide(
        report.get("metrics"),
        n_bars=int(report["n_bars"]),
        criteria=exp.success_criteria,
        min_test_bars=exp.backtest.min_test_bars,
        policy=EVALUATION.promotion,
        baseline_metrics=(report.get("benchmarks") or {}).get("baseline"),
        baseline_model_id=report.get("baseline_model_id"),
        statement=statement,
        walk_forward=walk,
    )
    reasons = list(decision.reasons)
    if walk_note:
        reasons.append(walk_note)
    if report.get("insufficient"):
        reasons.insert(0, report["insufficient"])
    metrics = {
        **(report.get("metrics") or {}),
        "benchmarks": report.get("benchmarks"),
        "cost_sweep": report.get("cost_sweep"),
        "bootstrap": report.get("bootstrap"),
        "walk_forward": walk,
        "test_split_folds": report.get("walk_forward"),
        "policy": report.get("policy"),
        "period_source": report.get("period_source"),
        "out_of_sample": report.get("out_of_sample"),
        "overfitting": over,
    }
    row = store.proposals.upsert(
        model_id=rec["model_id"],
        experiment_name=name,
        experiment_version=rec["experiment_version"],
        recommendation=decision.recommendation,
        confidence=decision.confidence,
        reasons=reasons,
        criteria=decision.criteria_dict(),
        metrics=metrics,
        baseline_comparison=decision.baseline_comparison,
        lineage=report.get("lineage") or {},
        statistical_statement=statement,
        backtest_hash=report.get("backtest_hash"),
        test_start=report.get("test_start"),
        test_end=report.get("test_end"),
        series_path=report.get("series_path"),
        expires_at=datetime.now(timezone.utc) + timedelta(days=EVALUATION.promotion.proposal_ttl_days),
    )
    context.log.info(
        f"proposal {row['proposal_id']} for {rec['model_id']}: {decision.recommendation} "
        f"({decision.confidence:.2f}), status {row['status']}"
    )
    run_id = rec.get("mlflow_run_id")
    note = mlflow.tag_model_run(run_id, {
        "proposal/id": row["proposal_id"], "proposal/recommendation": decision.recommendation,
        "proposal/status": row["status"], **mlflow.dagster_tags(context.run_id, prefix="proposal/"),
    }) if run_id else None
    return dg.MaterializeResult(
        metadata={
            "proposal_id": row["proposal_id"],
            "model_id": rec["model_id"],
            "recommendation": decision.recommendation,
            "confidence": prob(decision.confidence),
            "status": row["status"],
            "criteria": dg.MetadataValue.md(criteria_markdown(decision)),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
            "statistical_statement": dg.MetadataValue.md(statement),
            "backtest_hash": report.get("backtest_hash") or "",
            "n_trials": int(metrics.get("n_trials") or 0),
            "n_trials_source": str(metrics.get("n_trials_source") or ""),
            "trial_sharpe_variance_annual": num(metrics.get("trial_sharpe_variance_annual")),
            "trial_variance_source": str(metrics.get("trial_variance_source") or ""),
            "pbo": prob((over.get("pbo") or {}).get("pbo")),
            "spa_pvalue": prob((over.get("spa") or {}).get("pvalue")),
            "overfitting": dg.MetadataValue.md(overfitting_markdown(over, exp.success_criteria.p_min)),
            **mlflow_metadata(context, note, run_id),
        }
    )


def _complete_backtest_request(
    context: dg.AssetExecutionContext, platform: PlatformResource, store: Any, request: Any
) -> dg.MaterializeResult:
    """Attach the requested period's backtest to the proposal (no new first vote)."""
    model_id, start, end = backtest_requests.request_period(request)
    partition = bt_store.backtest_partition(model_id, start, end)
    report = bt_store.load_backtest_report(platform.lake, context.partition_key, partition)
    if report is None:
        raise backtest_requests.BacktestRequestError(
            f"no backtest of request {request['id']} ({model_id}, {start}..{end}) in the lake: "
            "materialize evaluation/backtest in the same run"
        )
    out = backtest_requests.complete_request(
        store, request["id"], report, run_id=context.run_id, review_days=EVALUATION.promotion.proposal_ttl_days
    )
    proposal = out["proposal"]
    status = proposal["status"] if proposal is not None else "no proposal"
    context.log.info(
        f"backtest request {request['id']} ({model_id}, {start}..{end}) done; proposal "
        f"{proposal['proposal_id'] if proposal is not None else '-'} is {status}"
    )
    metrics = report.get("metrics") or {}
    return dg.MaterializeResult(
        metadata={
            "proposal_id": proposal["proposal_id"] if proposal is not None else "",
            "model_id": model_id,
            "status": status,
            "backtest_request_id": request["id"],
            "request_period": f"{start} .. {end}",
            "reopened": bool(out["reopened"]),
            "lake_partition": partition,
            "n_bars": int(report.get("n_bars") or 0),
            **metric_entries({k: float(metrics[k]) for k in ("sharpe", "max_drawdown", "total_return")
                              if metrics.get(k) is not None}),
        }
    )


__all__ = [
    "BACKTEST_KEY",
    "PROPOSAL_KEY",
    "BacktestInputError",
    "BacktestRunConfig",
    "EvaluationError",
    "ProposalRunConfig",
    "backtest",
    "promotion_proposal",
]
