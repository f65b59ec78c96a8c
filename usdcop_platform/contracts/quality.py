"""Data-quality thresholds (config/quality.yaml)."""

from __future__ import annotations

from pydantic import Field, model_validator

from usdcop_platform.contracts.base import StrictModel


class BarQuality(StrictModel):
    price_band: tuple[float, float]
    max_one_bar_move_pct: float = Field(gt=0)
    stale_run_bars: int = Field(ge=2)
    min_completeness: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _band(self) -> "BarQuality":
        lo, hi = self.price_band
        if not 0 < lo < hi:
            raise ValueError(f"price_band needs 0 < min < max, got {self.price_band}")
        return self


class MacroQuality(StrictModel):
    max_staleness_business_days: int = Field(ge=0)


class FeatureQuality(StrictModel):
    min_rows: int = Field(ge=0)


class DatasetQuality(StrictModel):
    min_rows_train: int = Field(ge=1)
    min_rows_val: int = Field(ge=1)
    min_rows_test: int = Field(ge=1)


class QualityConfig(StrictModel):
    bars: BarQuality
    macro: MacroQuality
    features: FeatureQuality
    dataset: DatasetQuality
