"""Learnability: planted-edge markets, the rules a trained policy is measured against, and the targets.

A platform that cannot recover a planted edge, or stay out of a market that has none, cannot be
trusted with a real one. The benchmark (app.learnability, `usdcop bench learnability`) trains the
experiment's own pipeline on synthetic markets whose edge is known (core.synthetic.PlantedEdge)
and compares the out-of-sample result with:

* the **oracle**: the best rule that uses only what the observation carries. The rule family is
  "flat" plus hysteresis threshold rules on each trailing-return feature of the observation
  (enter long above +enter x sd, short below -enter x sd, exit when the signal falls back through
  exit x sd; forced flat at every session end, like the environment). The rule is chosen on the
  train split by net Sharpe at the same cost and evaluated on the test split, exactly like the
  policy: the policy can represent every rule of the family, so 100 % is reachable in principle.
* a **simple feature rule**: 1-hour momentum (long if log_ret_1h > 0, short if < 0), unfitted.
* the **latent optimum**: the same threshold family on the true drift, which nothing observes.

Targets (median over seeds, out of sample):
* no planted edge, or an edge whose oracle net Sharpe is <= 0 (too weak to pay the costs):
  at most `MAX_ROUND_TRIPS_PER_20_SESSIONS` round trips per 20 sessions and a test return
  >= `MIN_FLAT_RETURN`;
* an edge whose oracle net Sharpe is >= `STRONG_ORACLE_SHARPE`: the policy's net Sharpe is at least
  `MIN_SHARE_OF_ORACLE` of the oracle's;
* anything in between is reported, not judged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from usdcop_platform.core.policy_runner import last_bar_of_session
from usdcop_platform.core.synthetic import PlantedEdge

MAX_ROUND_TRIPS_PER_20_SESSIONS = 1.0
MIN_FLAT_RETURN = -0.005
STRONG_ORACLE_SHARPE = 2.0
MIN_SHARE_OF_ORACLE = 0.60

ORACLE_FEATURES: tuple[str, ...] = ("log_ret_5m", "log_ret_1h", "log_ret_4h")
MOMENTUM_FEATURE = "log_ret_1h"
RULE_ENTER_SD: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)
RULE_EXIT_SD: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class MarketSpec:
    """One synthetic market of the benchmark: a name and its planted edge (strength 0: none)."""

    name: str
    edge: PlantedEdge

    @property
    def has_edge(self) -> bool:
        return self.edge.strength > 0


DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("zero_edge", PlantedEdge(0.0)),
    MarketSpec("weak_edge", PlantedEdge(0.1)),
    MarketSpec("strong_edge", PlantedEdge(0.3)),
)
DEFAULT_COSTS_BPS: tuple[float, ...] = (2.0, 25.0, 75.0)


# ---- rules -------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _hysteresis(signal: np.ndarray, session_end: np.ndarray, enter: float, exit_: float) -> np.ndarray:  # pragma: no cover - compiled
    n = signal.size
    out = np.zeros(n, dtype=np.int8)
    p = 0
    for t in range(n):
        x = signal[t]
        if p == 0:
            if x > enter:
                p = 1
            elif x < -enter:
                p = -1
        elif p == 1:
            if x < -enter:
                p = -1
            elif x < exit_:
                p = 0
        else:
            if x > enter:
                p = 1
            elif x > -exit_:
                p = 0
        if session_end[t]:
            p = 0
        out[t] = p
    return out


@dataclass(frozen=True)
class ThresholdRule:
    """Hysteresis rule on one signal; thresholds in units of the signal's sd on the fitting split.
    `feature` None is the flat rule."""

    feature: str | None
    enter_sd: float = 0.0
    exit_sd: float = 0.0
    scale: float = 1.0  # the signal's sd on the fitting split

    def positions(self, signal: np.ndarray | None, sessions: np.ndarray) -> np.ndarray:
        n = np.asarray(sessions).size
        if self.feature is None or signal is None:
            return np.zeros(n, dtype=np.int8)
        x = np.ascontiguousarray(signal, dtype=np.float64)
        if x.size != n:
            raise ValueError(f"signal {self.feature!r} has {x.size} values for {n} bars")
        if not np.isfinite(x).all():
            raise ValueError(f"signal {self.feature!r} holds NaN or inf")
        return _hysteresis(x, last_bar_of_session(sessions), self.enter_sd * self.scale, self.exit_sd * self.scale)

    def describe(self) -> str:
        if self.feature is None:
            return "flat"
        return f"{self.feature}: enter |x| > {self.enter_sd:g} sd, exit through {self.exit_sd:g} sd"


FLAT_RULE = ThresholdRule(None)


def momentum_positions(signal: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """The simple feature rule: the sign of the trailing 1-hour return, flat at each session end."""
    p = np.sign(np.asarray(signal, dtype=np.float64)).astype(np.int8)
    p[last_bar_of_session(sessions)] = 0
    return p


Scorer = Callable[[np.ndarray], float]
"""Net Sharpe of a position series on the fitting split (core.backtest with the case's cost)."""


def fit_rule(signals: Mapping[str, np.ndarray], sessions: np.ndarray, score: Scorer) -> tuple[ThresholdRule, float]:
    """The rule of the family (flat included, scoring 0) with the best `score` on the fitting split."""
    best, best_score = FLAT_RULE, 0.0
    for name, signal in signals.items():
        x = np.asarray(signal, dtype=np.float64)
        sd = float(x.std())
        if not np.isfinite(sd) or sd == 0:
            continue
        for enter in RULE_ENTER_SD:
            for exit_ in RULE_EXIT_SD:
                if exit_ > enter:
                    continue
                rule = ThresholdRule(name, enter, exit_, sd)
                s = score(rule.positions(x, sessions))
                if np.isfinite(s) and s > best_score:
                    best, best_score = rule, float(s)
    return best, best_score


# ---- activity ----------------------------------------------------------------------------------
def round_trips(positions: np.ndarray) -> int:
    """Positions opened (from flat or by a flip): each is one round trip, since every session ends flat."""
    p = np.asarray(positions, dtype=np.int64)
    prev = np.concatenate([[0], p[:-1]])
    return int(((p != 0) & (p != prev)).sum())


def round_trips_per_20_sessions(positions: np.ndarray, sessions: np.ndarray) -> float:
    n_sessions = int(np.unique(np.asarray(sessions)).size)
    return 20.0 * round_trips(positions) / n_sessions if n_sessions else 0.0


# ---- targets -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    target: str  # "flat", "edge" or "report"
    passed: bool | None  # None when only reported
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "passed": self.passed, "reason": self.reason}


def judge(
    market: MarketSpec,
    oracle_sharpe: float,
    sharpes: Sequence[float],
    returns: Sequence[float],
    round_trips_20: Sequence[float],
) -> Verdict:
    """Apply the targets of the module docstring to the per-seed results of one (market, cost)."""
    if not sharpes:
        raise ValueError("no seed results to judge")
    med_sharpe = float(np.median(sharpes))
    med_return = float(np.median(returns))
    med_rt = float(np.median(round_trips_20))
    if not market.has_edge or oracle_sharpe <= 0:
        why = "no planted edge" if not market.has_edge else f"oracle net Sharpe {oracle_sharpe:.2f} <= 0"
        ok = med_rt <= MAX_ROUND_TRIPS_PER_20_SESSIONS and med_return >= MIN_FLAT_RETURN
        return Verdict(
            "flat", ok,
            f"{why}: must stay flat (median {med_rt:.2f} round trips / 20 sessions <= "
            f"{MAX_ROUND_TRIPS_PER_20_SESSIONS:g}, median return {med_return:+.2%} >= {MIN_FLAT_RETURN:+.1%})",
        )
    if oracle_sharpe >= STRONG_ORACLE_SHARPE:
        need = MIN_SHARE_OF_ORACLE * oracle_sharpe
        return Verdict(
            "edge", med_sharpe >= need,
            f"oracle net Sharpe {oracle_sharpe:.2f} >= {STRONG_ORACLE_SHARPE:g}: median policy Sharpe "
            f"{med_sharpe:.2f} must be >= {MIN_SHARE_OF_ORACLE:.0%} of it ({need:.2f})",
        )
    return Verdict(
        "report", None,
        f"oracle net Sharpe {oracle_sharpe:.2f} between 0 and {STRONG_ORACLE_SHARPE:g}: reported, not judged",
    )
