"""Backtest and propose: the evaluation use cases behind evaluation/{walk_forward,backtest,promotion_proposal}.

`run_backtest` replays the experiment's model over the out-of-sample test split through the serving
code (core.inference verifies and loads the model exactly as the live path does; core.policy_runner
makes the per-bar decisions), beside the current production model, buy-and-hold and flat on the same
bars, adds the live-rule column, the significance and overfitting statistics, and stores series,
trades and report in the lake (adapters.backtests; an explicit period gets its own partition).
`propose` applies the first-vote rules (core.promotion) to the newest voting backtest and upserts one
proposal row per model id. `run_walk_forward` runs the expanding walk-forward of a config.

Issue #13 rules kept here: the deflated Sharpe's N and V come from the trial ledger of the family
(app/trials.py); an explicit period starting on or before the model's training end is an IN-SAMPLE
diagnostic that never votes; a period the lake covers only in part is refused naming the missing
sessions unless `allow_partial`; PBO (CSCV) and Hansen's SPA are stored in the report; an experiment
with walk-forward folds votes with its expanding walk-forward.

No Dagster here: the assets pass an `EvaluationInputs` built from their resources and turn the
results into metadata. The maths lives in core/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.adapters import walk_forward_reports as wf_reports
from usdcop_platform.app import trials
from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.evaluation import DEFAULT_EVALUATION, EvaluationConfig
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core import datasets as ds
from usdcop_platform.core import live_rule as live_rule_core
from usdcop_platform.core import overfitting, promotion
from usdcop_platform.core import walk_forward as wf
from usdcop_platform.core.backtest import Evaluation, check_prices, evaluate
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.features import feature_matrix
from usdcop_platform.core.inference import InferenceEngine, ModelVerificationError, ServingModel
from usdcop_platform.core.metrics import Annualization, BootstrapInterval
from usdcop_platform.core.policy_runner import PolicyRun, run_policy_over_bars
from usdcop_platform.core.trials import FamilyTrials

MISSING_SHOWN = 10  # missing sessions named in an error; the rest are counted


class EvaluationError(RuntimeError):
    """The evaluation cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class EvaluationInputs:
    """What an evaluation reads and writes: the store, the lake, the calendar, the platform config,
    the models directory and the evaluation settings shared by all experiments."""

    store: Any
    lake: Any  # adapters.lake.ParquetLake
    calendar: TradingCalendar
    config: PlatformConfig
    models_root: Path
    evaluation: EvaluationConfig = DEFAULT_EVALUATION

    @property
    def annualization(self) -> Annualization:
        return Annualization.from_calendar(self.calendar)


# ---- the model and the period --------------------------------------------------------------------
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


def coverage(requested: list[str], present: list[str]) -> dict[str, Any]:
    have = set(present)
    missing = [k for k in requested if k not in have]
    return {
        "requested_sessions": len(requested),
        "covered_sessions": len(requested) - len(missing),
        "coverage": (len(requested) - len(missing)) / len(requested) if requested else 0.0,
        "missing_sessions": missing,
    }


def named(missing: list[str]) -> str:
    shown = ", ".join(missing[:MISSING_SHOWN])
    return shown + (f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else "")


def _test_split(lake: Any, exp: ExperimentConfig, rec: Any, contract: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    dataset = ds.load_dataset(lake, exp.name, contract, verify=False)
    test = dataset.splits["test"]
    # Prices first, so a NaN close is reported with its bar (the split hash check would only say that
    # the split changed).
    check_prices(test.get_column("close").cast(pl.Float64).to_numpy(), test.get_column("time").to_numpy())
    ds.verify_dataset(dataset, contract)
    if rec.get("dataset_hash") and rec["dataset_hash"] != dataset.dataset_hash:
        raise EvaluationError(
            f"model {rec['model_id']!r} was trained on dataset {rec['dataset_hash'][:12]}…, the stored dataset of "
            f"{exp.name!r} is now {dataset.dataset_hash[:12]}…: its test split may overlap what the model saw. "
            "Retrain, or pass an explicit --start/--end period"
        )
    return test, {"source": "test_split", "out_of_sample": True, "in_sample_reason": None, "coverage": None}


def period_frame(
    inputs: EvaluationInputs, exp: ExperimentConfig, rec: Any, start: str | None, end: str | None,
    allow_partial: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Feature rows to backtest and where they come from. Default: the dataset's test split (never
    seen in training), refused if the dataset is no longer the one the model was trained with.
    An explicit period must be covered by the lake (or `allow_partial`), and is out of sample only
    when it starts after the model's training end; otherwise it is an IN-SAMPLE diagnostic."""
    lake = inputs.lake
    if (start is None) != (end is None):
        raise EvaluationError("give both --start and --end, or neither")
    if start is None or end is None:
        return _test_split(lake, exp, rec, inputs.config.features)
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    if d1 < d0:
        raise EvaluationError(f"end {end} is before start {start}")
    keys = [d.isoformat() for d in inputs.calendar.sessions(d0, d1)]  # session partition keys
    if not keys:
        raise EvaluationError(f"{start}..{end} holds no trading session: nothing to backtest")
    present = [k for k in keys if lake.exists(ds.SOURCE_DATASET, k)]
    cov = coverage(keys, present)
    if not present:
        raise EvaluationError(
            f"the lake holds no {ds.SOURCE_DATASET} data for any of the {len(keys)} sessions of {start}..{end} "
            f"(missing: {named(keys)}): materialize the features for them first"
        )
    if cov["missing_sessions"] and not allow_partial:
        raise EvaluationError(
            f"the lake covers {cov['covered_sessions']} of {len(keys)} sessions ({cov['coverage']:.1%}) of "
            f"{start}..{end}; missing: {named(cov['missing_sessions'])}. Materialize them, or pass --allow-partial "
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


def backtest_role(period: dict[str, Any]) -> str:
    """Only the test split votes; an explicit period is a diagnostic, in or out of sample."""
    if period["source"] == "test_split":
        return "vote"
    return "oos_diagnostic" if period["out_of_sample"] else "in_sample_diagnostic"


# ---- statistics ----------------------------------------------------------------------------------
def _pbo(lake: Any, family_name: str, ledger_rows: list[Any], partitions: int) -> dict[str, Any]:
    series = trials.family_test_returns(lake, family_name, ledger_rows)
    if len(series) < 2:
        return {"pbo": None, "n_trials": len(series),
                "reason": f"the family has {len(series)} trial(s) with a recorded return series; CSCV needs 2 or more"}
    joined = None
    for i, df in enumerate(series.values()):
        df = df.rename({"session_return": f"t{i}"})
        joined = df if joined is None else joined.join(df, on="session", how="inner")
    assert joined is not None
    matrix = joined.drop("session").to_numpy()
    s = overfitting.partitions_for(matrix.shape[0], partitions)
    if s == 0:
        return {"pbo": None, "n_trials": len(series),
                "reason": f"the trials share only {matrix.shape[0]} session(s); CSCV needs at least 4"}
    return overfitting.pbo_cscv(matrix, s).as_dict()


def overfitting_statistics(
    lake: Any, family_name: str, ledger_rows: list[Any], evaluation: Evaluation, stats: Any
) -> dict[str, Any]:
    """PBO (CSCV over the family's trials' test returns, aligned on their common sessions) and
    Hansen's SPA of the candidate's session returns against production, buy-and-hold and flat.
    A statistic that cannot be computed is recorded with the reason, never silently left out."""
    out: dict[str, Any] = {"pbo": _pbo(lake, family_name, ledger_rows, stats.pbo_partitions)}
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


# ---- the backtest --------------------------------------------------------------------------------
@dataclass
class BacktestResult:
    """A stored backtest: the report written to the lake and what its metadata is made from.
    `insufficient` (the reason) when the period holds fewer than 2 bars; then no evaluation."""

    rec: Any
    period: dict[str, Any]
    partition: str
    report: dict[str, Any]
    insufficient: str | None = None
    evaluation: Evaluation | None = None
    times: np.ndarray | None = None
    live_rule: dict[str, Any] = field(default_factory=dict)
    family: FamilyTrials | None = None


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
    inputs: EvaluationInputs, member: ServingModel, frame: pl.DataFrame, raw: np.ndarray, times: np.ndarray,
    sessions: np.ndarray, close: np.ndarray, exp: ExperimentConfig, position_index: int,
) -> dict[str, Any]:
    """The live decision rule over the same bars (core.live_rule): threshold, sizing and risk checks
    of core/risk.py with mlops.yaml's limits, filled at the next open with the experiment's costs.
    Shown beside the argmax/full-size/close-fill candidate (docs/architecture.md says which votes)."""
    mlops = inputs.config.mlops
    delay = inputs.evaluation.live_rule.fill_delay_bars
    lr = live_rule_core.run_live_rule(
        member.policy, member.normalizer, raw, times, close, limits=mlops.risk, hours=mlops.trading_hours,
        calendar=inputs.calendar, flat_at_session_end=exp.environment.flat_at_session_end,
        position_index=position_index)
    equity = live_rule_core.live_rule_equity(
        frame.get_column("open").cast(pl.Float64).to_numpy(), close, sessions, lr.exposure,
        cost_bps=exp.backtest.cost_bps, initial_capital=exp.backtest.initial_capital, fill_delay_bars=delay)
    return live_rule_core.live_rule_metrics(
        lr, equity, sessions, initial_capital=exp.backtest.initial_capital,
        annualization=inputs.annualization, fill_delay_bars=delay)


def _base_report(name: str, rec: Any, exp: ExperimentConfig, period: dict[str, Any], n: int, partition: str,
                 request_id: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report fields every backtest has, and its lineage."""
    base = {
        "experiment": name, "experiment_version": rec["experiment_version"], "model_id": rec["model_id"],
        "model_hash": rec["model_hash"], "onnx_hash": rec.get("onnx_hash"), "period_source": period["source"],
        "out_of_sample": period["out_of_sample"],
        # An in-sample backtest is kept as a diagnostic: it is shown, never voted on.
        "role": backtest_role(period), "in_sample_reason": period["in_sample_reason"],
        "coverage": period["coverage"], "n_bars": n, "min_test_bars": exp.backtest.min_test_bars,
        "lake_partition": partition, "backtest_request_id": request_id,
    }
    lineage = {
        "config_hash": rec.get("config_hash"), "dataset_hash": rec.get("dataset_hash"),
        "feature_order_hash": rec.get("feature_order_hash"), "norm_stats_hash": rec.get("norm_stats_hash"),
        "model_hash": rec["model_hash"], "onnx_hash": rec.get("onnx_hash"), "mlflow_run_id": rec.get("mlflow_run_id"),
        "experiment_version": rec["experiment_version"], "backtest_partition": partition,
    }
    return base, lineage


def _insufficient(inputs: EvaluationInputs, name: str, rec: Any, exp: ExperimentConfig, period: dict[str, Any],
                  partition: str, base: dict[str, Any], lineage: dict[str, Any], start: str | None,
                  end: str | None) -> BacktestResult:
    """Nothing to trade on: record why, so the proposal can REJECT with that reason."""
    n = base["n_bars"]
    reason = f"the backtest period holds {n} bar(s); at least 2 are needed (min_test_bars {exp.backtest.min_test_bars})"
    report = {**base, "test_start": start, "test_end": end, "metrics": None,
              "benchmarks": {"flat": None, "buy_and_hold": None, "baseline": None}, "bootstrap": {},
              "cost_sweep": [], "walk_forward": None, "insufficient": reason, "baseline_model_id": None}
    report["backtest_hash"] = content_hash({k: report[k] for k in ("model_id", "model_hash", "n_bars", "test_start", "test_end")})
    report["lineage"] = {**lineage, "backtest_hash": report["backtest_hash"], "test_start": start, "test_end": end}
    empty = pl.DataFrame()
    bt_store.save_backtest(inputs.lake, name, rec["model_id"], series=empty, trades=empty, report=report,
                           partition=partition)
    return BacktestResult(rec, period, partition, report, insufficient=reason)


def _walk_forward_folds(exp: ExperimentConfig, period: dict[str, Any], sessions: np.ndarray) -> tuple[int, str | None]:
    """The test split's walk-forward folds, or 0 with the reason when they do not fit an explicit period."""
    folds = exp.backtest.walk_forward_folds
    n_sessions = int(np.unique(sessions).size)
    if folds <= n_sessions:
        return folds, None
    msg = f"walk-forward folds do not fit: {folds} folds need at least {folds} sessions, the period has {n_sessions}"
    if period["out_of_sample"] and period["source"] == "test_split":
        raise EvaluationError(f"{msg}: lower backtest.walk_forward_folds of {exp.name!r} or lengthen its test split")
    return 0, f"{msg}; not run for this explicit period"


def run_backtest(
    inputs: EvaluationInputs, experiment: str, *, model_id: str | None = None, start: str | None = None,
    end: str | None = None, allow_partial: bool = False, request_id: int | None = None,
    dagster_run_id: str | None = None,
) -> BacktestResult:
    """Backtest the experiment's model (default: its newest) over its test split or [start, end],
    beside production, buy-and-hold and flat; store series, trades and report; return them.
    `dagster_run_id`, the evaluation run, joins the lineage (the review page links it)."""
    cfg, store, name = inputs.config, inputs.store, experiment
    exp, contract = cfg.experiment(name), cfg.features
    rec = resolve_model(store, name, model_id)
    engine = InferenceEngine(store, contract, cfg.mlops.ensemble, models_root=inputs.models_root)
    member = load_member(engine, rec, "candidate")
    frame, period = period_frame(inputs, exp, rec, start, end, allow_partial)
    # An explicit period is stored beside the test-split backtest, never over it.
    partition = bt_store.backtest_partition(
        rec["model_id"], *(None if d is None else date.fromisoformat(d).isoformat() for d in (start, end))
    )
    base, lineage = _base_report(name, rec, exp, period, frame.height, partition, request_id)
    lineage["dagster_run_id"] = dagster_run_id
    if frame.height < 2:
        return _insufficient(inputs, name, rec, exp, period, partition, base, lineage, start, end)

    times, sessions, close = _arrays(frame)
    check_prices(close, times)
    raw = feature_matrix(frame, contract)
    position_index = contract.names.index("position")
    run = _run(member, raw, sessions, exp.environment.flat_at_session_end, position_index)
    live_rule = _live_rule(inputs, member, frame, raw, times, sessions, close, exp, position_index)
    baseline_run: PolicyRun | None = None
    prod = store.models.production()
    if prod is not None and prod["model_id"] != rec["model_id"]:
        prod_member = load_member(engine, prod, "production baseline")
        prod_exp = cfg.experiments.get(prod["experiment_name"], exp)
        baseline_run = _run(prod_member, raw, sessions, prod_exp.environment.flat_at_session_end, position_index)

    ann, stats = inputs.annualization, inputs.evaluation.statistics
    # N and V of the deflated Sharpe come from the trial ledger of the family, never from the config.
    family, ledger_rows = trials.family(store, name)
    folds, folds_skipped = _walk_forward_folds(exp, period, sessions)
    evaluation = evaluate(
        close, run.positions, sessions, times=times, cost_bps=exp.backtest.cost_bps,
        initial_capital=exp.backtest.initial_capital, annualization=ann, confidence=stats.confidence_level,
        cost_sweep_bps=exp.backtest.cost_sweep_bps,
        bootstrap_block_bars=stats.bootstrap_block_bars or inputs.calendar.bars_per_session,
        bootstrap_samples=stats.bootstrap_samples, bootstrap_seed=stats.bootstrap_seed,
        baseline_positions=None if baseline_run is None else baseline_run.positions,
        n_trials=family.n_trials, trial_sharpes=family.per_bar_sharpes(ann), walk_forward_folds=folds,
    )
    cand = evaluation.candidate
    cand.metrics["n_trials_source"] = family.source()
    cand.metrics["trial_family"] = family.as_dict()
    summary = evaluation.summary()
    if folds_skipped:
        summary["walk_forward_skipped"] = folds_skipped
    summary["overfitting"] = overfitting_statistics(inputs.lake, name, ledger_rows, evaluation, stats)
    summary["live_rule"] = live_rule
    session_dates = frame.get_column("session").cast(pl.Date)
    test_start, test_end = session_dates.min().isoformat(), session_dates.max().isoformat()
    baseline_id = None if baseline_run is None else prod["model_id"]
    backtest_hash = content_hash({
        "series": cand.fingerprint(), "model_hash": rec["model_hash"], "onnx_hash": rec.get("onnx_hash"),
        "baseline_model_id": baseline_id,
        "baseline_positions": None if baseline_run is None else content_hash(baseline_run.positions.tolist()),
    })
    action_counts = np.bincount(run.actions, minlength=3)
    report = {
        **base, **summary, "test_start": test_start, "test_end": test_end, "baseline_model_id": baseline_id,
        "insufficient": None,
        "policy": {
            "flat_at_session_end": exp.environment.flat_at_session_end,
            "mean_confidence": float(run.confidence.mean()),
            "action_counts": {"SELL": int(action_counts[0]), "HOLD": int(action_counts[1]), "BUY": int(action_counts[2])},
        },
        "backtest_hash": backtest_hash,
        "series_path": str(inputs.lake.path(bt_store.series_dataset(name), partition)),
        "trades_path": str(inputs.lake.path(bt_store.trades_dataset(name), partition)),
        "lineage": {**lineage, "backtest_hash": backtest_hash, "test_start": test_start, "test_end": test_end},
    }
    bt_store.save_backtest(inputs.lake, name, rec["model_id"], series=evaluation.series_frame(),
                           trades=cand.trades_frame(), report=report, partition=partition)
    return BacktestResult(rec, period, partition, report, evaluation=evaluation, times=times, live_rule=live_rule,
                          family=family)


# ---- the first vote ------------------------------------------------------------------------------
def vote_walk_forward(lake: Any, exp: ExperimentConfig, report: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The walk-forward the vote uses, and a note when it is missing: the expanding-window report of
    this experiment config when the experiment has walk-forward folds, else the test split's folds."""
    k = exp.backtest.walk_forward.folds
    if not k:
        return report.get("walk_forward"), None
    found = wf_reports.load_report(lake, exp.name, exp.config_hash)
    if found and found.get("folds"):
        return found, None
    note = (f"walk-forward ({k} expanding folds) has not run for this config of {exp.name!r}: materialize "
            "evaluation/walk_forward; without it the stability criterion fails")
    return {"kind": "expanding", "folds": [], "aggregate": {}, "missing": note}, note


@dataclass(frozen=True)
class Diagnostic:
    """The newest backtest is a diagnostic (an explicit period): nothing written, the proposal as it is."""

    note: str
    model_id: str
    existing: Any | None


@dataclass(frozen=True)
class Proposal:
    """The proposal row written by the first vote, the decision and what the vote was made from."""

    row: Any
    rec: Any
    report: dict[str, Any]
    decision: promotion.PromotionDecision
    reasons: list[str]
    statement: str
    metrics: dict[str, Any]

    @property
    def overfitting(self) -> dict[str, Any]:
        return self.metrics.get("overfitting") or {}


def overfitting_text(over: dict[str, Any], confidence: float) -> str:
    """The PBO and SPA sentences (markdown paragraphs) of a report's overfitting statistics."""
    return "\n\n".join(
        [overfitting.pbo_sentence(over.get("pbo")), overfitting.spa_sentence(over.get("spa"), 1.0 - confidence)]
    )


def propose(inputs: EvaluationInputs, experiment: str, model_id: str | None = None) -> Proposal | Diagnostic:
    """The first vote on the newest voting backtest (of `model_id`, or of the experiment): the success
    criteria -> PROMOTE / REVIEW / REJECT, upserted as a PENDING_APPROVAL proposal (one per model id)."""
    store, lake = inputs.store, inputs.lake
    exp = inputs.config.experiment(experiment)
    newest = bt_store.latest_backtest_report(lake, experiment, model_id, votes_only=False)
    if newest is None:
        who = f"model {model_id!r}" if model_id else f"experiment {experiment!r}"
        raise EvaluationError(f"no backtest for {who}: materialize evaluation/backtest first")
    if not bt_store.votes(newest):
        # A diagnostic (an explicit period) never changes a vote: nothing is written.
        kind = "IN-SAMPLE diagnostic" if not newest.get("out_of_sample", True) else "out-of-sample diagnostic"
        why = newest.get("in_sample_reason") or "an explicit period; only the test split and walk-forward folds vote"
        note = (f"{kind} {newest.get('lake_partition')} of {newest['model_id']} ({why}): shown as a diagnostic, "
                "never votes; the proposal is unchanged")
        return Diagnostic(note, newest["model_id"], store.proposals.by_model(newest["model_id"]))
    report = bt_store.latest_backtest_report(lake, experiment, model_id)
    assert report is not None  # the newest report votes
    rec = store.models.get(report["model_id"])
    if rec is None:
        raise EvaluationError(f"backtested model {report['model_id']!r} is no longer in the registry")
    return _vote(inputs, exp, rec, report)


def _vote(inputs: EvaluationInputs, exp: ExperimentConfig, rec: Any, report: dict[str, Any]) -> Proposal:
    policy, stats = inputs.evaluation.promotion, inputs.evaluation.statistics
    boots = {k: BootstrapInterval(**v) for k, v in (report.get("bootstrap") or {}).items()}
    statement = promotion.statistical_statement(
        report.get("metrics"), ann=inputs.annualization, confidence=stats.confidence_level,
        test_start=report.get("test_start"), test_end=report.get("test_end"), bootstrap=boots,
    )
    walk, walk_note = vote_walk_forward(inputs.lake, exp, report)
    over = report.get("overfitting") or {}
    statement += " " + overfitting_text(over, exp.success_criteria.p_min).replace("\n\n", " ")
    decision = promotion.decide(
        report.get("metrics"), n_bars=int(report["n_bars"]), criteria=exp.success_criteria,
        min_test_bars=exp.backtest.min_test_bars, policy=policy,
        baseline_metrics=(report.get("benchmarks") or {}).get("baseline"),
        baseline_model_id=report.get("baseline_model_id"), statement=statement, walk_forward=walk,
    )
    reasons = list(decision.reasons)
    if walk_note:
        reasons.append(walk_note)
    if report.get("insufficient"):
        reasons.insert(0, report["insufficient"])
    metrics = {
        **(report.get("metrics") or {}),
        **{k: report.get(k) for k in ("benchmarks", "cost_sweep", "bootstrap")},
        "walk_forward": walk, "test_split_folds": report.get("walk_forward"),
        **{k: report.get(k) for k in ("policy", "period_source", "out_of_sample")},
        "overfitting": over,
    }
    row = inputs.store.proposals.upsert(
        model_id=rec["model_id"], experiment_name=exp.name, experiment_version=rec["experiment_version"],
        recommendation=decision.recommendation, confidence=decision.confidence, reasons=reasons,
        criteria=decision.criteria_dict(), metrics=metrics, baseline_comparison=decision.baseline_comparison,
        lineage=report.get("lineage") or {}, statistical_statement=statement,
        backtest_hash=report.get("backtest_hash"), test_start=report.get("test_start"),
        test_end=report.get("test_end"), series_path=report.get("series_path"),
        expires_at=datetime.now(timezone.utc) + timedelta(days=policy.proposal_ttl_days),
    )
    return Proposal(row, rec, report, decision, reasons, statement, metrics)


# ---- the walk-forward ----------------------------------------------------------------------------
def run_walk_forward(
    inputs: EvaluationInputs, experiment: str, *, total_timesteps: int | None = None,
    executor: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """The expanding walk-forward of the experiment's config (each fold retrains on a growing window),
    stored in the lake under the config hash; an experiment with 0 folds records "off".
    `executor(n_folds)` builds the fold runner (e.g. Ray) once the folds are known; default in process."""
    cfg, lake, calendar = inputs.config, inputs.lake, inputs.calendar
    exp, contract = cfg.experiment(experiment), cfg.features
    if exp.backtest.walk_forward.folds == 0:
        report: dict[str, Any] = {"kind": "off", "folds": [], "aggregate": {}}
        wf_reports.save_report(lake, experiment, exp.config_hash, report)
        return report
    span = calendar.sessions(exp.date_ranges.train.start, exp.date_ranges.test.end)
    present = [d for d in ds.source_sessions(exp, span) if lake.exists(ds.SOURCE_DATASET, d.isoformat())]
    folds = wf.plan_folds(present, exp, ds.effective_embargo(exp, contract), calendar.bars_per_session)
    frame = lake.read_many(ds.SOURCE_DATASET, [d.isoformat() for d in present])
    if frame is None:
        raise wf.WalkForwardError(f"no {ds.SOURCE_DATASET} rows for experiment {experiment!r}: materialize the features first")
    frame = frame.select(ds.dataset_columns(contract)).sort("time")
    runner = None if executor is None else executor(len(folds))
    report = wf.run_walk_forward(frame, folds, exp, contract, inputs.annualization, total_timesteps=total_timesteps,
                                 runner=runner)
    report["config_hash"] = exp.config_hash
    report["total_timesteps"] = total_timesteps or exp.algorithm.total_timesteps
    wf_reports.save_report(lake, experiment, exp.config_hash, report)
    return report


__all__ = [
    "BacktestResult",
    "Diagnostic",
    "EvaluationError",
    "EvaluationInputs",
    "Proposal",
    "propose",
    "run_backtest",
    "run_walk_forward",
]
