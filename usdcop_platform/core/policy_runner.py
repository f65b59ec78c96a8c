"""Running a policy bar by bar: the one decision step shared by backtests and live inference.

At bar t the policy sees the contract's raw features of bar t with the `position` state feature
set to p_{t-1} (the position held coming into the bar, 0 before the first bar), normalized with
the model's own train-split stats; it outputs probabilities over SELL/HOLD/BUY (core.actions).

    action_t  = argmax probabilities_t            (ties -> the lowest index, numpy's argmax)
    p_t       = target position of action_t,      or 0 when the bar is forced flat:
                the last bar of a session with `flat_at_session_end`, and the last bar of the run
    confidence_t = max probabilities_t

This is exactly core.env.TradingEnv's observation and forced-flat rule, so a backtest replays
what training optimized and what the live path will do. Because p_{t-1} is an input of bar t
the loop is sequential: one ONNX call per bar. The market features do not depend on the
position, so the run normalizes the whole matrix once per possible position (three matrices,
the same `observation()` the live step calls on one row) and the loop only picks rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from usdcop_platform.core.actions import ACTION_POSITIONS, ACTION_TO_POSITION, N_ACTIONS


class Policy(Protocol):
    def predict_proba(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class Normalizer(Protocol):
    def apply(self, matrix: np.ndarray) -> np.ndarray: ...


class PolicyRunError(ValueError):
    """Inputs a policy must not be run on (shape, NaN features, bad position)."""


@dataclass(frozen=True)
class StepDecision:
    action: int  # the policy's argmax action (0 SELL, 1 HOLD, 2 BUY)
    position: int  # the target position taken (forced to 0 when the bar is forced flat)
    probabilities: np.ndarray  # (3,)
    confidence: float
    forced_flat: bool


@dataclass(frozen=True)
class PolicyRun:
    actions: np.ndarray  # (n,) int8, the policy's argmax
    positions: np.ndarray  # (n,) int8, positions taken (forced flats applied)
    probabilities: np.ndarray  # (n, 3) float32
    forced_flat: np.ndarray  # (n,) bool

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def observation(normalizer: Normalizer | None, raw: np.ndarray, position: int, position_index: int) -> np.ndarray:
    """Model input for raw feature row(s): the position column set to `position`, then the
    model's normalization (state features pass through it unchanged). Returns float32."""
    if position not in ACTION_TO_POSITION:
        raise PolicyRunError(f"position must be -1, 0 or +1; got {position!r}")
    x = np.array(raw, dtype=np.float64, copy=True)
    if x.ndim == 1:
        x[position_index] = position
    else:
        x[:, position_index] = position
    out = normalizer.apply(x) if normalizer is not None else x
    return np.ascontiguousarray(out, dtype=np.float32)


def decide(probabilities: np.ndarray, force_flat: bool) -> tuple[int, int]:
    """(argmax action, position taken) for one bar's probabilities."""
    action = int(np.argmax(probabilities))
    return action, 0 if force_flat else int(ACTION_POSITIONS[action])


def policy_step(
    policy: Policy,
    normalizer: Normalizer | None,
    raw_row: np.ndarray,
    position: int,
    *,
    position_index: int,
    force_flat: bool = False,
) -> StepDecision:
    """One live decision: raw features of the newest bar and the position held coming into it."""
    row = np.asarray(raw_row, dtype=np.float64)
    if row.ndim != 1:
        raise PolicyRunError(f"policy_step takes one raw feature row, got shape {row.shape}")
    obs = observation(normalizer, row, position, position_index)
    probs, _value = policy.predict_proba(obs[None, :])
    p = np.asarray(probs, dtype=np.float32)[0]
    action, target = decide(p, force_flat)
    return StepDecision(action, target, p, float(p.max()), force_flat)


def last_bar_of_session(sessions: np.ndarray) -> np.ndarray:
    """True at the last row of each run of equal session values (and at the last row)."""
    s = np.asarray(sessions)
    out = np.ones(s.size, dtype=bool)
    if s.size > 1:
        out[:-1] = s[1:] != s[:-1]
    return out


def run_policy_over_bars(
    policy: Policy,
    normalizer: Normalizer | None,
    raw_features: np.ndarray,
    sessions: np.ndarray,
    *,
    flat_at_session_end: bool,
    position_index: int,
) -> PolicyRun:
    """Replay the policy over consecutive bars (rows in time order), starting flat."""
    raw = np.asarray(raw_features, dtype=np.float64)
    s = np.asarray(sessions)
    if raw.ndim != 2 or raw.shape[0] != s.size:
        raise PolicyRunError(f"raw features must be (n, d) aligned with sessions; got {raw.shape} and {s.shape}")
    n = raw.shape[0]
    if n == 0:
        raise PolicyRunError("no bars to run the policy on")
    if not 0 <= position_index < raw.shape[1]:
        raise PolicyRunError(f"position_index {position_index} outside 0..{raw.shape[1] - 1}")
    # One normalized matrix per possible incoming position, indexed by position + 1.
    variants = [observation(normalizer, raw, p, position_index) for p in ACTION_TO_POSITION]
    forced = last_bar_of_session(s) if flat_at_session_end else np.zeros(n, dtype=bool)
    forced[-1] = True
    actions = np.empty(n, dtype=np.int8)
    positions = np.empty(n, dtype=np.int8)
    probabilities = np.empty((n, N_ACTIONS), dtype=np.float32)
    predict = policy.predict_proba
    position = 0
    for t in range(n):
        probs, _value = predict(variants[position + 1][t : t + 1])
        probabilities[t] = probs[0]
        action, position = decide(probs[0], bool(forced[t]))
        actions[t] = action
        positions[t] = position
    return PolicyRun(actions=actions, positions=positions, probabilities=probabilities, forced_flat=forced)
