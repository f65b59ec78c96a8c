"""TradingEnv: gymnasium conformance, hand-computed PnL/costs/penalties, no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from usdcop_platform.contracts.experiment import EnvironmentConfig, RewardConfig
from usdcop_platform.core.actions import BUY, HOLD, SELL
from usdcop_platform.core.env import MarketData, TradingEnv, rollout

POS = 13  # contract v1: index of `position`
D = 15


def market(closes: list[float] | np.ndarray, sessions: list[int] | np.ndarray, seed: int = 0) -> MarketData:
    n = len(closes)
    rng = np.random.default_rng(seed)
    obs = np.clip(rng.normal(size=(n, D)), -5, 5).astype(np.float32)
    obs[:, POS] = 0.0
    return MarketData(obs, np.asarray(closes, dtype=np.float64), np.asarray(sessions, dtype=np.int64), POS)


def env_of(
    data: MarketData,
    *,
    cost_bps: float = 0.0,
    flat: bool = False,
    episode_sessions: int = 1,
    sequential: bool = True,
    cost_multiplier: float = 1.0,
    **reward: float | str,
) -> TradingEnv:
    return TradingEnv(
        data,
        EnvironmentConfig(episode_sessions=episode_sessions, flat_at_session_end=flat, cost_bps=cost_bps),
        RewardConfig(**{"pnl_weight": 1.0, "scale": 1.0, **reward}),
        obs_bound=5.0,
        cost_multiplier=cost_multiplier,
        sequential=sequential,
    )


def run(env: TradingEnv, actions: list[int]) -> tuple[list[float], list[np.ndarray], bool]:
    obs, _ = env.reset(seed=0)
    seen, rewards, done = [obs], [], False
    for a in actions:
        obs, r, done, trunc, _ = env.step(a)
        rewards.append(r)
        seen.append(obs)
        assert not trunc
        if done:
            break
    return rewards, seen, done


def test_passes_gymnasium_and_sb3_env_checkers() -> None:
    data = market(4000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-3, 600))), np.repeat(np.arange(10), 60))
    env = env_of(data, cost_bps=75, flat=True, episode_sessions=3, sequential=False)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def test_pnl_and_costs_by_hand() -> None:
    # one session, closes 100 -> 101 -> 99 -> 99 -> 100; cost 10 bps per unit of position change
    env = env_of(market([100, 101, 99, 99, 100], [0] * 5), cost_bps=10)
    rewards, obs, done = run(env, [BUY, BUY, SELL, HOLD, BUY])
    c = 10e-4
    expected = [
        +1 * (101 / 100 - 1) - c * 1,  # open long at 100, earns 100 -> 101
        +1 * (99 / 101 - 1) - 0.0,  # keep long
        -1 * (99 / 99 - 1) - c * 2,  # flip to short: costs twice
        0.0 - c * 1,  # flat
        0.0 - 0.0,  # last bar of the episode: forced flat, the BUY is ignored
    ]
    assert rewards == pytest.approx(expected, abs=1e-15)
    assert done
    # the observation of bar t carries the position held coming into t
    assert [o[POS] for o in obs] == [0, 1, 1, -1, 0, 0]
    gross = (1 + expected[0]) * (1 + expected[1]) * (1 + expected[2]) * (1 + expected[3]) - 1
    assert env.equity - 1 == pytest.approx(gross, abs=1e-15)


def test_cost_multiplier_scales_costs_only() -> None:
    data = market([100, 100, 100, 100], [0] * 4)
    full, _, _ = run(env_of(data, cost_bps=75), [BUY, SELL, HOLD, HOLD])
    half, _, _ = run(env_of(data, cost_bps=75, cost_multiplier=0.5), [BUY, SELL, HOLD, HOLD])
    assert full == pytest.approx([-75e-4, -150e-4, -75e-4, 0.0])
    assert half == pytest.approx([r / 2 for r in full])
    env = env_of(data, cost_bps=75)
    env.cost_multiplier = 0.25
    quarter, _, _ = run(env, [BUY, SELL, HOLD, HOLD])
    assert quarter == pytest.approx([r / 4 for r in full])
    with pytest.raises(ValueError):
        env.cost_multiplier = -1


def test_flat_at_session_end_forces_flat_and_skips_the_overnight_gap() -> None:
    closes, sessions = [100, 100, 100, 110, 110, 110], [0, 0, 0, 1, 1, 1]  # +10% gap overnight
    held, _, _ = run(env_of(market(closes, sessions), cost_bps=10, episode_sessions=2), [BUY] * 6)
    flat, obs, _ = run(env_of(market(closes, sessions), cost_bps=10, flat=True, episode_sessions=2), [BUY] * 6)
    c = 10e-4
    assert held[2] == pytest.approx(0.10)  # long at the last bar of session 0 earns the gap
    assert flat[2] == pytest.approx(-c)  # forced flat: closing cost, no gap
    assert flat[3] == pytest.approx(-c)  # re-enter next morning
    assert obs[3][POS] == 0  # first bar of session 1 sees a flat book
    assert sum(held) == pytest.approx(0.10 - 2 * c)
    assert sum(flat) == pytest.approx(-4 * c)


def test_penalties_by_hand() -> None:
    # closes 100 -> 90 -> 99 -> 99: long loses 10%, then regains; drawdown and its recovery
    data = market([100, 90, 99, 99], [0] * 4)
    env = env_of(data, drawdown_penalty=2.0, turnover_penalty=0.5, inactivity_penalty=0.01, scale=10.0)
    rewards, _, _ = run(env, [BUY, BUY, HOLD, HOLD])
    e1 = 1 * (90 / 100 - 1)  # equity 0.9, drawdown 0.1 (new)
    e2 = 1 * (99 / 90 - 1)  # equity 0.99, drawdown 0.01 (smaller: no new drawdown)
    expected = [
        10 * (e1 - 0.5 * 1 - 2.0 * 0.1),
        10 * (e2 - 0.0 - 0.0),
        10 * (0.0 - 0.5 * 1 - 0.0 - 0.01),
        10 * (0.0 - 0.0 - 0.0 - 0.01),
    ]
    assert rewards == pytest.approx(expected, abs=1e-12)


def test_observation_at_t_holds_nothing_from_t_plus_1() -> None:
    rng = np.random.default_rng(7)
    n, k = 120, 57
    base = market(4000 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), np.repeat([0, 1], 60), seed=3)
    obs2, close2 = base.obs.copy(), base.close.copy()
    obs2[k + 1 :] = np.clip(rng.normal(size=(n - k - 1, D)), -5, 5)  # a different future
    obs2[:, POS] = 0.0
    close2[k + 1 :] *= 1.05
    other = MarketData(obs2, close2, base.session, POS)
    actions = rng.integers(0, 3, n).tolist()
    r1, o1, _ = run(env_of(base, cost_bps=5, episode_sessions=2), actions)
    r2, o2, _ = run(env_of(other, cost_bps=5, episode_sessions=2), actions)
    for t in range(k + 1):
        np.testing.assert_array_equal(o1[t], o2[t])  # observations of bars 0..k are identical
        expected = base.obs[t].copy()
        expected[POS] = o1[t][POS]
        np.testing.assert_array_equal(o1[t], expected)  # and are row t itself
    assert r1[:k] == r2[:k]  # rewards before bar k only use closes up to C_k
    assert r1[k] != r2[k]  # the step at k is the first to see C_{k+1} — through its reward
    assert not np.array_equal(o1[k + 1], o2[k + 1])  # sanity: the futures do differ


def test_random_windows_span_episode_sessions_and_sequential_spans_all() -> None:
    data = market(np.full(600, 100.0), np.repeat(np.arange(10), 60))
    env = env_of(data, episode_sessions=3, sequential=False)
    starts = set()
    for s in range(20):
        _, info = env.reset(seed=s)
        assert info["end_row"] - info["start_row"] + 1 == 180
        assert info["start_row"] % 60 == 0
        starts.add(info["start_row"])
    assert len(starts) > 1
    totals = rollout(env_of(data, sequential=True), lambda _obs: HOLD)
    assert totals["steps"] == 600


def test_same_seed_same_episode() -> None:
    data = market(np.full(600, 100.0), np.repeat(np.arange(10), 60))
    a, b = env_of(data, sequential=False, episode_sessions=2), env_of(data, sequential=False, episode_sessions=2)
    assert [a.reset(seed=s)[1] for s in range(5)] == [b.reset(seed=s)[1] for s in range(5)]


def test_bad_actions_and_misuse_are_refused() -> None:
    env = env_of(market([100, 101, 102], [0] * 3))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(BUY)
    env.reset(seed=0)
    for bad in (3, -1, "2", None):
        with pytest.raises(ValueError, match="invalid action"):
            env.step(bad)
    env.step(np.int64(BUY))  # numpy integers (what SB3 passes) are accepted
    assert env.position == 1


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda o, c, s: o.__setitem__((1, 0), np.nan), "NaN"),
        (lambda o, c, s: c.__setitem__(1, 0.0), "close"),
        (lambda o, c, s: s.__setitem__(slice(0, 2), [1, 0]), "non-decreasing"),
    ],
)
def test_bad_market_data_is_refused(mutate, match) -> None:
    obs = np.zeros((4, D), dtype=np.float32)
    close, session = np.full(4, 100.0), np.zeros(4, dtype=np.int64)
    mutate(obs, close, session)
    with pytest.raises(ValueError, match=match):
        MarketData(obs, close, session, POS)


def test_unnormalized_observations_are_refused() -> None:
    data = market([100, 101], [0, 0])
    data.obs[0, 0] = 50.0
    with pytest.raises(ValueError, match="normalize"):
        env_of(data)


def test_round_trip_at_entry_charges_the_whole_round_trip_when_a_position_opens() -> None:
    # one session, closes 100 -> 101 -> 99 -> 99 -> 100; cost 10 bps per unit of position change
    data = market([100, 101, 99, 99, 100], [0] * 5)
    env = env_of(data, cost_bps=10, cost_charging="round_trip_at_entry")
    rewards, _, done = run(env, [BUY, BUY, SELL, HOLD, BUY])
    c = 10e-4
    expected = [
        +1 * (101 / 100 - 1) - 2 * c,  # open long: its close is paid now
        +1 * (99 / 101 - 1),  # keep long
        -1 * (99 / 99 - 1) - 2 * c,  # flip: the long's close was prepaid, the short's round trip is charged
        0.0,  # close the short: prepaid
        0.0,  # forced flat
    ]
    assert rewards == pytest.approx(expected, abs=1e-15)
    assert done
    # reward timing only: equity (the PnL) is charged when trades happen, exactly as per_change
    per_change = env_of(data, cost_bps=10)
    run(per_change, [BUY, BUY, SELL, HOLD, BUY])
    assert env.equity == per_change.equity


def test_round_trip_at_entry_sums_to_the_true_costs_over_any_episode() -> None:
    # forced flats at session and episode ends close every position, so the prepaid round trips
    # add up to exactly the costs of per_change charging, for any actions
    rng = np.random.default_rng(3)
    closes = 4000 * np.exp(np.cumsum(rng.normal(0, 1e-3, 300)))
    data = market(closes, np.repeat(np.arange(5), 60))
    actions = rng.integers(0, 3, 300).tolist()
    for flat in (True, False):
        a, _, _ = run(env_of(data, cost_bps=75, flat=flat, episode_sessions=5), actions)
        b, _, _ = run(env_of(data, cost_bps=75, flat=flat, episode_sessions=5, cost_charging="round_trip_at_entry"), actions)
        assert len(a) == len(b) == 300
        assert sum(b) == pytest.approx(sum(a), abs=1e-12)


def test_zero_cost_works_under_both_charging_modes() -> None:
    data = market([100, 101, 99, 99, 100], [0] * 5)
    for mode in ("per_change", "round_trip_at_entry"):
        rewards, _, _ = run(env_of(data, cost_bps=0.0, cost_charging=mode), [BUY, BUY, SELL, HOLD, BUY])
        assert rewards == pytest.approx([0.01, 99 / 101 - 1, 0.0, 0.0, 0.0], abs=1e-15)
