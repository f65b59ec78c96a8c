"""Feature contract: the ordered observation shared by training, backtest and live inference."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import field_validator, model_validator

from usdcop_platform.contracts.base import StrictModel, sha256_hex


def feature_order_hash(names: Iterable[str]) -> str:
    """sha256(",".join(names)), full hex (REFERENCE.md): the one formula of the feature order's identity."""
    return sha256_hex(",".join(names))


# Every name a contract may use; an unknown name is an error, not a silent zero column.
KNOWN_FEATURES: tuple[str, ...] = (
    "log_ret_5m", "log_ret_1h", "log_ret_4h", "rsi_9", "atr_pct", "adx_14",
    "dxy_z", "dxy_change_1d", "vix_z", "embi_z", "brent_change_1d", "rate_spread",
    "usdmxn_change_1d", "position", "time_norm",
)


class FeatureContract(StrictModel):
    version: str
    warmup_bars: int
    macro_zscore_window: int = 252
    macro_zscore_min_periods: int = 126
    normalization_clip: float = 5.0
    names: tuple[str, ...]
    state_features: tuple[str, ...] = ("position", "time_norm")

    @field_validator("names")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in v if n not in KNOWN_FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}")
        if len(set(v)) != len(v):
            raise ValueError("duplicate feature names")
        return v

    @model_validator(mode="after")
    def _state(self) -> "FeatureContract":
        extra = [n for n in self.state_features if n not in self.names]
        if extra:
            raise ValueError(f"state features {extra} are not in names")
        if self.warmup_bars < 1:
            raise ValueError("warmup_bars must be >= 1")
        return self

    @property
    def feature_order_hash(self) -> str:
        return feature_order_hash(self.names)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def market_features(self) -> tuple[str, ...]:
        """The normalized features (everything but the state features)."""
        return tuple(n for n in self.names if n not in self.state_features)
