"""Monitoring assets: feature drift, realized performance, shadow A/B report.

The use cases are app/monitoring.py (check_drift, check_realized_performance, shadow_ab; the
statistics in core.drift and core.performance, the rollback actions in app.lifecycle): these assets
wire the resources in, call them and turn their results into metadata. A check with nothing to
evaluate yet (no production model or live data, no signals) is SKIPPED: an observation with the
reason, no materialization.
"""


from datetime import datetime, timezone
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field

from usdcop_platform.app import monitoring as mon
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.contracts import assets as A
from usdcop_platform.core.display import metric_entries, metric_text, num, prob
from usdcop_platform.core.performance import SESSION_PNL_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.defs.live.assets import LIVE_SIGNAL_KEY
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.defs.training.assets import DATASET_KEY

GROUP = "monitoring"
FEATURE_DRIFT_KEY = dg.AssetKey(list(A.FEATURE_DRIFT))
REALIZED_PERFORMANCE_KEY = dg.AssetKey(list(A.REALIZED_PERFORMANCE))
SHADOW_AB_KEY = dg.AssetKey(list(A.SHADOW_AB))
SHADOW_SIGNALS_KEY = dg.AssetKey(list(A.SHADOW_SIGNALS))


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


def monitoring_inputs(platform: PlatformResource, *, with_store: bool = True) -> mon.MonitoringInputs:
    """The use cases' adapters and config, from the platform resource (the A/B report reads only the lake)."""
    return mon.MonitoringInputs(store=platform.store() if with_store else None, lake=platform.lake, calendar=platform.calendar,
                                config=platform.config, models_root=platform.models_path)


def skipped(context: dg.AssetExecutionContext, key: dg.AssetKey, what: str, reason: str, **metadata: Any):
    """A run without inputs: logged and observed on the asset; not a failure."""
    context.log.info(f"{what} SKIPPED: {reason}")
    yield dg.AssetObservation(asset_key=key, metadata={"status": "SKIPPED", "reason": reason, **metadata})


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
    now = config.now()
    inputs = monitoring_inputs(platform)
    alert_cfg = inputs.config.mlops.monitoring.alerts
    try:
        result = mon.check_drift(inputs, now, lambda: alerts.dispatcher(inputs.store, alert_cfg, context.log))
    except mon.MonitoringError as exc:
        raise dg.Failure(str(exc)) from exc
    if isinstance(result, mon.Skipped):
        yield from skipped(context, FEATURE_DRIFT_KEY, "feature drift", result.reason, as_of=now.isoformat())
        return
    yield dg.MaterializeResult(metadata=drift_metadata(result, now))


def drift_metadata(result: mon.DriftResult, now: datetime) -> dict[str, Any]:
    report = result.report
    table = [
        {"feature": f.name, "ks": f.ks_statistic, "ks_p": f.ks_pvalue, "wasserstein": f.wasserstein, "psi": f.psi,
         "drifted": f.drifted}
        for f in report.features
    ]
    return {
        "status": "DRIFT" if result.drifted else "OK",
        "as_of": now.isoformat(),
        "model_id": result.model_id,
        "experiment": result.experiment,
        **metric_entries({"drift_share": report.drift_share, "drift_threshold": result.threshold}),
        "drifted_features": ", ".join(report.drifted_features) or "none",
        "consecutive_drift_checks": result.streak,
        "n_reference": report.n_reference,
        "n_current": report.n_current,
        "live_sessions": ", ".join(result.live_sessions),
        "reference_dataset_hash": result.reference_hash or "unknown",
        "reference_matches_model": result.reference_matches_model,
        "features": dg.MetadataValue.md(_md_table(table, ["feature", "ks", "ks_p", "wasserstein", "psi", "drifted"])),
    }


# ---- realized performance -----------------------------------------------------------------------
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
    now = config.now()
    inputs = monitoring_inputs(platform)
    alert_cfg = inputs.config.mlops.monitoring.alerts
    result = mon.check_realized_performance(
        inputs, now, lambda: alerts.dispatcher(inputs.store, alert_cfg, context.log)
    )
    if isinstance(result, mon.Skipped):
        yield from skipped(context, REALIZED_PERFORMANCE_KEY, "realized performance", result.reason)
        return
    if result.action_error:
        context.log.error(result.action_error)
    yield dg.MaterializeResult(metadata=performance_metadata(result, now))


def performance_metadata(result: mon.PerformanceResult, now: datetime) -> dict[str, Any]:
    sessions = result.sessions
    metadata: dict[str, Any] = {
        "as_of": now.isoformat(),
        "sessions": f"{sessions[0].isoformat()}..{sessions[-1].isoformat()}",
        "sessions_with_signals": len(result.traded),
        "signals": result.n_signals,
        "models": dg.MetadataValue.md(
            _md_table(
                [s.as_dict() for s in result.summaries],
                ["model_id", "role", "n_sessions", "n_signals", "total_pnl", "sharpe", "rolling_sharpe", "hit_rate", "last_session"],
            )
        ),
    }
    verdict = result.verdict
    if verdict is None:
        return {**metadata, "status": "NO_PRODUCTION"}

    def number(v: float | None) -> Any:
        return dg.MetadataValue.float(num(v) if v is not None else float("nan"))

    return {
        **metadata,
        "status": verdict.status,
        "reason": verdict.reason,
        "production_model_id": result.production_model_id,
        "realized_sharpe": number(verdict.realized_sharpe),
        "expected_sharpe": number(verdict.expected_sharpe),
        "action": result.action,
    }


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
    now = config.now()
    ab = platform.config.mlops.monitoring.ab_test
    rows, comparisons = mon.shadow_ab(monitoring_inputs(platform, with_store=False), now)
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
