"""core.overfitting: PBO by CSCV (checked against Bailey, Borwein, López de Prado & Zhu) and Hansen's SPA."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usdcop_platform.core import overfitting as O


def test_cscv_enumerates_the_papers_12870_splits_of_16_blocks() -> None:
    """The paper's setting: S = 16 blocks give C(16, 8) = 12,870 in/out-of-sample splits."""
    m = np.random.default_rng(0).normal(0, 0.01, (160, 4))
    r = O.pbo_cscv(m, 16)
    assert r.combinations == math.comb(16, 8) == 12_870 and r.logits.size == 12_870
    assert (r.n_trials, r.n_periods, r.partitions) == (4, 160, 16)


def test_papers_test_case_of_full_overfitting_gives_pbo_one() -> None:
    """Test case 1 of the paper: N trials of pure noise, each adjusted to a Sharpe of exactly 0 over
    the whole sample. In-sample and out-of-sample halves then mirror each other, so the in-sample
    winner is always below the out-of-sample median: PBO = 1."""
    m = np.random.default_rng(1).normal(0, 0.01, (1000, 100))
    m -= m.mean(axis=0)
    assert O.pbo_cscv(m, 16).pbo == pytest.approx(1.0)


def test_noise_gives_pbo_near_one_half_and_real_skill_gives_zero() -> None:
    """Unadjusted noise: the in-sample winner lands anywhere out of sample (PBO ~ 0.5); one trial with a
    true edge (the paper's test cases with SR > 0) is picked in sample and stays best (PBO -> 0)."""
    rng = np.random.default_rng(0)
    m = rng.normal(0, 0.01, (1000, 100))
    assert 0.4 < O.pbo_cscv(m, 16).pbo < 0.65
    skilled = m - m.mean(axis=0)
    skilled[:, 0] += 0.002  # annualized ~3 on daily data
    assert O.pbo_cscv(skilled, 16).pbo == 0.0


def test_hand_computed_two_block_case() -> None:
    """S = 2, N = 3 trials: blocks A (rows 0-1) and B (rows 2-3).
    A in sample: Sharpes (1.5/0.7071, 0.5/0.7071, 0 [no dispersion]) -> trial 0 best; out of sample (B) its Sharpe
    is the lowest -> rank 1, w = 1/4, logit ln(1/3) < 0. B in sample: trial 2 best (B Sharpe 3/0.7071); in
    A it is the worst -> logit ln(1/3). PBO = 1."""
    m = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, -1.0], [-1.0, 0.0, 2.5], [-2.0, 0.0, 3.5]])
    r = O.pbo_cscv(m, 2)
    assert r.combinations == 2 and r.pbo == 1.0
    np.testing.assert_allclose(r.logits, [math.log(1 / 3)] * 2)


@pytest.mark.parametrize(
    ("matrix", "s", "message"),
    [
        (np.zeros((10, 1)), 2, "at least 2 trials"),
        (np.zeros((10, 3)), 3, "even and >= 2"),
        (np.zeros((3, 3)), 4, "3 periods cannot fill 4 blocks"),
        (np.array([[np.nan, 1.0], [1.0, 2.0]]), 2, "NaN or inf"),
    ],
)
def test_pbo_bad_inputs_say_why(matrix, s, message) -> None:
    with pytest.raises(O.OverfittingInputError, match=message):
        O.pbo_cscv(matrix, s)


def test_partitions_fit_the_sample() -> None:
    assert O.partitions_for(1000) == 16 and O.partitions_for(20) == 10 and O.partitions_for(7) == 2
    assert O.partitions_for(3) == 0


def test_spa_finds_a_real_edge_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(3)
    bench = rng.normal(0, 0.01, 500)
    good = rng.normal(0.003, 0.01, 500)
    r = O.spa_test(good, {"buy_and_hold": bench, "flat": np.zeros(500)}, block_size=5, reps=500, seed=0)
    assert r.pvalues["buy_and_hold"] < 0.05 and r.pvalues["flat"] < 0.05 and r.pvalue == max(r.pvalues.values())
    same = O.spa_test(bench, {"buy_and_hold": bench + rng.normal(0, 1e-4, 500)}, block_size=5, reps=500, seed=0)
    assert same.pvalue > 0.2
    text = O.spa_sentence(r.as_dict(), 0.05)
    assert "stationary bootstrap" in text and "beats every benchmark" in text
    # the same seed gives the same p-values (reproducible proposals)
    again = O.spa_test(good, {"buy_and_hold": bench, "flat": np.zeros(500)}, block_size=5, reps=500, seed=0)
    assert again.pvalues == r.pvalues


def test_spa_bad_inputs_say_why() -> None:
    with pytest.raises(O.OverfittingInputError, match="shape"):
        O.spa_test(np.zeros(10), {"flat": np.zeros(9)}, block_size=2, reps=100, seed=0)
    with pytest.raises(O.OverfittingInputError, match="at least 10 aligned periods"):
        O.spa_test(np.zeros(2), {"flat": np.zeros(2)}, block_size=2, reps=100, seed=0)


def test_sentences_state_missing_results_with_the_reason() -> None:
    assert "not computed: only 1 trial" in O.pbo_sentence({"pbo": None, "reason": "only 1 trial"})
    d = O.pbo_cscv(np.random.default_rng(0).normal(0, 1, (40, 3)), 4).as_dict()
    assert "CSCV over 3 trials" in O.pbo_sentence(d) and "PBO = " in O.pbo_sentence(d)
