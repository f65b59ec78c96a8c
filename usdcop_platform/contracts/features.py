"""Feature contract: the ordered observation shared by training, backtest and live inference."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import field_validator, model_validator

from usdcop_platform.contracts.base import StrictModel, sha256_hex


def feature_order_hash(names: Iterable[str]) -> str:
    """sha256(",".join(names)), full hex (REFERENCE.md): the one formula of the feature order's identity."""
    return sha256_hex(",".join(names))


# ---- feature definitions: the one home of what each contract name means (core.features computes them)

@dataclass(frozen=True)
class LogReturn:
    """ln(C_t / C_{t-k}) with k = minutes / bar length."""

    minutes: int


@dataclass(frozen=True)
class Wilder:
    """A TA-Lib Wilder indicator computed by the compiled kernel (column = kernel output)."""

    indicator: Literal["rsi", "atr_pct", "adx"]
    period: int


@dataclass(frozen=True)
class Macro:
    """A daily macro feature: transform of one or two SSOT variables (ids)."""

    transform: Literal["zscore", "change_1d", "spread"]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class State:
    kind: Literal["position", "time_norm"]


FeatureSpec = LogReturn | Wilder | Macro | State

FEATURE_SPECS: dict[str, FeatureSpec] = {
    "log_ret_5m": LogReturn(5),
    "log_ret_1h": LogReturn(60),
    "log_ret_4h": LogReturn(240),
    "rsi_9": Wilder("rsi", 9),
    "atr_pct": Wilder("atr_pct", 14),
    "adx_14": Wilder("adx", 14),
    "dxy_z": Macro("zscore", ("dxy",)),
    "dxy_change_1d": Macro("change_1d", ("dxy",)),
    "vix_z": Macro("zscore", ("vix",)),
    "embi_z": Macro("zscore", ("embi_col",)),
    "brent_change_1d": Macro("change_1d", ("brent",)),
    "rate_spread": Macro("spread", ("ust10y", "ust2y")),
    "usdmxn_change_1d": Macro("change_1d", ("usdmxn",)),
    "position": State("position"),
    "time_norm": State("time_norm"),
}

# Every name a contract may use; an unknown name is an error, not a silent zero column.
KNOWN_FEATURES: tuple[str, ...] = tuple(FEATURE_SPECS)


def macro_variables_of(names: Iterable[str]) -> tuple[str, ...]:
    """The SSOT macro variable ids the features `names` read, in first-use order."""
    out: dict[str, None] = {}
    for name in names:
        spec = FEATURE_SPECS.get(name)
        if isinstance(spec, Macro):
            out.update(dict.fromkeys(spec.inputs))
    return tuple(out)


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
    def macro_variables(self) -> tuple[str, ...]:
        """The SSOT macro variables this contract's features read (config/macro_variables_ssot.yaml must list them)."""
        return macro_variables_of(self.names)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def market_features(self) -> tuple[str, ...]:
        """The normalized features (everything but the state features)."""
        return tuple(n for n in self.names if n not in self.state_features)
