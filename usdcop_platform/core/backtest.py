"""Vectorized backtest of a position series: equity, drawdown, returns, trades and metrics.

Accounting (mark to market every bar; the same as vectorbt `from_signals(size=inf)` with `fees`):

- p_t in {-1, 0, +1} (core.actions) is the position chosen at bar t, held from close C_t to
  C_{t+1}. The test ends flat: p is forced to 0 at the last bar (its forward return is unknown),
  so the final equity is cash.
- A trade is a maximal run of equal non-zero p (a flip closes one trade and opens the next at
  the same close). With c = cost_bps * 1e-4 and E_i the equity just before entering at bar i,
  the entry invests all of it: notional N = E_i / (1 + c), so notional + entry fee c N = E_i.
- While the trade is open (i <= t < j) equity is E_t = N * (1 + p * (C_t / C_i - 1)); at the exit
  bar j the exit fee c * N * C_j / C_i is paid, so the trade multiplies equity by

      G = (1 + p * (C_j / C_i - 1) - c * C_j / C_i) / (1 + c).

- Equity before each segment is E_0 * prod(G of earlier trades), so the whole equity curve is
  two cumulative products and a few gathers: no Python loop over bars.

Per-bar returns r_t = E_t / E_{t-1} - 1 (E_{-1} = initial capital) feed Sharpe/Sortino/PSR/DSR;
per-session returns compound the bars of a session. Statistics: core.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.contracts.base import content_hash, sha256_hex
from usdcop_platform.core.actions import ACTION_POSITIONS
from usdcop_platform.core.env import BPS
from usdcop_platform.core.metrics import (
    Annualization,
    BootstrapInterval,
    annual_return,
    block_bootstrap_sharpe_difference,
    certifiable_sharpe,
    deflated_sharpe_ratio,
    drawdown_series,
    min_track_record_length,
    moments,
    probabilistic_sharpe_ratio,
    profit_factor,
    sortino_ratio,
    trial_sharpe_variance,
)

VALID_POSITIONS = frozenset(int(p) for p in ACTION_POSITIONS)


class BacktestInputError(ValueError):
    """The inputs of a backtest are unusable (NaN price, bad position, misaligned arrays)."""


def _bar_label(i: int, times: np.ndarray | None) -> str:
    if times is None:
        return f"bar {i}"
    t = np.asarray(times)
    if np.issubdtype(t.dtype, np.datetime64):
        return f"bar {i} ({np.datetime_as_string(t[i], unit='s')} UTC)"
    return f"bar {i} ({t[i]})"


def check_prices(close: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
    """Close prices as float64; a NaN, infinite or non-positive price raises, naming the bar."""
    c = np.asarray(close, dtype=np.float64)
    bad = ~np.isfinite(c)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "NaN" if np.isnan(c[i]) else "infinite"
        raise BacktestInputError(
            f"close price is {kind} at {_bar_label(i, times)}; {int(bad.sum())} bar(s) affected: "
            "repair or drop them before backtesting"
        )
    nonpos = c <= 0
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        raise BacktestInputError(f"close price {c[i]!r} <= 0 at {_bar_label(i, times)}")
    return c


def validate_inputs(
    close: np.ndarray,
    positions: np.ndarray,
    sessions: np.ndarray,
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and normalize the arrays; errors name the first offending bar."""
    c = np.asarray(close, dtype=np.float64)
    p_raw = np.asarray(positions)
    s = np.asarray(sessions)
    if c.ndim != 1 or p_raw.shape != c.shape or s.shape != c.shape:
        raise BacktestInputError(
            f"close, positions and sessions must be 1-D and aligned; got {c.shape}, {p_raw.shape}, {s.shape}"
        )
    if times is not None and np.asarray(times).shape != c.shape:
        raise BacktestInputError(f"times must align with close; got {np.asarray(times).shape} vs {c.shape}")
    if c.size < 2:
        raise BacktestInputError(f"a backtest needs at least 2 bars; got {c.size}")
    check_prices(c, times)
    if p_raw.dtype.kind == "f" and not np.isfinite(p_raw).all():
        i = int(np.flatnonzero(~np.isfinite(p_raw))[0])
        raise BacktestInputError(f"position is not finite at {_bar_label(i, times)}")
    p = p_raw.astype(np.int8)
    bad_p = (p != p_raw) | (np.abs(p) > 1)
    if bad_p.any():
        i = int(np.flatnonzero(bad_p)[0])
        raise BacktestInputError(f"position {p_raw[i].item()!r} at {_bar_label(i, times)} is not one of -1, 0, +1")
    if s.size > 1 and (s[1:] < s[:-1]).any():
        i = int(np.flatnonzero(s[1:] < s[:-1])[0]) + 1
        raise BacktestInputError(f"sessions go backwards at {_bar_label(i, times)}: rows must be in time order")
    return c, p, s


# ---- simulation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trades:
    """One row per trade (entry to exit or flip), as aligned arrays."""

    entry_index: np.ndarray
    exit_index: np.ndarray
    side: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    notional: np.ndarray
    entry_cost: np.ndarray
    exit_cost: np.ndarray
    gross_pnl: np.ndarray
    net_pnl: np.ndarray
    trade_return: np.ndarray

    @property
    def count(self) -> int:
        return int(self.entry_index.size)

    @property
    def bars_held(self) -> np.ndarray:
        return self.exit_index - self.entry_index

    @property
    def costs(self) -> np.ndarray:
        return self.entry_cost + self.exit_cost

    def to_frame(self, times: np.ndarray | None = None) -> pl.DataFrame:
        data: dict[str, Any] = {
            "entry_index": self.entry_index.astype(np.int64),
            "exit_index": self.exit_index.astype(np.int64),
        }
        if times is not None:
            t = np.asarray(times)
            data["entry_time"] = t[self.entry_index]
            data["exit_time"] = t[self.exit_index]
        data.update(
            side=self.side.astype(np.int8),
            entry_price=self.entry_price,
            exit_price=self.exit_price,
            bars_held=self.bars_held.astype(np.int64),
            notional=self.notional,
            costs=self.costs,
            gross_pnl=self.gross_pnl,
            net_pnl=self.net_pnl,
            trade_return=self.trade_return,
        )
        df = pl.DataFrame(data)
        for col in ("entry_time", "exit_time"):
            if col in df.columns and df.schema[col] == pl.Datetime("us"):
                df = df.with_columns(pl.col(col).dt.replace_time_zone("UTC"))
        return df


@dataclass(frozen=True)
class Simulation:
    position: np.ndarray  # effective positions (last bar forced flat), int8
    equity: np.ndarray
    trades: Trades
    segment_positions: np.ndarray  # position of each run of equal positions, in order (float)


def simulate(close: np.ndarray, positions: np.ndarray, cost_bps: float, initial_capital: float) -> Simulation:
    """Equity curve and trades of validated inputs (see the module docstring for the maths)."""
    c = cost_bps * BPS
    n = close.size
    p = positions.astype(np.int8, copy=True)
    p[-1] = 0
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(p[1:], p[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    seg_p = p[starts].astype(np.float64)
    seg_exit = np.empty_like(starts)
    seg_exit[:-1] = starts[1:]
    seg_exit[-1] = n - 1  # the last segment is flat (p[-1] = 0): its exit is irrelevant
    entry_price = close[starts]
    ratio = close[seg_exit] / entry_price
    active = seg_p != 0
    growth = np.where(active, (1.0 + seg_p * (ratio - 1.0) - c * ratio) / (1.0 + c), 1.0)
    seg_equity = np.empty(starts.size)
    seg_equity[0] = initial_capital
    if starts.size > 1:
        np.cumprod(growth[:-1], out=seg_equity[1:])
        seg_equity[1:] *= initial_capital

    # Inside segment k, E_t = a_k + b_k * C_t: a_k = E_k (1 - p_k) / (1 + c), b_k = E_k p_k / ((1 + c) C_i)
    # (a flat segment: a_k = E_k, b_k = 0). Expanding (a, b) per bar with np.repeat writes sequentially,
    # much faster than gathering by segment id on long series.
    scale = np.where(active, seg_equity / (1.0 + c), seg_equity)
    a = scale * (1.0 - seg_p)
    b = scale * seg_p / entry_price
    lengths = np.diff(np.append(starts, n))
    equity = np.repeat(b, lengths)
    np.multiply(equity, close, out=equity)
    equity += np.repeat(a, lengths)

    k = np.flatnonzero(active)
    e_in = seg_equity[k]
    notional = e_in / (1.0 + c)
    side = seg_p[k]
    r = ratio[k]
    entry_cost = c * notional
    exit_cost = c * notional * r
    gross = side * notional * (r - 1.0)
    trades = Trades(
        entry_index=starts[k],
        exit_index=seg_exit[k],
        side=side.astype(np.int8),
        entry_price=entry_price[k],
        exit_price=close[seg_exit[k]],
        notional=notional,
        entry_cost=entry_cost,
        exit_cost=exit_cost,
        gross_pnl=gross,
        net_pnl=gross - entry_cost - exit_cost,
        trade_return=growth[k] - 1.0,
    )
    return Simulation(position=p, equity=equity, trades=trades, segment_positions=seg_p)


# ---- result -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BacktestResult:
    close: np.ndarray
    position: np.ndarray
    equity: np.ndarray
    drawdown: np.ndarray
    bar_return: np.ndarray
    sessions: np.ndarray
    session_end_index: np.ndarray
    session_returns: np.ndarray
    trades: Trades
    metrics: dict[str, Any]
    cost_bps: float
    initial_capital: float
    times: np.ndarray | None = None

    @property
    def n_bars(self) -> int:
        return int(self.close.size)

    def series_frame(self) -> pl.DataFrame:
        """time, session, close, position, equity, drawdown, bar_return (one row per bar)."""
        data: dict[str, Any] = {}
        if self.times is not None:
            data["time"] = self.times
        data.update(
            session=self.sessions,
            close=self.close,
            position=self.position,
            equity=self.equity,
            drawdown=self.drawdown,
            bar_return=self.bar_return,
        )
        df = pl.DataFrame(data)
        if "time" in df.columns and df.schema["time"] == pl.Datetime("us"):
            df = df.with_columns(pl.col("time").dt.replace_time_zone("UTC"))
        return df

    def trades_frame(self) -> pl.DataFrame:
        return self.trades.to_frame(self.times)

    def fingerprint(self) -> str:
        """Content hash of the inputs and accounting parameters (identical inputs, identical hash)."""
        parts = {
            "close": sha256_hex(np.ascontiguousarray(self.close).tobytes()),
            "position": sha256_hex(np.ascontiguousarray(self.position).tobytes()),
            "sessions": sha256_hex(np.ascontiguousarray(self.sessions).tobytes()),
            "times": None if self.times is None else sha256_hex(np.ascontiguousarray(self.times).tobytes()),
            "cost_bps": self.cost_bps,
            "initial_capital": self.initial_capital,
        }
        return content_hash(parts)


def _as_times(times: np.ndarray | None) -> np.ndarray | None:
    """Bar instants as datetime64[us] (UTC by convention) when they are datetimes."""
    if times is None:
        return None
    t = np.asarray(times)
    return t.astype("datetime64[us]") if np.issubdtype(t.dtype, np.datetime64) else t


def _session_ends(sessions: np.ndarray) -> np.ndarray:
    n = sessions.size
    change = np.flatnonzero(sessions[1:] != sessions[:-1])
    return np.concatenate([change, [n - 1]])


def backtest(
    close: np.ndarray,
    positions: np.ndarray,
    sessions: np.ndarray,
    *,
    cost_bps: float,
    initial_capital: float,
    annualization: Annualization,
    confidence: float,
    times: np.ndarray | None = None,
    n_trials: int = 1,
    trial_sharpes: np.ndarray | None = None,
) -> BacktestResult:
    """Backtest a position series and compute every metric of REFERENCE.md.

    Metrics (fractions, not percent; Sharpe-type ratios annualized from the calendar):
    n_bars, n_sessions, years, final_equity, total_return, annual_return, sharpe (per-bar),
    session_sharpe, sortino, volatility, max_drawdown, turnover (sum |dp|),
    turnover_per_session, exposure (share of bars with a position), trades, win_rate,
    profit_factor, avg_trade (currency), avg_trade_return, avg_bars_held, total_costs, skew,
    kurtosis, psr (PSR(0)), dsr (+ sr0_annual, n_trials), min_track_record_bars/_years
    (at `confidence`), certifiable_sharpe (smallest annual Sharpe this length can certify).
    """
    c, p, s = validate_inputs(close, positions, sessions, times)
    if cost_bps < 0 or initial_capital <= 0:
        raise BacktestInputError(f"cost_bps must be >= 0 and initial_capital > 0; got {cost_bps}, {initial_capital}")
    sim = simulate(c, p, cost_bps, initial_capital)
    equity = sim.equity
    bar_ret = np.empty_like(equity)
    bar_ret[0] = equity[0] / initial_capital
    np.divide(equity[1:], equity[:-1], out=bar_ret[1:])
    bar_ret -= 1.0
    dd = drawdown_series(equity, initial_capital)
    ends = _session_ends(s)
    e_end = equity[ends]
    s_prev = np.empty_like(e_end)
    s_prev[0] = initial_capital
    s_prev[1:] = e_end[:-1]
    session_ret = e_end / s_prev - 1.0

    metrics = compute_metrics(
        bar_ret, session_ret, sim, dd, cost_bps, initial_capital, annualization, confidence, n_trials, trial_sharpes
    )
    return BacktestResult(
        close=c,
        position=sim.position,
        equity=equity,
        drawdown=dd,
        bar_return=bar_ret,
        sessions=s,
        session_end_index=ends,
        session_returns=session_ret,
        trades=sim.trades,
        metrics=metrics,
        cost_bps=float(cost_bps),
        initial_capital=float(initial_capital),
        times=_as_times(times),
    )


def compute_metrics(
    bar_ret: np.ndarray,
    session_ret: np.ndarray,
    sim: Simulation,
    drawdown: np.ndarray,
    cost_bps: float,
    initial_capital: float,
    ann: Annualization,
    confidence: float,
    n_trials: int,
    trial_sharpes: np.ndarray | None,
) -> dict[str, Any]:
    n = int(bar_ret.size)
    p = sim.position
    trades = sim.trades
    mom = moments(bar_ret)
    sr = mom.sharpe
    s_mom = moments(session_ret)
    final = float(sim.equity[-1])
    total = final / initial_capital - 1.0
    turnover = float(np.abs(np.diff(sim.segment_positions, prepend=0.0)).sum())  # |dp| only where p changes
    n_sessions = int(session_ret.size)
    pnl = trades.net_pnl
    n_tr = trades.count
    dsr, sr0 = deflated_sharpe_ratio(sr, n, mom.skew, mom.kurtosis, n_trials, trial_sharpes)
    trial_v, trial_v_source = trial_sharpe_variance(n, trial_sharpes)
    mintrl = min_track_record_length(sr, mom.skew, mom.kurtosis, confidence)
    return {
        "n_bars": n,
        "n_sessions": n_sessions,
        "years": n / ann.bars_per_year,
        "cost_bps": float(cost_bps),
        "initial_capital": float(initial_capital),
        "final_equity": final,
        "total_return": total,
        "annual_return": annual_return(total, n, ann.bars_per_year),
        "sharpe": sr * ann.bar_factor,
        "session_sharpe": s_mom.sharpe * ann.session_factor if n_sessions > 1 else 0.0,
        "sortino": sortino_ratio(bar_ret, ann.bars_per_year),
        "volatility": mom.std * ann.bar_factor,
        "max_drawdown": float(-drawdown.min()),
        "turnover": turnover,
        "turnover_per_session": turnover / n_sessions,
        "exposure": float(np.count_nonzero(p)) / n,
        "trades": n_tr,
        "win_rate": float((pnl > 0).mean()) if n_tr else 0.0,
        "profit_factor": profit_factor(pnl),
        "avg_trade": float(pnl.mean()) if n_tr else 0.0,
        "avg_trade_return": float(trades.trade_return.mean()) if n_tr else 0.0,
        "avg_bars_held": float(trades.bars_held.mean()) if n_tr else 0.0,
        "total_costs": float(trades.costs.sum()),
        "skew": mom.skew,
        "kurtosis": mom.kurtosis,
        "psr": probabilistic_sharpe_ratio(sr, n, mom.skew, mom.kurtosis),
        "dsr": dsr,
        "sr0_annual": sr0 * ann.bar_factor,
        "n_trials": int(n_trials),
        # V of the DSR, per bar and annualized (x bars per year), and where it came from
        "trial_sharpe_variance": trial_v,
        "trial_sharpe_variance_annual": trial_v * ann.bars_per_year,
        "trial_variance_source": trial_v_source,
        "confidence_level": confidence,
        "min_track_record_bars": mintrl,
        "min_track_record_years": mintrl / ann.bars_per_year,
        "certifiable_sharpe": certifiable_sharpe(n, confidence, mom.skew, mom.kurtosis) * ann.bar_factor,
    }


# ---- benchmarks, sweeps, folds, the full evaluation ---------------------------------------------
def buy_and_hold_positions(n: int) -> np.ndarray:
    """Long from the first bar; the backtest closes it at the last bar."""
    return np.ones(n, dtype=np.int8)


SWEEP_KEYS = ("sharpe", "total_return", "annual_return", "max_drawdown", "final_equity", "total_costs")


def cost_sweep(
    close: np.ndarray,
    positions: np.ndarray,
    sessions: np.ndarray,
    costs_bps: tuple[float, ...] | list[float],
    *,
    initial_capital: float,
    annualization: Annualization,
    confidence: float,
) -> list[dict[str, Any]]:
    """The same positions re-costed at each cost level (the decisions are not re-optimized)."""
    out = []
    for cost in costs_bps:
        m = backtest(
            close, positions, sessions, cost_bps=float(cost), initial_capital=initial_capital,
            annualization=annualization, confidence=confidence,
        ).metrics
        out.append({"cost_bps": float(cost), **{k: m[k] for k in SWEEP_KEYS}})
    return out


def session_folds(sessions: np.ndarray, n_folds: int) -> list[tuple[int, int]]:
    """Split bars into n_folds contiguous [start, stop) ranges of whole sessions, as equal in
    session count as possible."""
    s = np.asarray(sessions)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    n_sessions = starts.size
    if n_folds < 1 or n_folds > n_sessions:
        raise BacktestInputError(f"walk-forward needs 1 <= folds <= sessions ({n_sessions}); got {n_folds}")
    bounds = np.r_[starts, s.size]
    cut = np.linspace(0, n_sessions, n_folds + 1).round().astype(int)
    return [(int(bounds[cut[i]]), int(bounds[cut[i + 1]])) for i in range(n_folds)]


FOLD_KEYS = ("n_bars", "n_sessions", "sharpe", "sortino", "total_return", "max_drawdown", "trades", "win_rate", "psr")


def walk_forward(
    close: np.ndarray,
    positions: np.ndarray,
    sessions: np.ndarray,
    n_folds: int,
    *,
    cost_bps: float,
    initial_capital: float,
    annualization: Annualization,
    confidence: float,
    times: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-fold metrics on contiguous session blocks of an out-of-sample period (each fold a
    fresh account, so folds are comparable), and their aggregate: mean/median/min/std Sharpe,
    share of folds with positive Sharpe, mean return, worst drawdown."""
    folds = []
    for i, (a, b) in enumerate(session_folds(sessions, n_folds)):
        if b - a < 2:
            raise BacktestInputError(f"walk-forward fold {i} has {b - a} bar(s); use fewer folds")
        r = backtest(
            close[a:b], positions[a:b], sessions[a:b], cost_bps=cost_bps, initial_capital=initial_capital,
            annualization=annualization, confidence=confidence, times=None if times is None else times[a:b],
        )
        fold = {"fold": i, "start_index": a, "stop_index": b, **{k: r.metrics[k] for k in FOLD_KEYS}}
        if times is not None:
            fold["start_time"] = str(np.asarray(times)[a])
            fold["end_time"] = str(np.asarray(times)[b - 1])
        folds.append(fold)
    sharpes = np.array([f["sharpe"] for f in folds])
    aggregate = {
        "folds": n_folds,
        "sharpe_mean": float(sharpes.mean()),
        "sharpe_median": float(np.median(sharpes)),
        "sharpe_min": float(sharpes.min()),
        "sharpe_std": float(sharpes.std(ddof=1)) if n_folds > 1 else 0.0,
        "positive_share": float((sharpes > 0).mean()),
        "total_return_mean": float(np.mean([f["total_return"] for f in folds])),
        "max_drawdown_worst": float(max(f["max_drawdown"] for f in folds)),
    }
    return {"folds": folds, "aggregate": aggregate}


@dataclass(frozen=True)
class Evaluation:
    """A candidate's backtest beside its benchmarks on the same bars."""

    candidate: BacktestResult
    buy_and_hold: BacktestResult
    flat: dict[str, Any]
    baseline: BacktestResult | None
    cost_sweep: list[dict[str, Any]]
    bootstrap: dict[str, BootstrapInterval]
    walk_forward: dict[str, Any] | None = None

    def comparison(self) -> dict[str, Any]:
        """Candidate minus each benchmark for the headline metrics."""
        keys = ("sharpe", "sortino", "total_return", "annual_return", "max_drawdown", "win_rate", "trades")
        out: dict[str, Any] = {}
        refs: dict[str, dict[str, Any]] = {"flat": self.flat, "buy_and_hold": self.buy_and_hold.metrics}
        if self.baseline is not None:
            refs["baseline"] = self.baseline.metrics
        for name, ref in refs.items():
            out[name] = {
                k: {"candidate": self.candidate.metrics[k], "benchmark": ref[k], "delta": self.candidate.metrics[k] - ref[k]}
                for k in keys
            }
        return out

    def summary(self) -> dict[str, Any]:
        """Everything a report needs except the per-bar series (plain dicts and lists)."""
        return {
            "metrics": self.candidate.metrics,
            "benchmarks": {
                "flat": self.flat,
                "buy_and_hold": self.buy_and_hold.metrics,
                "baseline": None if self.baseline is None else self.baseline.metrics,
            },
            "comparison": self.comparison(),
            "cost_sweep": self.cost_sweep,
            "bootstrap": {k: v.as_dict() for k, v in self.bootstrap.items()},
            "walk_forward": self.walk_forward,
        }

    def series_frame(self) -> pl.DataFrame:
        """Per-bar series of the candidate plus benchmark columns (baseline columns null when
        there is no production baseline)."""
        df = self.candidate.series_frame().with_columns(
            pl.Series("buy_hold_equity", self.buy_and_hold.equity),
        )
        n = self.candidate.n_bars
        if self.baseline is not None:
            base_pos = pl.Series("baseline_position", self.baseline.position)
            base_eq = pl.Series("baseline_equity", self.baseline.equity)
            base_dd = pl.Series("baseline_drawdown", self.baseline.drawdown)
        else:
            base_pos = pl.Series("baseline_position", [None] * n, dtype=pl.Int8)
            base_eq = pl.Series("baseline_equity", [None] * n, dtype=pl.Float64)
            base_dd = pl.Series("baseline_drawdown", [None] * n, dtype=pl.Float64)
        return df.with_columns(base_pos, base_eq, base_dd)


def flat_metrics(n_bars: int, n_sessions: int, initial_capital: float, annualization: Annualization) -> dict[str, Any]:
    """The flat benchmark: no position, no cost, equity constant."""
    return {
        "n_bars": n_bars, "n_sessions": n_sessions, "years": n_bars / annualization.bars_per_year,
        "final_equity": initial_capital, "total_return": 0.0, "annual_return": 0.0, "sharpe": 0.0,
        "sortino": 0.0, "max_drawdown": 0.0, "win_rate": 0.0, "trades": 0, "exposure": 0.0, "turnover": 0.0,
    }


def evaluate(
    close: np.ndarray,
    positions: np.ndarray,
    sessions: np.ndarray,
    *,
    cost_bps: float,
    initial_capital: float,
    annualization: Annualization,
    confidence: float,
    cost_sweep_bps: tuple[float, ...] | list[float] = (),
    bootstrap_block_bars: int,
    bootstrap_samples: int,
    bootstrap_seed: int,
    times: np.ndarray | None = None,
    baseline_positions: np.ndarray | None = None,
    n_trials: int = 1,
    trial_sharpes: np.ndarray | None = None,
    walk_forward_folds: int = 0,
) -> Evaluation:
    """Backtest the candidate, the benchmarks (flat, buy-and-hold, the production baseline when
    given) on the same bars and costs, the cost sweep, the block-bootstrap intervals of the
    Sharpe difference against buy-and-hold and the baseline, and walk-forward folds."""
    common = dict(cost_bps=cost_bps, initial_capital=initial_capital, annualization=annualization, confidence=confidence)
    cand = backtest(close, positions, sessions, times=times, n_trials=n_trials, trial_sharpes=trial_sharpes, **common)
    n = cand.n_bars
    bh = backtest(cand.close, buy_and_hold_positions(n), cand.sessions, times=times, **common)
    base = None
    if baseline_positions is not None:
        base = backtest(cand.close, baseline_positions, cand.sessions, times=times, **common)
    boot_kw = dict(block=bootstrap_block_bars, samples=bootstrap_samples, confidence=confidence, seed=bootstrap_seed)
    boots = {"buy_and_hold": block_bootstrap_sharpe_difference(cand.bar_return, bh.bar_return, annualization.bars_per_year, **boot_kw)}
    if base is not None:
        boots["baseline"] = block_bootstrap_sharpe_difference(cand.bar_return, base.bar_return, annualization.bars_per_year, **boot_kw)
    sweep = cost_sweep(
        cand.close, cand.position, cand.sessions, cost_sweep_bps,
        initial_capital=initial_capital, annualization=annualization, confidence=confidence,
    ) if cost_sweep_bps else []
    wf = walk_forward(cand.close, cand.position, cand.sessions, walk_forward_folds, times=times, **common) if walk_forward_folds else None
    return Evaluation(
        candidate=cand,
        buy_and_hold=bh,
        flat=flat_metrics(n, cand.metrics["n_sessions"], initial_capital, annualization),
        baseline=base,
        cost_sweep=sweep,
        bootstrap=boots,
        walk_forward=wf,
    )
