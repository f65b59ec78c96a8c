"""MLOps inference API: predictions from the served ensemble, the risk manager, metrics.

    POST /v1/inference            one observation (15 finite raw contract values) or a bar time
                                  whose features the live path cached → ensemble prediction and
                                  the risk manager's verdict (read-only: a query never changes risk state)
    POST /v1/inference/batch      up to MAX_BATCH observations → predictions
    GET  /v1/risk/summary         persisted risk state, limits, derived figures
    POST /v1/risk/trade-result    a closed trade's PnL (fraction of capital) → state   (reviewer)
    POST /v1/risk/reset           clear breaker, cooldown, counters (audited)          (admin)
    GET  /v1/metrics              request counts, latency percentiles, engine and cache state (JSON)
    GET  /v1/models               the models being served and the registry's production model
    GET  /v1/cache/stats          feature cache hit/miss, backend (redis / memory fallback)
    GET  /metrics                 Prometheus text format (unauthenticated, like any scrape target)

The engine is core.inference (onnxruntime only) and hot-reloads when the registry version
moves (polled at most every ENGINE_POLL_S). Read endpoints need a viewer key; verified keys are
remembered for api.auth.AUTH_CACHE_TTL_S so a prediction does not cost a database round trip (a
revoked key stops working within that time). Writes go through the shared write_role (rate-limited).
Bad observations are 422 with a message naming the problem; no model → 503.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Annotated, Any, Final

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field, field_validator, model_validator

from usdcop_platform.adapters.cache import build_feature_cache
from usdcop_platform.api.deps import require_role, write_role
from usdcop_platform.api.errors import ApiError
from usdcop_platform.api.routers.common import READ_ERRORS, WRITE_ERRORS, errors
from usdcop_platform.core import risk as risk_core
from usdcop_platform.core.actions import ACTION_NAMES
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.inference import (
    InferenceEngine,
    InferenceError,
    InvalidObservation,
    NoProductionModel,
    Prediction,
)
from usdcop_platform.core.risk import RiskManager, RiskState
from usdcop_platform.settings import platform_config

N_FEATURES: Final = platform_config().features.n_features  # USDCOP_CONFIG_DIR's contract
MAX_BATCH: Final = 256  # observations per batch call: bounds one request's CPU time and body size
ENGINE_POLL_S: Final = 1.0  # registry-version poll interval of the served engine (hot reload delay)
RISK_STATE_REFRESH_S: Final = 1.0  # predictions see risk state at most this old
LATENCY_WINDOW: Final = 10_000  # requests kept per endpoint for /v1/metrics percentiles
LATENCY_BUCKETS_S: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _check_observation(values: list[float], where: str = "observation") -> list[float]:
    if len(values) != N_FEATURES:
        raise ValueError(f"{where} must have exactly {N_FEATURES} values (the feature contract), got {len(values)}")
    return values


# ---- schemas -----------------------------------------------------------------------------------


class InferenceRequest(BaseModel):
    observation: list[FiniteFloat] | None = Field(
        None, description=f"The {N_FEATURES} raw contract values in contract order (position ∈ {{-1, 0, 1}}).")
    bar_time: datetime | None = Field(
        None, description="Instead of an observation: use the features the live path cached for this bar.")
    at: datetime | None = Field(None, description="Instant the risk checks are evaluated at (default: bar_time or now).")

    @field_validator("observation")
    @classmethod
    def _length(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else _check_observation(v)

    @model_validator(mode="after")
    def _one_source(self) -> "InferenceRequest":
        if (self.observation is None) == (self.bar_time is None):
            raise ValueError("give exactly one of observation or bar_time")
        for name in ("bar_time", "at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must carry a timezone (UTC)")
        return self


class BatchRequest(BaseModel):
    observations: list[list[FiniteFloat]] = Field(..., min_length=1, max_length=MAX_BATCH)

    @field_validator("observations")
    @classmethod
    def _lengths(cls, v: list[list[float]]) -> list[list[float]]:
        for i, row in enumerate(v):
            _check_observation(row, f"observations[{i}]")
        return v


class MemberOut(BaseModel):
    model_id: str
    model_hash: str
    action: int
    probabilities: dict[str, float]
    weight: float


class RiskOut(BaseModel):
    status: str
    failing_check: str | None
    reason: str
    final_action: int
    final_action_name: str
    target_position: int
    position_size: float


class PredictionOut(BaseModel):
    action: int
    action_name: str
    probabilities: dict[str, float]
    confidence: float
    method: str
    ensemble_hash: str
    registry_version: int | None
    models: list[MemberOut]


class InferenceResponse(PredictionOut):
    risk: RiskOut
    features_source: str
    latency_ms: float


class BatchResponse(BaseModel):
    count: int
    predictions: list[PredictionOut]
    latency_ms: float


class TradeResult(BaseModel):
    pnl: FiniteFloat = Field(..., gt=-1, lt=1, description="Closed trade PnL as a fraction of capital (0.01 = +1 %).")
    at: datetime | None = Field(None, description="When the trade closed (default now); sets the trading day.")

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("at must carry a timezone (UTC)")
        return v


class ResetRequest(BaseModel):
    notes: str = Field("", max_length=2000)


# ---- the service behind the routes -------------------------------------------------------------


class InferenceMetrics:
    """Prometheus collectors (one registry per app) and rolling latency windows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("usdcop_inference_requests", "API requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("usdcop_inference_request_seconds", "API request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.actions = Counter("usdcop_inference_actions", "Predicted actions", ["action"], registry=r)
        self.model = Gauge("usdcop_model_served", "1 for each model in the served ensemble", ["model_id"], registry=r)
        self.registry_version = Gauge("usdcop_registry_version", "Registry version being served", registry=r)
        self.reloads = Gauge("usdcop_model_reloads", "Successful hot reloads", registry=r)
        self.failed_loads = Gauge("usdcop_model_failed_loads", "Refused model loads", registry=r)
        self.breaker = Gauge("usdcop_risk_breaker_active", "Circuit breaker active (1) or not (0)", registry=r)
        self.daily_pnl = Gauge("usdcop_risk_daily_pnl", "Realized PnL today (fraction of capital)", registry=r)
        self.drawdown = Gauge("usdcop_risk_drawdown", "Drawdown from the equity peak (fraction, <= 0)", registry=r)
        self.trades = Gauge("usdcop_risk_trades_today", "Trades today", registry=r)
        self.cache_hits = Gauge("usdcop_feature_cache_hits", "Feature cache hits", registry=r)
        self.cache_misses = Gauge("usdcop_feature_cache_misses", "Feature cache misses", registry=r)
        self.cache_redis = Gauge("usdcop_feature_cache_redis", "1 when the cache is on Redis, 0 on memory", registry=r)
        self.windows: dict[str, deque[float]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self.started = time.time()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        with self._lock:
            self.windows.setdefault(endpoint, deque(maxlen=LATENCY_WINDOW)).append(seconds)
            c = self.counts.setdefault(endpoint, {"requests": 0, "errors": 0})
            c["requests"] += 1
            c["errors"] += int(status >= 400)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            out = {}
            for ep, window in self.windows.items():
                ms = np.asarray(window) * 1e3
                out[ep] = {**self.counts[ep], "window": int(ms.size),
                           "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                           "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}
            return out


class InferenceService:
    """Engine, risk manager, feature cache, metrics and the auth cache of one app."""

    def __init__(self, state: Any) -> None:
        settings = state.settings
        self.store = state.store
        self.cfg = platform_config(settings)
        self.calendar = TradingCalendar(self.cfg.instrument)
        self.engine = InferenceEngine(self.store, self.cfg.features, self.cfg.mlops.ensemble,
                                      models_root=settings.models_dir, poll_interval_s=ENGINE_POLL_S)
        self.risk = RiskManager(self.cfg.mlops.risk, self.cfg.mlops.trading_hours, self.calendar, self.store.risk,
                                key=risk_core.LIVE_RISK_KEY)
        inst = self.cfg.instrument
        self.cache = build_feature_cache(settings.redis_url, inst.bar_minutes, inst.bars_per_session)
        self.metrics = InferenceMetrics()
        self._risk_state: tuple[float, RiskState] | None = None
        self._lock = threading.Lock()
        self._refresher: threading.Thread | None = None

    def start_refresher(self) -> None:
        """Poll the registry and the risk state from a background thread, so the request path
        never waits on the database (the thread exits when the service is garbage collected)."""
        if self._refresher is not None:
            return
        ref = weakref.ref(self)

        def loop() -> None:
            while True:
                time.sleep(ENGINE_POLL_S)
                svc = ref()
                if svc is None:
                    return
                try:
                    svc.engine.maybe_reload(force=True)
                    svc._risk_state = (time.monotonic() + 2 * RISK_STATE_REFRESH_S, svc.risk.state())
                except Exception:  # noqa: BLE001 - the request path reports errors; keep polling
                    pass
                del svc

        self._refresher = threading.Thread(target=loop, name="usdcop-inference-refresh", daemon=True)
        self._refresher.start()

    # -- serving -------------------------------------------------------------------------------
    def engine_ready(self) -> InferenceEngine:
        try:
            self.engine.maybe_reload()  # throttled: the refresher thread usually polled just now
            self.start_refresher()
        except NoProductionModel as exc:
            raise ApiError(503, str(exc)) from None
        except InferenceError as exc:
            raise ApiError(503, f"no servable model: {exc}") from None
        return self.engine

    def risk_state(self) -> RiskState:
        now = time.monotonic()
        cached = self._risk_state
        if cached is None or cached[0] <= now:
            state = self.risk.state()
            self._risk_state = (now + RISK_STATE_REFRESH_S, state)
            return state
        return cached[1]

    def invalidate_risk(self) -> None:
        self._risk_state = None


def inference_service(app: Any) -> InferenceService:
    """The app's InferenceService, created on first use (so importing the app touches no model)."""
    svc = getattr(app.state, "usdcop_inference", None)
    if svc is None:
        with _SERVICE_LOCK:
            svc = getattr(app.state, "usdcop_inference", None)
            if svc is None:
                svc = InferenceService(app.state.usdcop)
                app.state.usdcop_inference = svc
    return svc


def service(request: Request) -> InferenceService:
    return inference_service(request.app)


_SERVICE_LOCK = threading.Lock()


# A viewer (or higher) key, verified against the store at most every AUTH_CACHE_TTL_S (requests
# with a body were already verified by the edge middleware, before the body): the one auth stack.
viewer = require_role("viewer", cached=True)


class TimedRoute(APIRoute):
    """Counts and times every request of this router (validation errors included)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = self.path

        async def timed(request: Request) -> Response:
            t0 = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except ApiError as exc:
                status = exc.status
                raise
            except Exception as exc:  # noqa: BLE001 - only to label the metric; re-raised
                status = getattr(exc, "status_code", 422 if type(exc).__name__ == "RequestValidationError" else 500)
                raise
            finally:
                service(request).metrics.observe(endpoint, status, time.perf_counter() - t0)

        return timed


router = APIRouter(tags=["inference (MLOps)"], route_class=TimedRoute)


def _probs(p: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(ACTION_NAMES, p)}


def _prediction_out(p: Prediction) -> dict[str, Any]:
    return {
        "action": p.action, "action_name": ACTION_NAMES[p.action], "probabilities": _probs(p.probabilities),
        "confidence": p.confidence, "method": p.method, "ensemble_hash": p.ensemble_hash,
        "registry_version": p.registry_version,
        "models": [{"model_id": m.model_id, "model_hash": m.model_hash, "action": m.action,
                    "probabilities": _probs(m.probabilities), "weight": m.weight} for m in p.members],
    }


@router.post("/v1/inference", response_model=InferenceResponse, responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
             summary="Ensemble prediction + risk verdict")
async def infer(body: InferenceRequest, request: Request, _: Any = Depends(viewer)) -> Response:
    t0 = time.perf_counter()
    svc = service(request)
    engine = svc.engine_ready()
    if body.observation is not None:
        x, source = body.observation, "request"
    else:
        assert body.bar_time is not None
        entry = svc.cache.get(body.bar_time)
        if entry is None:
            raise ApiError(404, f"no cached features for bar {body.bar_time.isoformat()} (the cache keeps "
                                f"{svc.cache.history_size} bars for {svc.cache.ttl:.0f} s)")
        x, source = entry.features, "cache"
    try:
        p = engine.predict(x)
    except InvalidObservation as exc:
        raise ApiError(422, f"invalid observation: {exc}") from None
    at = (body.at or body.bar_time or datetime.now(timezone.utc)).astimezone(timezone.utc)
    decision, _state = risk_core.evaluate(svc.risk_state(), svc.risk.limits, svc.risk.hours, svc.calendar,
                                          p.action, p.confidence, at)
    svc.metrics.actions.labels(ACTION_NAMES[p.action]).inc()
    # a plain JSONResponse: the payload is built from typed values here, re-validating it against
    # the response model would only cost time (the model still documents the shape in OpenAPI)
    return JSONResponse({
        **_prediction_out(p),
        "risk": {"status": decision.status, "failing_check": decision.failed_check, "reason": decision.reason,
                 "final_action": decision.final_action, "final_action_name": ACTION_NAMES[decision.final_action],
                 "target_position": decision.target_position, "position_size": decision.position_size},
        "features_source": source,
        "latency_ms": (time.perf_counter() - t0) * 1e3,
    })


@router.post("/v1/inference/batch", response_model=BatchResponse, responses=errors(400, 401, 403, 413, 422, 429, 503),
             summary=f"Up to {MAX_BATCH} predictions")
async def infer_batch(body: BatchRequest, request: Request, _: Any = Depends(viewer)) -> Response:
    t0 = time.perf_counter()
    svc = service(request)
    engine = svc.engine_ready()
    try:
        preds = engine.predict_batch(body.observations)
    except InvalidObservation as exc:
        raise ApiError(422, f"invalid observation: {exc}") from None
    for p in preds:
        svc.metrics.actions.labels(ACTION_NAMES[p.action]).inc()
    return JSONResponse({"count": len(preds), "predictions": [_prediction_out(p) for p in preds],
                         "latency_ms": (time.perf_counter() - t0) * 1e3})


@router.get("/v1/risk/summary", responses=READ_ERRORS, summary="Risk state, limits and derived figures")
def risk_summary(request: Request, _: Any = Depends(viewer)) -> dict[str, Any]:
    return service(request).risk.summary()


@router.post("/v1/risk/trade-result", responses=WRITE_ERRORS, summary="Record a closed trade's PnL (reviewer)")
def trade_result(body: TradeResult, request: Request, _: Any = Depends(write_role("reviewer"))) -> dict[str, Any]:
    svc = service(request)
    svc.risk.record_trade_result(body.pnl, (body.at or datetime.now(timezone.utc)).astimezone(timezone.utc))
    svc.invalidate_risk()
    return svc.risk.summary()


@router.post("/v1/risk/reset", responses=WRITE_ERRORS, summary="Reset breaker, cooldown and counters (admin, audited)")
def risk_reset(request: Request, body: ResetRequest | None = None,
               principal: Any = Depends(write_role("admin"))) -> dict[str, Any]:
    svc = service(request)
    before, after = svc.risk.reset_returning_previous(datetime.now(timezone.utc))  # one transaction
    svc.invalidate_risk()
    svc.store.audit.append("RISK_RESET", principal["name"], notes=(body.notes if body else ""),
                           details={"before": before.to_dict(), "after": after.to_dict()})
    return svc.risk.summary()


@router.get("/v1/metrics", responses=READ_ERRORS, summary="Request counts, latency percentiles, engine and cache state")
def metrics_json(request: Request, _: Any = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    return {"uptime_s": time.time() - svc.metrics.started, "endpoints": svc.metrics.summary(),
            "engine": svc.engine.status(), "cache": svc.cache.stats()}


@router.get("/v1/models", responses=READ_ERRORS, summary="Models being served and the registry's production model")
def models(request: Request, _: Any = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    try:
        svc.engine.maybe_reload()
    except InferenceError:
        pass  # reported in `served.last_error`
    prod = svc.store.models.production()
    keys = ("model_id", "experiment_name", "experiment_version", "model_hash", "onnx_hash", "feature_order_hash",
            "norm_stats_hash", "promoted_at")
    return {"served": svc.engine.status(), "registry_version": svc.store.registry_version(),
            "production": {k: prod.get(k) for k in keys} if prod is not None else None}


@router.get("/v1/cache/stats", responses=READ_ERRORS, summary="Feature cache hit/miss statistics and backend")
def cache_stats(request: Request, _: Any = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    return {**svc.cache.stats(), "ping": svc.cache.ping()}


@router.get("/metrics", include_in_schema=False)
def prometheus(request: Request) -> Response:
    svc = service(request)
    m = svc.metrics
    try:  # a scrape reports what the next request would serve, not 0 before the first model call
        svc.engine.maybe_reload()
    except Exception:  # noqa: BLE001 - no servable model yet, or the database is down: report as is
        pass
    status = svc.engine.status()
    m.model.clear()
    for member in status["members"]:
        m.model.labels(member["model_id"]).set(1)
    m.registry_version.set(status["registry_version"] or 0)
    m.reloads.set(status["reloads"])
    m.failed_loads.set(status["failed_loads"])
    try:
        st = svc.risk.state()
        m.breaker.set(int(st.breaker_active))
        m.daily_pnl.set(st.daily_pnl)
        m.drawdown.set(st.drawdown)
        m.trades.set(st.trades_today)
    except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
        pass
    cs = svc.cache.stats()
    m.cache_hits.set(cs["hits"])
    m.cache_misses.set(cs["misses"])
    m.cache_redis.set(int(cs["backend"] == "redis"))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


def standalone_app(settings: Any = None, store: Any = None) -> Any:
    """The inference API as a service of its own (no approvals pages, CORS or page middleware):
    for a dedicated, horizontally scaled inference deployment.

        uvicorn --factory usdcop_platform.api.inference:standalone_app
    """
    from fastapi import FastAPI

    from usdcop_platform.api.deps import AppState
    from usdcop_platform.api.errors import install_error_handlers
    from usdcop_platform.settings import get_settings

    from usdcop_platform.api.edge import EdgeGuardMiddleware

    app = FastAPI(title="USD/COP inference API", description=__doc__, docs_url=None, redoc_url=None)
    app.state.usdcop = AppState(settings or get_settings(), store)
    app.add_middleware(EdgeGuardMiddleware, state=app.state.usdcop)
    app.include_router(router)
    install_error_handlers(app)
    return app

