"""The live decision rule replayed over historical bars, and its PnL with a realistic fill.

`run_live_rule` does, bar by bar, exactly what app/live_cycle.LiveCycle.compute does with a
one-model ensemble, without a store or a feature engine (the raw feature rows are given):

    probabilities = policy_step(raw_t, position held by the risk state coming into t)
    confidence    = core.inference.combine(weighted_average, [1.0], probabilities)
    requested     = HOLD on the session's last grid bar (flat_at_session_end), else the argmax
    decision, mid = core.risk.evaluate(state, ..., requested, confidence, t)
    state         = core.risk.apply_decision(mid, ..., decision, close_t, t)

so the confidence threshold, the sizing and every check of core/risk.py (the one implementation)
act as they do live, with the same state updates. Like live, the risk state books its trades at
the signal bar's close without costs: that is what the live checks (daily loss, drawdown, losing
streak) see, and what a replay of the live path must reproduce.

`live_rule_equity` then prices the held exposure (risk state position x position_size after each
bar) as an order would actually fill: a change of exposure decided at bar t fills at the open of
bar t + fill_delay_bars of the same session (live signals arrive seconds after t's close, so the
first price they can get is the next bar's open); when the session has no such bar the order fills
at the session's last close. Costs are core.backtest's model generalized to a fraction |q| of
equity: a trade of side s and size |q| entered at P_in, left at P_out (r = P_out / P_in) multiplies
equity by

    G = 1 - |q| + |q| (1 + s (r - 1) - c r) / (1 + c)

which at |q| = 1 and close fills is core.backtest.simulate's G exactly (tested). Open trades are
marked to market at every close; the run ends flat at the last close.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from usdcop_platform.contracts.mlops import RiskLimits, TradingHours
from usdcop_platform.core import risk as risk_core
from usdcop_platform.core.actions import HOLD, N_ACTIONS
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.env import BPS
from usdcop_platform.core.inference import combine
from usdcop_platform.core.metrics import Annualization, annual_return, drawdown_series, moments
from usdcop_platform.core.policy_runner import Normalizer, Policy, PolicyRunError, policy_step
from usdcop_platform.core.risk import RiskState

ENSEMBLE_METHOD = "weighted_average"  # a single model: the ensemble is the model itself
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class LiveRuleRun:
    """Per-bar outcome of the live rule (all arrays aligned with the input rows)."""

    raw_action: np.ndarray  # (n,) int8 the policy's argmax
    final_action: np.ndarray  # (n,) int8 after forced flat and the risk checks
    recommendation: np.ndarray  # (n,) float64 the signal row's position_recommendation (side x size)
    exposure: np.ndarray  # (n,) float64 held after the bar: risk state position x position_size
    probabilities: np.ndarray  # (n, 3) float32
    confidence: np.ndarray  # (n,) float64
    failed_check: tuple[str | None, ...]
    states: tuple[RiskState, ...]  # the risk state after each bar

    @property
    def book_equity(self) -> np.ndarray:
        """The risk state's equity after each bar (close-fill bookkeeping, as live)."""
        return np.array([s.equity for s in self.states], dtype=np.float64)

    def rejections(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.failed_check:
            if c is not None:
                out[c] = out.get(c, 0) + 1
        return out


def utc_instant(t: Any) -> datetime:
    """A bar time (datetime64 UTC by convention, or an aware datetime) as an aware UTC datetime."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise PolicyRunError(f"bar time {t!r} is naive; bars carry UTC instants")
        return t.astimezone(timezone.utc)
    us = int(np.datetime64(t, "us").astype(np.int64))
    return _EPOCH + timedelta(microseconds=us)


def session_end_bar(calendar: TradingCalendar, at: datetime) -> bool:
    """The live forced-flat bar: the last bar of the session grid (LiveCycle.force_flat)."""
    return calendar.bar_index(at) == calendar.bars_per_session - 1


def run_live_rule(
    policy: Policy,
    normalizer: Normalizer | None,
    raw_features: np.ndarray,
    times: Any,
    close: np.ndarray,
    *,
    limits: RiskLimits,
    hours: TradingHours,
    calendar: TradingCalendar,
    flat_at_session_end: bool,
    position_index: int,
    initial_state: RiskState | None = None,
) -> LiveRuleRun:
    """Replay the live cycle's decision over consecutive bars (see the module docstring)."""
    raw = np.asarray(raw_features, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    instants = [utc_instant(t) for t in (times if isinstance(times, list) else np.asarray(times))]
    n = raw.shape[0] if raw.ndim == 2 else -1
    if raw.ndim != 2 or c.shape != (n,) or len(instants) != n:
        raise PolicyRunError(f"raw features (n, d), close and times must align; got {raw.shape}, {c.shape}, {len(instants)}")
    if n == 0:
        raise PolicyRunError("no bars to run the live rule on")
    weights = np.ones(1, dtype=np.float64)
    state = initial_state if initial_state is not None else RiskState()
    raw_action = np.empty(n, dtype=np.int8)
    final = np.empty(n, dtype=np.int8)
    rec = np.empty(n, dtype=np.float64)
    exposure = np.empty(n, dtype=np.float64)
    probabilities = np.empty((n, N_ACTIONS), dtype=np.float32)
    confidence = np.empty(n, dtype=np.float64)
    failed: list[str | None] = []
    states: list[RiskState] = []
    for t in range(n):
        at = instants[t]
        flat = flat_at_session_end and session_end_bar(calendar, at)
        step = policy_step(policy, normalizer, raw[t], state.position, position_index=position_index, force_flat=flat)
        member = np.empty((1, 1, N_ACTIONS), dtype=np.float64)
        member[0, 0] = step.probabilities
        _probs, action, conf = combine(ENSEMBLE_METHOD, weights, member)
        requested = HOLD if flat else int(action[0])
        decision, mid = risk_core.evaluate(state, limits, hours, calendar, requested, float(conf[0]), at)
        state = risk_core.apply_decision(mid, limits, decision, float(c[t]), at)
        raw_action[t] = step.action
        final[t] = decision.final_action
        rec[t] = decision.target_position * decision.position_size
        exposure[t] = state.position * state.position_size
        probabilities[t] = step.probabilities
        confidence[t] = float(conf[0])
        failed.append(decision.failed_check)
        states.append(state)
    return LiveRuleRun(raw_action, final, rec, exposure, probabilities, confidence, tuple(failed), tuple(states))


def fill_prices(open_: np.ndarray, close: np.ndarray, sessions: np.ndarray, fill_delay_bars: int) -> np.ndarray:
    """Price at which an order decided at bar t fills: open[t + delay] when that bar is in t's
    session, else the session's last close (delay 0: the signal bar's own close)."""
    o = np.asarray(open_, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    s = np.asarray(sessions)
    n = c.size
    if fill_delay_bars < 0:
        raise ValueError(f"fill_delay_bars must be >= 0; got {fill_delay_bars}")
    if fill_delay_bars == 0:
        return c.copy()
    last = np.empty(n, dtype=np.int64)  # index of the last bar of each row's session
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    last[:] = np.repeat(ends, np.diff(np.append(-1, ends)))
    j = np.arange(n) + fill_delay_bars
    inside = j <= last
    return np.where(inside, o[np.minimum(j, n - 1)], c[last])


def fill_index(sessions: np.ndarray, fill_delay_bars: int) -> np.ndarray:
    """Bar at which an order decided at bar t has filled (by that bar's close its effect is marked)."""
    s = np.asarray(sessions)
    n = s.size
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    last = np.repeat(ends, np.diff(np.append(-1, ends)))
    return np.minimum(np.arange(n) + fill_delay_bars, last)


def live_rule_equity(
    open_: np.ndarray,
    close: np.ndarray,
    sessions: np.ndarray,
    exposure: np.ndarray,
    *,
    cost_bps: float,
    initial_capital: float,
    fill_delay_bars: int = 1,
) -> np.ndarray:
    """Equity at each bar's close of holding `exposure` (signed fraction of equity, decided at
    each bar) with the fill convention and cost model of the module docstring."""
    c_rate = cost_bps * BPS
    close_ = np.asarray(close, dtype=np.float64)
    q_all = np.asarray(exposure, dtype=np.float64)
    n = close_.size
    price = fill_prices(open_, close_, sessions, fill_delay_bars)
    at = fill_index(sessions, fill_delay_bars)
    # Orders by the bar they fill at, in decision order (with a delay, the session's last bar can
    # fill the previous bar's order at its open and its own at its close).
    target_at: dict[int, list[tuple[float, float]]] = {}
    prev = 0.0
    for t in range(n):
        q = 0.0 if t == n - 1 else float(q_all[t])  # the run ends flat at the last close
        if q != prev:
            fill_bar, fill_px = int(at[t]), float(price[t])
            if t == n - 1:
                fill_bar, fill_px = t, float(close_[t])
            target_at.setdefault(fill_bar, []).append((q, fill_px))
        prev = q
    equity = np.empty(n, dtype=np.float64)
    base = float(initial_capital)  # equity when the open trade was entered (or cash when flat)
    held, entry = 0.0, 0.0
    for k in range(n):
        for q, px in target_at.get(k, ()):
            if q != held:
                if held != 0.0:
                    base = base * _growth(held, px / entry, c_rate)
                held, entry = q, px
        equity[k] = base if held == 0.0 else base * _growth_open(held, close_[k] / entry, c_rate)
    return equity


def _growth(q: float, r: float, c: float) -> float:
    """Equity multiple of a closed trade of signed size q and price ratio r (exit fee paid)."""
    a = abs(q)
    s = 1.0 if q > 0 else -1.0
    return 1.0 - a + a * (1.0 + s * (r - 1.0) - c * r) / (1.0 + c)


def _growth_open(q: float, r: float, c: float) -> float:
    """Marked-to-market multiple of an open trade (entry fee paid, exit fee not yet)."""
    a = abs(q)
    s = 1.0 if q > 0 else -1.0
    return 1.0 - a + a * (1.0 + s * (r - 1.0)) / (1.0 + c)


def live_rule_metrics(
    run: LiveRuleRun,
    equity: np.ndarray,
    sessions: np.ndarray,
    *,
    initial_capital: float,
    annualization: Annualization,
    fill_delay_bars: int,
) -> dict[str, Any]:
    """The headline metrics of the live-rule column (same definitions as core.backtest's)."""
    e = np.asarray(equity, dtype=np.float64)
    s = np.asarray(sessions)
    bar_ret = np.diff(e, prepend=initial_capital) / np.concatenate([[initial_capital], e[:-1]])
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    e_end = e[ends]
    session_ret = e_end / np.concatenate([[initial_capital], e_end[:-1]]) - 1.0
    q = run.exposure
    entries = int(np.count_nonzero((q != 0) & (q != np.concatenate([[0.0], q[:-1]]))))
    total = float(e[-1] / initial_capital - 1.0)
    held = q[q != 0]
    return {
        "rule": "live: confidence threshold, risk sizing and checks (core/risk.py)",
        "fill": "signal close" if fill_delay_bars == 0 else f"open {fill_delay_bars} bar(s) after the signal",
        "fill_delay_bars": int(fill_delay_bars),
        "final_equity": float(e[-1]),
        "total_return": total,
        "annual_return": annual_return(total, int(e.size), annualization.bars_per_year),
        "sharpe": moments(bar_ret).sharpe * annualization.bar_factor,
        "session_sharpe": moments(session_ret).sharpe * annualization.session_factor if session_ret.size > 1 else 0.0,
        "max_drawdown": float(-drawdown_series(e, initial_capital).min()),
        "trades": entries,
        "exposure": float(np.count_nonzero(q)) / q.size,
        "mean_size": float(np.abs(held).mean()) if held.size else 0.0,
        "rejections": run.rejections(),
    }
