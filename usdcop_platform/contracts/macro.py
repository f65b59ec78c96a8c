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
    band_margin: float | None = None  # overrides MacroRules.band_margin for this variable

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


class MacroRules(StrictModel):
    """Shared knobs of the macro quality rules (core.quality.flag_macro); the `rules:` block of the SSOT.

    - level_confirm_values: a jump is re-accepted as a new level at the Nth consecutive value near it
      (each within the jump limit of the one before); the N-1 before it stay flagged.
    - jump_vol_window / jump_vol_k: the jump limit is max(max_daily_jump_pct, k * std of the last
      `window` accepted daily % moves), once `window` moves are known (crises widen the limit).
    - band_window / band_min_history / band_quantile / band_margin: a value outside
      [q_lo * e^(-m*w), q_hi * e^(m*w)], w = ln(q_hi/q_lo), of the previous `band_window` in-range values
      (quantiles q, 1-q; from `band_min_history` values on), in log space, is out_of_band: catches
      slow slides. The band is built from accepted values; the `band_confirm_values`-th consecutive
      out-of-band value is accepted as a new regime and restarts the band. A variable may set its
      own band_margin.
    """

    level_confirm_values: int = 3
    jump_vol_window: int = 10
    jump_vol_k: float = 6.0
    band_window: int = 756
    band_min_history: int = 250
    band_quantile: float = 0.05
    band_margin: float = 1.5
    band_confirm_values: int = 20

    @model_validator(mode="after")
    def _check(self) -> "MacroRules":
        if self.level_confirm_values < 2:
            raise ValueError("level_confirm_values must be >= 2 (1 would accept every jump)")
        if self.jump_vol_window < 2 or self.jump_vol_k <= 0:
            raise ValueError("jump_vol_window must be >= 2 and jump_vol_k > 0")
        if not 0 <= self.band_quantile < 0.5 or self.band_margin < 0:
            raise ValueError("band_quantile must be in [0, 0.5) and band_margin >= 0")
        if self.band_confirm_values < 2:
            raise ValueError("band_confirm_values must be >= 2")
        if not 1 <= self.band_min_history <= self.band_window:
            raise ValueError("band_min_history must be in [1, band_window]")
        return self


class MacroSSOT(StrictModel):
    variables: dict[str, MacroVariable]
    rules: MacroRules = MacroRules()

    # Which variables are required is not written here: the feature contract's macro features name
    # them (FeatureContract.macro_variables), and load_platform_config checks this SSOT lists them.
    @model_validator(mode="after")
    def _nonempty(self) -> "MacroSSOT":
        if not self.variables:
            raise ValueError("no variables: the SSOT must list the macro series the features read")
        return self

    def columns(self) -> dict[str, str]:
        """variable id -> source column."""
        return {vid: v.column for vid, v in self.variables.items()}
