"""Monitoring API: GET /health/detailed, alerts, open rollback proposals, drift history.

/health/detailed (no key, like /health) reports each dependency separately so an operator sees
which one is down:

    database   ping, dialect, migration revision (503 for the whole answer when unreachable)
    redis      the feature cache's Redis: ok / unavailable / not configured (memory fallback)
    model      the registry's production model, whether its ONNX file is present and matches the
               registry hash (what the live path would load), and what this API process's
               inference engine has loaded (once the inference API has been used)
    last_bar / last_signal   newest bar in the lake and newest production signal, their age
               (from the bar's close) and a session-aware freshness verdict (core.alerts)
    sensors    Dagster sensor states from the instance under DAGSTER_HOME: status, cursor, last tick
    live_features   whether the live path can build features for the current (or next) session,
               and if not why: the live sensor's own check (app.live_runs.live_blocker: no
               production model, data gap before the session, stale macro), so a model never
               goes dark silently (the sensor also skips with that reason and alerts once)

The rollback itself is POST /api/models/rollback (admin, audited) in routers/registry.py.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from usdcop_platform.adapters.store.errors import StoreError
from usdcop_platform.api.deps import app_state, get_lake, get_store, require_role
from usdcop_platform.api.errors import public_store_message, redact_paths
from usdcop_platform.contracts.base import file_hash
from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core.alerts import freshness_verdict
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.app.lifecycle import open_rollback_proposal

router = APIRouter(tags=["monitoring"])

Status = Literal["ok", "degraded", "unavailable", "not_configured"]
MAX_LIMIT = 500


class ComponentHealth(BaseModel):
    status: Status
    detail: str | None = None


class DatabaseDetail(ComponentHealth):
    dialect: str | None = None
    revision: str | None = None
    latency_ms: float | None = None


class ModelDetail(ComponentHealth):
    model_id: str | None = None
    experiment: str | None = None
    onnx_present: bool | None = None
    onnx_hash_matches: bool | None = None
    # What this API process's inference engine has loaded (None until the inference API was used).
    served_model_ids: list[str] | None = None
    served_registry_version: int | None = None
    served_error: str | None = None


class AgeDetail(ComponentHealth):
    last: datetime | None = None
    age_seconds: float | None = None
    market_open: bool
    expected_fresh: bool
    fresh: bool


class SensorDetail(BaseModel):
    name: str
    status: str
    cursor: str | None = None
    last_tick_at: datetime | None = None


class SensorsDetail(ComponentHealth):
    sensors: list[SensorDetail] = []


class LiveFeaturesDetail(ComponentHealth):
    session: str | None = None
    blocker: str | None = None  # no_production_model | data_gap | stale_macro


class HealthDetailed(BaseModel):
    status: Literal["ok", "degraded"]
    checked_at: datetime
    database: DatabaseDetail
    redis: ComponentHealth
    model: ModelDetail
    last_bar: AgeDetail
    last_signal: AgeDetail
    sensors: SensorsDetail
    live_features: LiveFeaturesDetail | None = None


class AlertOut(BaseModel):
    id: int
    kind: str
    severity: str
    message: str
    details: dict[str, Any]
    created_at: datetime
    delivered: bool
    attempts: int
    last_error: str | None = None


class RollbackProposalOut(BaseModel):
    audit_id: int
    model_id: str
    target_model_id: str | None
    reason: str
    created_at: datetime


class DriftCheckOut(BaseModel):
    checked_at: datetime
    status: str
    reason: str | None
    model_id: str | None
    drift_share: float | None
    threshold: float | None
    drifted_features: list[str]


# ---- /health/detailed ------------------------------------------------------------------------------
def _database(store: Any) -> DatabaseDetail:
    t0 = time.perf_counter()
    store.ping()
    return DatabaseDetail(
        status="ok", dialect=store.dialect, revision=store.revision(), latency_ms=(time.perf_counter() - t0) * 1e3
    )


def _redis(settings: Any, calendar: TradingCalendar) -> ComponentHealth:
    if not settings.redis_url:
        return ComponentHealth(status="not_configured", detail="REDIS_URL unset: the feature cache runs in memory")
    from usdcop_platform.adapters.cache import build_feature_cache

    cache = build_feature_cache(settings.redis_url, calendar.instrument.bar_minutes, calendar.bars_per_session)
    try:
        ok = cache.ping()
        return ComponentHealth(status="ok") if ok else ComponentHealth(status="unavailable", detail=cache.last_error)
    finally:
        cache.close()


def _served(app_state_obj: Any) -> dict[str, Any]:
    """The inference engine of this process (api/inference.py), if it was created; never creates it."""
    svc = getattr(app_state_obj, "usdcop_inference", None)
    engine = getattr(svc, "engine", None)
    if engine is None:
        return {}
    status = engine.status()
    return {
        "served_model_ids": [m["model_id"] for m in status.get("members", [])],
        "served_registry_version": status.get("registry_version"),
        "served_error": redact_paths(status.get("last_error")),
    }


def _model(store: Any, models_dir: Path, served: dict[str, Any]) -> ModelDetail:
    prod = store.models.production()
    if prod is None:
        return ModelDetail(status="unavailable", detail="no production model: approve a promotion proposal", **served)
    path = Path(prod["onnx_path"]) if prod.get("onnx_path") else None
    if path is not None and not path.is_absolute():
        path = models_dir / path
    present = bool(path and path.is_file())
    matches = present and prod.get("onnx_hash") is not None and file_hash(path) == prod["onnx_hash"]
    status: Status = "ok" if matches and prod.get("servable", True) else "degraded"
    detail = None if status == "ok" else (
        f"ONNX file {path.name if path else '(none recorded)'} missing" if not present
        else "ONNX file does not match the registry hash"
    )
    return ModelDetail(
        status=status, detail=detail, model_id=prod["model_id"], experiment=prod["experiment_name"],
        onnx_present=present, onnx_hash_matches=matches, **served,
    )


def _age(last: datetime | None, now: datetime, calendar: TradingCalendar, max_age_minutes: float, grace: float) -> AgeDetail:
    v = freshness_verdict(now, last, calendar, max_age_minutes=max_age_minutes, grace_minutes=grace)
    status: Status = "ok" if v.fresh else "degraded"
    return AgeDetail(
        status=status, detail=v.reason, last=last, age_seconds=None if v.age_minutes is None else v.age_minutes * 60,
        market_open=calendar.is_open(now), expected_fresh=v.expected, fresh=v.fresh,
    )


def _live_features(cfg: Any, calendar: TradingCalendar, lake: Any, store: Any, now: datetime) -> LiveFeaturesDetail:
    """Can the live path build features for today's session (or the next one)? The sensor's check."""
    from usdcop_platform.app.live_runs import live_blocker  # the sensor's rule, not a copy

    today = calendar.session_of(now)
    upcoming = calendar.sessions(today, today + timedelta(days=14))
    if not upcoming:
        return LiveFeaturesDetail(status="unavailable", detail=f"no trading session within 14 days of {today}")
    session = upcoming[0]
    try:
        blocker = live_blocker(cfg, calendar, lake, store, session)
    except Exception as exc:  # noqa: BLE001 - the check itself failing is what health must report
        return LiveFeaturesDetail(status="unavailable", session=session.isoformat(),
                                  detail=redact_paths(f"{type(exc).__name__}: {exc}"))
    if blocker is None:
        return LiveFeaturesDetail(status="ok", session=session.isoformat())
    kind, reason = blocker
    return LiveFeaturesDetail(status="degraded", session=session.isoformat(), blocker=kind,
                              detail=redact_paths(f"live signals paused for session {session}: {reason}"))


def _last_bar(lake: Any) -> datetime | None:
    parts = lake.partitions(BARS_DATASET)
    frame = lake.read(BARS_DATASET, parts[-1]) if parts else None
    if frame is None or frame.is_empty():
        return None
    t = frame["time"].max()
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def sensor_states(dagster_home: Path) -> SensorsDetail:
    """Sensor instigator states of the Dagster instance at `dagster_home` (never creates one)."""
    home = str(dagster_home)
    if not dagster_home.is_dir():
        return SensorsDetail(status="unavailable", detail="no Dagster instance at DAGSTER_HOME")
    try:
        from dagster import DagsterInstance
        from dagster._core.definitions.run_request import InstigatorType

        with DagsterInstance.from_config(home) as instance:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    except Exception as exc:  # noqa: BLE001 - a broken instance is reported, not raised
        return SensorsDetail(status="unavailable", detail=redact_paths(f"{type(exc).__name__}: {exc}"))
    out = []
    for s in sorted(states, key=lambda s: s.instigator_name):
        data = s.instigator_data
        tick = getattr(data, "last_tick_timestamp", None)
        out.append(
            SensorDetail(
                name=s.instigator_name,
                status=s.status.value,
                cursor=getattr(data, "cursor", None),
                last_tick_at=datetime.fromtimestamp(tick, timezone.utc) if tick else None,
            )
        )
    detail = None if out else "no sensor has been started or ticked yet"
    return SensorsDetail(status="ok", sensors=out, detail=detail)


@router.get(
    "/health/detailed",
    response_model=HealthDetailed,
    responses={503: {"model": HealthDetailed, "description": "Database unavailable"}},
    summary="Database, Redis, production model, last bar/signal age, Dagster sensor cursors (no key needed)",
)
def health_detailed(request: Request) -> Any:
    state = app_state(request)
    settings = state.settings
    cfg = get_config(str(settings.config_dir))
    calendar = TradingCalendar(cfg.instrument)
    fresh = cfg.mlops.monitoring.freshness
    now = datetime.now(timezone.utc)
    redis = _redis(settings, calendar)
    sensors = sensor_states(settings.resolved_dagster_home)
    bar = _age(_last_bar(state.lake), now, calendar, fresh.bar_max_age_minutes, fresh.grace_minutes_after_open)
    try:
        store = state.store
        db = _database(store)
        model = _model(store, settings.models_dir, _served(request.app.state))
        newest = store.signals.latest(role="production")
        signal = _age(newest["bar_time"] if newest else None, now, calendar, fresh.signal_max_age_minutes,
                      fresh.grace_minutes_after_open)
        live = _live_features(cfg, calendar, state.lake, store, now)
    except StoreError as exc:
        down = ComponentHealth(status="unavailable", detail=public_store_message(exc))
        unknown = AgeDetail(status="unavailable", detail="database unavailable", market_open=calendar.is_open(now),
                            expected_fresh=False, fresh=False)
        body = HealthDetailed(
            status="degraded", checked_at=now, database=DatabaseDetail(**down.model_dump()), redis=redis,
            model=ModelDetail(status="unavailable", detail="database unavailable"), last_bar=bar, last_signal=unknown,
            sensors=sensors,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    parts = (db, model, bar, signal, live)
    overall = "ok" if all(p.status == "ok" for p in parts) and redis.status in ("ok", "not_configured") else "degraded"
    return HealthDetailed(
        status=overall, checked_at=now, database=db, redis=redis, model=model, last_bar=bar, last_signal=signal,
        sensors=sensors, live_features=live,
    )


# ---- monitoring reads --------------------------------------------------------------------------------
@router.get("/api/monitoring/alerts", response_model=list[AlertOut], summary="Recent alerts, newest first")
def list_alerts(
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    kind: str | None = Query(None, max_length=64, pattern=r"^[a-z_]+$"),
    pending: bool = Query(False, description="Only alerts whose webhook delivery is still pending"),
    _: Any = Depends(require_role("viewer")),
    store: Any = Depends(get_store),
) -> list[AlertOut]:
    rows = store.alerts.pending(limit=limit) if pending else store.alerts.list(limit=limit, kind=kind)
    if pending and kind:
        rows = [r for r in rows if r["kind"] == kind]
    return [AlertOut.model_validate(dict(r)) for r in rows]


@router.get(
    "/api/monitoring/rollback-proposals",
    response_model=list[RollbackProposalOut],
    summary="Open rollback proposal of the production model (approve with POST /api/models/rollback)",
)
def rollback_proposals(_: Any = Depends(require_role("viewer")), store: Any = Depends(get_store)) -> list[RollbackProposalOut]:
    prod = store.models.production()
    row = open_rollback_proposal(store, prod["model_id"]) if prod is not None else None
    if row is None:
        return []
    return [
        RollbackProposalOut(
            audit_id=row["id"], model_id=row["model_id"], target_model_id=row["details"].get("target_model_id"),
            reason=row["notes"], created_at=row["created_at"],
        )
    ]


@router.get("/api/monitoring/drift", response_model=list[DriftCheckOut], summary="Recent drift checks, newest first")
def drift_history(
    limit: int = Query(24, ge=1, le=MAX_LIMIT),
    _: Any = Depends(require_role("viewer")),
    lake: Any = Depends(get_lake),
) -> list[DriftCheckOut]:
    frame = h.read_recent(lake, h.DRIFT_DATASET, sessions=limit)
    if frame is None:
        return []
    rows = frame.sort("checked_at", descending=True).head(limit).iter_rows(named=True)
    return [
        DriftCheckOut(
            checked_at=r["checked_at"], status=r["status"], reason=r["reason"], model_id=r["model_id"],
            drift_share=r["drift_share"], threshold=r["threshold"],
            drifted_features=[f for f in (r["drifted_features"] or "").split(",") if f],
        )
        for r in rows
    ]
