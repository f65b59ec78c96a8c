"""Live-trading contract (config/mlops.yaml): risk limits, hours, ensemble, drift."""

from __future__ import annotations

from datetime import time
from typing import Literal

from pydantic import Field, model_validator

from usdcop_platform.contracts.base import StrictModel


class RiskLimits(StrictModel):
    min_confidence: float = Field(ge=0, le=1)
    max_daily_loss_pct: float = Field(gt=0)
    max_drawdown_pct: float = Field(gt=0)
    max_consecutive_losses: int = Field(ge=1)
    cooldown_minutes: int = Field(ge=0)
    max_trades_per_day: int = Field(ge=1)
    base_position_size: float = Field(gt=0, le=1)
    confidence_full_size: float = Field(gt=0, le=1)


class TradingHours(StrictModel):
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> "TradingHours":
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class EnsembleMember(StrictModel):
    stage: Literal["production", "staging"] | None = None
    model_id: str | None = None
    weight: float = Field(gt=0)

    @model_validator(mode="after")
    def _target(self) -> "EnsembleMember":
        if (self.stage is None) == (self.model_id is None):
            raise ValueError("give exactly one of stage or model_id")
        return self


class EnsembleConfig(StrictModel):
    method: Literal["weighted_average", "majority_vote"]
    members: tuple[EnsembleMember, ...] = Field(min_length=1)


class DriftConfig(StrictModel):
    threshold: float = Field(gt=0, le=1)
    ks_pvalue: float = Field(gt=0, lt=1)
    psi_threshold: float = Field(gt=0)
    consecutive_checks_for_retrain: int = Field(ge=1)


class SensorConfig(StrictModel):
    interval_seconds: int = Field(ge=1, le=30)
    max_catchup_bars: int = Field(ge=1)


# ---- monitoring (issue 9): owned by the monitoring domain -----------------------------------
class PerformanceMonitorConfig(StrictModel):
    """Realized performance vs the backtest expectation (per-session returns, unit position)."""

    lookback_sessions: int = Field(default=60, ge=1)
    rolling_sessions: int = Field(default=20, ge=2)
    min_sessions: int = Field(default=5, ge=2)
    # Annualized Sharpe drop below the backtest's Sharpe that raises a WARN ...
    warn_sharpe_drop: float = Field(default=1.0, gt=0)
    # ... and the larger drop that files a rollback proposal (or rolls back when automatic).
    rollback_sharpe_drop: float = Field(default=2.0, gt=0)
    rollback_automatic: bool = False
    # The expectation is this key of the production model's proposal metrics.
    expected_sharpe_key: str = "sharpe"

    @model_validator(mode="after")
    def _ordered(self) -> "PerformanceMonitorConfig":
        if self.rollback_sharpe_drop < self.warn_sharpe_drop:
            raise ValueError("rollback_sharpe_drop must be >= warn_sharpe_drop")
        if self.min_sessions > self.rolling_sessions:
            raise ValueError("min_sessions must be <= rolling_sessions")
        return self


class ABTestConfig(StrictModel):
    """Shadow vs production: paired test on daily PnL differences."""

    method: Literal["diebold_mariano", "paired_t"] = "diebold_mariano"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    power: float = Field(default=0.8, gt=0, lt=1)
    # Newey-West lags of the Diebold-Mariano long-run variance (0 = i.i.d. daily differences).
    dm_lags: int = Field(default=0, ge=0)
    min_sessions: int = Field(default=3, ge=2)


class FreshnessConfig(StrictModel):
    """Session-aware freshness: data is only expected to be fresh while the market is open."""

    bar_max_age_minutes: float = Field(default=15, gt=0)
    signal_max_age_minutes: float = Field(default=15, gt=0)
    # No staleness is reported this long after the open (the first bar closes 5 minutes in).
    grace_minutes_after_open: float = Field(default=15, ge=0)
    check_every_minutes: int = Field(default=5, ge=1, le=59)


class AlertDeliveryConfig(StrictModel):
    """Webhook delivery of alerts (Slack-compatible JSON); undelivered alerts are retried later."""

    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=3, ge=1)
    webhook_backoff_seconds: float = Field(default=0.5, ge=0)
    # Beyond this many attempts an alert stays stored but is no longer retried.
    max_delivery_attempts: int = Field(default=20, ge=1)
    retry_every_seconds: int = Field(default=60, ge=1)


class RetrainConfig(StrictModel):
    """Retraining triggers; a triggered run ends at a PENDING_APPROVAL proposal, never a promotion."""

    # Retrain every N sessions even without drift or degradation (0 = never on schedule).
    every_sessions: int = Field(default=20, ge=0)
    # Minimum sessions between two triggered runs (any reason).
    cooldown_sessions: int = Field(default=1, ge=0)
    sensor_interval_seconds: int = Field(default=300, ge=1)


class ShadowConfig(StrictModel):
    """Challengers (servable staging models with a PENDING_APPROVAL proposal) run beside production
    on the production signals' observations; their signals have role `shadow` and are never acted on."""

    max_challengers: int = Field(default=3, ge=0)
    # Sessions re-examined for missing shadow signals (today's and this many before it).
    catchup_sessions: int = Field(default=1, ge=0)
    sensor_interval_seconds: int = Field(default=60, ge=1)


class MonitoringConfig(StrictModel):
    # Current drift window: live features of the last N sessions (at least one).
    drift_live_sessions: int = Field(default=1, ge=1)
    # Fewer live observations than this and the drift run is skipped with a reason.
    drift_min_live_rows: int = Field(default=12, ge=2)
    # Drift runs hourly during the session at this minute (Bogota).
    drift_minute: int = Field(default=0, ge=0, le=59)
    # Realized performance and the A/B report run this many minutes after the session close.
    report_minutes_after_close: int = Field(default=15, ge=0, le=59)
    performance: PerformanceMonitorConfig = PerformanceMonitorConfig()
    ab_test: ABTestConfig = ABTestConfig()
    freshness: FreshnessConfig = FreshnessConfig()
    alerts: AlertDeliveryConfig = AlertDeliveryConfig()
    retrain: RetrainConfig = RetrainConfig()
    shadow: ShadowConfig = ShadowConfig()


class MlopsConfig(StrictModel):
    risk: RiskLimits
    trading_hours: TradingHours
    ensemble: EnsembleConfig
    drift: DriftConfig
    sensor: SensorConfig
    monitoring: MonitoringConfig = MonitoringConfig()
