"""core.performance: realized PnL of signals, rolling Sharpe, degradation verdict, paired tests."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from usdcop_platform.core.metrics import sharpe_ratio
from usdcop_platform.core.performance import (
    assess_degradation,
    paired_test,
    realized_pnl,
    rolling_sharpe,
    shadow_ab_comparisons,
    summarize,
)

TZ = "America/Bogota"
D1, D2 = date(2024, 3, 4), date(2024, 3, 5)


def _t(d: date, i: int) -> datetime:
    """Bar i of session d (08:00 Bogota = 13:00 UTC)."""
    return datetime(d.year, d.month, d.day, 13, tzinfo=timezone.utc) + timedelta(minutes=5 * i)


def _bars(d: date, closes: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"time": [_t(d, i) for i in range(len(closes))], "close": closes})


def _signals(rows: list[tuple[str, str, date, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model_id": [r[0] for r in rows],
            "role": [r[1] for r in rows],
            "session_date": [r[2] for r in rows],
            "bar_time": [_t(r[2], r[3]) for r in rows],
            "action": [r[4] for r in rows],
        }
    )


def test_hand_computed_pnl_with_costs() -> None:
    bars = _bars(D1, [100.0, 101.0, 100.0, 102.0, 103.0])
    sig = _signals([("m", "production", D1, 0, 2), ("m", "production", D1, 2, 0), ("m", "production", D1, 3, 1)])
    r = realized_pnl(sig, bars, cost_bps=10, timezone=TZ)
    ps = r.per_signal.sort("bar_time")
    c = 10e-4
    # BUY at bar 0 held over bars 0 and 1; SELL at bar 2 (a flip: 2c); HOLD at bar 3 (closing: c).
    assert ps["position"].to_list() == [1, -1, 0]
    assert ps["bars_held"].to_list() == [2, 1, 1]
    assert ps["gross_return"].to_list() == pytest.approx([(101 / 100 - 1) + (100 / 101 - 1), -(102 / 100 - 1), 0.0])
    assert ps["cost"].to_list() == pytest.approx([c, 2 * c, c])
    assert ps["settled"].all()
    sess = r.per_session.row(0, named=True)
    assert sess["pnl"] == pytest.approx(float(ps["pnl"].sum()))
    assert sess["n_signals"] == 3 and sess["position_changes"] == 3


def test_position_before_first_signal_is_flat_and_sessions_do_not_carry() -> None:
    bars = pl.concat([_bars(D1, [100.0, 110.0, 121.0]), _bars(D2, [200.0, 100.0, 50.0])])
    # D1: signal only at bar 1 (bar 0's +10 % is not earned). D2: BUY at bar 1 pays entry cost from flat.
    sig = _signals([("m", "production", D1, 1, 2), ("m", "production", D2, 1, 2)])
    r = realized_pnl(sig, bars, cost_bps=0, timezone=TZ, closed_sessions={D1})
    by = {row["session_date"]: row for row in r.per_session.iter_rows(named=True)}
    assert by[D1]["pnl"] == pytest.approx(0.10)
    # The D1 position does not earn the overnight gap 121 -> 200; D2 earns 100 -> 50 only.
    assert by[D2]["pnl"] == pytest.approx(-0.5)


def test_closing_cost_only_for_closed_sessions_and_unsettled_tail() -> None:
    bars = _bars(D1, [100.0, 100.0])
    sig = _signals([("m", "production", D1, 1, 2)])  # signal on the last known bar: nothing followed yet
    open_ = realized_pnl(sig, bars, cost_bps=50, timezone=TZ)
    assert open_.per_signal["settled"].to_list() == [False]
    assert open_.per_signal["cost"].item() == pytest.approx(50e-4)
    closed = realized_pnl(sig, bars, cost_bps=50, timezone=TZ, closed_sessions=[D1])
    assert closed.per_signal["settled"].to_list() == [True]
    assert closed.per_signal["cost"].item() == pytest.approx(2 * 50e-4)  # entry + forced flat at the close


def test_models_are_independent_and_roles_kept() -> None:
    bars = _bars(D1, [100.0, 105.0, 100.0])
    sig = _signals([("prod", "production", D1, 0, 2), ("chal", "shadow", D1, 0, 0)])
    r = realized_pnl(sig, bars, cost_bps=0, timezone=TZ)
    pnl = {row["model_id"]: (row["role"], row["pnl"]) for row in r.per_session.iter_rows(named=True)}
    assert pnl["prod"] == ("production", pytest.approx(0.05 + (100 / 105 - 1)))
    assert pnl["chal"] == ("shadow", pytest.approx(-(0.05 + (100 / 105 - 1))))


def test_invalid_action_is_refused() -> None:
    with pytest.raises(pl.exceptions.InvalidOperationError):
        realized_pnl(_signals([("m", "production", D1, 0, 7)]), _bars(D1, [1.0, 2.0]), cost_bps=0, timezone=TZ)


def test_empty_signals_give_empty_frames() -> None:
    r = realized_pnl(_signals([]).cast({"action": pl.Int64}), _bars(D1, [1.0, 2.0]), cost_bps=0, timezone=TZ)
    assert r.per_signal.is_empty() and r.per_session.is_empty()


@settings(max_examples=40, deadline=None)
@given(
    closes=st.lists(st.floats(50, 150), min_size=2, max_size=30),
    actions=st.lists(st.integers(0, 2), min_size=30, max_size=30),
    every=st.integers(1, 3),
    cost=st.floats(0, 100),
)
def test_session_pnl_matches_a_bar_by_bar_loop(closes: list[float], actions: list[int], every: int, cost: float) -> None:
    """The vectorized attribution equals the environment's bar loop (position held until the next signal)."""
    n = len(closes)
    idx = list(range(0, n, every))
    sig = _signals([("m", "production", D1, i, actions[i]) for i in idx])
    r = realized_pnl(sig, _bars(D1, closes), cost_bps=cost, timezone=TZ)
    pos, prev, total = 0, 0, 0.0
    for i in range(n):
        if i in idx:
            pos = actions[i] - 1
            total -= cost * 1e-4 * abs(pos - prev)
            prev = pos
        if i + 1 < n:
            total += pos * (closes[i + 1] / closes[i] - 1)
    assert r.per_session["pnl"].item() == pytest.approx(total, abs=1e-12)


def test_rolling_sharpe_matches_metrics_on_each_window() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, 30)
    out = rolling_sharpe(r, window=10, periods_per_year=245.0, min_periods=5)
    assert np.isnan(out[:4]).all()
    assert out[4] == pytest.approx(sharpe_ratio(r[:5], 245.0))
    assert out[29] == pytest.approx(sharpe_ratio(r[20:30], 245.0))


def test_summarize_uses_calendar_annualization_and_hit_rate(calendar) -> None:
    bars = pl.concat([_bars(d, [100.0, 101.0, 100.5]) for d in (D1, D2)])
    sig = _signals([("m", "production", d, 0, 2) for d in (D1, D2)] + [("m", "production", d, 1, 1) for d in (D1, D2)])
    r = realized_pnl(sig, bars, cost_bps=0, timezone=TZ)
    spy = calendar.sessions_per_year()
    (s,) = summarize(r, sessions_per_year=spy, rolling_sessions=5, min_sessions=2)
    assert s.n_sessions == 2 and s.n_signals == 4
    assert s.hit_rate == 1.0  # the BUYs earned +1 %; HOLDs are not counted
    assert s.sharpe == 0.0  # identical sessions: no dispersion
    assert s.last_session == D2


def test_degradation_statuses() -> None:
    spy = 245.0
    good = np.random.default_rng(1).normal(0.002, 0.01, 20)
    kwargs = dict(sessions_per_year=spy, rolling_sessions=20, min_sessions=5, warn_drop=1.0, rollback_drop=2.0)
    realized = sharpe_ratio(good, spy)
    assert assess_degradation(good, None, **kwargs).status == "NO_EXPECTATION"
    assert assess_degradation(good[:3], 1.0, **kwargs).status == "INSUFFICIENT_DATA"
    ok = assess_degradation(good, realized + 0.5, **kwargs)
    assert ok.status == "OK" and ok.drop == pytest.approx(0.5) and 0 < ok.prob_at_least_expected < 1
    assert assess_degradation(good, realized + 1.5, **kwargs).status == "WARN"
    rb = assess_degradation(good, realized + 2.5, **kwargs)
    assert rb.status == "ROLLBACK" and "below the backtest" in rb.reason


def test_dm_without_lags_equals_paired_t_and_scipy() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.001, 0.01, 40), rng.normal(0.0, 0.01, 40)
    dm = paired_test(a, b, method="diebold_mariano", alpha=0.05, power=0.8, lags=0)
    t = paired_test(a, b, method="paired_t", alpha=0.05, power=0.8)
    ref = stats.ttest_rel(a, b)
    assert dm.statistic == pytest.approx(ref.statistic) and t.statistic == pytest.approx(ref.statistic)
    assert dm.p_value == pytest.approx(ref.pvalue) and t.p_value == pytest.approx(ref.pvalue)
    assert dm.n == 40 and dm.significant == (ref.pvalue < 0.05)


def test_dm_with_lags_uses_newey_west_and_hln() -> None:
    rng = np.random.default_rng(3)
    e = rng.normal(0, 1, 200)
    d = np.convolve(e, [1.0, 0.8, 0.6], mode="valid") * 1e-3 + 2e-4  # MA(2): autocorrelated
    n, lags, h = d.size, 2, 3
    dm = paired_test(d, np.zeros(n), method="diebold_mariano", alpha=0.05, power=0.8, lags=lags)
    x = d - d.mean()
    gam = [float(np.sum(x[k:] * x[: n - k])) / n for k in range(lags + 1)]
    lrv = gam[0] + 2 * sum((1 - k / (lags + 1)) * gam[k] for k in (1, 2))
    expected = d.mean() / math.sqrt(lrv / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    assert dm.statistic == pytest.approx(expected)
    assert dm.p_value == pytest.approx(2 * stats.t.sf(abs(expected), n - 1))
    # Positive autocorrelation inflates the long-run variance: a plain t test is over-confident.
    assert dm.p_value > paired_test(d, np.zeros(n), method="paired_t", alpha=0.05, power=0.8).p_value


def test_needed_sample_size_textbook_value() -> None:
    # effect/sigma = 0.5 at alpha 5 % two-sided, power 80 %: n = ((1.96 + 0.8416) / 0.5)^2 = 31.4 -> 32
    d = np.array([1.0, 0.0] * 10) * 1.0
    sigma = d.std(ddof=1)
    a = d - d.mean() + 0.5 * sigma  # mean difference exactly half a standard deviation
    res = paired_test(a, np.zeros_like(a), method="paired_t", alpha=0.05, power=0.8)
    assert res.mean_diff == pytest.approx(0.5 * sigma)
    assert res.needed_sessions == 32


def test_degenerate_paired_inputs() -> None:
    same = paired_test(np.ones(5), np.ones(5), method="diebold_mariano", alpha=0.05, power=0.8)
    assert same.p_value == 1.0 and same.needed_sessions is None and not same.significant
    shifted = paired_test(np.ones(5) * 2, np.ones(5), method="paired_t", alpha=0.05, power=0.8)
    assert shifted.p_value == 0.0 and shifted.statistic == math.inf
    with pytest.raises(ValueError, match="at least 2"):
        paired_test(np.ones(1), np.ones(1), alpha=0.05, power=0.8)
    with pytest.raises(ValueError, match="paired"):
        paired_test(np.ones(3), np.ones(4), alpha=0.05, power=0.8)


def test_shadow_ab_pairs_on_common_sessions_against_the_production_book() -> None:
    sessions = [date(2024, 3, 4) + timedelta(days=i) for i in range(6)]
    rows = []
    for i, d in enumerate(sessions):
        # production changes model mid-way: the book is what was production each day
        rows.append({"model_id": "p1" if i < 3 else "p2", "role": "production", "session_date": d, "pnl": 0.001 * (i % 2)})
        if i > 0:  # the challenger starts a day later
            rows.append({"model_id": "c", "role": "shadow", "session_date": d, "pnl": 0.001 * (i % 2) + 0.002 + 1e-4 * i})
    per_session = pl.DataFrame(rows)
    (cmp_,) = shadow_ab_comparisons(per_session, method="paired_t", alpha=0.05, power=0.8, lags=0, min_sessions=3)
    assert cmp_.challenger_model_id == "c" and cmp_.sessions == 5 and cmp_.first_session == sessions[1]
    assert cmp_.test is not None and cmp_.test.mean_diff == pytest.approx(0.002 + 1e-4 * 3)
    assert cmp_.test.significant and "outperforms" in cmp_.verdict
    (few,) = shadow_ab_comparisons(per_session, method="paired_t", alpha=0.05, power=0.8, lags=0, min_sessions=10)
    assert few.test is None and "needed for a test" in few.verdict


def test_per_model_costs_and_missing_cost_is_an_error() -> None:
    bars = _bars(D1, [100.0, 100.0, 100.0])
    sig = _signals([("a", "production", D1, 0, 2), ("b", "shadow", D1, 0, 0)])
    r = realized_pnl(sig, bars, cost_bps={"a": 10.0, "b": 30.0}, timezone=TZ)
    costs = dict(zip(r.per_signal["model_id"], r.per_signal["cost"]))
    assert costs == {"a": pytest.approx(10e-4), "b": pytest.approx(30e-4)}
    with pytest.raises(ValueError, match=r"no cost_bps for model\(s\) \['b'\]"):
        realized_pnl(sig, bars, cost_bps={"a": 10.0}, timezone=TZ)
