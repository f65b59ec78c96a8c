"""Evaluation assets on experiment partitions: evaluation/backtest -> evaluation/promotion_proposal.

(No `from __future__ import annotations` here: Dagster resolves the Config annotations at runtime.)

The backtest replays the experiment's model over the out-of-sample test split through the
serving code (core.inference verifies and loads the model exactly as the live path does;
core.policy_runner makes the per-bar decisions), beside the current production model on the
same bars, and stores series, trades and a report in the lake (adapters.backtests; an explicit
period gets its own partition). The proposal applies the first-vote rules (core.promotion) and
upserts one row per model id. A run tagged with a reviewer's backtest request (REQUEST_MORE_TESTS)
backtests the requested period and attaches it to the proposal instead (defs/evaluation/more_tests.py).
The maths lives in core/; these functions only fetch, call and store.
"""


from datetime import date, datetime, timedelta, timezone
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.evaluation import DEFAULT_EVALUATION, EvaluationConfig
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core import datasets as ds
from usdcop_platform.core import promotion
from usdcop_platform.core.backtest import BacktestInputError, check_prices, evaluate
from usdcop_platform.core.charts import equity_drawdown_png, markdown_image
from usdcop_platform.core.features import feature_matrix
from usdcop_platform.core.inference import InferenceEngine, ModelVerificationError, ServingModel
from usdcop_platform.core.metrics import Annualization, BootstrapInterval
from usdcop_platform.core.policy_runner import PolicyRun, run_policy_over_bars
from usdcop_platform.defs.evaluation import more_tests
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
            f"experiment {experiment!r} has no registered model: materialize models/ppo_policy for it first"
        )
    return rows[0]


def load_member(engine: InferenceEngine, rec: Any, role: str) -> ServingModel:
    """Verify (file present, sha256 = registry, feature order, norm stats) and load, as serving does."""
    try:
        return engine.load_member(rec, 1.0)
    except ModelVerificationError as exc:
        raise EvaluationError(f"refusing to backtest the {role} model: {exc}") from exc


def trial_count(store: Any, cfg: PlatformConfig, experiment: str) -> int:
    """Trials for the deflated Sharpe: seeds of every experiment that has registered a model
    (each seed is a trained-and-evaluated candidate), this one included."""
    names = {r["experiment_name"] for r in store.models.list()} | {experiment}
    return sum(len(cfg.experiments[n].seeds) if n in cfg.experiments else 1 for n in names)


def period_frame(
    platform: PlatformResource, exp: ExperimentConfig, rec: Any, start: str | None, end: str | None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Feature rows to backtest and where they come from. Default: the dataset's test split (never
    seen in training), refused if the dataset is no longer the one the model was trained with."""
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
        return test, {"source": "test_split", "out_of_sample": True}
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    if d1 < d0:
        raise EvaluationError(f"end {end} is before start {start}")
    keys = [session_key(d) for d in platform.calendar.sessions(d0, d1)]
    frame = lake.read_many(ds.SOURCE_DATASET, [k for k in keys if lake.exists(ds.SOURCE_DATASET, k)])
    if frame is None:
        frame = pl.DataFrame(schema={"time": pl.Datetime("us", "UTC"), "session": pl.Date(), "close": pl.Float64()})
    frame = frame.sort("time")
    # A custom period is out of sample only when it starts after the validation split ended.
    return frame, {"source": "custom", "out_of_sample": d0 > exp.date_ranges.val.end}


def _arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = frame.get_column("time").to_numpy()
    sessions = frame.get_column("session").cast(pl.Date).cast(pl.Int32).to_numpy().astype(np.int64)
    close = frame.get_column("close").cast(pl.Float64).to_numpy()
    return times, sessions, close


def _run(member: ServingModel, raw: np.ndarray, sessions: np.ndarray, flat_eod: bool, position_index: int) -> PolicyRun:
    return run_policy_over_bars(
        member.policy, member.normalizer, raw, sessions, flat_at_session_end=flat_eod, position_index=position_index
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:,.4f}" if np.isfinite(v) else str(v)
    return str(v)


TABLE_METRICS = (
    "sharpe", "sortino", "session_sharpe", "total_return", "annual_return", "max_drawdown", "volatility",
    "trades", "win_rate", "profit_factor", "avg_trade", "exposure", "turnover_per_session", "total_costs",
    "final_equity", "psr", "dsr", "min_track_record_years", "certifiable_sharpe",
)


def metrics_markdown(summary: dict[str, Any]) -> str:
    """Candidate beside its benchmarks, one metric per row."""
    cols = [("candidate", summary["metrics"]), ("buy & hold", summary["benchmarks"]["buy_and_hold"])]
    if summary["benchmarks"].get("baseline") is not None:
        cols.append(("production", summary["benchmarks"]["baseline"]))
    cols.append(("flat", summary["benchmarks"]["flat"]))
    lines = ["| metric | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for k in TABLE_METRICS:
        lines.append(f"| {k} | " + " | ".join(_fmt(m.get(k)) for _, m in cols) + " |")
    return "\n".join(lines)


def sweep_markdown(sweep: list[dict[str, Any]]) -> str:
    lines = ["| cost bps | sharpe | total return | max drawdown | final equity |", "|---|---|---|---|---|"]
    for r in sweep:
        lines.append(
            f"| {r['cost_bps']:g} | {_fmt(r['sharpe'])} | {_fmt(r['total_return'])} | "
            f"{_fmt(r['max_drawdown'])} | {_fmt(r['final_equity'])} |"
        )
    return "\n".join(lines)


def walk_forward_markdown(wf: dict[str, Any]) -> str:
    lines = ["| fold | sessions | sharpe | total return | max drawdown | trades |", "|---|---|---|---|---|---|"]
    for f in wf["folds"]:
        lines.append(
            f"| {f['fold']} | {f['n_sessions']} | {_fmt(f['sharpe'])} | {_fmt(f['total_return'])} | "
            f"{_fmt(f['max_drawdown'])} | {f['trades']} |"
        )
    agg = wf["aggregate"]
    lines.append(
        f"\nmean Sharpe {_fmt(agg['sharpe_mean'])}, median {_fmt(agg['sharpe_median'])}, min {_fmt(agg['sharpe_min'])}, "
        f"positive in {agg['positive_share']:.0%} of folds, worst drawdown {_fmt(agg['max_drawdown_worst'])}"
    )
    return "\n".join(lines)


def criteria_markdown(decision: promotion.PromotionDecision) -> str:
    lines = ["| criterion | kind | value | threshold | result |", "|---|---|---|---|---|"]
    for c in decision.criteria:
        lines.append(f"| {c.name} | {c.kind} | {_fmt(c.value)} | {c.comparator} {_fmt(c.threshold)} | {c.status} |")
    return "\n".join(lines)


# ---- assets --------------------------------------------------------------------------------------
@dg.asset(
    key=BACKTEST_KEY,
    partitions_def=experiment_partitions,
    deps=[DATASET_KEY, MODEL_KEY],
    group_name=GROUP,
    kinds={"onnx", "polars", "parquet"},
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
    description=(
        "Out-of-sample backtest of the experiment's model (ONNX, serving inference code) on the test split, "
        "beside buy-and-hold, flat and the production model: series, trades, metrics, cost sweep, bootstrap."
    ),
)
def backtest(context: dg.AssetExecutionContext, config: BacktestRunConfig, platform: PlatformResource) -> dg.MaterializeResult:
    store = platform.store()
    request = more_tests.request_of_run(store, context.run.tags)
    with more_tests.failure_recorded(store, request, context.run_id):
        if request is None:
            return _backtest(context, config, platform, store, None)
        model_id, start, end = more_tests.request_period(request, config.model_id, config.start, config.end)
        return _backtest(context, BacktestRunConfig(model_id=model_id, start=start, end=end), platform, store,
                         request["id"])


def _backtest(
    context: dg.AssetExecutionContext,
    config: BacktestRunConfig,
    platform: PlatformResource,
    store: Any,
    request_id: int | None,
) -> dg.MaterializeResult:
    name = context.partition_key
    cfg = platform.config
    exp, contract = cfg.experiment(name), cfg.features
    rec = resolve_model(store, name, config.model_id)
    engine = InferenceEngine(store, contract, cfg.mlops.ensemble, models_root=platform.models_path)
    member = load_member(engine, rec, "candidate")

    frame, period = period_frame(platform, exp, rec, config.start, config.end)
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
            metadata={"model_id": rec["model_id"], "n_bars": n, "insufficient": reason, "lake_partition": partition}
        )

    times, sessions, close = _arrays(frame)
    check_prices(close, times)
    raw = feature_matrix(frame, contract)
    position_index = contract.names.index("position")
    run = _run(member, raw, sessions, exp.environment.flat_at_session_end, position_index)

    baseline_run: PolicyRun | None = None
    prod = store.models.production()
    if prod is not None and prod["model_id"] != rec["model_id"]:
        prod_member = load_member(engine, prod, "production baseline")
        prod_exp = cfg.experiments.get(prod["experiment_name"], exp)
        baseline_run = _run(prod_member, raw, sessions, prod_exp.environment.flat_at_session_end, position_index)

    ann = Annualization.from_calendar(platform.calendar)
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
        n_trials=trial_count(store, cfg, name),
        walk_forward_folds=exp.backtest.walk_forward_folds,
    )
    cand = evaluation.candidate
    summary = evaluation.summary()
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
            "lake_partition": partition,
            **({} if request_id is None else {"backtest_request_id": request_id}),
            "n_bars": n,
            "sharpe": float(m["sharpe"]),
            "max_drawdown": float(m["max_drawdown"]),
            "total_return": float(m["total_return"]),
            "trades": int(m["trades"]),
            "psr": float(m["psr"]),
            "dsr": float(m["dsr"]),
            "backtest_hash": backtest_hash,
            "metrics": dg.MetadataValue.md(metrics_markdown(summary)),
            "equity_drawdown": dg.MetadataValue.md(markdown_image(png, f"equity and drawdown of {rec['model_id']}")),
            "cost_sweep": dg.MetadataValue.md(sweep_markdown(evaluation.cost_sweep)),
            "series_path": dg.MetadataValue.path(str(series_path)),
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
    deps=[BACKTEST_KEY],
    group_name=GROUP,
    kinds={"sql"},
    automation_condition=dg.AutomationCondition.eager(),
    description=(
        "First vote: the success criteria of the experiment applied to its latest backtest -> PROMOTE / REVIEW / "
        "REJECT, written as a PENDING_APPROVAL proposal (one per model id) with lineage and statistical statement."
    ),
)
def promotion_proposal(
    context: dg.AssetExecutionContext, config: ProposalRunConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    name = context.partition_key
    cfg = platform.config
    exp = cfg.experiment(name)
    store = platform.store()
    lake = platform.lake
    request = more_tests.request_of_run(store, context.run.tags)
    if request is not None:
        with more_tests.failure_recorded(store, request, context.run_id):
            return _complete_backtest_request(context, platform, store, request)
    report = bt_store.latest_backtest_report(lake, name, config.model_id)
    if report is None:
        who = f"model {config.model_id!r}" if config.model_id else f"experiment {name!r}"
        raise EvaluationError(f"no backtest for {who}: materialize evaluation/backtest first")
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
    if not report.get("out_of_sample", True):
        statement += (
            " Caution: this backtest period overlaps the training or validation data, so it is not out of sample."
        )
    decision = promotion.decide(
        report.get("metrics"),
        n_bars=int(report["n_bars"]),
        criteria=exp.success_criteria,
        min_test_bars=exp.backtest.min_test_bars,
        policy=EVALUATION.promotion,
        baseline_metrics=(report.get("benchmarks") or {}).get("baseline"),
        baseline_model_id=report.get("baseline_model_id"),
        statement=statement,
        walk_forward=report.get("walk_forward"),
    )
    reasons = list(decision.reasons)
    if report.get("insufficient"):
        reasons.insert(0, report["insufficient"])
    metrics = {
        **(report.get("metrics") or {}),
        "benchmarks": report.get("benchmarks"),
        "cost_sweep": report.get("cost_sweep"),
        "bootstrap": report.get("bootstrap"),
        "walk_forward": report.get("walk_forward"),
        "policy": report.get("policy"),
        "period_source": report.get("period_source"),
        "out_of_sample": report.get("out_of_sample"),
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
    return dg.MaterializeResult(
        metadata={
            "proposal_id": row["proposal_id"],
            "model_id": rec["model_id"],
            "recommendation": decision.recommendation,
            "confidence": decision.confidence,
            "status": row["status"],
            "criteria": dg.MetadataValue.md(criteria_markdown(decision)),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
            "statistical_statement": dg.MetadataValue.md(statement),
            "backtest_hash": report.get("backtest_hash") or "",
        }
    )


def _complete_backtest_request(
    context: dg.AssetExecutionContext, platform: PlatformResource, store: Any, request: Any
) -> dg.MaterializeResult:
    """Attach the requested period's backtest to the proposal (no new first vote)."""
    model_id, start, end = more_tests.request_period(request)
    partition = bt_store.backtest_partition(model_id, start, end)
    report = bt_store.load_backtest_report(platform.lake, context.partition_key, partition)
    if report is None:
        raise more_tests.BacktestRequestError(
            f"no backtest of request {request['id']} ({model_id}, {start}..{end}) in the lake: "
            "materialize evaluation/backtest in the same run"
        )
    out = more_tests.complete_request(
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
            **{k: float(metrics[k]) for k in ("sharpe", "max_drawdown", "total_return") if metrics.get(k) is not None},
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
