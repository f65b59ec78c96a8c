"""core.policy_runner with real onnxruntime policies: state feedback, forced flats, parity with the
training environment and with the live per-bar step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from usdcop_platform.bench.backtest import mlp_policy_onnx
from usdcop_platform.contracts.experiment import EnvironmentConfig, RewardConfig
from usdcop_platform.core.actions import BUY, HOLD, SELL
from usdcop_platform.core.env import MarketData, TradingEnv, rollout
from usdcop_platform.core.normalization import NormStats
from usdcop_platform.core.onnx_policy import OnnxPolicy
from usdcop_platform.core.policy_runner import (
    PolicyRunError,
    last_bar_of_session,
    observation,
    policy_step,
    run_policy_over_bars,
)

D = 15
POS = 13  # contract v1: position is feature 13


def flip_policy_layers() -> list[tuple[np.ndarray, np.ndarray]]:
    """logits = [5 p, -1, 1 - 5 p] for incoming position p: flat -> BUY, long -> SELL, short -> BUY."""
    w = np.zeros((D, 3))
    w[POS] = [5.0, 0.0, -5.0]
    return [(w, np.array([0.0, -1.0, 1.0]))]


@pytest.fixture
def flip_policy(tmp_path: Path) -> OnnxPolicy:
    return OnnxPolicy(mlp_policy_onnx(tmp_path / "flip.onnx", flip_policy_layers()))


@pytest.fixture
def mlp_policy(tmp_path: Path) -> OnnxPolicy:
    rng = np.random.default_rng(0)
    layers = [(rng.normal(0, 0.8, (D, 32)), rng.normal(0, 0.1, 32)), (rng.normal(0, 0.8, (32, 3)), np.zeros(3))]
    return OnnxPolicy(mlp_policy_onnx(tmp_path / "mlp.onnx", layers, {"feature_order_hash": "x"}))


def raw_matrix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.normal(0, 1, (n, D))
    raw[:, POS] = 0.0
    raw[:, 14] = (np.arange(n) % 60) / 59
    return raw


def test_position_feeds_back_and_sessions_end_flat(flip_policy: OnnxPolicy) -> None:
    sessions = np.repeat([0, 1], 4)
    run = run_policy_over_bars(flip_policy, None, raw_matrix(8), sessions, flat_at_session_end=True, position_index=POS)
    assert run.actions.tolist() == [BUY, SELL, BUY, SELL, BUY, SELL, BUY, SELL]
    assert run.positions.tolist() == [1, -1, 1, 0, 1, -1, 1, 0]
    assert run.forced_flat.tolist() == [False, False, False, True] * 2
    np.testing.assert_allclose(run.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert run.confidence.shape == (8,)


def test_without_flat_at_session_end_only_the_last_bar_is_forced(flip_policy: OnnxPolicy) -> None:
    sessions = np.repeat([0, 1], 3)
    run = run_policy_over_bars(flip_policy, None, raw_matrix(6), sessions, flat_at_session_end=False, position_index=POS)
    assert run.positions.tolist() == [1, -1, 1, -1, 1, 0]


def test_replay_equals_the_training_environment(mlp_policy: OnnxPolicy) -> None:
    n = 240
    raw = raw_matrix(n, seed=3)
    sessions = np.repeat(np.arange(4), 60)
    rng = np.random.default_rng(5)
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    run = run_policy_over_bars(mlp_policy, None, raw, sessions, flat_at_session_end=True, position_index=POS)
    assert len(set(run.positions.tolist())) == 3  # the policy actually trades both ways

    env = TradingEnv(
        MarketData(obs=raw.astype(np.float32), close=close, session=sessions, position_index=POS),
        EnvironmentConfig(episode_sessions=4, flat_at_session_end=True, cost_bps=75.0),
        RewardConfig(),
        obs_bound=10.0,
        sequential=True,
    )
    env_positions: list[int] = []

    def act(obs: np.ndarray) -> int:
        probs, _ = mlp_policy.predict_proba(obs[None, :])
        return int(np.argmax(probs[0]))

    original_step = env.step

    def recording_step(action):
        out = original_step(action)
        env_positions.append(env.position)
        return out

    env.step = recording_step  # type: ignore[method-assign]
    rollout(env, act)
    assert env_positions == run.positions.tolist()


def test_live_step_equals_the_batch_replay(mlp_policy: OnnxPolicy, platform_config) -> None:
    contract = platform_config.features
    stats = NormStats.fit(raw_matrix(500, seed=9) * 3 + 1, contract)
    raw = raw_matrix(120, seed=4) * 3 + 1
    raw[:, POS] = 0.0
    sessions = np.repeat([0, 1], 60)
    run = run_policy_over_bars(mlp_policy, stats, raw, sessions, flat_at_session_end=True, position_index=POS)
    position = 0
    for t in range(raw.shape[0]):
        step = policy_step(mlp_policy, stats, raw[t], position, position_index=POS, force_flat=bool(run.forced_flat[t]))
        assert (step.action, step.position) == (run.actions[t], run.positions[t])
        np.testing.assert_array_equal(step.probabilities, run.probabilities[t])
        position = step.position


def test_observation_sets_position_before_normalizing(platform_config) -> None:
    contract = platform_config.features
    stats = NormStats.fit(raw_matrix(200) * 2, contract)
    row = raw_matrix(1, seed=1)[0] * 2
    obs = observation(stats, row, -1, POS)
    assert obs.dtype == np.float32 and obs[POS] == -1.0
    np.testing.assert_array_equal(observation(stats, row[None, :], -1, POS)[0], obs)
    with pytest.raises(PolicyRunError):
        observation(stats, row, 2, POS)


def test_bad_inputs(flip_policy: OnnxPolicy) -> None:
    with pytest.raises(PolicyRunError, match="aligned"):
        run_policy_over_bars(flip_policy, None, raw_matrix(4), np.zeros(3), flat_at_session_end=True, position_index=POS)
    with pytest.raises(PolicyRunError, match="no bars"):
        run_policy_over_bars(flip_policy, None, np.zeros((0, D)), np.zeros(0), flat_at_session_end=True, position_index=POS)
    with pytest.raises(PolicyRunError, match="position_index"):
        run_policy_over_bars(flip_policy, None, raw_matrix(4), np.zeros(4), flat_at_session_end=True, position_index=D)
    with pytest.raises(PolicyRunError, match="one raw feature row"):
        policy_step(flip_policy, None, raw_matrix(2), 0, position_index=POS)


def test_last_bar_of_session() -> None:
    assert last_bar_of_session(np.array([3, 3, 4, 5, 5])).tolist() == [False, True, True, False, True]
    assert HOLD == 1  # the encoding this module relies on (core.actions)
