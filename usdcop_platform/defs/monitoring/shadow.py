"""monitoring/shadow_signals: challenger models run beside production on the live bars.

The use case is app/monitoring.run_shadow_signals (with `challengers` and `shadow_session`); this
asset wires the resources in and reports what it wrote.

Challengers are the servable staging models with a PENDING_APPROVAL promotion proposal (the
candidates a reviewer must decide on), newest first, at most `shadow.max_challengers`.

For every bar that produced a production signal, each challenger sees the very observation
production saw (the signal's raw `features`, so live features are computed once and there is
no second feature path), with its own position substituted: the position its own previous
shadow signal of the session targeted (0 at the open). It runs through the serving engine's
per-bar step (core.inference.InferenceEngine.step -> core.policy_runner.policy_step, with the
experiment's flat-at-session-end rule), and the result is stored with role `shadow`:

    action  = HOLD on the forced-flat last bar, HOLD when confidence < risk.min_confidence
              (risk_status REJECTED, failing_check min_confidence), else the policy's action
    position_recommendation = 0   (never acted on: no order, no risk state)

Only the stateless confidence gate of the risk manager applies; the stateful limits (daily
loss, drawdown, streaks) belong to the book that trades. Writes are the store's idempotent
upserts, so re-running a session fills only the missing bars.
"""

import dagster as dg

from usdcop_platform.adapters.store.tables import TradingSignal
from usdcop_platform.app import monitoring as mon
from usdcop_platform.defs import catalog
from usdcop_platform.defs.live.assets import LIVE_SIGNAL_KEY
from usdcop_platform.defs.monitoring.assets import (
    GROUP,
    SHADOW_SIGNALS_KEY,
    MonitoringRunConfig,
    monitoring_inputs,
    skipped,
)
from usdcop_platform.defs.resources import PlatformResource


@dg.asset(
    key=SHADOW_SIGNALS_KEY,
    group_name=GROUP,
    deps=[LIVE_SIGNAL_KEY],  # the production observations the challengers replay
    output_required=False,  # no challenger or no production signal -> SKIPPED with a reason
    kinds={"onnx", "sql"},
    owners=[catalog.OWNER_MLOPS],
    metadata=catalog.columns(catalog.sql_table_schema(TradingSignal.__table__)),  # rows with role shadow
    description="Challenger models (staging, pending proposal) run on the production observations; "
    "signals stored with role shadow, never acted on.",
)
def shadow_signals(context: dg.AssetExecutionContext, config: MonitoringRunConfig, platform: PlatformResource):
    now = config.now()
    result = mon.run_shadow_signals(monitoring_inputs(platform), now)
    if isinstance(result, mon.Skipped):
        yield from skipped(context, SHADOW_SIGNALS_KEY, "shadow signals", result.reason)
        return
    for mid, why in result.unservable.items():
        context.log.warning(f"challenger {mid} cannot be served: {why}")
    yield dg.MaterializeResult(
        metadata={
            "as_of": now.isoformat(),
            "challengers": ", ".join(result.challengers),
            "signals_written": sum(result.written.values()),
            "per_challenger": dg.MetadataValue.json(result.written),
            "unservable": dg.MetadataValue.json(result.unservable),
            "sessions": ", ".join(d.isoformat() for d in result.sessions),
        }
    )
