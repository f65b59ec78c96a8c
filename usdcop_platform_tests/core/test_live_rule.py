"""core.live_rule: fills at the next open (or after a delay) and the cost model, reduced to
core.backtest's accounting at full size and close fills. (The equality with a replay of the live
path is defs/test_live_rule_replay.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from usdcop_platform.core.backtest import simulate
from usdcop_platform.core.live_rule import fill_prices, live_rule_equity


def test_full_size_close_fill_is_core_backtest():
    rng = np.random.default_rng(0)
    n = 400
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    pos = rng.choice([-1, 0, 1], size=n).astype(np.int8)
    sessions = np.repeat(np.arange(n // 40), 40)
    ref = simulate(close, pos, cost_bps=2.5, initial_capital=10_000.0)
    got = live_rule_equity(close, close, sessions, pos.astype(float), cost_bps=2.5, initial_capital=10_000.0,
                           fill_delay_bars=0)
    np.testing.assert_allclose(got, ref.equity, rtol=1e-12, atol=0)


def test_fill_prices_next_open_within_the_session_else_its_last_close():
    o = np.array([10.0, 11.0, 12.0, 20.0, 21.0])
    c = np.array([10.5, 11.5, 12.5, 20.5, 21.5])
    s = np.array([1, 1, 1, 2, 2])
    assert fill_prices(o, c, s, 1).tolist() == [11.0, 12.0, 12.5, 21.0, 21.5]
    assert fill_prices(o, c, s, 2).tolist() == [12.0, 12.5, 12.5, 21.5, 21.5]
    assert fill_prices(o, c, s, 0).tolist() == c.tolist()
    with pytest.raises(ValueError, match="fill_delay_bars"):
        fill_prices(o, c, s, -1)


def test_next_open_fill_by_hand():
    # A long of 10 % decided at bar 0 fills at bar 1's open (100), is marked at bar 1's close (110),
    # closed by the flat decided at bar 1, filled at bar 2's open (120). Cost 10 bps per side.
    o = np.array([90.0, 100.0, 120.0, 130.0])
    c = np.array([95.0, 110.0, 125.0, 135.0])
    s = np.zeros(4, dtype=np.int64)
    q = np.array([0.1, 0.0, 0.0, 0.0])
    cost = 10 * 1e-4
    eq = live_rule_equity(o, c, s, q, cost_bps=10.0, initial_capital=1.0, fill_delay_bars=1)
    assert eq[0] == 1.0  # nothing filled by bar 0's close
    assert eq[1] == pytest.approx(0.9 + 0.1 * 1.1 / (1 + cost), abs=1e-15)
    closed = 0.9 + 0.1 * (1.2 - cost * 1.2) / (1 + cost)
    assert eq[2] == pytest.approx(closed, abs=1e-15) and eq[3] == eq[2]
    # Same decisions filled at the signal close instead: a different (the current backtest's) price.
    assert live_rule_equity(o, c, s, q, cost_bps=10.0, initial_capital=1.0, fill_delay_bars=0)[2] != eq[2]


def test_fill_delay_is_configured_in_the_evaluation_contract():
    from pydantic import ValidationError

    from usdcop_platform.contracts.evaluation import DEFAULT_EVALUATION, LiveRuleConfig

    assert DEFAULT_EVALUATION.live_rule.fill_delay_bars == 1  # the next open
    with pytest.raises(ValidationError, match="fill_delay_bars"):
        LiveRuleConfig(fill_delay_bars=-1)
