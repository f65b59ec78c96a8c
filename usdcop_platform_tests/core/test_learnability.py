"""core.learnability: the reference rules, activity counts and the benchmark's targets."""

from __future__ import annotations

import numpy as np
import pytest

from usdcop_platform.core import learnability as lb
from usdcop_platform.core.synthetic import PlantedEdge

ZERO = lb.MarketSpec("zero", PlantedEdge(0.0))
EDGE = lb.MarketSpec("edge", PlantedEdge(0.3))


def test_hysteresis_rule_by_hand() -> None:
    signal = np.array([0.0, 2.0, 1.0, 0.4, -2.0, -0.2, 0.0, 3.0, 3.0])
    sessions = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])
    rule = lb.ThresholdRule("x", enter_sd=1.5, exit_sd=0.5, scale=1.0)
    # enter long above 1.5, keep while >= 0.5, flip below -1.5, leave the short above -0.5;
    # the last bar of each session is forced flat
    assert rule.positions(signal, sessions).tolist() == [0, 1, 1, 0, -1, 0, 0, 1, 0]
    assert lb.FLAT_RULE.positions(None, sessions).tolist() == [0] * 9


def test_rule_refuses_a_misaligned_or_non_finite_signal() -> None:
    rule = lb.ThresholdRule("x", 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="3 values for 4 bars"):
        rule.positions(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        rule.positions(np.array([0.0, np.nan]), np.zeros(2))


def test_momentum_rule_follows_the_sign_and_closes_each_session() -> None:
    p = lb.momentum_positions(np.array([0.1, -0.2, 0.0, 0.3, 0.5]), np.array([0, 0, 0, 1, 1]))
    assert p.tolist() == [1, -1, 0, 1, 0]


def test_round_trips_count_entries_and_flips() -> None:
    p = np.array([0, 1, 1, 0, -1, 1, 0, 0])
    assert lb.round_trips(p) == 3
    assert lb.round_trips_per_20_sessions(p, np.array([0, 0, 0, 0, 1, 1, 1, 1])) == pytest.approx(30.0)


def test_fit_rule_finds_a_planted_signal_and_prefers_flat_when_nothing_pays() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    sessions = np.repeat(np.arange(n // 60), 60)
    lead = rng.normal(size=n)
    forward = np.r_[lead[:-1], 0.0]  # the signal at t is the next return: a perfect predictor

    def net_score(positions: np.ndarray, cost: float) -> float:
        prev = np.r_[0, positions[:-1]]
        net = positions * forward - cost * np.abs(positions - prev)
        return float(net.mean() / net.std()) if net.std() else 0.0

    rule, score = lb.fit_rule({"noise": rng.normal(size=n), "lead": lead}, sessions, lambda p: net_score(p, 0.0))
    assert rule.feature == "lead" and score > 0.5
    flat, zero = lb.fit_rule({"lead": lead}, sessions, lambda p: net_score(p, 100.0))
    assert flat is lb.FLAT_RULE and zero == 0.0


def test_zero_edge_must_stay_flat() -> None:
    ok = lb.judge(ZERO, oracle_sharpe=1.3, sharpes=[0.0, 0.0, -1.0], returns=[0.0, 0.0, -0.01], round_trips_20=[0, 0.5, 3])
    assert ok.target == "flat" and ok.passed is True  # medians: 0.5 round trips, 0% return
    busy = lb.judge(ZERO, oracle_sharpe=0.0, sharpes=[0.1] * 3, returns=[0.0] * 3, round_trips_20=[2.0] * 3)
    assert busy.passed is False and "round trips" in busy.reason
    losing = lb.judge(ZERO, oracle_sharpe=0.0, sharpes=[0.1] * 3, returns=[-0.006] * 3, round_trips_20=[0.0] * 3)
    assert losing.passed is False


def test_an_edge_too_weak_to_pay_the_costs_must_stay_flat() -> None:
    v = lb.judge(EDGE, oracle_sharpe=-0.4, sharpes=[0.0] * 3, returns=[0.0] * 3, round_trips_20=[0.0] * 3)
    assert v.target == "flat" and v.passed is True and "oracle net Sharpe -0.40 <= 0" in v.reason


def test_a_strong_edge_needs_sixty_percent_of_the_oracle() -> None:
    assert lb.judge(EDGE, 5.0, [3.1, 2.0, 4.0], [0.1] * 3, [9.0] * 3).passed is True
    miss = lb.judge(EDGE, 5.0, [2.9, 0.0, 4.0], [0.1] * 3, [9.0] * 3)
    assert miss.target == "edge" and miss.passed is False and "(3.00)" in miss.reason


def test_a_middling_oracle_is_only_reported() -> None:
    v = lb.judge(EDGE, 1.5, [0.0], [0.0], [0.0])
    assert v.target == "report" and v.passed is None
    with pytest.raises(ValueError):
        lb.judge(EDGE, 1.5, [], [], [])
