"""Monitoring assets: feature drift, realized performance, shadow A/B report.

They orchestrate; the statistics live in core.drift and core.performance, the messages in
core.alerts, and the lifecycle actions in app.lifecycle.

* monitoring/feature_drift — reference = the production model's train split (lake
  `datasets/<experiment>` partition `train`, raw features); current = the live observations the
  production signals were computed from (store.signals `features`, raw contract values) since the
  open of the session `drift_live_sessions` sessions back (so at least one full session, plus
  today's so far). Market features only (state features are not compared). With no live data
  the asset is SKIPPED: no materialization, an observation and a history row carry the reason.
* monitoring/realized_performance — signals of every model (production and shadow roles) joined
  with the bars that followed; per-signal and per-session PnL, rolling Sharpe, hit rate, and the
  production model's degradation vs its backtest Sharpe. Beyond the rollback threshold it files
  a rollback proposal (or rolls back when configured so, audited).
* monitoring/shadow_ab_report — each shadow model vs the production book on paired daily PnL.
"""


import json
from datetime import date, datetime, timezone
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from usdcop_platform.contracts.experiment import BacktestConfig
from usdcop_platform.core.alerts import degradation_alert, drift_alert
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.display import metric_entries, metric_text, num, prob
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.core.datasets import LINEAGE_FILE, dataset_dir, dataset_name
from usdcop_platform.core.drift import drift_report
from usdcop_platform.core.performance import (
    assess_degradation,
    realized_pnl,
    shadow_ab_comparisons,
    summarize,
)
from usdcop_platform.core.performance import SESSION_PNL_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.adapters.artifacts import ArtifactVerifier
from usdcop_platform.adapters.store.errors import ConflictError
from usdcop_platform.app.lifecycle import SYSTEM_REVIEWER, propose_rollback, rollback_production
from usdcop_platform.defs.live.assets import LIVE_SIGNAL_KEY
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY

GROUP = "monitoring"
FEATURE_DRIFT_KEY = dg.AssetKey(["monitoring", "feature_drift"])
REALIZED_PERFORMANCE_KEY = dg.AssetKey(["monitoring", "realized_performance"])
SHADOW_AB_KEY = dg.AssetKey(["monitoring", "shadow_ab_report"])
SHADOW_SIGNALS_KEY = dg.AssetKey(["monitoring", "shadow_signals"])


class MonitoringRunConfig(dg.Config):
    """When to evaluate: the schedules pass their tick time; a manual run defaults to now."""

    as_of: str | None = Field(default=None, description="ISO-8601 instant with offset (default: now)")

    def now(self) -> datetime:
        if not self.as_of:
            return datetime.now(timezone.utc)
        t = datetime.fromisoformat(self.as_of)
        if t.tzinfo is None:
            raise dg.Failure(f"as_of {self.as_of!r} has no UTC offset; give e.g. 2024-03-04T15:00:00+00:00")
        return t.astimezone(timezone.utc)


def sessions_back(calendar: TradingCalendar, day: date, n: int) -> date:
    """The session n sessions before `day` (day itself need not be a session)."""
    d = day
    for _ in range(n):
        d = calendar.previous_session(d)
    return d


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as a markdown table; each cell on its metric's scale (core.display.metric_text)."""
    def cell(name: str, v: Any) -> str:
        if isinstance(v, float) and not np.isfinite(v):
            return "n/a"
        return "" if v is None else metric_text(name, v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# ---- feature drift --------------------------------------------------------------------------------
def _skip(context: dg.AssetExecutionContext, platform: PlatformResource, now: datetime, reason: str, **extra: Any):
    """A drift run without inputs: logged, kept in the history, observed on the asset; not a failure."""
    context.log.info(f"feature drift SKIPPED: {reason}")
    session = platform.calendar.session_of(now)
    h.append(platform.lake, h.DRIFT_DATASET, session, h.history_row(h.DRIFT_SCHEMA, checked_at=now, status="SKIPPED", reason=reason, **extra))
    yield dg.AssetObservation(asset_key=FEATURE_DRIFT_KEY, metadata={"status": "SKIPPED", "reason": reason, "as_of": now.isoformat()})


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


@dg.asset(
    key=FEATURE_DRIFT_KEY,
    group_name=GROUP,
    # lineage: live observations (signals) vs the experiment's train split
    deps=[LIVE_SIGNAL_KEY, DATASET_KEY],
    output_required=False,  # no live data -> no materialization (SKIPPED with a reason)
    kinds={"polars", "parquet"},
    owners=[catalog.OWNER_MLOPS],
    metadata=catalog.columns(catalog.table_schema(h.DRIFT_SCHEMA)),  # one history row per check
    description="Per-feature KS / Wasserstein / PSI of live observations vs the production model's train split; "
    "history in lake monitoring/feature_drift.",
)
def feature_drift(
    context: dg.AssetExecutionContext, config: MonitoringRunConfig, platform: PlatformResource, alerts: AlertsResource
):
    cfg, cal, lake = platform.config, platform.calendar, platform.lake
    mon, drift_cfg, contract = cfg.mlops.monitoring, cfg.mlops.drift, cfg.features
    now = config.now()
    store = platform.store()
    prod = store.models.production()
    if prod is None:
        yield from _skip(context, platform, now, "no production model: nothing is live, no drift to measure")
        return
    model_id, experiment = prod["model_id"], prod["experiment_name"]
    reference = lake.read(dataset_name(experiment), "train")
    if reference is None or reference.height < 2:
        raise dg.Failure(
            f"reference missing: lake dataset {dataset_name(experiment)} has no train split for production model "
            f"{model_id}; materialize datasets/experiment_dataset for partition {experiment!r}"
        )
    start_session = sessions_back(cal, cal.session_of(now), mon.drift_live_sessions)
    since = cal.session_open_utc(start_session)
    current, live_sessions = _live_features(store, since, now, contract.n_features)
    if current.shape[0] < mon.drift_min_live_rows:
        yield from _skip(
            context, platform, now,
            f"no live data yet: {current.shape[0]} live observations since {since.isoformat()} "
            f"(< {mon.drift_min_live_rows} needed)",
            model_id=model_id, experiment=experiment, n_current=current.shape[0],
        )
        return

    missing = [n for n in contract.names if n not in reference.columns]
    if missing:
        raise dg.Failure(f"reference split of {experiment!r} lacks feature column(s) {missing}")
    ref = reference.select(list(contract.names)).to_numpy().astype(np.float64)
    report = drift_report(ref, current, contract.names, drift_cfg.ks_pvalue, drift_cfg.psi_threshold, skip=contract.state_features)
    drifted = report.drift_share > drift_cfg.threshold
    session = cal.session_of(now)
    h.append(
        lake, h.DRIFT_DATASET, session,
        h.history_row(
            h.DRIFT_SCHEMA, checked_at=now, status="DRIFT" if drifted else "OK",
            reason=f"drift share {report.drift_share:.3f} {'>' if drifted else '<='} {drift_cfg.threshold}",
            model_id=model_id, experiment=experiment, drift_share=report.drift_share, threshold=drift_cfg.threshold,
            n_reference=report.n_reference, n_current=report.n_current,
            drifted_features=",".join(report.drifted_features), live_sessions=",".join(live_sessions),
            report_json=json.dumps(report.to_dict()),
        ),
    )
    streak = consecutive_drift(h.read_recent(lake, h.DRIFT_DATASET, sessions=drift_cfg.consecutive_checks_for_retrain + 5), model_id)
    # Alert when drift starts and when it has lasted long enough to trigger a retrain, not on every hourly check.
    if drifted and streak in (1, drift_cfg.consecutive_checks_for_retrain):
        alerts.dispatcher(store, mon.alerts, context.log).emit(
            drift_alert(
                drift_share=report.drift_share, threshold=drift_cfg.threshold, drifted_features=report.drifted_features,
                model_id=model_id, live_sessions=live_sessions, consecutive=streak,
            )
        )
    lineage_path = dataset_dir(lake.root, experiment) / LINEAGE_FILE
    ref_hash = json.loads(lineage_path.read_text(encoding="utf-8")).get("dataset_hash") if lineage_path.exists() else None
    table = [
        {"feature": f.name, "ks": f.ks_statistic, "ks_p": f.ks_pvalue, "wasserstein": f.wasserstein, "psi": f.psi,
         "drifted": f.drifted}
        for f in report.features
    ]
    yield dg.MaterializeResult(
        metadata={
            "status": "DRIFT" if drifted else "OK",
            "as_of": now.isoformat(),
            "model_id": model_id,
            "experiment": experiment,
            **metric_entries({"drift_share": report.drift_share, "drift_threshold": drift_cfg.threshold}),
            "drifted_features": ", ".join(report.drifted_features) or "none",
            "consecutive_drift_checks": streak,
            "n_reference": report.n_reference,
            "n_current": report.n_current,
            "live_sessions": ", ".join(live_sessions),
            "reference_dataset_hash": ref_hash or "unknown",
            "reference_matches_model": ref_hash is not None and ref_hash == prod.get("dataset_hash"),
            "features": dg.MetadataValue.md(_md_table(table, ["feature", "ks", "ks_p", "wasserstein", "psi", "drifted"])),
        }
    )


# ---- realized performance -----------------------------------------------------------------------
def _model_costs(platform: PlatformResource, store: Any, model_ids: list[str]) -> dict[str, float]:
    """Each model's experiment cost (bps); the contract default for a model not in the registry."""
    out: dict[str, float] = {}
    for mid in model_ids:
        row = store.models.get(mid)
        exp = platform.config.experiments.get(row["experiment_name"]) if row is not None else None
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


@dg.asset(
    key=REALIZED_PERFORMANCE_KEY,
    group_name=GROUP,
    # signals (production, and shadow first when both run in one job) joined with the bars that followed
    deps=[SHADOW_SIGNALS_KEY, LIVE_SIGNAL_KEY, RAW_BARS_KEY],
    output_required=False,  # no signals in the lookback -> SKIPPED with a reason
    kinds={"polars", "parquet"},
    owners=[catalog.OWNER_MLOPS],
    metadata=catalog.columns(catalog.table_schema(SESSION_PNL_SCHEMA)),  # realized PnL per model and session
    description="Realized PnL per signal and per session (production and shadow), rolling Sharpe, hit rate, "
    "and degradation vs the backtest expectation; may file a rollback proposal.",
)
def realized_performance(
    context: dg.AssetExecutionContext, config: MonitoringRunConfig, platform: PlatformResource, alerts: AlertsResource
):
    cfg, cal, lake = platform.config, platform.calendar, platform.lake
    mon = cfg.mlops.monitoring
    pcfg = mon.performance
    now = config.now()
    today = cal.session_of(now)
    last = today if cal.is_session(today) and cal.session_open_utc(today) <= now else cal.previous_session(today)
    sessions = cal.sessions(sessions_back(cal, last, pcfg.lookback_sessions - 1), last)
    store = platform.store()
    signals = [r for r in store.signals.list(since=cal.session_open_utc(sessions[0])) if r["bar_time"] <= now]
    if not signals:
        reason = f"no live signals since {sessions[0].isoformat()}: nothing realized yet"
        context.log.info(f"realized performance SKIPPED: {reason}")
        yield dg.AssetObservation(asset_key=REALIZED_PERFORMANCE_KEY, metadata={"status": "SKIPPED", "reason": reason})
        return
    sig = pl.DataFrame(
        [{k: r[k] for k in ("model_id", "role", "session_date", "bar_time", "action")} for r in signals],
        schema={"model_id": pl.Utf8, "role": pl.Utf8, "session_date": pl.Date, "bar_time": pl.Datetime("us", "UTC"), "action": pl.Int64},
    )
    bars = lake.read_many(BARS_DATASET, [s.isoformat() for s in sessions])
    if bars is None:
        bars = pl.DataFrame(schema={"time": pl.Datetime("us", "UTC"), "close": pl.Float64})
    bars = bars.filter(pl.col("time") + cal.bar_delta <= now)  # closed bars only
    model_ids = sorted(sig["model_id"].unique().to_list())
    closed = [s for s in sessions if cal.session_close_utc(s) <= now]
    realized = realized_pnl(
        sig, bars, cost_bps=_model_costs(platform, store, model_ids), timezone=cal.instrument.timezone, closed_sessions=closed
    )
    traded = sorted(set(realized.per_session["session_date"].to_list()))
    h.write_sessions(lake, h.REALIZED_SESSIONS_DATASET, realized.per_session, traded)
    h.write_sessions(lake, h.REALIZED_SIGNALS_DATASET, realized.per_signal, traded)
    spy = cal.periods_per_year("session")
    summaries = summarize(realized, sessions_per_year=spy, rolling_sessions=pcfg.rolling_sessions, min_sessions=pcfg.min_sessions)

    prod = store.models.production()
    metadata: dict[str, Any] = {
        "as_of": now.isoformat(),
        "sessions": f"{sessions[0].isoformat()}..{sessions[-1].isoformat()}",
        "sessions_with_signals": len(traded),
        "signals": sig.height,
        "models": dg.MetadataValue.md(
            _md_table(
                [s.as_dict() for s in summaries],
                ["model_id", "role", "n_sessions", "n_signals", "total_pnl", "sharpe", "rolling_sharpe", "hit_rate", "last_session"],
            )
        ),
    }
    if prod is None:
        row = h.history_row(h.PERFORMANCE_SCHEMA, checked_at=now, status="NO_PRODUCTION", reason="no production model", action="none")
        h.append(lake, h.PERFORMANCE_HISTORY_DATASET, today, row)
        yield dg.MaterializeResult(metadata={**metadata, "status": "NO_PRODUCTION"})
        return

    model_id = prod["model_id"]
    mine = realized.per_session.filter((pl.col("model_id") == model_id) & (pl.col("role") == "production")).sort("session_date")
    verdict = assess_degradation(
        mine["pnl"].to_numpy(),
        expected_sharpe(store, model_id, pcfg.expected_sharpe_key),
        sessions_per_year=spy,
        rolling_sessions=pcfg.rolling_sessions,
        min_sessions=pcfg.min_sessions,
        warn_drop=pcfg.warn_sharpe_drop,
        rollback_drop=pcfg.rollback_sharpe_drop,
    )
    previous = h.read_recent(lake, h.PERFORMANCE_HISTORY_DATASET, sessions=pcfg.rolling_sessions)
    prev_status = None
    if previous is not None and previous.height:
        mine_prev = previous.filter(pl.col("model_id") == model_id)
        prev_status = mine_prev["status"][-1] if mine_prev.height else None

    dispatcher = alerts.dispatcher(store, mon.alerts, context.log)
    action = "none"
    if verdict.status in ("WARN", "ROLLBACK") and verdict.status != prev_status:
        dispatcher.emit(degradation_alert(model_id=model_id, status=verdict.status, reason=verdict.reason, details=verdict.as_dict()))
    if verdict.status == "ROLLBACK":
        if pcfg.rollback_automatic:
            try:
                done = rollback_production(
                    store, dispatcher, reviewer=SYSTEM_REVIEWER, notes=f"automatic rollback: {verdict.reason}", automatic=True,
                    verify=ArtifactVerifier(cfg.features, platform.models_dir), expected_production=model_id,
                )
                action = f"rolled_back_to:{done['model_id']}"
            except (LookupError, ConflictError) as exc:  # nothing to roll back to, target refused, registry moved
                action = "rollback_impossible"
                context.log.error(f"automatic rollback impossible: {exc}")
        else:
            proposal = propose_rollback(store, dispatcher, model_id=model_id, reason=verdict.reason, details=verdict.as_dict())
            action = "rollback_proposed" if proposal.created else "already_proposed"
    h.append(
        lake, h.PERFORMANCE_HISTORY_DATASET, today,
        h.history_row(
            h.PERFORMANCE_SCHEMA, checked_at=now, model_id=model_id, status=verdict.status, reason=verdict.reason,
            realized_sharpe=verdict.realized_sharpe, expected_sharpe=verdict.expected_sharpe, drop=verdict.drop,
            n_sessions=verdict.n_sessions, prob_at_least_expected=verdict.prob_at_least_expected, action=action,
        ),
    )
    yield dg.MaterializeResult(
        metadata={
            **metadata,
            "status": verdict.status,
            "reason": verdict.reason,
            "production_model_id": model_id,
            "realized_sharpe": dg.MetadataValue.float(num(verdict.realized_sharpe) if verdict.realized_sharpe is not None else float("nan")),
            "expected_sharpe": dg.MetadataValue.float(num(verdict.expected_sharpe) if verdict.expected_sharpe is not None else float("nan")),
            "action": action,
        }
    )


# ---- shadow A/B ------------------------------------------------------------------------------------
@dg.asset(
    key=SHADOW_AB_KEY,
    group_name=GROUP,
    deps=[REALIZED_PERFORMANCE_KEY],
    kinds={"polars", "parquet"},
    owners=[catalog.OWNER_MLOPS],
    metadata=catalog.columns(catalog.table_schema(h.AB_SCHEMA)),
    description="Each shadow model vs the production book on paired daily PnL: Diebold-Mariano (or paired t) "
    "p-value and the sessions needed to detect the observed difference.",
)
def shadow_ab_report(
    context: dg.AssetExecutionContext, config: MonitoringRunConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    cfg, cal, lake = platform.config, platform.calendar, platform.lake
    ab, pcfg = cfg.mlops.monitoring.ab_test, cfg.mlops.monitoring.performance
    now = config.now()
    per_session = h.read_recent(lake, h.REALIZED_SESSIONS_DATASET, sessions=pcfg.lookback_sessions, before=cal.session_of(now))
    if per_session is None:
        per_session = pl.DataFrame(schema={"model_id": pl.Utf8, "role": pl.Utf8, "session_date": pl.Date, "pnl": pl.Float64})
    comparisons = shadow_ab_comparisons(
        per_session, method=ab.method, alpha=ab.alpha, power=ab.power, lags=ab.dm_lags, min_sessions=ab.min_sessions
    )
    rows = [
        {
            "checked_at": now,
            "challenger_model_id": c.challenger_model_id,
            "sessions": c.sessions,
            "method": ab.method,
            "mean_diff": c.test.mean_diff if c.test else None,
            "statistic": c.test.statistic if c.test else None,
            "p_value": c.test.p_value if c.test else None,
            "needed_sessions": c.test.needed_sessions if c.test else None,
            "significant": c.test.significant if c.test else None,
            "challenger_pnl": c.challenger_pnl,
            "production_pnl": c.production_pnl,
            "verdict": c.verdict,
        }
        for c in comparisons
    ]
    if rows:
        lake.write(h.AB_REPORT_DATASET, cal.session_of(now).isoformat(), pl.DataFrame(rows, schema=h.AB_SCHEMA))
    for c in comparisons:
        context.log.info(f"shadow {c.challenger_model_id}: {c.verdict}")
    return dg.MaterializeResult(
        metadata={
            "as_of": now.isoformat(),
            "method": ab.method,
            "alpha": prob(ab.alpha),
            "power": prob(ab.power),
            "challengers": len(comparisons),
            "report": dg.MetadataValue.md(
                _md_table(rows, ["challenger_model_id", "sessions", "mean_diff", "p_value", "needed_sessions", "verdict"])
                if rows
                else "no shadow models traded in the lookback"
            ),
        }
    )
