"""PPO training: determinism, curriculum, early stopping, median-seed selection, bad config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from usdcop_platform.contracts.errors import ConfigError
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, load_experiments
from usdcop_platform.core import training as tr
from usdcop_platform_tests.training_synth import synthetic_market, tiny


@pytest.fixture(scope="module")
def data() -> tr.TrainingData:
    return tr.TrainingData(train=synthetic_market(12, 0), val=synthetic_market(4, 1), obs_bound=5.0)


@pytest.fixture(scope="module")
def smoke(platform_config) -> ExperimentConfig:
    return tiny(platform_config.experiment("smoke"))


def test_same_config_data_and_seed_give_the_same_model_hash(smoke, data) -> None:
    a = tr.train_seed(smoke, data, 3)
    b = tr.train_seed(smoke, data, 3)
    c = tr.train_seed(smoke, data, 4)
    assert a.params_hash == b.params_hash == tr.params_hash(b.model)
    assert a.val_metrics == b.val_metrics
    assert c.params_hash != a.params_hash
    # the process-wide torch settings are restored afterwards
    assert not torch.are_deterministic_algorithms_enabled()


def test_params_hash_changes_with_any_parameter(smoke, data) -> None:
    r = tr.train_seed(smoke, data, 0, total_timesteps=256)
    before = tr.params_hash(r.model)
    with torch.no_grad():
        next(iter(r.model.policy.action_net.parameters())).view(-1)[0] += 1e-7
    assert tr.params_hash(r.model) != before


def test_hyperparameters_come_from_the_experiment(smoke, data) -> None:
    r = tr.train_seed(smoke, data, 0, total_timesteps=256)
    model, hp = r.model, smoke.algorithm.hyperparameters
    got = (model.n_steps, model.batch_size, model.n_epochs, model.gamma)
    assert got == (hp.n_steps, hp.batch_size, hp.n_epochs, hp.gamma)
    assert model.n_envs == smoke.algorithm.n_envs
    assert model.seed == 0
    assert [m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")] == list(
        smoke.algorithm.net_arch
    )


def test_curriculum_phases_and_metrics_reach_the_sink(smoke, data) -> None:
    seen: list[tuple[dict[str, float], int]] = []
    exp = tiny(smoke, early_stopping={"eval_every_timesteps": 256, "patience": 100})
    r = tr.train_seed(exp, data, 1, sink=lambda m, step: seen.append((m, step)))
    multipliers = [(step, m["seed_1/cost_multiplier"]) for m, step in seen if "seed_1/cost_multiplier" in m]
    # smoke: 0.5 until half the budget, then 1.0
    assert multipliers == [(0, 0.5), (512, 1.0)]
    evals = [(step, m["seed_1/val_reward"]) for m, step in seen if "seed_1/val_reward" in m]
    assert [s for s, _ in evals] == [256, 512, 768, 1024]  # validation reward over time
    assert [(h["timesteps"], h["val_reward"]) for h in r.history] == evals
    assert any("seed_1/train/value_loss" in m for m, _ in seen)


def test_phase_multiplier_lookup(smoke, data) -> None:
    cb = tr.CurriculumEarlyStopping(smoke, data.val, obs_bound=5.0, total_timesteps=100, sink=None, prefix="")
    assert [cb.phase_multiplier(f) for f in (0.0, 0.49, 0.5, 0.99, 1.0)] == [0.5, 0.5, 1.0, 1.0, 1.0]
    flat = smoke.model_copy(update={"curriculum": ()})
    cb = tr.CurriculumEarlyStopping(flat, data.val, obs_bound=5.0, total_timesteps=100, sink=None, prefix="")
    assert cb.phase_multiplier(0.3) == 1.0


def test_early_stopping_on_a_stalled_validation_reward(smoke, data) -> None:
    # a learning rate of ~0 keeps the greedy policy, hence the validation reward, constant
    stalled = tiny(
        smoke,
        total_timesteps=20_000,
        hp={"learning_rate": 1e-12},
        early_stopping={"eval_every_timesteps": 256, "patience": 2},
    )
    r = tr.train_seed(stalled, data, 0)
    assert r.stopped_early
    assert r.timesteps < 2_000  # first eval sets the best, the next two stall
    assert len(r.history) == 3
    assert r.best_timesteps == r.history[0]["timesteps"]


def test_best_validation_parameters_are_restored(smoke, data) -> None:
    r = tr.train_seed(smoke, data, 2)
    best = max(r.history, key=lambda h: h["val_reward"])
    assert r.val_metrics["val_reward"] == pytest.approx(best["val_reward"])
    assert r.best_timesteps == best["timesteps"]


def _fake(seed: int, score: float) -> tr.SeedResult:
    return tr.SeedResult(seed, None, f"h{seed}", {"val_reward": score}, [], 1, 1, False, 1.0)  # type: ignore[arg-type]


def test_the_median_seed_is_selected_never_the_best() -> None:
    assert tr.select_median([_fake(0, 3.0), _fake(1, 1.0), _fake(2, 2.0)]).seed == 2
    assert tr.select_median([_fake(0, 4.0), _fake(1, 1.0), _fake(2, 3.0), _fake(3, 2.0)]).seed == 3
    five = [_fake(s, v) for s, v in enumerate([9.0, -1.0, 0.5, 7.0, 2.0])]
    assert tr.select_median(five).seed == 4
    assert tr.select_median([_fake(7, 1.0)]).seed == 7
    with pytest.raises(ValueError):
        tr.select_median([])


def test_train_experiment_trains_every_seed(smoke, data) -> None:
    three = smoke.model_copy(update={"seeds": (0, 1, 2)})
    result = tr.train_experiment(three, data, total_timesteps=256)
    assert [s.seed for s in result.seeds] == [0, 1, 2]
    assert result.selected is tr.select_median(result.seeds)
    summary = result.summary()
    assert summary["selected_seed"] == result.selected.seed and len(summary["seeds"]) == 3


def test_model_id_is_minted_from_experiment_and_hash(smoke) -> None:
    assert tr.mint_model_id(smoke, "ab" * 32) == f"smoke-{smoke.version}-{'ab' * 6}"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"algorithm": {"name": "DQN"}}, "algorithm.name"),
        ({"algorithm": {"hyperparameters": {"learning_rte": 0.1}}}, "algorithm.hyperparameters.learning_rte"),
        ({"algorithm": {"hyperparameters": {"batch_size": 4096}}}, ""),
        ({"curriculum": [{"until_fraction": 0.5, "cost_multiplier": 1.0}]}, "curriculum"),
    ],
)
def test_unknown_algorithm_or_hyperparameter_is_a_config_error(tmp_path: Path, patch, key) -> None:
    raw = yaml.safe_load((DEFAULT_CONFIG_DIR / "experiments" / "smoke.yaml").read_text())
    for section, values in patch.items():
        if isinstance(values, dict):
            for k, v in values.items():
                if isinstance(v, dict):
                    raw[section][k].update(v)
                else:
                    raw[section][k] = v
        else:
            raw[section] = values
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(raw))
    from usdcop_platform.contracts.platform import get_config

    with pytest.raises(ConfigError) as err:
        load_experiments(tmp_path, get_config().features)
    assert err.value.key.startswith(key)
    assert "smoke.yaml" in err.value.file


def test_trading_vec_env_matches_dummy_vec_env(smoke, data) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from usdcop_platform.core.env import TradingEnv

    fast = tr.make_vec_env(data.train, smoke, obs_bound=5.0, n_envs=3)
    ref = DummyVecEnv([lambda: TradingEnv(data.train, smoke.environment, smoke.reward, obs_bound=5.0)] * 3)
    fast.seed(11)
    ref.seed(11)
    np.testing.assert_array_equal(fast.reset(), ref.reset())
    actions = np.random.default_rng(0).integers(0, 3, (500, 3))
    dones = 0
    for a in actions:
        o1, r1, d1, i1 = fast.step(a)
        o2, r2, d2, i2 = ref.step(a)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for x, y in zip(i1, i2):
            assert x.keys() == y.keys()
            if "terminal_observation" in x:
                np.testing.assert_array_equal(x["terminal_observation"], y["terminal_observation"])
        dones += int(d1.sum())
    assert dones > 0  # episodes ended and auto-reset on the way


def test_a_validation_score_belongs_to_the_parameters_that_saw_its_timesteps(smoke, data) -> None:
    flat = smoke.model_copy(update={"curriculum": ()})  # cost multiplier independent of the budget
    scored = tiny(flat, early_stopping={"eval_every_timesteps": 256, "patience": 100}, total_timesteps=768)
    long = tr.train_seed(scored, data, 5)
    assert [h["timesteps"] for h in long.history] == [256, 512, 768]
    short = tr.train_seed(tiny(flat, early_stopping=None, total_timesteps=512), data, 5)
    assert short.history[-1]["timesteps"] == 512
    assert long.history[1]["val_reward"] == short.val_metrics["val_reward"]


def test_initial_hold_bias_raises_only_the_hold_logit_of_the_untrained_policy(smoke, data) -> None:
    from usdcop_platform.core.actions import BUY, HOLD, SELL

    env = tr.make_vec_env(data.train, smoke, obs_bound=5.0)
    plain = tr.build_ppo(smoke, env, seed=5)
    biased_exp = tiny(smoke, initial_hold_bias=2.0)
    biased = tr.build_ppo(biased_exp, env, seed=5)
    b0, b1 = plain.policy.action_net.bias.detach(), biased.policy.action_net.bias.detach()
    assert float(b1[HOLD] - b0[HOLD]) == pytest.approx(2.0)
    assert float(b1[SELL]) == float(b0[SELL]) and float(b1[BUY]) == float(b0[BUY])
    # the untrained policy now picks HOLD on (nearly) every observation
    obs = torch.as_tensor(data.train.obs[:500])
    with torch.no_grad():
        probs = biased.policy.get_distribution(obs).distribution.probs
    assert float(probs[:, HOLD].mean()) > 0.75
    env.close()


def test_a_train_split_shorter_than_one_episode_is_a_clear_error(smoke) -> None:
    exp = tiny(smoke)
    short = tr.TrainingData(train=synthetic_market(exp.environment.episode_sessions - 1, 0), val=synthetic_market(2, 1), obs_bound=5.0)
    with pytest.raises(ValueError, match=r"train split has 2 sessions, fewer than one episode"):
        tr.train_seed(exp, short, 0)


def test_validation_scores_start_at_the_configured_fraction_of_the_budget(smoke, data) -> None:
    raw = tiny(smoke).canonical()
    raw["algorithm"]["early_stopping"] = {"eval_every_timesteps": 256, "patience": 50, "start_fraction": 0.5}
    exp = ExperimentConfig.model_validate(raw)
    r = tr.train_seed(exp, data, 0, total_timesteps=2048)
    evaluated = [h["timesteps"] for h in r.history]
    assert evaluated and min(evaluated) >= 1024  # nothing trained on the first half is a candidate
    assert r.best_timesteps >= 1024
    with pytest.raises(ValueError):
        raw["algorithm"]["early_stopping"]["start_fraction"] = 1.0
        ExperimentConfig.model_validate(raw)
