"""Monitoring use cases: feature drift, realized performance (and the rollback it may file), the
shadow challengers and their A/B report.

The statistics live in core.drift and core.performance, the alert messages in core.alerts, the
rollback actions in app.lifecycle and the history datasets in app.monitoring_history. Each use case
takes a `MonitoringInputs` (store, lake, calendar, config, models directory) and the instant it
evaluates at, writes its history, and returns what the Dagster assets turn into metadata. No Dagster
here; a run that cannot proceed raises MonitoringError (the assets report it as a failure).

* check_drift — reference = the production model's train split (lake `datasets/<experiment>`
  partition `train`, raw features); current = the live observations the production signals were
  computed from (store.signals `features`) since the open of the session `drift_live_sessions`
  sessions back. Market features only. With no live data: SKIPPED, with a history row saying why.
* check_realized_performance — signals of every model (production and shadow roles) joined with the
  bars that followed; per-signal and per-session PnL, rolling Sharpe, hit rate, and the production
  model's degradation vs its backtest Sharpe. Beyond the rollback threshold it files a rollback
  proposal (or rolls back when configured so, audited).
* evaluate_retrain — which retraining triggers (drift streak, degradation, cadence) fire now.
* shadow_ab — each shadow model vs the production book on paired daily PnL.
* run_shadow_signals — challengers (servable staging models with a pending proposal) replay the
  production observations; see core.shadow's rules in `shadow_session`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.adapters.artifacts import ArtifactVerifier
from usdcop_platform.adapters.store.errors import ConflictError
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.app.lifecycle import SYSTEM_REVIEWER, propose_rollback, rollback_production
from usdcop_platform.contracts.experiment import BacktestConfig, EnvironmentConfig
from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.actions import HOLD, position_of
from usdcop_platform.core.alerts import degradation_alert, drift_alert
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.core.datasets import LINEAGE_FILE, dataset_dir, dataset_name
from usdcop_platform.core.drift import DriftReport, drift_report
from usdcop_platform.core.inference import InferenceEngine, InferenceError
from usdcop_platform.core.performance import (
    ABComparison,
    Degradation,
    PerformanceSummary,
    assess_degradation,
    realized_pnl,
    shadow_ab_comparisons,
    summarize,
)

SHADOW_ROLE = "shadow"
MIN_CONFIDENCE_CHECK = "min_confidence"


class MonitoringError(RuntimeError):
    """A monitoring run cannot proceed (e.g. the drift reference is missing); the message says why."""


@dataclass(frozen=True)
class MonitoringInputs:
    """What the monitoring use cases read and write."""

    store: Any
    lake: Any  # adapters.lake.ParquetLake
    calendar: TradingCalendar
    config: PlatformConfig
    models_root: Path


@dataclass(frozen=True)
class Skipped:
    """Nothing to evaluate yet (not a failure): the reason, kept in the history where there is one."""

    reason: str


def sessions_back(calendar: TradingCalendar, day: date, n: int) -> date:
    """The session n sessions before `day` (day itself need not be a session)."""
    d = day
    for _ in range(n):
        d = calendar.previous_session(d)
    return d


# ---- feature drift --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftResult:
    model_id: str
    experiment: str
    report: DriftReport
    drifted: bool
    threshold: float
    streak: int  # trailing DRIFT checks of the model, this one included
    live_sessions: list[str]
    reference_hash: str | None
    reference_matches_model: bool


def _skip_drift(inputs: MonitoringInputs, now: datetime, reason: str, **extra: Any) -> Skipped:
    row = h.history_row(h.DRIFT_SCHEMA, checked_at=now, status="SKIPPED", reason=reason, **extra)
    h.append(inputs.lake, h.DRIFT_DATASET, inputs.calendar.session_of(now), row)
    return Skipped(reason)


def _live_features(store: Any, since: datetime, until: datetime, n_features: int) -> tuple[np.ndarray, list[str]]:
    """Raw observations of the production signals in [since, until], one per bar."""
    rows = [r for r in store.signals.list(role="production", since=since) if r["bar_time"] <= until]
    seen: dict[datetime, list[float]] = {}
    sessions: set[str] = set()
    for r in rows:
        feats = r["features"] or []
        if len(feats) == n_features and all(v is not None for v in feats):
            seen[r["bar_time"]] = feats
            sessions.add(r["session_date"].isoformat())
    matrix = np.array(list(seen.values()), dtype=np.float64).reshape(len(seen), n_features)
    return matrix, sorted(sessions)


def consecutive_drift(history: pl.DataFrame | None, model_id: str) -> int:
    """Trailing DRIFT checks of `model_id` (SKIPPED runs neither extend nor break the streak)."""
    if history is None or history.is_empty():
        return 0
    rows = history.filter((pl.col("model_id") == model_id) & (pl.col("status") != "SKIPPED")).sort("checked_at")
    n = 0
    for status in reversed(rows["status"].to_list()):
        if status != "DRIFT":
            break
        n += 1
    return n


def _reference(lake: Any, model_id: str, experiment: str) -> pl.DataFrame:
    reference = lake.read(dataset_name(experiment), "train")
    if reference is None or reference.height < 2:
        raise MonitoringError(
            f"reference missing: lake dataset {dataset_name(experiment)} has no train split for production model "
            f"{model_id}; materialize datasets/experiment_dataset for partition {experiment!r}"
        )
    return reference


def _reference_hash(lake: Any, experiment: str) -> str | None:
    lineage_path = dataset_dir(lake.root, experiment) / LINEAGE_FILE
    return json.loads(lineage_path.read_text(encoding="utf-8")).get("dataset_hash") if lineage_path.exists() else None


def check_drift(inputs: MonitoringInputs, now: datetime, dispatcher: Callable[[], Any]) -> DriftResult | Skipped:
    """One drift check of the production model's live observations against its train split: a history
    row, an alert when drift starts and when it has lasted long enough to trigger a retrain.
    `dispatcher()` builds the alert dispatcher when an alert is due."""
    cfg, cal, lake, store = inputs.config, inputs.calendar, inputs.lake, inputs.store
    mon, drift_cfg, contract = cfg.mlops.monitoring, cfg.mlops.drift, cfg.features
    prod = store.models.production()
    if prod is None:
        return _skip_drift(inputs, now, "no production model: nothing is live, no drift to measure")
    model_id, experiment = prod["model_id"], prod["experiment_name"]
    reference = _reference(lake, model_id, experiment)
    since = cal.session_open_utc(sessions_back(cal, cal.session_of(now), mon.drift_live_sessions))
    current, live_sessions = _live_features(store, since, now, contract.n_features)
    if current.shape[0] < mon.drift_min_live_rows:
        return _skip_drift(
            inputs, now,
            f"no live data yet: {current.shape[0]} live observations since {since.isoformat()} "
            f"(< {mon.drift_min_live_rows} needed)",
            model_id=model_id, experiment=experiment, n_current=current.shape[0],
        )
    missing = [n for n in contract.names if n not in reference.columns]
    if missing:
        raise MonitoringError(f"reference split of {experiment!r} lacks feature column(s) {missing}")
    ref = reference.select(list(contract.names)).to_numpy().astype(np.float64)
    report = drift_report(ref, current, contract.names, drift_cfg.ks_pvalue, drift_cfg.psi_threshold,
                          skip=contract.state_features)
    drifted = report.drift_share > drift_cfg.threshold
    h.append(lake, h.DRIFT_DATASET, cal.session_of(now), h.history_row(
        h.DRIFT_SCHEMA, checked_at=now, status="DRIFT" if drifted else "OK",
        reason=f"drift share {report.drift_share:.3f} {'>' if drifted else '<='} {drift_cfg.threshold}",
        model_id=model_id, experiment=experiment, drift_share=report.drift_share, threshold=drift_cfg.threshold,
        n_reference=report.n_reference, n_current=report.n_current,
        drifted_features=",".join(report.drifted_features), live_sessions=",".join(live_sessions),
        report_json=json.dumps(report.to_dict()),
    ))
    history = h.read_recent(lake, h.DRIFT_DATASET, sessions=drift_cfg.consecutive_checks_for_retrain + 5)
    streak = consecutive_drift(history, model_id)
    # Alert when drift starts and when it has lasted long enough to trigger a retrain, not on every hourly check.
    if drifted and streak in (1, drift_cfg.consecutive_checks_for_retrain):
        dispatcher().emit(drift_alert(
            drift_share=report.drift_share, threshold=drift_cfg.threshold, drifted_features=report.drifted_features,
            model_id=model_id, live_sessions=live_sessions, consecutive=streak,
        ))
    ref_hash = _reference_hash(lake, experiment)
    return DriftResult(model_id, experiment, report, drifted, drift_cfg.threshold, streak, live_sessions, ref_hash,
                       ref_hash is not None and ref_hash == prod.get("dataset_hash"))


# ---- retraining triggers --------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainDecision:
    experiment: str | None
    model_id: str | None
    reasons: list[str] = field(default_factory=list)
    skip: str | None = None

    @property
    def kinds(self) -> list[str]:
        return [r.split(":", 1)[0] for r in self.reasons]


def sessions_between(calendar: TradingCalendar, earlier: datetime, later: datetime) -> int:
    """Trading sessions after earlier's session up to and including later's session."""
    a, b = calendar.session_of(earlier), calendar.session_of(later)
    return 0 if b <= a else len(calendar.sessions(calendar.next_session(a), b))


def evaluate_retrain(
    now: datetime,
    store: Any,
    lake: Any,
    calendar: TradingCalendar,
    cfg: PlatformConfig,
    last_trigger_at: datetime | None,
) -> RetrainDecision:
    """Which retraining triggers fire now for the production model's experiment, since the last
    trigger (pure reads, no side effects):

    * drift — the newest `drift.consecutive_checks_for_retrain` drift checks of the production model
      (SKIPPED runs ignored) all exceeded the drift threshold;
    * degradation — a realized-performance check graded the production model WARN or ROLLBACK;
    * schedule — `retrain.every_sessions` sessions passed since the last trigger or the promotion.

    `retrain.cooldown_sessions` sessions must separate two triggers."""
    prod = store.models.production()
    if prod is None:
        return RetrainDecision(None, None, skip="no production model: nothing to retrain against")
    experiment, model_id = prod["experiment_name"], prod["model_id"]
    if experiment not in cfg.experiments:
        return RetrainDecision(experiment, model_id, skip=f"experiment {experiment!r} of the production model is not in config/experiments")
    rcfg, dcfg = cfg.mlops.monitoring.retrain, cfg.mlops.drift
    if last_trigger_at is not None and sessions_between(calendar, last_trigger_at, now) < rcfg.cooldown_sessions:
        return RetrainDecision(experiment, model_id, skip=f"cooldown: last retrain trigger at {last_trigger_at.isoformat()}")
    since = last_trigger_at or datetime.min.replace(tzinfo=timezone.utc)
    reasons: list[str] = []

    n = dcfg.consecutive_checks_for_retrain
    drift = h.read_since(lake, h.DRIFT_DATASET, since, sessions=n + cfg.mlops.monitoring.performance.rolling_sessions)
    streak = consecutive_drift(drift if drift.height else None, model_id)
    if streak >= n:
        reasons.append(f"drift: {streak} consecutive drift checks above {dcfg.threshold} (>= {n})")

    perf = h.read_since(lake, h.PERFORMANCE_HISTORY_DATASET, since, sessions=cfg.mlops.monitoring.performance.rolling_sessions)
    if perf.height:
        mine = perf.filter(pl.col("model_id") == model_id).sort("checked_at")
        if mine.height and mine["status"][-1] in ("WARN", "ROLLBACK"):
            reasons.append(f"degradation: {mine['reason'][-1]}")

    if rcfg.every_sessions > 0:
        baseline = max(t for t in (last_trigger_at, prod["promoted_at"], prod["created_at"]) if t is not None)
        elapsed = sessions_between(calendar, baseline, now)
        if elapsed >= rcfg.every_sessions:
            reasons.append(f"schedule: {elapsed} sessions since {baseline.date().isoformat()} (>= {rcfg.every_sessions})")
    return RetrainDecision(experiment, model_id, reasons)


# ---- realized performance -------------------------------------------------------------------------
@dataclass
class PerformanceResult:
    """A realized-performance check: the window, the per-model summaries and, with a production
    model, its degradation verdict and the action taken (`action_error` when a rollback was impossible)."""

    sessions: list[date]
    traded: list[date]
    n_signals: int
    summaries: list[PerformanceSummary]
    production_model_id: str | None = None
    verdict: Degradation | None = None
    action: str = "none"
    action_error: str | None = None


def _model_costs(cfg: PlatformConfig, store: Any, model_ids: list[str]) -> dict[str, float]:
    """Each model's experiment cost (bps); the contract default for a model not in the registry."""
    out: dict[str, float] = {}
    for mid in model_ids:
        row = store.models.get(mid)
        exp = cfg.experiments.get(row["experiment_name"]) if row is not None else None
        out[mid] = exp.backtest.cost_bps if exp is not None else BacktestConfig().cost_bps
    return out


def expected_sharpe(store: Any, model_id: str, key: str) -> float | None:
    """The backtest Sharpe the model was promoted on: its proposal's metrics, else the registry's."""
    for source in (store.proposals.by_model(model_id), store.models.get(model_id)):
        if source is None:
            continue
        value = (source.get("metrics") or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _window(cal: TradingCalendar, now: datetime, lookback: int) -> list[date]:
    """The lookback sessions ending at the last session that has opened by `now`."""
    today = cal.session_of(now)
    last = today if cal.is_session(today) and cal.session_open_utc(today) <= now else cal.previous_session(today)
    return cal.sessions(sessions_back(cal, last, lookback - 1), last)


def _previous_status(lake: Any, model_id: str, rolling: int) -> str | None:
    previous = h.read_recent(lake, h.PERFORMANCE_HISTORY_DATASET, sessions=rolling)
    if previous is None or not previous.height:
        return None
    mine = previous.filter(pl.col("model_id") == model_id)
    return mine["status"][-1] if mine.height else None


def _act_on(inputs: MonitoringInputs, verdict: Degradation, model_id: str, dispatcher: Any,
            prev_status: str | None) -> tuple[str, str | None]:
    """Alert on a new WARN/ROLLBACK; beyond the rollback threshold roll back (automatic) or propose it."""
    pcfg = inputs.config.mlops.monitoring.performance
    if verdict.status in ("WARN", "ROLLBACK") and verdict.status != prev_status:
        dispatcher.emit(degradation_alert(model_id=model_id, status=verdict.status, reason=verdict.reason,
                                          details=verdict.as_dict()))
    if verdict.status != "ROLLBACK":
        return "none", None
    if not pcfg.rollback_automatic:
        proposal = propose_rollback(inputs.store, dispatcher, model_id=model_id, reason=verdict.reason,
                                    details=verdict.as_dict())
        return ("rollback_proposed" if proposal.created else "already_proposed"), None
    try:
        done = rollback_production(
            inputs.store, dispatcher, reviewer=SYSTEM_REVIEWER, notes=f"automatic rollback: {verdict.reason}",
            automatic=True, verify=ArtifactVerifier(inputs.config.features, inputs.models_root),
            expected_production=model_id,
        )
        return f"rolled_back_to:{done['model_id']}", None
    except (LookupError, ConflictError) as exc:  # nothing to roll back to, target refused, registry moved
        return "rollback_impossible", f"automatic rollback impossible: {exc}"


def _signals_frame(signals: list[Any]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: r[k] for k in ("model_id", "role", "session_date", "bar_time", "action")} for r in signals],
        schema={"model_id": pl.Utf8, "role": pl.Utf8, "session_date": pl.Date, "bar_time": pl.Datetime("us", "UTC"),
                "action": pl.Int64},
    )


def check_realized_performance(
    inputs: MonitoringInputs, now: datetime, dispatcher: Callable[[], Any]
) -> PerformanceResult | Skipped:
    """Realized PnL of every model over the lookback (lake history per session and per signal), and the
    production model's degradation vs its backtest: a history row, alerts, and the rollback action."""
    cfg, cal, lake, store = inputs.config, inputs.calendar, inputs.lake, inputs.store
    pcfg = cfg.mlops.monitoring.performance
    sessions = _window(cal, now, pcfg.lookback_sessions)
    signals = [r for r in store.signals.list(since=cal.session_open_utc(sessions[0])) if r["bar_time"] <= now]
    if not signals:
        return Skipped(f"no live signals since {sessions[0].isoformat()}: nothing realized yet")
    sig = _signals_frame(signals)
    bars = lake.read_many(BARS_DATASET, [s.isoformat() for s in sessions])
    if bars is None:
        bars = pl.DataFrame(schema={"time": pl.Datetime("us", "UTC"), "close": pl.Float64})
    bars = bars.filter(pl.col("time") + cal.bar_delta <= now)  # closed bars only
    closed = [s for s in sessions if cal.session_close_utc(s) <= now]
    realized = realized_pnl(sig, bars, cost_bps=_model_costs(cfg, store, sorted(sig["model_id"].unique().to_list())),
                            timezone=cal.instrument.timezone, closed_sessions=closed)
    traded = sorted(set(realized.per_session["session_date"].to_list()))
    h.write_sessions(lake, h.REALIZED_SESSIONS_DATASET, realized.per_session, traded)
    h.write_sessions(lake, h.REALIZED_SIGNALS_DATASET, realized.per_signal, traded)
    spy = cal.sessions_per_year()
    summaries = summarize(realized, sessions_per_year=spy, rolling_sessions=pcfg.rolling_sessions,
                          min_sessions=pcfg.min_sessions)
    result = PerformanceResult(sessions, traded, sig.height, summaries)
    today = cal.session_of(now)
    prod = store.models.production()
    if prod is None:
        row = h.history_row(h.PERFORMANCE_SCHEMA, checked_at=now, status="NO_PRODUCTION", reason="no production model",
                            action="none")
        h.append(lake, h.PERFORMANCE_HISTORY_DATASET, today, row)
        return result
    model_id = result.production_model_id = prod["model_id"]
    mine = realized.per_session.filter((pl.col("model_id") == model_id) & (pl.col("role") == "production"))
    verdict = result.verdict = assess_degradation(
        mine.sort("session_date")["pnl"].to_numpy(), expected_sharpe(store, model_id, pcfg.expected_sharpe_key),
        sessions_per_year=spy, rolling_sessions=pcfg.rolling_sessions, min_sessions=pcfg.min_sessions,
        warn_drop=pcfg.warn_sharpe_drop, rollback_drop=pcfg.rollback_sharpe_drop,
    )
    prev_status = _previous_status(lake, model_id, pcfg.rolling_sessions)
    result.action, result.action_error = _act_on(inputs, verdict, model_id, dispatcher(), prev_status)
    h.append(lake, h.PERFORMANCE_HISTORY_DATASET, today, h.history_row(
        h.PERFORMANCE_SCHEMA, checked_at=now, model_id=model_id, status=verdict.status, reason=verdict.reason,
        realized_sharpe=verdict.realized_sharpe, expected_sharpe=verdict.expected_sharpe, drop=verdict.drop,
        n_sessions=verdict.n_sessions, prob_at_least_expected=verdict.prob_at_least_expected, action=result.action,
    ))
    return result


# ---- shadow A/B ----------------------------------------------------------------------------------
def shadow_ab(inputs: MonitoringInputs, now: datetime) -> tuple[list[dict[str, Any]], list[ABComparison]]:
    """Each shadow model vs the production book on the lookback's paired session PnL; the report rows
    (written to the lake when there are any) and the comparisons."""
    cfg, cal, lake = inputs.config, inputs.calendar, inputs.lake
    ab, pcfg = cfg.mlops.monitoring.ab_test, cfg.mlops.monitoring.performance
    per_session = h.read_recent(lake, h.REALIZED_SESSIONS_DATASET, sessions=pcfg.lookback_sessions,
                                before=cal.session_of(now))
    if per_session is None:
        per_session = pl.DataFrame(schema={"model_id": pl.Utf8, "role": pl.Utf8, "session_date": pl.Date,
                                           "pnl": pl.Float64})
    comparisons = shadow_ab_comparisons(
        per_session, method=ab.method, alpha=ab.alpha, power=ab.power, lags=ab.dm_lags, min_sessions=ab.min_sessions
    )
    rows = [
        {
            "checked_at": now, "challenger_model_id": c.challenger_model_id, "sessions": c.sessions,
            "method": ab.method,
            **{k: (getattr(c.test, k) if c.test else None)
               for k in ("mean_diff", "statistic", "p_value", "needed_sessions", "significant")},
            "challenger_pnl": c.challenger_pnl, "production_pnl": c.production_pnl, "verdict": c.verdict,
        }
        for c in comparisons
    ]
    if rows:
        lake.write(h.AB_REPORT_DATASET, cal.session_of(now).isoformat(), pl.DataFrame(rows, schema=h.AB_SCHEMA))
    return rows, comparisons


# ---- shadow signals --------------------------------------------------------------------------------
def challengers(store: Any, limit: int) -> list[Any]:
    """Servable staging models with a pending proposal, newest first."""
    if limit <= 0:
        return []
    out = []
    for rec in store.models.list(stage="staging"):
        if not rec["servable"]:
            continue
        proposal = store.proposals.by_model(rec["model_id"])
        if proposal is not None and proposal["status"] == "PENDING_APPROVAL":
            out.append(rec)
        if len(out) == limit:
            break
    return out


def _flat_at_close(cfg: PlatformConfig, rec: Any) -> bool:
    exp = cfg.experiments.get(rec["experiment_name"])
    return exp.environment.flat_at_session_end if exp is not None else bool(
        EnvironmentConfig.model_fields["flat_at_session_end"].default
    )


def shadow_session(
    engine: InferenceEngine,
    rec: Any,
    production: list[Any],
    existing: dict[datetime, int],
    *,
    position_index: int,
    last_bar_index: int,
    bar_index: Callable[[datetime], int],
    flat_at_close: bool,
    min_confidence: float,
) -> list[dict[str, Any]]:
    """Shadow signals of one challenger for one session's production signals (bar order).

    The challenger sees the very observation production saw (the signal's raw `features`), with its own
    position substituted: the one its previous shadow signal of the session targeted (0 at the open).
    action = HOLD on the forced-flat last bar, HOLD when confidence < risk.min_confidence (risk_status
    REJECTED, failing_check min_confidence), else the policy's; position_recommendation 0 (never acted on).
    """
    out: list[dict[str, Any]] = []
    position = 0
    for sig in production:
        t = sig["bar_time"]
        if t in existing:  # already shadowed: carry its position forward
            position = position_of(existing[t])
            continue
        x = np.asarray(sig["features"], dtype=np.float64).copy()
        x[position_index] = position
        flat = flat_at_close and bar_index(t) == last_bar_index
        pred = engine.step(x, position, force_flat=flat)
        gated = not flat and pred.confidence < min_confidence
        action = HOLD if flat or gated else pred.action
        member = pred.members[0]
        out.append(
            {
                "bar_time": t,
                "session_date": sig["session_date"],
                "model_id": rec["model_id"],
                "role": SHADOW_ROLE,
                "model_hash": rec["model_hash"],
                "action": action,
                "raw_action": member.action,
                "prob_sell": float(member.probabilities[0]),
                "prob_hold": float(member.probabilities[1]),
                "prob_buy": float(member.probabilities[2]),
                "confidence": float(member.probabilities.max()),
                "risk_status": "REJECTED" if gated else "APPROVED",
                "failing_check": MIN_CONFIDENCE_CHECK if gated else None,
                "position_recommendation": 0.0,
                "feature_hash": sig.get("feature_hash"),
                "feature_order_hash": rec.get("feature_order_hash"),
                "norm_stats_hash": rec.get("norm_stats_hash"),
                "features": [float(v) for v in x],
            }
        )
        position = position_of(action)
    return out


@dataclass(frozen=True)
class ShadowResult:
    challengers: list[str]
    written: dict[str, int]  # shadow signals written per challenger
    unservable: dict[str, str]  # challenger -> why it cannot be served
    sessions: list[date]


def _production_by_session(inputs: MonitoringInputs, now: datetime, catchup: int) -> tuple[dict[date, list[Any]], str]:
    """One production observation per bar (every production member saw the same one), per session."""
    cal, cfg = inputs.calendar, inputs.config
    today = cal.session_of(now)
    first = sessions_back(cal, today, catchup) if catchup else today
    sessions: list[date] = list(cal.sessions(first, today))
    prod = [
        r for r in inputs.store.signals.list(role="production", since=cal.session_open_utc(sessions[0]) if sessions else now)
        if r["bar_time"] <= now and len(r["features"] or []) == cfg.features.n_features
    ]
    by_bar: dict[datetime, Any] = {}
    for r in prod:
        by_bar.setdefault(r["bar_time"], r)
    per_session: dict[date, list[Any]] = {}
    for t in sorted(by_bar):
        per_session.setdefault(by_bar[t]["session_date"], []).append(by_bar[t])
    return per_session, (sessions[0].isoformat() if sessions else today.isoformat())


def run_shadow_signals(inputs: MonitoringInputs, now: datetime) -> ShadowResult | Skipped:
    """The challengers' shadow signals on the production observations of the catch-up sessions, stored
    with role shadow (idempotent upserts: a re-run fills only the missing bars)."""
    cfg, cal, store = inputs.config, inputs.calendar, inputs.store
    scfg = cfg.mlops.monitoring.shadow
    chosen = challengers(store, scfg.max_challengers)
    if not chosen:
        return Skipped("no challenger: no servable staging model has a PENDING_APPROVAL proposal")
    per_session, since = _production_by_session(inputs, now, scfg.catchup_sessions)
    if not per_session:
        return Skipped(f"no production signals with observations since {since}")
    position_index = cfg.features.names.index("position")
    written: dict[str, int] = {}
    failed: dict[str, str] = {}
    for rec in chosen:
        mid = rec["model_id"]
        members = (EnsembleMember(model_id=mid, weight=1.0),)
        engine = InferenceEngine(store, cfg.features, EnsembleConfig(method="weighted_average", members=members),
                                 models_root=inputs.models_root)
        try:
            engine.load()
        except InferenceError as exc:  # a challenger that cannot be served is reported, not fatal
            failed[mid] = str(exc)
            continue
        n = 0
        for session, rows in per_session.items():
            existing = {r["bar_time"]: r["action"]
                        for r in store.signals.list(session_date=session, model_id=mid, role=SHADOW_ROLE)}
            for signal in shadow_session(
                engine, rec, rows, existing, position_index=position_index, last_bar_index=cal.bars_per_session - 1,
                bar_index=cal.bar_index, flat_at_close=_flat_at_close(cfg, rec),
                min_confidence=cfg.mlops.risk.min_confidence,
            ):
                store.signals.upsert(signal)
                n += 1
        written[mid] = n
    return ShadowResult([r["model_id"] for r in chosen], written, failed, list(per_session))
