"""core.backtest against vectorbt 0.28 (from_signals, size=inf, fees) on the same positions.

Marked slow: importing vectorbt and compiling its numba kernels takes several seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from usdcop_platform.core import backtest as B
from usdcop_platform.core.metrics import Annualization

pytestmark = pytest.mark.slow


def vectorbt_portfolio(close: np.ndarray, positions: np.ndarray, cost_bps: float, capital: float):
    import pandas as pd
    import vectorbt as vbt

    from usdcop_platform.bench.backtest import signals_from_positions

    le, lx, se, sx = signals_from_positions(positions)
    return vbt.Portfolio.from_signals(
        pd.Series(close), entries=le, exits=lx, short_entries=se, short_exits=sx,
        size=np.inf, fees=cost_bps * 1e-4, init_cash=capital, freq="5min",
    )


@pytest.mark.parametrize(("seed", "cost_bps", "p_change"), [(0, 75.0, 0.01), (1, 2.0, 0.05), (2, 0.0, 0.3), (3, 25.0, 0.002)])
def test_equity_trades_and_fees_agree_with_vectorbt(seed: int, cost_bps: float, p_change: float) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 6e-4, n)))
    change = rng.random(n) < p_change
    pos = rng.integers(-1, 2, n)[np.maximum.accumulate(np.where(change, np.arange(n), 0))].astype(np.int8)
    r = B.backtest(close, pos, np.arange(n) // 60, cost_bps=cost_bps, initial_capital=1e5,
                   annualization=Annualization(14_700.0, 245.0), confidence=0.95)
    pf = vectorbt_portfolio(close, r.position, cost_bps, 1e5)
    np.testing.assert_allclose(pf.value().to_numpy(), r.equity, rtol=1e-10)
    assert pf.final_value() == pytest.approx(r.metrics["final_equity"], rel=1e-12)
    trades = pf.trades
    assert int(trades.count()) == r.metrics["trades"]
    assert float(trades.win_rate()) == pytest.approx(r.metrics["win_rate"])
    assert float(pf.orders.fees.sum()) == pytest.approx(r.metrics["total_costs"], rel=1e-9)
    np.testing.assert_allclose(np.sort(trades.pnl.values), np.sort(r.trades.net_pnl), rtol=1e-9, atol=1e-6)
