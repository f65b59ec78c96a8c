"""Feature drift statistics (REFERENCE.md, "Drift"): reference = the training split's features,
current = a recent live window.

Per feature:
  * two-sample Kolmogorov–Smirnov statistic D = sup |F_ref(x) − F_cur(x)| and its p-value;
  * Wasserstein-1 distance ∫ |F_ref − F_cur| dx (in the feature's own units);
  * PSI = Σ_b (q_b − p_b) · ln(q_b / p_b) over bins b cut at the reference quantiles
    (p_b reference share, q_b current share, both floored at PSI_FLOOR so empty bins stay finite).

KS p-values become trivially significant at large n, so a feature is *drifted* only when both
the KS test rejects (p < ks_pvalue) and the shift is material (PSI > psi_threshold).
drift_share = drifted features / features evaluated (the 13 market features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Decile bins are the conventional PSI binning; the floor keeps ln() finite for empty bins.
PSI_BINS = 10
PSI_FLOOR = 1e-4


class DriftError(ValueError):
    """Inputs drift statistics cannot be computed on."""


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    ks_statistic: float
    ks_pvalue: float
    wasserstein: float
    psi: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    n_reference: int
    n_current: int
    ks_pvalue: float
    psi_threshold: float

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "ks_pvalue": self.ks_pvalue,
            "psi_threshold": self.psi_threshold,
            "drift_share": self.drift_share,
            "drifted_features": self.drifted_features,
            "features": [asdict(f) for f in self.features],
        }


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `current` against `reference` (1-D arrays)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    # bin i holds x with edges[i-1] < x <= edges[i]; the outer bins are open-ended
    p = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=edges.size + 1) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1) / cur.size
    p = np.maximum(p, PSI_FLOOR)
    q = np.maximum(q, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def drift_report(
    reference: np.ndarray,
    current: np.ndarray,
    names: Sequence[str],
    ks_pvalue: float,
    psi_threshold: float,
    *,
    skip: Sequence[str] = (),
) -> DriftReport:
    """Per-feature drift of `current` (m, k) against `reference` (n, k); columns named by `names`.

    Columns listed in `skip` (e.g. the state features when a full observation matrix is passed)
    are left out of the report and of the drift share."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != len(names) or cur.shape[1] != len(names):
        raise DriftError(
            f"reference {ref.shape} and current {cur.shape} must both be (rows, {len(names)}) for names {list(names)}"
        )
    if ref.shape[0] < 2 or cur.shape[0] < 1:
        raise DriftError(f"need at least 2 reference rows and 1 current row, got {ref.shape[0]} and {cur.shape[0]}")
    for label, arr in (("reference", ref), ("current", cur)):
        if not np.isfinite(arr).all():
            raise DriftError(f"{label} features carry NaN/inf")
    if not 0 < ks_pvalue < 1 or psi_threshold <= 0:
        raise DriftError(f"need 0 < ks_pvalue < 1 and psi_threshold > 0, got {ks_pvalue}, {psi_threshold}")
    from scipy import stats  # loads on first use: every Dagster run process imports this module

    out = []
    for j, name in enumerate(names):
        if name in skip:
            continue
        r, c = ref[:, j], cur[:, j]
        ks = stats.ks_2samp(r, c)
        p_val = float(ks.pvalue)
        value = psi(r, c)
        out.append(
            FeatureDrift(
                name=name,
                ks_statistic=float(ks.statistic),
                ks_pvalue=p_val,
                wasserstein=float(stats.wasserstein_distance(r, c)),
                psi=value,
                drifted=bool(p_val < ks_pvalue and value > psi_threshold),
            )
        )
    return DriftReport(
        features=tuple(out),
        n_reference=int(ref.shape[0]),
        n_current=int(cur.shape[0]),
        ks_pvalue=float(ks_pvalue),
        psi_threshold=float(psi_threshold),
    )
