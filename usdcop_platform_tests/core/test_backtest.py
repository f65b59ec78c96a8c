"""core.backtest: hand-computed accounting, oracles (empyrical), invariants and bad input."""

from __future__ import annotations

import math

import empyrical as ep
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usdcop_platform.core import backtest as B
from usdcop_platform.core.metrics import Annualization

CAPITAL = 100_000.0


@pytest.fixture(scope="module")
def ann(calendar) -> Annualization:
    return Annualization.from_calendar(calendar)


def run(close, pos, cost_bps=0.0, sessions=None, ann=None, **kw):
    close = np.asarray(close, dtype=float)
    sessions = np.zeros(close.size, dtype=np.int64) if sessions is None else np.asarray(sessions)
    ann = ann or Annualization(bars_per_year=14_700.0, sessions_per_year=245.0)
    return B.backtest(close, np.asarray(pos), sessions, cost_bps=cost_bps, initial_capital=CAPITAL,
                      annualization=ann, confidence=0.95, **kw)


def random_case(seed: int, n: int = 3000, p_change: float = 0.02):
    rng = np.random.default_rng(seed)
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 6e-4, n)))
    change = rng.random(n) < p_change
    vals = rng.integers(-1, 2, n)
    idx = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    pos = vals[idx].astype(np.int8)
    pos[~change.cumsum().astype(bool)] = 0
    sessions = np.arange(n) // 60
    return close, pos, sessions


# ---- hand-computed cases --------------------------------------------------------------------------
def test_long_trade_without_costs() -> None:
    r = run([100, 110, 121, 121], [1, 1, 0, 0])
    np.testing.assert_allclose(r.equity, [1e5, 1.1e5, 1.21e5, 1.21e5])
    np.testing.assert_allclose(r.bar_return, [0.0, 0.1, 0.1, 0.0])
    assert r.trades.count == 1
    assert (int(r.trades.entry_index[0]), int(r.trades.exit_index[0]), int(r.trades.side[0])) == (0, 2, 1)
    assert r.trades.net_pnl[0] == pytest.approx(21_000.0)
    assert r.metrics["total_return"] == pytest.approx(0.21)
    assert r.metrics["win_rate"] == 1.0 and r.metrics["profit_factor"] == math.inf


def test_long_trade_with_costs_invests_equity_net_of_the_entry_fee() -> None:
    c = 0.01  # 100 bps
    r = run([100, 110, 121, 121], [1, 1, 0, 0], cost_bps=100)
    n_ = CAPITAL / (1 + c)  # notional + entry fee = equity
    np.testing.assert_allclose(r.equity, [n_, n_ * 1.1, n_ * 1.21 * (1 - c), n_ * 1.21 * (1 - c)])
    assert r.trades.entry_cost[0] == pytest.approx(c * n_)
    assert r.trades.exit_cost[0] == pytest.approx(c * n_ * 1.21)
    assert r.metrics["total_costs"] == pytest.approx(c * n_ * 2.21)
    assert r.trades.net_pnl[0] == pytest.approx(r.equity[-1] - CAPITAL)


def test_short_trade() -> None:
    r = run([100, 90, 90], [-1, -1, 0])
    np.testing.assert_allclose(r.equity, [1e5, 1.1e5, 1.1e5])
    assert int(r.trades.side[0]) == -1 and r.trades.gross_pnl[0] == pytest.approx(10_000.0)


def test_flip_costs_twice_and_makes_two_trades() -> None:
    c = 0.01
    r = run([100, 110, 99, 99], [1, -1, -1, 0], cost_bps=100)
    g1 = (1 + 0.1 - c * 1.1) / (1 + c)
    g2 = (1 + 0.1 - c * 0.9) / (1 + c)
    assert r.equity[1] == pytest.approx(CAPITAL * g1 / (1 + c))  # exited long, entered short at bar 1
    assert r.equity[-1] == pytest.approx(CAPITAL * g1 * g2)
    assert r.trades.count == 2
    np.testing.assert_allclose(r.trades.trade_return, [g1 - 1, g2 - 1])
    assert r.metrics["turnover"] == 4.0  # 0->1, 1->-1 (2), -1->0
    assert r.metrics["exposure"] == pytest.approx(0.75)


def test_last_bar_is_forced_flat() -> None:
    r = run([100, 110, 120], [1, 1, 1])
    assert r.position.tolist() == [1, 1, 0]
    assert r.trades.count == 1 and int(r.trades.exit_index[0]) == 2
    assert r.equity[-1] == pytest.approx(1.2e5)


def test_flat_strategy_is_flat() -> None:
    r = run([100, 101, 99, 100], [0, 0, 0, 0], cost_bps=75)
    assert np.all(r.equity == CAPITAL)
    m = r.metrics
    assert (m["sharpe"], m["max_drawdown"], m["trades"], m["win_rate"], m["turnover"]) == (0.0, 0.0, 0, 0.0, 0.0)


def test_session_returns_compound_the_bars() -> None:
    close = [100, 110, 121, 121, 110, 99]
    r = run(close, [1, 1, 0, -1, -1, 0], sessions=[0, 0, 0, 1, 1, 1])
    assert r.session_end_index.tolist() == [2, 5]
    np.testing.assert_allclose(r.session_returns, [0.21, 1 - 99 / 121])  # long 100->121, short 121->99
    np.testing.assert_allclose(np.prod(1 + r.session_returns), r.equity[-1] / CAPITAL)


# ---- oracles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_empyrical(seed: int, ann: Annualization) -> None:
    close, pos, sessions = random_case(seed)
    r = run(close, pos, cost_bps=25, sessions=sessions, ann=ann)
    ppy = ann.bars_per_year
    m = r.metrics
    assert m["sharpe"] == pytest.approx(ep.sharpe_ratio(r.bar_return, annualization=ppy), rel=1e-9)
    assert m["sortino"] == pytest.approx(ep.sortino_ratio(r.bar_return, annualization=ppy), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(-ep.max_drawdown(r.bar_return), rel=1e-9)
    assert m["annual_return"] == pytest.approx(ep.annual_return(r.bar_return, annualization=ppy), rel=1e-9)
    assert m["total_return"] == pytest.approx(ep.cum_returns_final(r.bar_return), rel=1e-9)
    assert m["volatility"] == pytest.approx(ep.annual_volatility(r.bar_return, annualization=ppy), rel=1e-9)
    assert m["session_sharpe"] == pytest.approx(
        ep.sharpe_ratio(r.session_returns, annualization=ann.sessions_per_year), rel=1e-9
    )


def reference_loop(close: np.ndarray, pos: np.ndarray, cost_bps: float) -> np.ndarray:
    """Bar-by-bar cash/units accounting (the definition, written the slow way)."""
    c = cost_bps * 1e-4
    p = pos.copy()
    p[-1] = 0
    cash, units, held = CAPITAL, 0.0, 0
    out = np.empty(close.size)
    for t, price in enumerate(close):
        if p[t] != held:
            if held != 0:  # close the open trade
                cash += units * price - c * abs(units) * price
                units = 0.0
            if p[t] != 0:  # open a new one with all the equity
                notional = cash / (1 + c)
                units = p[t] * notional / price
                cash -= units * price + c * notional
            held = p[t]
        out[t] = cash + units * price
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 400),
    p_change=st.floats(0.01, 0.9),
    cost=st.sampled_from([0.0, 2.0, 75.0, 500.0]),
)
def test_vectorized_equity_equals_the_reference_loop(seed: int, n: int, p_change: float, cost: float) -> None:
    close, pos, sessions = random_case(seed, n, p_change)
    r = run(close, pos, cost_bps=cost, sessions=sessions)
    np.testing.assert_allclose(r.equity, reference_loop(close, pos, cost), rtol=1e-10)
    # trades account for the whole PnL; bar returns compound to the final equity
    assert r.trades.net_pnl.sum() == pytest.approx(r.equity[-1] - CAPITAL, rel=1e-9, abs=1e-6)
    assert np.prod(1 + r.bar_return) == pytest.approx(r.equity[-1] / CAPITAL, rel=1e-9)
    assert r.drawdown.max() <= 0.0 and r.metrics["max_drawdown"] == pytest.approx(-r.drawdown.min())


# ---- benchmarks, sweep, folds, evaluation -------------------------------------------------------
def test_cost_sweep_is_monotone_and_matches_single_runs(ann: Annualization) -> None:
    close, pos, sessions = random_case(5)
    sweep = B.cost_sweep(close, pos, sessions, (2, 5, 10, 25, 50, 75), initial_capital=CAPITAL,
                         annualization=ann, confidence=0.95)
    finals = [row["final_equity"] for row in sweep]
    assert finals == sorted(finals, reverse=True)
    assert sweep[3]["sharpe"] == pytest.approx(run(close, pos, 25, sessions, ann).metrics["sharpe"])


def test_session_folds_cover_everything_on_session_boundaries() -> None:
    sessions = np.repeat(np.arange(10), 60)
    folds = B.session_folds(sessions, 3)
    assert folds[0][0] == 0 and folds[-1][1] == 600
    assert all(a % 60 == 0 for a, _ in folds) and all(b == a2 for (_, b), (a2, _) in zip(folds, folds[1:]))
    with pytest.raises(B.BacktestInputError, match="folds"):
        B.session_folds(sessions, 11)


def test_walk_forward_folds_are_fresh_accounts(ann: Annualization) -> None:
    close, pos, sessions = random_case(9, 1800)
    wf = B.walk_forward(close, pos, sessions, 3, cost_bps=5, initial_capital=CAPITAL, annualization=ann, confidence=0.95)
    assert [f["n_bars"] for f in wf["folds"]] == [600, 600, 600]
    first = run(close[:600], pos[:600], 5, sessions[:600], ann).metrics
    assert wf["folds"][0]["sharpe"] == pytest.approx(first["sharpe"])
    agg = wf["aggregate"]
    sharpes = [f["sharpe"] for f in wf["folds"]]
    assert agg["sharpe_mean"] == pytest.approx(np.mean(sharpes)) and agg["sharpe_min"] == min(sharpes)


def test_evaluate_with_and_without_baseline(ann: Annualization) -> None:
    close, pos, sessions = random_case(11, 2400)
    _, base_pos, _ = random_case(12, 2400)
    times = np.datetime64("2024-05-03T13:00") + np.arange(2400) * np.timedelta64(5, "m")
    common = dict(cost_bps=75.0, initial_capital=CAPITAL, annualization=ann, confidence=0.95,
                  cost_sweep_bps=(2, 75), bootstrap_block_bars=60, bootstrap_samples=200, bootstrap_seed=0, times=times)
    plain = B.evaluate(close, pos, sessions, **common)
    assert plain.baseline is None and set(plain.bootstrap) == {"buy_and_hold"}
    bh = run(close, np.ones(2400), 75, sessions, ann)
    assert plain.buy_and_hold.equity[-1] == pytest.approx(bh.equity[-1])
    assert plain.flat["sharpe"] == 0.0 and plain.flat["final_equity"] == CAPITAL
    frame = plain.series_frame()
    assert frame.columns == ["time", "session", "close", "position", "equity", "drawdown", "bar_return",
                             "buy_hold_equity", "baseline_position", "baseline_equity", "baseline_drawdown"]
    assert frame.schema["time"] == pl.Datetime("us", "UTC") and frame["baseline_equity"].null_count() == 2400

    with_base = B.evaluate(close, pos, sessions, baseline_positions=base_pos, walk_forward_folds=4, **common)
    assert set(with_base.bootstrap) == {"buy_and_hold", "baseline"}
    comp = with_base.comparison()["baseline"]["sharpe"]
    assert comp["delta"] == pytest.approx(comp["candidate"] - comp["benchmark"])
    assert with_base.series_frame()["baseline_equity"].null_count() == 0
    summary = with_base.summary()
    assert summary["walk_forward"]["aggregate"]["folds"] == 4 and len(summary["cost_sweep"]) == 2
    trades = with_base.candidate.trades_frame()
    assert trades.height == with_base.candidate.metrics["trades"]
    assert {"entry_time", "exit_time", "side", "net_pnl", "costs"} <= set(trades.columns)


def test_fingerprint_is_deterministic_and_sensitive() -> None:
    close, pos, sessions = random_case(3, 500)
    a = run(close, pos, 10, sessions).fingerprint()
    assert a == run(close, pos, 10, sessions).fingerprint()
    assert a != run(close, pos, 11, sessions).fingerprint()
    pos2 = pos.copy()
    pos2[100] = 0 if pos2[100] != 0 else 1
    assert a != run(close, pos2, 10, sessions).fingerprint()


def test_psr_dsr_mintrl_are_reported(ann: Annualization) -> None:
    close, pos, sessions = random_case(4, 3000)
    m1 = run(close, pos, 2, sessions, ann, n_trials=1).metrics
    m20 = run(close, pos, 2, sessions, ann, n_trials=20).metrics
    assert m1["dsr"] == pytest.approx(m1["psr"]) and m20["dsr"] < m1["dsr"] and m20["n_trials"] == 20
    assert m1["years"] == pytest.approx(3000 / ann.bars_per_year)
    if m1["sharpe"] > 0:
        assert m1["min_track_record_years"] == pytest.approx(m1["min_track_record_bars"] / ann.bars_per_year)
    else:
        assert m1["min_track_record_bars"] == math.inf


# ---- bad input ------------------------------------------------------------------------------------
def test_nan_price_names_the_bar() -> None:
    close = np.array([100.0, 101.0, np.nan, 102.0])
    times = np.datetime64("2024-05-03T13:00") + np.arange(4) * np.timedelta64(5, "m")
    with pytest.raises(B.BacktestInputError, match=r"NaN at bar 2 \(2024-05-03T13:10:00 UTC\)"):
        run(close, [0, 1, 1, 0], times=times)
    with pytest.raises(B.BacktestInputError, match="infinite at bar 1"):
        run([100.0, np.inf, 100.0], [0, 0, 0])
    with pytest.raises(B.BacktestInputError, match="<= 0 at bar 0"):
        run([0.0, 1.0], [0, 0])


@pytest.mark.parametrize(
    ("close", "pos", "match"),
    [
        ([100.0, 101.0], [0, 2], "not one of -1, 0, \\+1"),
        ([100.0, 101.0], [0.5, 0], "not one of"),
        ([100.0, 101.0], [np.nan, 0], "not finite"),
        ([100.0, 101.0, 102.0], [0, 1], "aligned"),
        ([100.0], [0], "at least 2 bars"),
    ],
)
def test_bad_positions_and_shapes(close, pos, match) -> None:
    with pytest.raises(B.BacktestInputError, match=match):
        B.backtest(np.asarray(close), np.asarray(pos), np.zeros(len(close)), cost_bps=1, initial_capital=CAPITAL,
                   annualization=Annualization(14_700.0, 245.0), confidence=0.95)


def test_sessions_must_not_go_backwards() -> None:
    with pytest.raises(B.BacktestInputError, match="sessions go backwards at bar 2"):
        run([100, 101, 102], [0, 0, 0], sessions=[1, 1, 0])


def test_negative_cost_is_refused() -> None:
    with pytest.raises(B.BacktestInputError, match="cost_bps"):
        run([100, 101], [0, 0], cost_bps=-1)
