"""Overfitting statistics of a proposal: PBO by CSCV over the family's trials, and Hansen's SPA test.

Probability of Backtest Overfitting (Bailey, Borwein, López de Prado & Zhu, "The probability of
backtest overfitting", J. Computational Finance 2017), estimated by combinatorially symmetric
cross-validation (CSCV):

    M      T x N matrix: per-period returns of N trials over the same T periods
    1.     cut the rows into S contiguous blocks (S even), T/S rows each (the remainder rows at the
           end are dropped so every block has the same size)
    2.     for each of the C(S, S/2) ways to pick S/2 blocks as in-sample J (the rest, J-bar, out of
           sample): n* = argmax_n R(J)_n, the trial with the best in-sample performance
    3.     w = relative rank of n* out of sample, rank(R(J-bar)_n*) / (N + 1) in (0, 1)
           (rank 1 = worst), logit  lambda = ln(w / (1 - w))
    4.     PBO = share of combinations with lambda <= 0: how often the in-sample winner is at or
           below the out-of-sample median

R is the Sharpe ratio mean/std (ddof=1; 0 without dispersion), as in the paper. PBO near 0 means
the selection procedure picks trials that stay good out of sample; near 1 means it picks noise.

Hansen's Superior Predictive Ability test ("A test for superior predictive ability", JBES 2005),
through `arch.bootstrap.SPA` with a stationary bootstrap: the losses are minus the per-session
returns; the null is that the benchmark is not beaten by the candidate. A small p-value says the
candidate's edge over that benchmark is unlikely to be luck. One test per benchmark (production,
buy-and-hold, flat); the overall p-value is the largest, since the candidate must beat each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

DEFAULT_PARTITIONS = 16
# Fewer periods than this and the SPA test says nothing (arch's threshold needs log(log(T)) > 0).
MIN_SPA_PERIODS = 10


class OverfittingInputError(ValueError):
    """The statistic cannot be computed from what was given; the message says why."""


@dataclass(frozen=True)
class PBOResult:
    pbo: float
    logits: np.ndarray = field(repr=False)
    n_trials: int
    n_periods: int  # T actually used (a multiple of S)
    partitions: int  # S
    combinations: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "pbo": self.pbo,
            "n_trials": self.n_trials,
            "n_periods": self.n_periods,
            "partitions": self.partitions,
            "combinations": self.combinations,
            "logit_median": float(np.median(self.logits)),
        }

    def sentence(self) -> str:
        return pbo_sentence(self.as_dict())


def _sharpe_columns(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    out = np.zeros_like(mean)
    np.divide(mean, std, out=out, where=std > 0)
    return out


def partitions_for(n_periods: int, wanted: int = DEFAULT_PARTITIONS, min_rows: int = 2) -> int:
    """The largest even S <= wanted with at least `min_rows` periods per block (0 when even S = 2
    does not fit)."""
    s = min(wanted, n_periods // min_rows)
    s -= s % 2
    return s if s >= 2 else 0


def pbo_cscv(matrix: np.ndarray, partitions: int = DEFAULT_PARTITIONS) -> PBOResult:
    """PBO of the T x N returns matrix by CSCV with S = `partitions` blocks (see the module docstring)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise OverfittingInputError(f"PBO needs a T x N matrix; got shape {m.shape}")
    t, n = m.shape
    if n < 2:
        raise OverfittingInputError(f"PBO needs at least 2 trials to select among; got {n}")
    if partitions < 2 or partitions % 2:
        raise OverfittingInputError(f"the number of CSCV blocks must be even and >= 2; got {partitions}")
    if not np.isfinite(m).all():
        raise OverfittingInputError("the returns matrix holds NaN or inf")
    rows = t // partitions
    if rows < 1:
        raise OverfittingInputError(f"{t} periods cannot fill {partitions} blocks")
    blocks = m[: rows * partitions].reshape(partitions, rows, n)
    # Sums per block let each half's mean and variance come from S/2 block sums (no copies).
    s1 = blocks.sum(axis=1)  # (S, N)
    s2 = (blocks * blocks).sum(axis=1)
    half = partitions // 2
    k = half * rows
    logits = []
    idx = np.arange(partitions)
    for combo in combinations(range(partitions), half):
        is_mask = np.zeros(partitions, dtype=bool)
        is_mask[list(combo)] = True
        perf = []
        for mask in (is_mask, ~is_mask):
            a, b = s1[idx[mask]].sum(axis=0), s2[idx[mask]].sum(axis=0)
            mean = a / k
            var = np.maximum(b - k * mean * mean, 0.0) / (k - 1) if k > 1 else np.zeros_like(mean)
            std = np.sqrt(var)
            r = np.zeros_like(mean)
            np.divide(mean, std, out=r, where=std > 0)
            perf.append(r)
        best = int(np.argmax(perf[0]))
        oos = perf[1]
        # rank 1 = worst; ties share the average rank
        rank = float((oos < oos[best]).sum()) + (float((oos == oos[best]).sum()) + 1.0) / 2.0
        w = rank / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
    lam = np.asarray(logits)
    return PBOResult(
        pbo=float((lam <= 0).mean()), logits=lam, n_trials=n, n_periods=rows * partitions, partitions=partitions,
        combinations=lam.size,
    )


def pbo_sentence(d: dict[str, Any] | None) -> str:
    """Plain words for a PBO result dict (or the reason it is missing)."""
    if not d:
        return "PBO not computed."
    if d.get("pbo") is None:
        return f"Probability of backtest overfitting not computed: {d.get('reason', 'no reason recorded')}."
    pbo = float(d["pbo"])
    verdict = ("the selection looks robust" if pbo < 0.2 else "a warning sign of overfitting" if pbo < 0.5
               else "the selection is most likely picking noise")
    return (
        f"Probability of backtest overfitting (CSCV over {d['n_trials']} trials of the family, {d['n_periods']} "
        f"sessions in {d['partitions']} blocks, {d['combinations']:,} splits): PBO = {pbo:.2f}, i.e. in {pbo:.0%} of "
        f"the splits the trial that was best in sample fell to or below the median out of sample; {verdict}."
    )


# ---- Hansen's SPA --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SPAResult:
    pvalues: dict[str, float]  # benchmark -> consistent p-value
    block_size: int
    reps: int
    n_periods: int

    @property
    def pvalue(self) -> float:
        """The candidate must beat every benchmark: the largest p-value."""
        return max(self.pvalues.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "pvalue": self.pvalue,
            "pvalues": dict(self.pvalues),
            "block_size": self.block_size,
            "reps": self.reps,
            "n_periods": self.n_periods,
            "bootstrap": "stationary",
        }


def spa_test(
    candidate: np.ndarray,
    benchmarks: dict[str, np.ndarray],
    *,
    block_size: int,
    reps: int,
    seed: int,
) -> SPAResult:
    """Hansen's SPA (consistent p-value) of the candidate against each benchmark, on aligned
    per-period returns (losses = -returns), stationary bootstrap with mean block `block_size`."""
    from arch.bootstrap import SPA  # arch (and its scipy/pandas imports) load only when needed

    c = np.asarray(candidate, dtype=np.float64)
    if c.ndim != 1 or c.size < MIN_SPA_PERIODS:
        raise OverfittingInputError(f"SPA needs at least {MIN_SPA_PERIODS} aligned periods; got shape {c.shape}")
    if not benchmarks:
        raise OverfittingInputError("SPA needs at least one benchmark")
    pvalues = {}
    for name, b in benchmarks.items():
        b = np.asarray(b, dtype=np.float64)
        if b.shape != c.shape:
            raise OverfittingInputError(f"benchmark {name!r} has shape {b.shape}, the candidate {c.shape}")
        if not (np.isfinite(b).all() and np.isfinite(c).all()):
            raise OverfittingInputError(f"returns of the candidate or of {name!r} hold NaN or inf")
        spa = SPA(-b, -c[:, None], block_size=block_size, reps=reps, bootstrap="stationary", seed=seed)
        spa.compute()
        pvalues[name] = float(spa.pvalues["consistent"])
    return SPAResult(pvalues=pvalues, block_size=block_size, reps=reps, n_periods=int(c.size))


BENCHMARK_LABELS = {"baseline": "the production model", "buy_and_hold": "buy-and-hold", "flat": "staying flat"}


def spa_sentence(d: dict[str, Any] | None, alpha: float) -> str:
    if not d:
        return "SPA test not computed."
    if d.get("pvalue") is None:
        return f"Hansen's SPA test not computed: {d.get('reason', 'no reason recorded')}."
    parts = ", ".join(f"{BENCHMARK_LABELS.get(k, k)} p = {v:.3f}" for k, v in d["pvalues"].items())
    p = float(d["pvalue"])
    verdict = (f"the candidate beats every benchmark at the {1 - alpha:.0%} level" if p <= alpha
               else "the candidate's edge over at least one benchmark could be luck")
    return (
        f"Hansen's SPA test ({d['n_periods']} sessions, stationary bootstrap, {d['reps']:,} resamples, mean block "
        f"{d['block_size']} sessions) against {parts}: overall p = {p:.3f}; {verdict}."
    )
