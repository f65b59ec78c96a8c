"""Trials of an experiment family: scoring one trial, and the N and V the deflated Sharpe needs.

A family is an experiment's name across its versions. Every training seed, every search trial and
every retraining is one trial, recorded in the append-only trial ledger (adapters.store.trials);
nothing here infers trials from configuration.

Scoring a trial replays its greedy policy over a split exactly as core.policy_runner does (the
position held coming into bar t is an input of bar t; flat at the last bar of a session when the
experiment says so, and at the last bar) from a (3, n) table of greedy actions under each held
position (core.training.greedy_action_table), then backtests the positions (core.backtest) with the
experiment's costs: the trial's Sharpe is the same statistic as the candidate's backtest Sharpe.

    N = number of ledger rows of the family (at least 1: the model being judged)
    V = variance (ddof=1) of the family's test Sharpes, per bar (core.metrics.trial_sharpe_variance)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from usdcop_platform.core.actions import ACTION_POSITIONS
from usdcop_platform.core.backtest import backtest
from usdcop_platform.core.metrics import (
    NORMAL_KURTOSIS,
    Annualization,
    deflated_sharpe_ratio,
    trial_sharpe_variance,
)
from usdcop_platform.core.policy_runner import last_bar_of_session


@dataclass(frozen=True)
class TrialScore:
    """A trial's backtest on one split: annualized Sharpe and per-session returns."""

    sharpe: float
    n_bars: int
    sessions: np.ndarray  # session ordinal (days since epoch) of each session return
    session_returns: np.ndarray


def replay_positions(action_table: np.ndarray, sessions: np.ndarray, *, flat_at_session_end: bool) -> np.ndarray:
    """Positions a deterministic policy takes, from its greedy actions under each held position
    (row k = held position k - 1), starting flat."""
    table = np.asarray(action_table)
    s = np.asarray(sessions)
    n = s.size
    if table.shape != (3, n):
        raise ValueError(f"action table must be (3, {n}); got {table.shape}")
    forced = last_bar_of_session(s) if flat_at_session_end else np.zeros(n, dtype=bool)
    forced[-1] = True
    out = np.empty(n, dtype=np.int8)
    position = 0
    for t in range(n):
        position = 0 if forced[t] else int(ACTION_POSITIONS[table[position + 1, t]])
        out[t] = position
    return out


def score_positions(
    close: np.ndarray,
    positions: np.ndarray,
    sessions: np.ndarray,
    *,
    cost_bps: float,
    initial_capital: float,
    annualization: Annualization,
    confidence: float,
) -> TrialScore:
    result = backtest(
        close, positions, sessions, cost_bps=cost_bps, initial_capital=initial_capital,
        annualization=annualization, confidence=confidence,
    )
    return TrialScore(
        sharpe=float(result.metrics["sharpe"]),
        n_bars=result.n_bars,
        sessions=np.asarray(result.sessions)[result.session_end_index].astype(np.int64),
        session_returns=result.session_returns,
    )


@dataclass(frozen=True)
class FamilyTrials:
    """What the ledger says about a family: N, the trials' test Sharpes and where they come from."""

    family: str
    recorded: int  # ledger rows
    kinds: Mapping[str, int]
    versions: tuple[str, ...]
    test_sharpes: tuple[float, ...]  # annualized, of the rows that have one

    @property
    def n_trials(self) -> int:
        """N of the deflated Sharpe: the ledger's count, at least 1 (the model being judged)."""
        return max(1, self.recorded)

    def per_bar_sharpes(self, ann: Annualization) -> np.ndarray | None:
        """The trials' Sharpes per bar (the unit of the candidate's SR), None with fewer than two."""
        if len(self.test_sharpes) < 2:
            return None
        return np.asarray(self.test_sharpes, dtype=np.float64) / ann.bar_factor

    @property
    def variance_annual(self) -> float | None:
        if len(self.test_sharpes) < 2:
            return None
        return float(np.var(np.asarray(self.test_sharpes, dtype=np.float64), ddof=1))

    def source(self) -> str:
        """Where N comes from, in words."""
        if self.recorded == 0:
            return f"no trial of family {self.family!r} in the trial ledger: counted as 1, this model"
        kinds = ", ".join(f"{n} {k.replace('_', ' ')}{'s' if n != 1 else ''}" for k, n in sorted(self.kinds.items()))
        versions = ", ".join(self.versions)
        return (f"trial ledger: {self.recorded} row{'s' if self.recorded != 1 else ''} of family {self.family!r} "
                f"({kinds}; version{'s' if len(self.versions) != 1 else ''} {versions})")

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "n_trials": self.n_trials,
            "recorded": self.recorded,
            "kinds": dict(self.kinds),
            "versions": list(self.versions),
            "with_test_sharpe": len(self.test_sharpes),  # the Sharpes themselves stay in the ledger
            "variance_annual": self.variance_annual,
            "source": self.source(),
        }


def family_trials(family: str, rows: Iterable[Mapping[str, Any]]) -> FamilyTrials:
    """Summarize ledger rows (dicts with kind, experiment_version, test_sharpe) of one family."""
    rows = list(rows)
    versions = tuple(dict.fromkeys(str(r["experiment_version"]) for r in rows))
    sharpes = tuple(
        float(r["test_sharpe"]) for r in rows if r.get("test_sharpe") is not None and np.isfinite(r["test_sharpe"])
    )
    return FamilyTrials(
        family=family,
        recorded=len(rows),
        kinds=dict(Counter(str(r["kind"]) for r in rows)),
        versions=versions,
        test_sharpes=sharpes,
    )


def deflate_with_family(metrics: Mapping[str, Any] | None, fam: FamilyTrials) -> dict[str, Any] | None:
    """The DSR of a recorded backtest re-deflated with the family as the ledger holds it now (N and
    V may have grown since the proposal was written). Uses the backtest's recorded per-bar moments:
    bars per year = n_bars / years, per-bar Sharpe = annual / sqrt(bars per year)."""
    m = metrics or {}
    sharpe, n, years = m.get("sharpe"), m.get("n_bars"), m.get("years")
    if sharpe is None or not n or not years or not np.isfinite(float(sharpe)):
        return None
    bars_per_year = float(n) / float(years)
    root = float(np.sqrt(bars_per_year))
    sharpes = np.asarray(fam.test_sharpes, dtype=np.float64) / root if len(fam.test_sharpes) >= 2 else None
    skew = float(m.get("skew") or 0.0)
    kurt = float(m.get("kurtosis") or NORMAL_KURTOSIS)
    dsr, sr0 = deflated_sharpe_ratio(float(sharpe) / root, int(n), skew, kurt, fam.n_trials, sharpes)
    v, source = trial_sharpe_variance(int(n), sharpes)
    return {"n_trials": fam.n_trials, "n_trials_source": fam.source(), "dsr": dsr, "sr0_annual": sr0 * root,
            "variance_annual": v * bars_per_year, "variance_source": source}
