"""Performance statistics of a return series: the one implementation every report uses.

Conventions (REFERENCE.md "Backtest and metrics"):

- Returns are simple per-period returns r_t = E_t / E_{t-1} - 1 of mark-to-market equity.
- Annualization multiplies a per-period ratio by sqrt(P), P = periods per year, always taken
  from the trading calendar (`Annualization.from_calendar`); nothing here knows 252 or 14,700.
- Sharpe = mean(r) / std(r, ddof=1) * sqrt(P). A series with zero dispersion has Sharpe 0
  (no risk taken, nothing earned or lost per unit of risk).
- Sortino = mean(r) * P / (sqrt(mean(min(r, 0)^2)) * sqrt(P)), target 0 (empyrical's definition).
- Drawdown D_t = E_t / max(E_0, max_{s<=t} E_s) - 1 <= 0; max drawdown = -min_t D_t >= 0, a fraction.

Statistical confidence (Bailey & Lopez de Prado, "The Sharpe ratio efficient frontier" 2012 and
"The deflated Sharpe ratio" 2014), with SR the per-period (non-annualized) Sharpe, n the number
of returns, g3 the skewness and g4 the (non-excess) kurtosis of the returns:

    var(SR^) ~= (1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1)
    PSR(SR*) = Phi( (SR - SR*) / sqrt(var(SR^)) )                     prob. true SR > SR*
    SR_0     = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))
               the expected maximum Sharpe of N unskilled trials whose Sharpe estimates have
               variance V (gamma = Euler-Mascheroni)
    DSR      = PSR(SR_0)
    MinTRL   = 1 + (1 - g3*SR + (g4 - 1)/4 * SR^2) * (z_a / (SR - SR*))^2      periods

The block bootstrap of the Sharpe difference resamples the two aligned return series jointly in
circular moving blocks, so cross-correlation and intra-block autocorrelation are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Euler-Mascheroni constant (a mathematical constant, not a tunable).
EULER_GAMMA = 0.5772156649015329
# Kurtosis of the normal distribution: the neutral value when moments are undefined.
NORMAL_KURTOSIS = 3.0


@dataclass(frozen=True)
class Annualization:
    """Periods per year of the two return frequencies the platform reports (from the calendar), and
    their annualization factors sqrt(P): the one home of annualization."""

    bars_per_year: float
    sessions_per_year: float

    @property
    def bar_factor(self) -> float:
        return math.sqrt(self.bars_per_year)

    @property
    def session_factor(self) -> float:
        return math.sqrt(self.sessions_per_year)

    @classmethod
    def from_calendar(cls, calendar: Any) -> "Annualization":
        """From core.calendar.TradingCalendar's period counts: the one place the factors are made."""
        return cls(bars_per_year=calendar.bars_per_year(), sessions_per_year=calendar.sessions_per_year())


@dataclass(frozen=True)
class Moments:
    """Sample moments of a return series (population skew/kurtosis, as in Bailey & LdP)."""

    n: int
    mean: float
    std: float  # ddof = 1
    skew: float
    kurtosis: float  # non-excess: 3 for a normal distribution

    @property
    def sharpe(self) -> float:
        """Per-period Sharpe mean/std; 0 when the series has no dispersion."""
        return self.mean / self.std if self.std > 0 else 0.0



def _ndtr(x: float) -> float:
    """Standard normal CDF (scipy loads on first use: every Dagster run process imports this module)."""
    from scipy.special import ndtr

    return float(ndtr(x))


def _ndtri(p: float) -> float:
    """Standard normal quantile."""
    from scipy.special import ndtri

    return float(ndtri(p))

def moments(returns: np.ndarray) -> Moments:
    """Mean, std (ddof=1), skewness and kurtosis in one pass over the centred series."""
    r = np.asarray(returns, dtype=np.float64)
    n = int(r.size)
    if n == 0:
        return Moments(0, 0.0, 0.0, 0.0, NORMAL_KURTOSIS)
    mean = float(r.mean())
    d = r - mean
    d2 = d * d
    m2 = float(d2.sum()) / n
    std = math.sqrt(m2 * n / (n - 1)) if n > 1 else 0.0
    if m2 <= 0.0 or not np.isfinite(m2):
        return Moments(n, mean, 0.0, 0.0, NORMAL_KURTOSIS)
    # Element-wise products + sum, not np.dot: a threaded BLAS call costs more than it saves on
    # vectors of this size when cores are shared. Buffers are reused (no new temporaries).
    np.multiply(d, d2, out=d)
    m3 = float(d.sum()) / n
    np.multiply(d2, d2, out=d2)
    m4 = float(d2.sum()) / n
    return Moments(n, mean, std, m3 / m2**1.5, m4 / (m2 * m2))


# ---- ratios ------------------------------------------------------------------------------------
def sharpe_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualized Sharpe ratio (risk-free 0); 0 for fewer than two returns or zero dispersion."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    return moments(r).sharpe * math.sqrt(periods_per_year)


def sortino_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualized Sortino ratio with target 0; inf when there is no downside and a positive mean."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return 0.0
    down = np.minimum(r, 0.0)
    np.multiply(down, down, out=down)
    downside = math.sqrt(float(down.sum()) / r.size)
    mean = float(r.mean())
    if downside == 0.0:
        return math.inf if mean > 0 else 0.0
    return mean * math.sqrt(periods_per_year) / downside


def annualized_volatility(returns: np.ndarray, periods_per_year: float) -> float:
    r = np.asarray(returns, dtype=np.float64)
    return moments(r).std * math.sqrt(periods_per_year) if r.size > 1 else 0.0


def drawdown_series(equity: np.ndarray, initial: float) -> np.ndarray:
    """E_t / running peak - 1 (<= 0); the peak starts at the initial capital."""
    e = np.asarray(equity, dtype=np.float64)
    dd = np.maximum.accumulate(e)
    np.maximum(dd, initial, out=dd)
    np.divide(e, dd, out=dd)
    dd -= 1.0
    return dd


def max_drawdown(equity: np.ndarray, initial: float) -> float:
    """Largest peak-to-trough loss as a positive fraction (0.12 = 12 %)."""
    e = np.asarray(equity, dtype=np.float64)
    return float(-drawdown_series(e, initial).min()) if e.size else 0.0


def annual_return(total_return: float, n_periods: int, periods_per_year: float) -> float:
    """Compound annual growth: (1 + R)^(P / n) - 1 (empyrical's definition)."""
    if n_periods <= 0:
        return 0.0
    growth = 1.0 + total_return
    if growth <= 0:
        return -1.0
    try:
        return growth ** (periods_per_year / n_periods) - 1.0
    except OverflowError:  # a short, very profitable test annualizes beyond float range
        return math.inf


def profit_factor(pnl: np.ndarray) -> float:
    """Gross profit / gross loss over trades; inf without losing trades, 0 without trades."""
    p = np.asarray(pnl, dtype=np.float64)
    gain = float(p[p > 0].sum())
    loss = float(-p[p < 0].sum())
    if loss == 0.0:
        return math.inf if gain > 0 else 0.0
    return gain / loss


# ---- statistical confidence -----------------------------------------------------------------
def sharpe_estimator_variance(sr: float, n: int, skew: float, kurtosis: float) -> float:
    """var(SR^) for a per-period Sharpe estimated on n returns (non-normal returns)."""
    if n < 2:
        return math.inf
    core = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    # core >= 0 always (kurtosis >= skew^2 + 1); the floor only guards degenerate rounding.
    return max(core, 1e-12) / (n - 1)


def probabilistic_sharpe_ratio(sr: float, n: int, skew: float, kurtosis: float, sr_benchmark: float = 0.0) -> float:
    """PSR(SR*): probability that the true per-period Sharpe exceeds sr_benchmark."""
    if n < 2:
        return 0.5 if sr == sr_benchmark else float(sr > sr_benchmark)
    z = (sr - sr_benchmark) / math.sqrt(sharpe_estimator_variance(sr, n, skew, kurtosis))
    return _ndtr(z)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """SR_0: expected maximum per-period Sharpe among n_trials unskilled trials (0 for one trial)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials == 1 or sr_variance <= 0:
        return 0.0
    n = float(n_trials)
    return math.sqrt(sr_variance) * (
        (1.0 - EULER_GAMMA) * _ndtri(1.0 - 1.0 / n) + EULER_GAMMA * _ndtri(1.0 - 1.0 / (n * math.e))
    )


# Where DSR's V came from (recorded next to it, shown on every report).
V_CROSS_TRIAL = "cross-trial: variance of the family's trial Sharpes (trial ledger)"
V_NULL = "null: sampling variance 1/(n-1) of one Sharpe estimate (fewer than 2 trial Sharpes recorded)"


def trial_sharpe_variance(n: int, trial_sharpes: np.ndarray | None) -> tuple[float, str]:
    """(V, source) for the deflated Sharpe: the variance (ddof=1) of the trials' per-period Sharpes
    when two or more are given (0 when they are identical: repeats of one result add no selection),
    otherwise the null sampling variance 1/(n-1) of a Sharpe estimate (every trial unskilled)."""
    if trial_sharpes is not None and np.asarray(trial_sharpes).size >= 2:
        return float(np.var(np.asarray(trial_sharpes, dtype=np.float64), ddof=1)), V_CROSS_TRIAL
    return (1.0 / (n - 1) if n > 1 else 0.0), V_NULL


def deflated_sharpe_ratio(
    sr: float,
    n: int,
    skew: float,
    kurtosis: float,
    n_trials: int,
    trial_sharpes: np.ndarray | None = None,
) -> tuple[float, float]:
    """(DSR, SR_0) with V from `trial_sharpe_variance`. One trial, or V = 0: SR_0 = 0 and DSR = PSR(0)."""
    variance, _ = trial_sharpe_variance(n, trial_sharpes)
    sr0 = expected_max_sharpe(n_trials, variance)
    return probabilistic_sharpe_ratio(sr, n, skew, kurtosis, sr0), sr0


def min_track_record_length(
    sr: float, skew: float, kurtosis: float, confidence: float, sr_benchmark: float = 0.0
) -> float:
    """Periods needed for PSR(sr_benchmark) >= confidence at the observed Sharpe; inf when
    the observed Sharpe does not beat the benchmark (no length would certify it)."""
    if sr <= sr_benchmark:
        return math.inf
    z = _ndtri(confidence)
    core = max(1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr, 1e-12)
    return 1.0 + core * (z / (sr - sr_benchmark)) ** 2


def certifiable_sharpe(n: int, confidence: float, skew: float = 0.0, kurtosis: float = NORMAL_KURTOSIS) -> float:
    """Smallest per-period Sharpe whose PSR(0) reaches `confidence` on n returns.

    Solves SR^2 (n - 1) = z^2 (1 - g3 SR + (g4 - 1)/4 SR^2) for SR > 0. With normal returns and
    one year of 5-minute bars this is ~1.64 annualized: a 1-year test cannot certify less.
    """
    if n < 2:
        return math.inf
    z2 = _ndtri(confidence) ** 2
    a = (n - 1) - z2 * (kurtosis - 1.0) / 4.0
    b = z2 * skew
    c = -z2
    if a <= 0:
        return math.inf
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


@dataclass(frozen=True)
class BootstrapInterval:
    """Block-bootstrap interval of annualized Sharpe(a) - Sharpe(b)."""

    difference: float
    low: float
    high: float
    confidence: float
    prob_not_better: float  # share of resamples with difference <= 0
    block_bars: int
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "prob_not_better": self.prob_not_better,
            "block_bars": self.block_bars,
            "samples": self.samples,
        }


def _block_sums(x: np.ndarray, block: int) -> np.ndarray:
    """Sum of every circular block of length `block` starting at each index (O(n) via cumsum)."""
    ext = np.concatenate([x, x[: block - 1]]) if block > 1 else x
    cs = np.concatenate([[0.0], np.cumsum(ext)])
    return cs[block : block + x.size] - cs[: x.size]


def block_bootstrap_sharpe_difference(
    a: np.ndarray,
    b: np.ndarray,
    periods_per_year: float,
    *,
    block: int,
    samples: int,
    confidence: float,
    seed: int,
) -> BootstrapInterval:
    """Circular moving-block bootstrap of Sharpe(a) - Sharpe(b), both annualized.

    Each resample draws K = ceil(n / block) block starts uniformly; a resample's Sharpe comes
    from the summed first and second moments of its blocks, so no resampled series is ever
    materialized (cost O(n + samples * K)).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"return series must be 1-D and aligned; got {a.shape} and {b.shape}")
    n = a.size
    if n < 2:
        raise ValueError("the bootstrap needs at least two returns")
    block = max(1, min(int(block), n))
    k = -(-n // block)
    m = k * block
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(samples, k))
    scale = math.sqrt(periods_per_year)

    def resampled_sharpe(x: np.ndarray) -> np.ndarray:
        s1 = _block_sums(x, block)[starts].sum(axis=1)
        s2 = _block_sums(x * x, block)[starts].sum(axis=1)
        mean = s1 / m
        var = np.maximum(s2 - m * mean * mean, 0.0) / (m - 1)
        std = np.sqrt(var)
        out = np.zeros_like(mean)
        np.divide(mean, std, out=out, where=std > 0)
        return out * scale

    diffs = resampled_sharpe(a) - resampled_sharpe(b)
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    point = sharpe_ratio(a, periods_per_year) - sharpe_ratio(b, periods_per_year)
    return BootstrapInterval(
        difference=float(point),
        low=float(low),
        high=float(high),
        confidence=confidence,
        prob_not_better=float((diffs <= 0).mean()),
        block_bars=block,
        samples=samples,
    )

