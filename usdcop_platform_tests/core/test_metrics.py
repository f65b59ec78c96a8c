"""core.metrics against hand-computed values, scipy/empyrical oracles and round-trip identities."""

from __future__ import annotations

import math
from statistics import NormalDist

import empyrical as ep
import numpy as np
import pytest
from scipy import stats as sps

from usdcop_platform.core import metrics as M

PHI = NormalDist()


@pytest.fixture(scope="module")
def ann(calendar) -> M.Annualization:
    return M.Annualization.from_calendar(calendar)


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    rng = np.random.default_rng(7)
    # fat-tailed, skewed, with flat stretches like a strategy's per-bar returns
    r = rng.standard_t(4, 5000) * 4e-4 + 2e-5
    r[rng.random(5000) < 0.3] = 0.0
    r[::97] -= 3e-3
    return r


def test_annualization_comes_from_the_calendar(calendar, ann: M.Annualization) -> None:
    assert ann.bar_factor == pytest.approx(math.sqrt(calendar.sessions_per_year() * calendar.bars_per_session))
    assert ann.session_factor == pytest.approx(math.sqrt(calendar.sessions_per_year()))
    assert ann.bars_per_year == pytest.approx(ann.sessions_per_year * calendar.bars_per_session)


def test_moments_match_scipy(returns: np.ndarray) -> None:
    m = M.moments(returns)
    assert m.mean == pytest.approx(returns.mean())
    assert m.std == pytest.approx(returns.std(ddof=1))
    assert m.skew == pytest.approx(sps.skew(returns), rel=1e-10)
    assert m.kurtosis == pytest.approx(sps.kurtosis(returns, fisher=False), rel=1e-10)


def test_moments_of_a_constant_series_are_neutral() -> None:
    m = M.moments(np.zeros(10))
    assert (m.std, m.skew, m.kurtosis, m.sharpe) == (0.0, 0.0, 3.0, 0.0)


def test_sharpe_sortino_volatility_match_empyrical(returns: np.ndarray, ann: M.Annualization) -> None:
    ppy = ann.bars_per_year
    assert M.sharpe_ratio(returns, ppy) == pytest.approx(ep.sharpe_ratio(returns, annualization=ppy), rel=1e-10)
    assert M.sortino_ratio(returns, ppy) == pytest.approx(ep.sortino_ratio(returns, annualization=ppy), rel=1e-10)
    assert M.annualized_volatility(returns, ppy) == pytest.approx(ep.annual_volatility(returns, annualization=ppy), rel=1e-10)


def test_annual_return_and_drawdown_match_empyrical(returns: np.ndarray, ann: M.Annualization) -> None:
    equity = 100.0 * np.cumprod(1 + returns)
    total = equity[-1] / 100.0 - 1
    assert M.annual_return(total, returns.size, ann.bars_per_year) == pytest.approx(
        ep.annual_return(returns, annualization=ann.bars_per_year), rel=1e-10
    )
    assert M.max_drawdown(equity, 100.0) == pytest.approx(-ep.max_drawdown(returns), rel=1e-10)


def test_drawdown_hand_case() -> None:
    # peak starts at the initial capital: a first-bar loss is a drawdown
    dd = M.drawdown_series(np.array([90.0, 110.0, 99.0, 121.0]), 100.0)
    np.testing.assert_allclose(dd, [-0.1, 0.0, -0.1, 0.0])
    assert M.max_drawdown(np.array([90.0, 110.0, 99.0, 121.0]), 100.0) == pytest.approx(0.1)


def test_degenerate_ratios() -> None:
    assert M.sharpe_ratio(np.array([0.01]), 100) == 0.0
    assert M.sharpe_ratio(np.zeros(50), 100) == 0.0
    assert M.sortino_ratio(np.full(5, 0.01), 100) == math.inf
    assert M.sortino_ratio(np.zeros(5), 100) == 0.0
    assert M.annual_return(-1.5, 10, 100) == -1.0
    assert M.profit_factor(np.array([])) == 0.0
    assert M.profit_factor(np.array([1.0, 2.0])) == math.inf
    assert M.profit_factor(np.array([3.0, -1.0, -0.5])) == pytest.approx(2.0)


def test_psr_hand_case() -> None:
    # SR 0.1 on 101 normal returns: var = (1 + 2/4 * 0.01) / 100
    z = 0.1 / math.sqrt(1.005 / 100)
    assert M.probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0) == pytest.approx(PHI.cdf(z), rel=1e-12)
    # negative skew and fat tails widen the estimator: lower PSR at the same Sharpe
    assert M.probabilistic_sharpe_ratio(0.1, 101, -1.0, 8.0) < M.probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0)
    assert M.probabilistic_sharpe_ratio(0.0, 101, 0.0, 3.0) == pytest.approx(0.5)


def test_expected_max_sharpe_hand_case() -> None:
    g = M.EULER_GAMMA
    want = (1 - g) * PHI.inv_cdf(1 - 1 / 10) + g * PHI.inv_cdf(1 - 1 / (10 * math.e))
    assert M.expected_max_sharpe(10, 1.0) == pytest.approx(want, rel=1e-12)
    assert M.expected_max_sharpe(10, 0.04) == pytest.approx(0.2 * want, rel=1e-12)
    assert M.expected_max_sharpe(1, 1.0) == 0.0
    with pytest.raises(ValueError):
        M.expected_max_sharpe(0, 1.0)


def test_deflated_sharpe_falls_with_more_trials() -> None:
    one, sr0_one = M.deflated_sharpe_ratio(0.05, 2000, 0.0, 3.0, 1)
    many, sr0_many = M.deflated_sharpe_ratio(0.05, 2000, 0.0, 3.0, 50)
    assert sr0_one == 0.0 and one == pytest.approx(M.probabilistic_sharpe_ratio(0.05, 2000, 0.0, 3.0))
    assert sr0_many == pytest.approx(M.expected_max_sharpe(50, 1 / 1999))
    assert many < one
    # with the trials' own Sharpes, V is their sample variance
    trials = np.array([0.01, 0.03, -0.02, 0.05])
    _, sr0 = M.deflated_sharpe_ratio(0.05, 2000, 0.0, 3.0, 4, trials)
    assert sr0 == pytest.approx(M.expected_max_sharpe(4, float(np.var(trials, ddof=1))))


def test_min_track_record_length_hand_case_and_round_trip() -> None:
    z = PHI.inv_cdf(0.95)
    assert M.min_track_record_length(0.1, 0.0, 3.0, 0.95) == pytest.approx(1 + 1.005 * (z / 0.1) ** 2, rel=1e-12)
    assert M.min_track_record_length(0.0, 0.0, 3.0, 0.95) == math.inf
    # at exactly MinTRL returns, PSR reaches the confidence level
    sr, g3, g4 = 0.03, -0.4, 6.0
    n = M.min_track_record_length(sr, g3, g4, 0.95)
    assert M.probabilistic_sharpe_ratio(sr, int(round(n)), g3, g4) == pytest.approx(0.95, abs=2e-4)


def test_certifiable_sharpe_round_trip_and_one_year(ann: M.Annualization) -> None:
    n = 5000
    sr = M.certifiable_sharpe(n, 0.95, -0.3, 5.0)
    assert M.probabilistic_sharpe_ratio(sr, n, -0.3, 5.0) == pytest.approx(0.95, abs=1e-9)
    one_year = M.certifiable_sharpe(int(round(ann.bars_per_year)), 0.95) * ann.bar_factor
    assert 1.6 < one_year < 1.7  # REFERENCE.md: a 1-year test can only certify Sharpe >~ 1.6
    assert M.certifiable_sharpe(1, 0.95) == math.inf


def test_block_sums_match_brute_force() -> None:
    x = np.arange(10, dtype=float) ** 1.5
    for block in (1, 3, 10):
        got = M._block_sums(x, block)
        want = [sum(x[(s + k) % x.size] for k in range(block)) for s in range(x.size)]
        np.testing.assert_allclose(got, want)


def test_bootstrap_matches_a_materialized_resample(returns: np.ndarray) -> None:
    a, b = returns[:1200], returns[1200:2400]
    res = M.block_bootstrap_sharpe_difference(a, b, 100.0, block=60, samples=300, confidence=0.9, seed=3)
    # redo it the slow way with the same random starts
    rng = np.random.default_rng(3)
    k = -(-a.size // 60)
    starts = rng.integers(0, a.size, size=(300, k))
    idx = (starts[:, :, None] + np.arange(60)).reshape(300, -1) % a.size
    diffs = np.array([M.sharpe_ratio(a[i], 100.0) - M.sharpe_ratio(b[i], 100.0) for i in idx])
    lo, hi = np.quantile(diffs, [0.05, 0.95])
    assert (res.low, res.high) == pytest.approx((lo, hi), rel=1e-9)
    assert res.prob_not_better == pytest.approx((diffs <= 0).mean())
    assert res.difference == pytest.approx(M.sharpe_ratio(a, 100.0) - M.sharpe_ratio(b, 100.0))
    assert res.low <= res.high


def test_bootstrap_identical_series_has_zero_width_and_detects_a_real_edge(returns: np.ndarray) -> None:
    same = M.block_bootstrap_sharpe_difference(returns, returns, 1e4, block=60, samples=200, confidence=0.95, seed=0)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    better = M.block_bootstrap_sharpe_difference(returns + 5e-4, returns, 1e4, block=60, samples=500, confidence=0.95, seed=0)
    assert better.low > 0 and better.prob_not_better == 0.0
    with pytest.raises(ValueError):
        M.block_bootstrap_sharpe_difference(returns, returns[:-1], 1e4, block=60, samples=200, confidence=0.95, seed=0)
