"""Trading environment (gymnasium) over precomputed numpy arrays.

Dynamics, with closes C_t, the target position p_t in {-1, 0, +1} chosen at bar t (action
encoding in core.actions) and p_{t-1} the position held coming into bar t:

    r_t      = C_{t+1} / C_t - 1                        (0 at the last bar of the data)
    gross_t  = p_t * r_t                                 the position taken at t earns C_t -> C_{t+1}
    cost_t   = k * cost_bps * 1e-4 * |p_t - p_{t-1}|     k = curriculum cost multiplier; a flip costs 2x
    net_t    = gross_t - cost_t
    E_t      = E_{t-1} * (1 + net_t),  E_{-1} = 1        episode equity
    dd_t     = 1 - E_t / max_{s<=t} E_s                  drawdown (fraction)
    reward_t = scale * ( w_pnl * gross_t - charged_t
                         - w_turnover * |p_t - p_{t-1}|
                         - w_drawdown * max(0, dd_t - dd_{t-1})     (new drawdown only)
                         - w_inactivity * [p_t == 0] )

    charged_t = cost_t                                   reward.cost_charging = per_change
    charged_t = 2 k cost_bps 1e-4 [p_t != 0 and p_t != p_{t-1}]      = round_trip_at_entry

Why round_trip_at_entry (the chosen MDP; measured in docs/architecture.md "Training MDP"): with
positions forced flat at every session end, a position once opened will be closed and pay its
exit. Charged per change, entering now or one bar later differs only by about (1 - gamma) x cost,
which drowns in per-bar PnL noise, so PPO learned to enter at a session's first bar and ride to the
close. Charged at entry, the whole round trip is in the entry's own reward, closing is free, and
holding is judged by the next bars' PnL alone. Episodes end flat, so both modes sum to the same
total; equity, info and every backtest charge costs when trades happen, whatever the mode. The other
half of the fix is in core.training: `algorithm.initial_hold_bias` starts the policy mostly flat,
so trade-free sessions (the outcome that teaches "stay out") are sampled from the first rollout.

The observation at bar t is row t of the (already normalized) feature matrix, with the
`position` column replaced by p_{t-1}. Row t is computed from bars <= t (feature contract); the
close C_{t+1} only enters the reward returned by the step at t, never an observation at t.

Episodes are windows of `episode_sessions` consecutive sessions (a random window per reset in
training, or every session in order in sequential mode). The last bar of an episode always
closes the position (p = 0, the closing cost is charged), so an episode's rewards account for
its whole PnL; with `flat_at_session_end` the last bar of every session does too, so nothing
is held over the overnight gap.

`step()` touches only Python floats and preallocated read-only numpy rows: no pandas; it
allocates only the returned row copy and the info dict (measured by `usdcop bench training`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from usdcop_platform.contracts.experiment import EnvironmentConfig, RewardConfig
from usdcop_platform.core.actions import ACTION_TO_POSITION, N_ACTIONS

BPS = 1e-4  # one basis point as a fraction
_TARGET: dict[int, int] = dict(enumerate(ACTION_TO_POSITION))  # dict: a negative index must not wrap


@dataclass(frozen=True)
class MarketData:
    """Arrays an environment runs on: one row per bar, in time order.

    obs:      (n, d) float32, normalized market features and the raw state features
    close:    (n,) float64 close prices (> 0)
    session:  (n,) int64 session ordinal (non-decreasing; equal within a session)
    position_index: column of `obs` that holds the position state feature
    """

    obs: np.ndarray
    close: np.ndarray
    session: np.ndarray
    position_index: int

    def __post_init__(self) -> None:
        obs, close, session = self.obs, self.close, self.session
        if obs.ndim != 2 or obs.shape[0] < 2:
            raise ValueError(f"obs must be (n >= 2, d); got shape {obs.shape}")
        if close.shape != (obs.shape[0],) or session.shape != (obs.shape[0],):
            raise ValueError("obs, close and session must have the same number of rows")
        if not 0 <= self.position_index < obs.shape[1]:
            raise ValueError(f"position_index {self.position_index} outside 0..{obs.shape[1] - 1}")
        if not np.isfinite(obs).all():
            raise ValueError("obs holds NaN or inf: a row carrying one must never reach a model")
        if not (np.isfinite(close).all() and (close > 0).all()):
            raise ValueError("close prices must be finite and > 0")
        if (np.diff(session) < 0).any():
            raise ValueError("session ordinals must be non-decreasing (rows in time order)")

    @property
    def n(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.obs.shape[1])


class TradingEnv(gym.Env[np.ndarray, np.int64]):
    """Discrete SELL/HOLD/BUY over bars; see the module docstring for the maths."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        data: MarketData,
        environment: EnvironmentConfig,
        reward: RewardConfig,
        *,
        obs_bound: float,
        cost_multiplier: float = 1.0,
        sequential: bool = False,
    ) -> None:
        super().__init__()
        if obs_bound <= 0:
            raise ValueError("obs_bound must be > 0")
        self.data = data
        self.environment = environment
        self.reward_config = reward
        self.sequential = sequential
        pos_col = data.position_index

        # --- observation space: market/time columns within +-obs_bound, position in [-1, 1]
        low = np.full(data.n_features, -obs_bound, dtype=np.float32)
        high = np.full(data.n_features, obs_bound, dtype=np.float32)
        low[pos_col], high[pos_col] = -1.0, 1.0
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        market = np.delete(data.obs, pos_col, axis=1)
        if market.size and np.abs(market).max() > obs_bound:
            raise ValueError(f"observations exceed +-{obs_bound}: normalize (and clip) them before the env")

        # --- precomputed arrays; step() reads Python lists (list indexing beats numpy scalars)
        close = data.close.astype(np.float64)
        ret = np.zeros(data.n, dtype=np.float64)
        ret[:-1] = close[1:] / close[:-1] - 1.0
        self._ret: list[float] = ret.tolist()
        session = data.session.astype(np.int64)
        last_of_session = np.ones(data.n, dtype=bool)
        last_of_session[:-1] = session[1:] != session[:-1]
        self._session_end: list[bool] = last_of_session.tolist()
        starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
        self._session_starts = starts
        self._session_stops = np.r_[starts[1:], data.n]  # exclusive
        self.n_sessions = int(starts.size)
        # One read-only copy of the matrix per position: the observation for (row, position) is
        # a ready row, and step() returns a fresh copy of it (callers keep what they are given).
        self._rows: list[list[np.ndarray]] = []
        for p in ACTION_TO_POSITION:
            m = np.ascontiguousarray(data.obs, dtype=np.float32).copy()
            m[:, pos_col] = p
            m.setflags(write=False)
            self._rows.append(list(m))

        self._window = min(environment.episode_sessions, self.n_sessions)
        self._flat_eod = environment.flat_at_session_end
        self._scale = reward.scale
        self._w_pnl = reward.pnl_weight
        self._w_turn = reward.turnover_penalty
        self._w_dd = reward.drawdown_penalty
        self._w_idle = reward.inactivity_penalty
        self._prepaid = reward.cost_charging == "round_trip_at_entry"
        self._cost_multiplier = 1.0
        self._cost_rate = 0.0
        self.cost_multiplier = cost_multiplier

        # episode state
        self._t = 0
        self._end = 0  # last row of the episode (inclusive)
        self._pos = 0
        self._equity = 1.0
        self._peak = 1.0
        self._dd = 0.0
        self._max_dd = 0.0
        self._turnover = 0.0
        self._reward_sum = 0.0
        self._ready = False

    # ---- curriculum --------------------------------------------------------------------------
    @property
    def cost_multiplier(self) -> float:
        return self._cost_multiplier

    @cost_multiplier.setter
    def cost_multiplier(self, value: float) -> None:
        if value < 0:
            raise ValueError("cost multiplier must be >= 0")
        self._cost_multiplier = float(value)
        self._cost_rate = self.environment.cost_bps * BPS * float(value)

    # ---- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.sequential:
            first, last = 0, self.n_sessions - 1
        else:
            first = int(self.np_random.integers(0, self.n_sessions - self._window + 1))
            last = first + self._window - 1
        self._t = int(self._session_starts[first])
        self._end = int(self._session_stops[last]) - 1
        if self._end <= self._t:
            raise ValueError("an episode needs at least two bars")
        self._pos = 0
        self._equity = self._peak = 1.0
        self._dd = self._max_dd = self._turnover = self._reward_sum = 0.0
        self._ready = True
        return self._rows[1][self._t].copy(), {"start_row": self._t, "end_row": self._end}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        t = self._t
        try:
            target = _TARGET[action]
        except (KeyError, TypeError):
            raise ValueError(f"invalid action {action!r}: expected 0 (SELL), 1 (HOLD) or 2 (BUY)") from None
        terminal = t == self._end
        if terminal or (self._flat_eod and self._session_end[t]):
            target = 0  # forced flat: episode end, or session end when configured
        dp = abs(target - self._pos)
        gross = target * self._ret[t]
        cost = self._cost_rate * dp
        equity = self._equity * (1.0 + gross - cost)
        peak = equity if equity > self._peak else self._peak
        dd = 1.0 - equity / peak
        dd_new = dd - self._dd if dd > self._dd else 0.0
        idle = self._w_idle if target == 0 else 0.0
        if self._prepaid:  # the round trip is charged when a position opens, its close is free
            charged = 2.0 * self._cost_rate if (target != 0 and target != self._pos) else 0.0
        else:
            charged = cost
        reward = self._scale * (self._w_pnl * gross - charged - self._w_turn * dp - self._w_dd * dd_new - idle)
        self._pos, self._equity, self._peak, self._dd = target, equity, peak, dd
        if dd > self._max_dd:
            self._max_dd = dd
        self._turnover += dp
        self._reward_sum += reward
        if terminal:
            self._ready = False
            info = {
                "episode_return": equity - 1.0,
                "episode_reward": self._reward_sum,
                "episode_turnover": self._turnover,
                "episode_max_drawdown": self._max_dd,
            }
            return self._rows[target + 1][t].copy(), reward, True, False, info
        self._t = t + 1
        return self._rows[target + 1][t + 1].copy(), reward, False, False, {}

    # ---- introspection ----------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._pos

    @property
    def row(self) -> int:
        """Index of the bar whose observation was returned last."""
        return self._t

    @property
    def equity(self) -> float:
        return self._equity


def rollout(env: TradingEnv, act: Any, *, seed: int | None = None) -> dict[str, float]:
    """Run one episode, choosing each action with `act(obs) -> int`; returns its totals.

    With a sequential env this is the whole split in order: the validation score of training.
    """
    obs, _ = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(int(act(obs)))
        total += reward
        steps += 1
        if terminated or truncated:
            return {
                "reward": total,
                "mean_reward": total / steps,
                "return": info["episode_return"],
                "turnover": info["episode_turnover"],
                "max_drawdown": info["episode_max_drawdown"],
                "steps": float(steps),
            }
