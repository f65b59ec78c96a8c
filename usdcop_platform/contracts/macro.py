"""Macro variables SSOT (config/macro_variables_ssot.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from usdcop_platform.contracts.base import StrictModel


class MacroVariable(StrictModel):
    column: str
    source: Literal["fred", "investing", "banrep", "twelvedata", "file"]
    fred_series: str | None = None
    frequency: Literal["daily"] = "daily"
    publication_delay_days: int
    expected_range: tuple[float, float]
    max_daily_jump_pct: float
    max_ffill_business_days: int

    @field_validator("publication_delay_days")
    @classmethod
    def _delay(cls, v: int) -> int:
        if v < 1:
            # A value dated D must never reach a bar of session D: at least one day of delay.
            raise ValueError("publication delay must be at least 1 day (anti-leakage)")
        return v

    @field_validator("max_ffill_business_days")
    @classmethod
    def _ffill(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("max_daily_jump_pct")
    @classmethod
    def _jump(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @model_validator(mode="after")
    def _range(self) -> "MacroVariable":
        lo, hi = self.expected_range
        if lo > hi:
            raise ValueError(f"expected_range min {lo} > max {hi}")
        return self


class MacroSSOT(StrictModel):
    variables: dict[str, MacroVariable]

    @model_validator(mode="after")
    def _required(self) -> "MacroSSOT":
        missing = {"dxy", "vix", "embi_col", "brent", "ust10y", "ust2y", "usdmxn"} - set(self.variables)
        if missing:
            raise ValueError(f"missing required variables: {sorted(missing)}")
        return self

    def columns(self) -> dict[str, str]:
        """variable id -> source column."""
        return {vid: v.column for vid, v in self.variables.items()}
