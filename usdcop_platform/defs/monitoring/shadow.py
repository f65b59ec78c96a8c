"""monitoring/shadow_signals: challenger models run beside production on the live bars.

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

from datetime import date, datetime
from typing import Any

import dagster as dg
import numpy as np

from usdcop_platform.adapters.store.tables import TradingSignal
from usdcop_platform.contracts.experiment import EnvironmentConfig
from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
from usdcop_platform.core.actions import HOLD, position_of
from usdcop_platform.core.inference import InferenceEngine, InferenceError
from usdcop_platform.defs import catalog
from usdcop_platform.defs.live.assets import LIVE_SIGNAL_KEY
from usdcop_platform.defs.monitoring.assets import GROUP, SHADOW_SIGNALS_KEY, MonitoringRunConfig, sessions_back
from usdcop_platform.defs.resources import PlatformResource

SHADOW_ROLE = "shadow"
MIN_CONFIDENCE_CHECK = "min_confidence"


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


def _flat_at_close(platform: PlatformResource, rec: Any) -> bool:
    exp = platform.config.experiments.get(rec["experiment_name"])
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
    bar_index: Any,
    flat_at_close: bool,
    min_confidence: float,
) -> list[dict[str, Any]]:
    """Shadow signals of one challenger for one session's production signals (bar order)."""
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
    cfg, cal = platform.config, platform.calendar
    scfg = cfg.mlops.monitoring.shadow
    now = config.now()
    store = platform.store()
    chosen = challengers(store, scfg.max_challengers)

    def skip(reason: str):
        context.log.info(f"shadow signals SKIPPED: {reason}")
        yield dg.AssetObservation(asset_key=SHADOW_SIGNALS_KEY, metadata={"status": "SKIPPED", "reason": reason})

    if not chosen:
        yield from skip("no challenger: no servable staging model has a PENDING_APPROVAL proposal")
        return
    today = cal.session_of(now)
    first = sessions_back(cal, today, scfg.catchup_sessions) if scfg.catchup_sessions else today
    sessions: list[date] = [d for d in cal.sessions(first, today)]
    prod = [
        r for r in store.signals.list(role="production", since=cal.session_open_utc(sessions[0]) if sessions else now)
        if r["bar_time"] <= now and len(r["features"] or []) == cfg.features.n_features
    ]
    by_bar: dict[datetime, Any] = {}
    for r in prod:  # one observation per bar (every production member saw the same one)
        by_bar.setdefault(r["bar_time"], r)
    if not by_bar:
        yield from skip(f"no production signals with observations since {sessions[0].isoformat() if sessions else today}")
        return
    per_session: dict[date, list[Any]] = {}
    for t in sorted(by_bar):
        per_session.setdefault(by_bar[t]["session_date"], []).append(by_bar[t])

    position_index = cfg.features.names.index("position")
    written: dict[str, int] = {}
    failed: dict[str, str] = {}
    for rec in chosen:
        mid = rec["model_id"]
        engine = InferenceEngine(
            store, cfg.features, EnsembleConfig(method="weighted_average", members=(EnsembleMember(model_id=mid, weight=1.0),)),
            models_root=platform.models_path,
        )
        try:
            engine.load()
        except InferenceError as exc:  # a challenger that cannot be served is reported, not fatal
            failed[mid] = str(exc)
            context.log.warning(f"challenger {mid} cannot be served: {exc}")
            continue
        n = 0
        for session, rows in per_session.items():
            existing = {r["bar_time"]: r["action"] for r in store.signals.list(session_date=session, model_id=mid, role=SHADOW_ROLE)}
            for signal in shadow_session(
                engine, rec, rows, existing,
                position_index=position_index, last_bar_index=cal.bars_per_session - 1, bar_index=cal.bar_index,
                flat_at_close=_flat_at_close(platform, rec), min_confidence=cfg.mlops.risk.min_confidence,
            ):
                store.signals.upsert(signal)
                n += 1
        written[mid] = n
    yield dg.MaterializeResult(
        metadata={
            "as_of": now.isoformat(),
            "challengers": ", ".join(r["model_id"] for r in chosen),
            "signals_written": sum(written.values()),
            "per_challenger": dg.MetadataValue.json(written),
            "unservable": dg.MetadataValue.json(failed),
            "sessions": ", ".join(d.isoformat() for d in per_session),
        }
    )
