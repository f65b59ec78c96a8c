"""Realized (live) performance of stored signals, rolling statistics, and paired A/B tests.

Pure: polars/numpy/scipy in, frames and dataclasses out. The Dagster layer reads the signals
from the store and the bars from the lake and calls these functions.

Realized PnL (the environment's per-unit accounting, core.env / REFERENCE.md "Actions,
environment, reward"; additive per-unit returns, so it matches the compounding backtest to
first order):

    bars of a session, closes C_0 .. C_k (UTC, ascending); bar return r_i = C_{i+1} / C_i - 1
    position in force at bar i: p_i = target position of the newest signal with bar_time <= t_i
                                      of the same model and session (0 before the first signal)
    bar PnL   = p_i * r_i                          (r_k of the session's last bar is unknown: 0)
    signal j is in force over the bars until the next signal; its realized PnL is
        pnl_j = sum_{i in force} p_j * r_i - c * |p_j - p_{j-1}|     (p_{-1} = 0 at the open)
        plus  - c * |p_j| for the last signal of a session that has closed (flat at the close)
    c = cost_bps * BPS; session PnL = sum of its signals' pnl (additive per-unit returns).

A signal is *settled* once at least one bar return after it is known (or its session closed).

Rolling Sharpe and the degradation verdict use per-session PnL, annualized with the calendar's
sessions-per-year (core.metrics.Annualization); nothing here knows 252.

Paired test on daily PnL differences d_t = challenger_t - production_t, t = 1..n:

    paired t:  t = mean(d) / (s_d / sqrt(n)),  s_d with ddof = 1,  p = 2 (1 - T_{n-1}(|t|))
    Diebold-Mariano (1995) with the Harvey-Leybourne-Newbold (1997) small-sample correction:
        gamma_k = (1/n) sum_{t>k} (d_t - dbar)(d_{t-k} - dbar)
        LRV     = gamma_0 + 2 sum_{k=1..L} (1 - k/(L+1)) gamma_k      (Newey-West, L lags)
        DM      = dbar / sqrt(LRV / n)
        DM*     = DM * sqrt((n + 1 - 2h + h(h-1)/n) / n),  h = L + 1,  p from T_{n-1}
    With L = 0 the corrected DM statistic equals the paired t statistic.
    Sample size to detect the observed mean difference with power 1 - beta at two-sided alpha
    (normal approximation): n* = ceil(((z_{1-alpha/2} + z_{1-beta}) * sigma / |dbar|)^2),
    sigma = sqrt(LRV) (DM) or s_d (t); undefined (None) when dbar = 0.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
import polars as pl

from usdcop_platform.core.actions import ACTION_TO_POSITION
from usdcop_platform.core.calendar import session_expr
from usdcop_platform.core.env import BPS
from usdcop_platform.core.metrics import moments, probabilistic_sharpe_ratio, sharpe_ratio

SIGNAL_PNL_SCHEMA: dict[str, pl.DataType] = {
    "model_id": pl.Utf8(),
    "role": pl.Utf8(),
    "session_date": pl.Date(),
    "bar_time": pl.Datetime("us", "UTC"),
    "action": pl.Int64(),
    "position": pl.Int64(),
    "bars_held": pl.Int64(),
    "gross_return": pl.Float64(),
    "cost": pl.Float64(),
    "pnl": pl.Float64(),
    "settled": pl.Boolean(),
}

SESSION_PNL_SCHEMA: dict[str, pl.DataType] = {
    "model_id": pl.Utf8(),
    "role": pl.Utf8(),
    "session_date": pl.Date(),
    "n_signals": pl.Int64(),
    "n_settled": pl.Int64(),
    "position_changes": pl.Int64(),
    "pnl": pl.Float64(),
}


@dataclass(frozen=True)
class RealizedPnL:
    per_signal: pl.DataFrame  # SIGNAL_PNL_SCHEMA
    per_session: pl.DataFrame  # SESSION_PNL_SCHEMA


def realized_pnl(
    signals: pl.DataFrame,
    bars: pl.DataFrame,
    *,
    cost_bps: float | Mapping[str, float],
    timezone: str,
    closed_sessions: Collection[date] = (),
) -> RealizedPnL:
    """Join signals with the bars that followed them (module docstring for the accounting).

    signals: model_id, role, session_date, bar_time (UTC), action (0 SELL, 1 HOLD, 2 BUY).
    bars: time (UTC), close. Sessions of bars are their Bogota (instrument timezone) dates.
    cost_bps: one cost for every model, or per model id (each model's experiment cost); a model
    missing from the mapping is an error, never a silent zero cost.
    """
    if signals.is_empty():
        return RealizedPnL(pl.DataFrame(schema=SIGNAL_PNL_SCHEMA), pl.DataFrame(schema=SESSION_PNL_SCHEMA))
    if isinstance(cost_bps, Mapping):
        missing = sorted(set(signals["model_id"].unique().to_list()) - set(cost_bps))
        if missing:
            raise ValueError(f"no cost_bps for model(s) {missing}")
        c = pl.col("model_id").replace_strict({k: float(v) * BPS for k, v in cost_bps.items()}, return_dtype=pl.Float64)
    else:
        c = pl.lit(float(cost_bps) * BPS)
    sig = (
        signals.select(
            pl.col("model_id").cast(pl.Utf8),
            pl.col("role").cast(pl.Utf8),
            pl.col("session_date").cast(pl.Date),
            pl.col("bar_time").cast(pl.Datetime("us", "UTC")),
            pl.col("action").cast(pl.Int64),
        )
        .unique(subset=["model_id", "bar_time"], keep="last", maintain_order=True)
        .with_columns(
            # An action outside 0..2 raises here (never silently a position).
            position=pl.col("action").replace_strict(dict(enumerate(ACTION_TO_POSITION)), return_dtype=pl.Int64)
        )
        .sort("model_id", "session_date", "bar_time")
    )
    prev = pl.col("position").shift(1).over("model_id", "session_date").fill_null(0)
    is_last = pl.col("bar_time") == pl.col("bar_time").max().over("model_id", "session_date")
    closed = pl.col("session_date").is_in(pl.Series(list(closed_sessions), dtype=pl.Date))
    sig = sig.with_columns(
        cost=c * (pl.col("position") - prev).abs()
        + pl.when(is_last & closed).then(c * pl.col("position").abs()).otherwise(0.0),
        position_change=(pl.col("position") != prev),
    )

    b = (
        bars.select(pl.col("time").cast(pl.Datetime("us", "UTC")), pl.col("close").cast(pl.Float64))
        .unique(subset=["time"], keep="last")
        .sort("time")
        .with_columns(session_date=session_expr(timezone))
        .with_columns(ret=pl.col("close").shift(-1).over("session_date") / pl.col("close") - 1.0)
    )
    models = sig.select("model_id").unique()
    # Every bar of every model, tagged with the signal in force (newest signal at or before it).
    in_force = (
        b.join(models, how="cross")
        .sort("time")
        .join_asof(
            sig.select("model_id", "session_date", "bar_time", "position").sort("bar_time"),
            left_on="time",
            right_on="bar_time",
            by=["model_id", "session_date"],
            strategy="backward",
            check_sortedness=False,  # both sides are sorted by time above; groups make polars unsure
        )
        .filter(pl.col("bar_time").is_not_null())
    )
    attributed = in_force.group_by("model_id", "bar_time").agg(
        bars_held=pl.col("ret").is_not_null().sum().cast(pl.Int64),
        gross_return=(pl.col("position") * pl.col("ret")).fill_null(0.0).sum(),
    )
    per_signal = (
        sig.join(attributed, on=["model_id", "bar_time"], how="left")
        .with_columns(
            bars_held=pl.col("bars_held").fill_null(0),
            gross_return=pl.col("gross_return").fill_null(0.0),
        )
        .with_columns(
            pnl=pl.col("gross_return") - pl.col("cost"),
            settled=(pl.col("bars_held") > 0) | closed,
        )
    )
    per_session = (
        per_signal.group_by("model_id", "role", "session_date")
        .agg(
            n_signals=pl.len().cast(pl.Int64),
            n_settled=pl.col("settled").sum().cast(pl.Int64),
            position_changes=pl.col("position_change").sum().cast(pl.Int64),
            pnl=pl.col("pnl").sum(),
        )
        .sort("model_id", "role", "session_date")
    )
    return RealizedPnL(
        per_signal.select(list(SIGNAL_PNL_SCHEMA)).cast(SIGNAL_PNL_SCHEMA),
        per_session.select(list(SESSION_PNL_SCHEMA)).cast(SESSION_PNL_SCHEMA),
    )


# ---- rolling statistics ---------------------------------------------------------------------
def rolling_sharpe(returns: np.ndarray, window: int, periods_per_year: float, min_periods: int | None = None) -> np.ndarray:
    """Annualized Sharpe of the trailing `window` returns at each index (NaN before min_periods)."""
    r = np.asarray(returns, dtype=np.float64)
    need = window if min_periods is None else min_periods
    out = np.full(r.size, np.nan)
    for i in range(r.size):
        lo = max(0, i - window + 1)
        if i - lo + 1 >= need:
            out[i] = sharpe_ratio(r[lo : i + 1], periods_per_year)
    return out


def hit_rate(pnl: np.ndarray, positions: np.ndarray) -> float | None:
    """Share of settled signals holding a position (non-zero) whose realized PnL is > 0."""
    p = np.asarray(pnl, dtype=np.float64)
    active = np.asarray(positions) != 0
    if not active.any():
        return None
    return float((p[active] > 0).mean())


@dataclass(frozen=True)
class PerformanceSummary:
    """Realized performance of one model in one role over the lookback."""

    model_id: str
    role: str
    n_sessions: int
    n_signals: int
    total_pnl: float
    mean_session_pnl: float
    sharpe: float  # annualized, whole lookback
    rolling_sharpe: float | None  # annualized, trailing window (None before min_sessions)
    rolling_sessions: int
    hit_rate: float | None
    last_session: date | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["last_session"] = self.last_session.isoformat() if self.last_session else None
        return d


def summarize(
    realized: RealizedPnL,
    *,
    sessions_per_year: float,
    rolling_sessions: int,
    min_sessions: int,
) -> list[PerformanceSummary]:
    """One summary per (model_id, role), ordered production first, then by model id."""
    out: list[PerformanceSummary] = []
    sess = realized.per_session
    if sess.is_empty():
        return out
    settled = realized.per_signal.filter(pl.col("settled"))
    for (model_id, role), g in sess.sort("session_date").group_by(["model_id", "role"], maintain_order=True):
        r = g["pnl"].to_numpy()
        roll = rolling_sharpe(r, rolling_sessions, sessions_per_year, min_periods=min_sessions)
        sig = settled.filter((pl.col("model_id") == model_id) & (pl.col("role") == role))
        out.append(
            PerformanceSummary(
                model_id=str(model_id),
                role=str(role),
                n_sessions=g.height,
                n_signals=int(g["n_signals"].sum()),
                total_pnl=float(r.sum()),
                mean_session_pnl=float(r.mean()),
                sharpe=sharpe_ratio(r, sessions_per_year),
                rolling_sharpe=None if np.isnan(roll[-1]) else float(roll[-1]),
                rolling_sessions=min(rolling_sessions, g.height),
                hit_rate=hit_rate(sig["pnl"].to_numpy(), sig["position"].to_numpy()),
                last_session=g["session_date"].max(),
            )
        )
    out.sort(key=lambda s: (s.role != "production", s.model_id))
    return out


# ---- degradation vs the backtest expectation --------------------------------------------------
DegradationStatus = Literal["OK", "INSUFFICIENT_DATA", "NO_EXPECTATION", "WARN", "ROLLBACK"]


@dataclass(frozen=True)
class Degradation:
    """Realized rolling Sharpe against the Sharpe the backtest promised (both annualized).

    drop = expected - realized. WARN when drop > warn_drop, ROLLBACK when drop > rollback_drop
    (a rollback proposal is filed), once at least `min_sessions` sessions are realized.
    prob_at_least_expected = PSR(expected): probability, given the realized sessions, that the
    true Sharpe is at least the expected one (Bailey & Lopez de Prado; core.metrics).
    """

    status: DegradationStatus
    realized_sharpe: float | None
    expected_sharpe: float | None
    drop: float | None
    n_sessions: int
    prob_at_least_expected: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_degradation(
    session_pnl: np.ndarray,
    expected_sharpe: float | None,
    *,
    sessions_per_year: float,
    rolling_sessions: int,
    min_sessions: int,
    warn_drop: float,
    rollback_drop: float,
) -> Degradation:
    """Verdict on the trailing `rolling_sessions` session returns (see Degradation)."""
    r = np.asarray(session_pnl, dtype=np.float64)[-rolling_sessions:]
    n = int(r.size)
    if expected_sharpe is None or not math.isfinite(expected_sharpe):
        return Degradation("NO_EXPECTATION", None, None, None, n, None, "no backtest Sharpe recorded for the model")
    if n < min_sessions:
        return Degradation(
            "INSUFFICIENT_DATA", None, expected_sharpe, None, n, None,
            f"{n} realized sessions < {min_sessions} needed for a verdict",
        )
    realized = sharpe_ratio(r, sessions_per_year)
    drop = expected_sharpe - realized
    m = moments(r)
    scale = math.sqrt(sessions_per_year)
    psr = probabilistic_sharpe_ratio(m.sharpe, n, m.skew, m.kurtosis, expected_sharpe / scale)
    if drop > rollback_drop:
        status: DegradationStatus = "ROLLBACK"
        reason = f"realized Sharpe {realized:.2f} is {drop:.2f} below the backtest's {expected_sharpe:.2f} (> {rollback_drop})"
    elif drop > warn_drop:
        status = "WARN"
        reason = f"realized Sharpe {realized:.2f} is {drop:.2f} below the backtest's {expected_sharpe:.2f} (> {warn_drop})"
    else:
        status = "OK"
        reason = f"realized Sharpe {realized:.2f} vs backtest {expected_sharpe:.2f} (drop {drop:.2f} <= {warn_drop})"
    return Degradation(status, realized, expected_sharpe, drop, n, psr, reason)


# ---- paired A/B test -------------------------------------------------------------------------
TestMethod = Literal["diebold_mariano", "paired_t"]


@dataclass(frozen=True)
class PairedTestResult:
    method: TestMethod
    n: int
    mean_diff: float  # challenger - production, per session
    sd_diff: float  # sigma used by the test (sqrt(LRV) for DM, s_d for t)
    statistic: float
    p_value: float
    alpha: float
    power: float
    needed_sessions: int | None  # to detect mean_diff at (alpha, power); None when mean_diff = 0
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _newey_west_lrv(d: np.ndarray, lags: int) -> float:
    n = d.size
    e = d - d.mean()
    lrv = float(np.dot(e, e)) / n
    for k in range(1, min(lags, n - 1) + 1):
        gamma = float(np.dot(e[k:], e[:-k])) / n
        lrv += 2.0 * (1.0 - k / (lags + 1)) * gamma
    return max(lrv, 0.0)


def paired_test(
    challenger: np.ndarray,
    production: np.ndarray,
    *,
    method: TestMethod = "diebold_mariano",
    alpha: float,
    power: float,
    lags: int = 0,
) -> PairedTestResult:
    """Two-sided test that the mean daily PnL difference is zero (module docstring)."""
    a = np.asarray(challenger, dtype=np.float64)
    b = np.asarray(production, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"daily PnL series must be 1-D and paired; got {a.shape} and {b.shape}")
    n = int(a.size)
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 paired sessions, got {n}")
    d = a - b
    dbar = float(d.mean())
    if method == "paired_t":
        sigma = float(d.std(ddof=1))
        se = sigma / math.sqrt(n)
        correction = 1.0
    elif method == "diebold_mariano":
        sigma = math.sqrt(_newey_west_lrv(d, lags))
        se = sigma / math.sqrt(n)
        h = lags + 1
        correction = math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 0.0) / n)
    else:
        raise ValueError(f"method must be 'diebold_mariano' or 'paired_t', got {method!r}")
    from scipy import stats  # loads on first use: every Dagster run process imports this module

    if se > 0:
        statistic = dbar / se * correction
        p_value = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    else:  # identical differences every day: certain, unless they are all zero
        statistic = 0.0 if dbar == 0 else math.copysign(math.inf, dbar)
        p_value = 1.0 if dbar == 0 else 0.0
    if dbar == 0:
        needed: int | None = None
    else:
        z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
        needed = max(2, math.ceil((z * sigma / abs(dbar)) ** 2))
    return PairedTestResult(method, n, dbar, sigma, statistic, p_value, alpha, power, needed, p_value < alpha)


@dataclass(frozen=True)
class ABComparison:
    challenger_model_id: str
    sessions: int
    first_session: date | None
    last_session: date | None
    challenger_pnl: float
    production_pnl: float
    test: PairedTestResult | None  # None below min_sessions
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "challenger_model_id": self.challenger_model_id,
            "sessions": self.sessions,
            "first_session": self.first_session.isoformat() if self.first_session else None,
            "last_session": self.last_session.isoformat() if self.last_session else None,
            "challenger_pnl": self.challenger_pnl,
            "production_pnl": self.production_pnl,
            "test": self.test.as_dict() if self.test else None,
            "verdict": self.verdict,
        }


def shadow_ab_comparisons(
    per_session: pl.DataFrame,
    *,
    method: TestMethod,
    alpha: float,
    power: float,
    lags: int,
    min_sessions: int,
) -> list[ABComparison]:
    """Each shadow model against the production book (whatever model was production that day),
    paired on the sessions both traded."""
    prod = (
        per_session.filter(pl.col("role") == "production")
        .group_by("session_date")
        .agg(production=pl.col("pnl").sum())
    )
    out: list[ABComparison] = []
    shadows = per_session.filter(pl.col("role") == "shadow")
    for (model_id,), g in shadows.sort("session_date").group_by(["model_id"], maintain_order=True):
        paired = g.select("session_date", challenger=pl.col("pnl")).join(prod, on="session_date").sort("session_date")
        n = paired.height
        a, b = paired["challenger"].to_numpy(), paired["production"].to_numpy()
        test = None
        if n >= min_sessions:
            test = paired_test(a, b, method=method, alpha=alpha, power=power, lags=lags)
            if test.significant:
                better = "outperforms" if test.mean_diff > 0 else "underperforms"
                verdict = f"challenger {better} production (p={test.p_value:.3g} < {alpha})"
            else:
                need = "an undefined number of" if test.needed_sessions is None else f"~{test.needed_sessions}"
                verdict = f"no significant difference (p={test.p_value:.3g}); {need} sessions needed to detect the observed difference"
        else:
            verdict = f"{n} paired sessions < {min_sessions} needed for a test"
        out.append(
            ABComparison(
                challenger_model_id=str(model_id),
                sessions=n,
                first_session=paired["session_date"].min() if n else None,
                last_session=paired["session_date"].max() if n else None,
                challenger_pnl=float(a.sum()) if n else 0.0,
                production_pnl=float(b.sum()) if n else 0.0,
                test=test,
                verdict=verdict,
            )
        )
    return out
