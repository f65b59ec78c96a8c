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


class MlopsConfig(StrictModel):
    risk: RiskLimits
    trading_hours: TradingHours
    ensemble: EnsembleConfig
    drift: DriftConfig
    sensor: SensorConfig
