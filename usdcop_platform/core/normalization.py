"""Normalization statistics: fitted on the train split only, hashed, travelling with the model.

For each market feature i (every contract feature but the state features):

    z_i = clip((x_i − mean_i) / std_i, −clip, +clip)     as float32

with mean_i and std_i (population std, ddof = 0) over the train rows, std_i < MIN_STD → 1 (a
constant feature is centred, not blown up), clip = contract.normalization_clip. State features
(position, time_norm) pass through unchanged. The stats file is canonical JSON with its own
content hash; a file whose content does not match its hash, or stats made for another feature
order, are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.features import FeatureContract

# REFERENCE.md: a train std below this is treated as 1.
MIN_STD = 1e-8
FORMAT_VERSION = 1


class NormalizationError(ValueError):
    """Stats that cannot be fitted or applied (non-finite input, wrong shape, wrong contract)."""


@dataclass(frozen=True)
class NormStats:
    """Per-market-feature mean/std of the train split, bound to a feature order."""

    names: tuple[str, ...]  # every contract feature, in contract order
    market_features: tuple[str, ...]  # the normalized subset, in contract order
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: float
    feature_order_hash: str
    contract_version: str
    n_rows: int

    # ---- fitting --------------------------------------------------------------------------
    @classmethod
    def fit(cls, train_matrix: np.ndarray, contract: FeatureContract) -> "NormStats":
        """Fit on the train split's raw feature matrix (n, n_features) in contract order."""
        x = _as_matrix(train_matrix, contract.n_features)
        if x.shape[0] == 0:
            raise NormalizationError("cannot fit normalization stats on an empty train split")
        if not np.isfinite(x).all():
            r, c = map(int, np.argwhere(~np.isfinite(x))[0])
            raise NormalizationError(f"train matrix row {r} feature {contract.names[c]!r} is {x[r, c]!r}")
        idx = [contract.names.index(n) for n in contract.market_features]
        mean = x[:, idx].mean(axis=0)
        std = x[:, idx].std(axis=0)
        std = np.where(std < MIN_STD, 1.0, std)
        return cls(
            names=tuple(contract.names),
            market_features=tuple(contract.market_features),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            clip=float(contract.normalization_clip),
            feature_order_hash=contract.feature_order_hash,
            contract_version=contract.version,
            n_rows=int(x.shape[0]),
        )

    # ---- applying -------------------------------------------------------------------------
    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """Normalize (n, n_features) or one (n_features,) observation; returns float32."""
        x = np.asarray(matrix, dtype=np.float64)
        single = x.ndim == 1
        x = _as_matrix(x, len(self.names))
        if not np.isfinite(x).all():
            r, c = map(int, np.argwhere(~np.isfinite(x))[0])
            raise NormalizationError(f"row {r} feature {self.names[c]!r} is {x[r, c]!r}: NaN/inf never reaches a model")
        shift, scale, lo, hi = self._full_width
        out32 = np.clip((x - shift) / scale, lo, hi).astype(np.float32)
        return out32[0] if single else out32

    def check_contract(self, contract: FeatureContract) -> None:
        """Refuse stats made for another feature order."""
        if self.feature_order_hash != contract.feature_order_hash:
            raise NormalizationError(
                f"norm stats feature_order_hash {self.feature_order_hash[:12]}… != contract "
                f"{contract.feature_order_hash[:12]}…"
            )

    @cached_property
    def _market_index(self) -> list[int]:
        return [self.names.index(n) for n in self.market_features]

    @cached_property
    def _mean(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float64)

    @cached_property
    def _std(self) -> np.ndarray:
        return np.asarray(self.std, dtype=np.float64)

    @cached_property
    def _full_width(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(shift, scale, lo, hi) over all columns, so apply is one expression per row (the live
        path runs it per bar and model): market columns (x - mean) / std clipped to ±clip; the
        others (x - 0) / 1 within ±inf, which is x exactly."""
        n = len(self.names)
        shift, scale = np.zeros(n), np.ones(n)
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        idx = self._market_index
        shift[idx], scale[idx], lo[idx], hi[idx] = self._mean, self._std, -self.clip, self.clip
        return shift, scale, lo, hi

    # ---- identity and files ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "names": list(self.names),
            "market_features": list(self.market_features),
            "mean": list(self.mean),
            "std": list(self.std),
            "clip": self.clip,
            "feature_order_hash": self.feature_order_hash,
            "contract_version": self.contract_version,
            "n_rows": self.n_rows,
        }

    @property
    def hash(self) -> str:
        """content_hash of the stats (the norm_stats_hash recorded in lineage and the registry)."""
        return content_hash(self.to_dict())

    @property
    def stats_hash(self) -> str:
        """Same value as `hash`, under the attribute name the serving engine reads."""
        return self.hash

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NormStats":
        if data.get("format_version") != FORMAT_VERSION:
            raise NormalizationError(f"unsupported norm stats format_version {data.get('format_version')!r}")
        try:
            stats = cls(
                names=tuple(data["names"]),
                market_features=tuple(data["market_features"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                clip=float(data["clip"]),
                feature_order_hash=str(data["feature_order_hash"]),
                contract_version=str(data["contract_version"]),
                n_rows=int(data["n_rows"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NormalizationError(f"malformed norm stats: {exc}") from exc
        stats._validate()
        return stats

    def _validate(self) -> None:
        k = len(self.market_features)
        if len(self.mean) != k or len(self.std) != k:
            raise NormalizationError(f"norm stats carry {len(self.mean)} means / {len(self.std)} stds for {k} features")
        if not set(self.market_features) <= set(self.names):
            raise NormalizationError("norm stats market features are not a subset of the feature names")
        if not (np.isfinite(self._mean).all() and np.isfinite(self._std).all() and (self._std > 0).all()):
            raise NormalizationError("norm stats carry non-finite means or non-positive stds")
        if not self.clip > 0:
            raise NormalizationError(f"clip must be > 0, got {self.clip}")

    def to_json(self, path: Path | str) -> Path:
        """Write the stats with their hash (pretty, sorted keys); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {**self.to_dict(), "hash": self.hash}
        p.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_json(cls, path: Path | str) -> "NormStats":
        """Read stats; refuse a file whose content does not match its recorded hash."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise NormalizationError(f"cannot read norm stats {p}: {exc}") from exc
        if not isinstance(data, dict):
            raise NormalizationError(f"norm stats {p} is not a JSON object")
        recorded = data.pop("hash", None)
        stats = cls.from_dict(data)
        if recorded != stats.hash:
            raise NormalizationError(f"norm stats {p} content does not match its recorded hash")
        return stats


def fit(train_matrix: np.ndarray, contract: FeatureContract) -> NormStats:
    """Module-level spelling of NormStats.fit."""
    return NormStats.fit(train_matrix, contract)


def _as_matrix(x: np.ndarray, n_features: int) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != n_features:
        raise NormalizationError(f"expected shape (n, {n_features}), got {np.shape(x)}")
    return m
