"""Drift statistics: KS statistic and p-value, Wasserstein, PSI, drifted flag and drift share."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from usdcop_platform.core.drift import DriftError, drift_report, psi


def test_identical_distributions_do_not_drift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (5000, 3))
    cur = rng.normal(0, 1, (600, 3))
    r = drift_report(ref, cur, ["a", "b", "c"], ks_pvalue=0.01, psi_threshold=0.2)
    assert r.drift_share == 0.0 and r.drifted_features == []
    for f in r.features:
        assert f.psi < 0.05 and f.ks_pvalue > 0.001 and f.wasserstein < 0.15


def test_shifted_feature_drifts_and_values_match_scipy() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, (4000, 4))
    cur = rng.normal(0, 1, (500, 4))
    cur[:, 1] += 1.5  # mean shift
    cur[:, 3] *= 3.0  # scale change
    r = drift_report(ref, cur, ["a", "b", "c", "d"], ks_pvalue=0.01, psi_threshold=0.2)
    assert r.drifted_features == ["b", "d"] and r.drift_share == pytest.approx(0.5)
    b = r.feature("b")
    ks = stats.ks_2samp(ref[:, 1], cur[:, 1])
    assert b.ks_statistic == pytest.approx(ks.statistic) and b.ks_pvalue == pytest.approx(ks.pvalue)
    assert b.wasserstein == pytest.approx(stats.wasserstein_distance(ref[:, 1], cur[:, 1]))
    assert b.wasserstein == pytest.approx(1.5, abs=0.15)
    d = r.to_dict()
    assert d["drift_share"] == 0.5 and d["features"][1]["name"] == "b"


def test_large_n_small_shift_is_not_drift() -> None:
    """KS alone rejects a negligible shift at large n; PSI keeps it from counting as drift."""
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, (200_000, 1))
    cur = rng.normal(0.03, 1, (200_000, 1))
    r = drift_report(ref, cur, ["x"], ks_pvalue=0.01, psi_threshold=0.2)
    f = r.features[0]
    assert f.ks_pvalue < 0.01 and f.psi < 0.01 and not f.drifted


def test_psi_definition_and_empty_bins() -> None:
    ref = np.arange(1000, dtype=float)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    cur = np.full(100, 2000.0)  # all mass in the top bin
    p = np.full(10, 0.1)
    q = np.r_[np.full(9, 1e-4), 1.0]
    assert psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    const = np.zeros(500)
    assert np.isfinite(psi(const, np.ones(10)))


def test_skip_columns_and_share_denominator(platform_config) -> None:
    names = list(platform_config.features.names)
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, (2000, 15))
    cur = rng.normal(0, 1, (300, 15))
    cur[:, 0] += 3.0
    cur[:, 13] = 1.0  # position: state, not drift-checked
    r = drift_report(ref, cur, names, 0.01, 0.2, skip=platform_config.features.state_features)
    assert len(r.features) == 13 and r.drifted_features == ["log_ret_5m"]
    assert r.drift_share == pytest.approx(1 / 13)


@pytest.mark.parametrize(
    "ref, cur, names, message",
    [
        (np.zeros((10, 2)), np.zeros((5, 3)), ["a", "b"], "must both be"),
        (np.zeros((1, 2)), np.zeros((5, 2)), ["a", "b"], "at least 2 reference"),
        (np.zeros((10, 2)), np.zeros((0, 2)), ["a", "b"], "1 current"),
        (np.full((10, 2), np.nan), np.zeros((5, 2)), ["a", "b"], "NaN"),
    ],
)
def test_bad_inputs(ref, cur, names, message) -> None:
    with pytest.raises(DriftError, match=message):
        drift_report(ref, cur, names, 0.01, 0.2)
    with pytest.raises(DriftError):
        drift_report(np.zeros((10, 1)), np.zeros((5, 1)), ["a"], 1.5, 0.2)
