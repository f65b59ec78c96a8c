"""Monitoring asset checks (all WARN: they inform, they never block the live path).

* feature_drift_below_threshold      latest drift check's share <= mlops.yaml drift.threshold
* realized_performance_within_expectation   latest degradation verdict is not WARN/ROLLBACK
* bars_fresh_in_session / signals_fresh_in_session   session-aware freshness: fresh data is only
  expected while the market is open (after a grace period); outside the session they pass with
  the reason. A stale verdict also raises an alert (at most one per dataset per max-age window).
"""


from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import polars as pl

from usdcop_platform.core.alerts import KIND_FRESHNESS, freshness_alert, freshness_verdict
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.core.display import metric_entries, num
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.defs.monitoring.assets import (
    FEATURE_DRIFT_KEY,
    REALIZED_PERFORMANCE_KEY,
    MonitoringRunConfig,
)
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.live.assets import LIVE_SIGNAL_KEY
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY
from usdcop_platform.defs.resources import PlatformResource


DRIFT_CHECK = "feature_drift_below_threshold"
PERFORMANCE_CHECK = "realized_performance_within_expectation"
BARS_FRESH_CHECK = "bars_fresh_in_session"
SIGNALS_FRESH_CHECK = "signals_fresh_in_session"

WARN = dg.AssetCheckSeverity.WARN


@dg.asset_check(asset=FEATURE_DRIFT_KEY, name=DRIFT_CHECK, description="Drift share of the latest drift check <= threshold")
def feature_drift_below_threshold(platform: PlatformResource) -> dg.AssetCheckResult:
    threshold = platform.config.mlops.drift.threshold
    last = h.latest_row(platform.lake, h.DRIFT_DATASET, pl.col("status") != "SKIPPED")
    if last is None:
        return dg.AssetCheckResult(passed=True, severity=WARN,
                                   metadata={"note": "no drift measured yet", **metric_entries({"drift_threshold": threshold})})
    return dg.AssetCheckResult(
        passed=bool(last["drift_share"] <= threshold),
        severity=WARN,
        metadata={
            **metric_entries({"drift_share": float(last["drift_share"]), "drift_threshold": threshold}),
            "drifted_features": last["drifted_features"] or "none",
            "model_id": last["model_id"],
            "checked_at": last["checked_at"].isoformat(),
        },
    )


@dg.asset_check(
    asset=REALIZED_PERFORMANCE_KEY,
    name=PERFORMANCE_CHECK,
    description="The production model's realized rolling Sharpe is not degraded vs its backtest (WARN / ROLLBACK)",
)
def realized_performance_within_expectation(platform: PlatformResource) -> dg.AssetCheckResult:
    last = h.latest_row(platform.lake, h.PERFORMANCE_HISTORY_DATASET)
    if last is None:
        return dg.AssetCheckResult(passed=True, severity=WARN, metadata={"note": "no realized performance yet"})
    return dg.AssetCheckResult(
        passed=last["status"] not in ("WARN", "ROLLBACK"),
        severity=WARN,
        metadata={
            "status": last["status"],
            "reason": last["reason"] or "",
            "model_id": last["model_id"] or "",
            "realized_sharpe": num(last["realized_sharpe"]),
            "expected_sharpe": num(last["expected_sharpe"]),
            "action": last["action"] or "none",
        },
    )


def _freshness(
    what: str,
    last_bar_start: datetime | None,
    now: datetime,
    max_age: float,
    platform: PlatformResource,
    alerts: AlertsResource,
    log: Any,
) -> dg.AssetCheckResult:
    mon = platform.config.mlops.monitoring
    v = freshness_verdict(now, last_bar_start, platform.calendar, max_age_minutes=max_age, grace_minutes=mon.freshness.grace_minutes_after_open)
    if v.expected and not v.fresh:
        store = platform.store()
        window = now - timedelta(minutes=max_age)
        recent = [a for a in store.alerts.list(limit=50, kind=KIND_FRESHNESS) if a["details"].get("dataset") == what and a["created_at"] > window]
        if not recent:  # one alert per staleness window, not one every check
            alerts.dispatcher(store, mon.alerts, log).emit(
                freshness_alert(what=what, age_minutes=v.age_minutes, max_age_minutes=max_age,
                                last=last_bar_start.isoformat() if last_bar_start else None)
            )
    return dg.AssetCheckResult(
        passed=v.fresh,
        severity=WARN,
        metadata={
            "expected_fresh": v.expected,
            "age_minutes": num(v.age_minutes),
            "max_age_minutes": max_age,
            "last_bar_start": last_bar_start.isoformat() if last_bar_start else "none",
            "reason": v.reason,
            "as_of": now.isoformat(),
        },
    )


@dg.asset_check(
    asset=RAW_BARS_KEY,
    name=BARS_FRESH_CHECK,
    description="During the session (after a grace period) the newest bar closed at most bar_max_age_minutes ago",
)
def bars_fresh_in_session(
    context: dg.AssetCheckExecutionContext, config: MonitoringRunConfig, platform: PlatformResource, alerts: AlertsResource
) -> dg.AssetCheckResult:
    now = config.now()
    today = platform.calendar.session_of(now)
    bars = platform.lake.read(BARS_DATASET, today.isoformat())
    last = None
    if bars is not None and bars.height:
        newest = bars.filter(pl.col("time") <= now)["time"].max()
        last = newest.replace(tzinfo=timezone.utc) if newest is not None and newest.tzinfo is None else newest
    return _freshness("bars", last, now, platform.config.mlops.monitoring.freshness.bar_max_age_minutes, platform, alerts, context.log)


@dg.asset_check(
    asset=LIVE_SIGNAL_KEY,
    name=SIGNALS_FRESH_CHECK,
    description="During the session (after a grace period) the newest production signal is at most signal_max_age_minutes old",
)
def signals_fresh_in_session(
    context: dg.AssetCheckExecutionContext, config: MonitoringRunConfig, platform: PlatformResource, alerts: AlertsResource
) -> dg.AssetCheckResult:
    now = config.now()
    cal = platform.calendar
    since = cal.session_open_utc(cal.previous_session(cal.session_of(now)))
    rows = [r for r in platform.store().signals.list(role="production", since=since) if r["bar_time"] <= now]
    last = rows[-1]["bar_time"] if rows else None
    return _freshness("signals", last, now, platform.config.mlops.monitoring.freshness.signal_max_age_minutes, platform, alerts, context.log)


MONITORING_CHECKS = [feature_drift_below_threshold, realized_performance_within_expectation]
FRESHNESS_CHECKS = [bars_fresh_in_session, signals_fresh_in_session]
