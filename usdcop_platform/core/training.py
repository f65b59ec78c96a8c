"""PPO training on the trading environment: vectorized envs, curriculum, early stopping, seeds.

One training of an experiment = one PPO run per configured seed. Each run:

  * collects experience from `algorithm.n_envs` copies of the train env in a DummyVecEnv
    (TradingVecEnv: the same, minus per-step deep copies; env i is seeded seed + i, so
    episodes start at different sessions),
  * follows the curriculum: the cost multiplier of phase k applies while
    num_timesteps / total_timesteps < until_fraction_k,
  * every `early_stopping.eval_every_timesteps` from `early_stopping.start_fraction` of the budget
    on (checked between rollouts, after SB3's update,
    so a score belongs to parameters that learned from every timestep counted) scores the greedy
    policy on the whole validation split at full costs (sum of rewards, sequential episode) and
    stops after `patience` scores without improvement; the best parameters are restored at the end,
  * runs under `deterministic_torch()` (one thread, deterministic kernels), so the same config,
    data and seed give the same parameters and the same `params_hash` on a machine.

The candidate is the seed with the median validation score (lower median for an even count),
never the best seed: seeds vary enormously, and promoting the best one overfits the validation
split. All seeds are reported.

`package_model` writes the candidate's artefacts to models/<experiment>/<model_id>/ and runs the
ONNX parity gate. model_hash = sha256 of the policy parameters (`params_hash`), not of a file:
model.zip embeds timestamps, and policy.onnx embeds the model id, which is minted from the hash
(model_id = "<experiment>-<version>-<model_hash[:12]>", `mint_model_id`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3 import __version__ as sb3_version
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import DummyVecEnv

from usdcop_platform.contracts.base import file_hash, sha256_parts
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.core.actions import ACTION_NAMES, ACTION_TO_POSITION, HOLD
from usdcop_platform.core.env import MarketData, TradingEnv, rollout
from usdcop_platform.core.normalization import NormStats
from usdcop_platform.core.onnx_export import ONNX_OPSET, ParityReport, check_parity, export_onnx

MetricsSink = Callable[[dict[str, float], int], None]
"""Receives (metrics, step): training statistics and validation scores as they happen."""

TRAINING_THREADS = 1  # one core per training (benchmark target and determinism)
SELECTION_METRIC = "val_reward"


@dataclass(frozen=True)
class TrainingData:
    """Normalized train and validation arrays plus the observation bound (normalization clip)."""

    train: MarketData
    val: MarketData
    obs_bound: float


@dataclass
class SeedResult:
    seed: int
    model: PPO
    params_hash: str
    val_metrics: dict[str, float]
    history: list[dict[str, float]]
    timesteps: int
    best_timesteps: int
    stopped_early: bool
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "params_hash": self.params_hash,
            "val_metrics": self.val_metrics,
            "timesteps": self.timesteps,
            "best_timesteps": self.best_timesteps,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "steps_per_second": round(self.timesteps / self.seconds, 1) if self.seconds else None,
            "history": self.history,
        }


@dataclass
class TrainingResult:
    seeds: list[SeedResult]
    selected: SeedResult
    selection: str = field(default=f"median {SELECTION_METRIC} over seeds (never the best)")

    def summary(self) -> dict[str, Any]:
        return {
            "selected_seed": self.selected.seed,
            "selection": self.selection,
            "seeds": [s.summary() for s in self.seeds],
        }


# ---- determinism ---------------------------------------------------------------------------------
@contextlib.contextmanager
def deterministic_torch(threads: int = TRAINING_THREADS) -> Iterator[None]:
    """For the duration: one intra-op thread, deterministic kernels, and no argument validation
    in torch.distributions (SB3 builds a Categorical per rollout step; validating its probabilities
    costs more than the network). Restores all three after."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_validate = torch.distributions.Distribution._validate_args
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(prev_validate)
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def params_hash(model: PPO) -> str:
    """sha256 over the policy's state_dict: names sorted, each name, dtype, shape and raw bytes.

    This is the model hash: independent of file formats (model.zip embeds timestamps)."""
    state = model.policy.state_dict()

    def parts() -> Iterator[str | bytes]:
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}|"
            yield t.numpy().tobytes()

    return sha256_parts(parts())


# ---- construction --------------------------------------------------------------------------------
def ppo_kwargs(exp: ExperimentConfig) -> dict[str, Any]:
    """PPO constructor arguments from the experiment (unknown keys were refused by the contract)."""
    arch = list(exp.algorithm.net_arch)
    return {
        **exp.algorithm.hyperparameters.model_dump(),
        "policy_kwargs": {"net_arch": {"pi": arch, "vf": arch}},
    }


class TradingVecEnv(DummyVecEnv):
    """DummyVecEnv without the per-step deep copies.

    TradingEnv returns a fresh observation array and a fresh info dict at every step, so
    DummyVecEnv's `deepcopy` of the observation buffer and of every info dict only costs time
    (about a fifth of a rollout). Semantics are DummyVecEnv's: same order, same auto-reset, same
    `terminal_observation` and `TimeLimit.truncated` entries (a test compares the two)."""

    def step_wait(self):  # type: ignore[override]
        buf = self.buf_obs[None]
        for i, (env, action) in enumerate(zip(self.envs, self.actions.tolist())):
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_rews[i], self.buf_dones[i], self.buf_infos[i] = reward, done, info
            buf[i] = obs
        return buf.copy(), self.buf_rews.copy(), self.buf_dones.copy(), list(self.buf_infos)


def make_vec_env(
    data: MarketData, exp: ExperimentConfig, *, obs_bound: float, n_envs: int | None = None
) -> TradingVecEnv:
    """`n_envs` copies of the training env over the same arrays (seeded by PPO: seed + i)."""
    n = n_envs or exp.algorithm.n_envs

    def factory() -> TradingEnv:
        return TradingEnv(data, exp.environment, exp.reward, obs_bound=obs_bound)

    return TradingVecEnv([factory] * n)


def build_ppo(exp: ExperimentConfig, env: DummyVecEnv, seed: int, **overrides: Any) -> PPO:
    kwargs = {**ppo_kwargs(exp), **overrides}
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    bias = exp.algorithm.initial_hold_bias
    if bias:
        with torch.no_grad():
            model.policy.action_net.bias[HOLD] += bias
    return model


# ---- evaluation ----------------------------------------------------------------------------------
def greedy_action_table(model: PPO, data: MarketData) -> np.ndarray:
    """(3, n) greedy actions for every row under each held position -1/0/+1 (one batched pass).

    The position is the only observation value that depends on earlier actions, so this table
    replays a deterministic policy exactly without a forward pass per step."""
    policy = model.policy
    policy.set_training_mode(False)
    out = np.empty((len(ACTION_TO_POSITION), data.n), dtype=np.int64)
    with torch.no_grad():
        for k, p in enumerate(ACTION_TO_POSITION):
            m = data.obs.astype(np.float32, copy=True)
            m[:, data.position_index] = p
            probs = policy.get_distribution(torch.as_tensor(m)).distribution.probs
            out[k] = probs.argmax(dim=1).numpy()
    return out


def evaluate(model: PPO, data: MarketData, exp: ExperimentConfig, *, obs_bound: float) -> dict[str, float]:
    """Greedy policy over the whole split in order, at full costs: reward, return, turnover, dd."""
    table = greedy_action_table(model, data)
    env = TradingEnv(data, exp.environment, exp.reward, obs_bound=obs_bound, sequential=True)
    totals = rollout(env, lambda _obs: table[env.position + 1, env.row])
    return {f"val_{k}": float(v) for k, v in totals.items()}


# ---- callbacks -----------------------------------------------------------------------------------
class _MetricsWriter(KVWriter):
    """Forwards SB3's logger output (rollout/train statistics) to a MetricsSink."""

    def __init__(self, sink: MetricsSink, prefix: str) -> None:
        self.sink, self.prefix = sink, prefix

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        numeric = {
            f"{self.prefix}{k}": float(v)
            for k, v in key_values.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v)
        }
        if numeric:
            self.sink(numeric, int(step))

    def close(self) -> None:
        pass


class CurriculumEarlyStopping(BaseCallback):
    """Applies the curriculum's cost multiplier and stops on a stalled validation score."""

    def __init__(
        self,
        exp: ExperimentConfig,
        val: MarketData,
        *,
        obs_bound: float,
        total_timesteps: int,
        sink: MetricsSink | None,
        prefix: str,
    ) -> None:
        super().__init__(verbose=0)
        self.exp, self.val, self.obs_bound = exp, val, obs_bound
        self.total = total_timesteps
        self.sink, self.prefix = sink, prefix
        es = exp.algorithm.early_stopping
        self.eval_every = es.eval_every_timesteps if es else None
        self.patience = es.patience if es else None
        self.next_eval = max(self.eval_every or 0, int(np.ceil((es.start_fraction if es else 0.0) * total_timesteps)))
        self.best_score = -np.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_timesteps = 0
        self.bad_evals = 0
        self.stopped_early = False
        self.history: list[dict[str, float]] = []
        self.cost_multiplier: float | None = None

    def phase_multiplier(self, fraction: float) -> float:
        for phase in self.exp.curriculum:
            if fraction < phase.until_fraction:
                return phase.cost_multiplier
        return self.exp.curriculum[-1].cost_multiplier if self.exp.curriculum else 1.0

    def _emit(self, metrics: dict[str, float]) -> None:
        if self.sink is not None:
            self.sink({f"{self.prefix}{k}": v for k, v in metrics.items()}, self.num_timesteps)

    def _on_rollout_start(self) -> None:
        # SB3 trains on a rollout after collecting it, so here, before the next rollout, the
        # parameters reflect every timestep so far: the point where a validation score is honest.
        if self.eval_every is not None and self.num_timesteps >= self.next_eval:
            while self.next_eval <= self.num_timesteps:
                self.next_eval += self.eval_every
            self.evaluate_now()
            if self.patience is not None and self.bad_evals >= self.patience:
                self.stopped_early = True  # _on_step stops before anything else is learned
        m = self.phase_multiplier(self.num_timesteps / self.total)
        if m != self.cost_multiplier:
            self.training_env.set_attr("cost_multiplier", m)
            self.cost_multiplier = m
            self._emit({"cost_multiplier": m})

    def evaluate_now(self) -> dict[str, float]:
        metrics = evaluate(self.model, self.val, self.exp, obs_bound=self.obs_bound)
        score = metrics[SELECTION_METRIC]
        self.history.append({"timesteps": float(self.num_timesteps), **metrics})
        self._emit(metrics)
        if score > self.best_score:
            self.best_score, self.best_timesteps, self.bad_evals = score, self.num_timesteps, 0
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
        else:
            self.bad_evals += 1
        return metrics

    def _on_step(self) -> bool:
        return not self.stopped_early

    def finish(self) -> None:
        """Score the final parameters (unless already scored), then restore the best ones."""
        scored = self.history and self.history[-1]["timesteps"] == self.num_timesteps
        if not (self.stopped_early or scored):
            self.evaluate_now()
        if self.best_state is not None:
            self.model.policy.load_state_dict(self.best_state)


# ---- training ------------------------------------------------------------------------------------
def train_seed(
    exp: ExperimentConfig,
    data: TrainingData,
    seed: int,
    *,
    total_timesteps: int | None = None,
    progress_bar: bool = False,
    sink: MetricsSink | None = None,
    prefix: str | None = None,
) -> SeedResult:
    """Train one PPO model; see the module docstring."""
    total = int(total_timesteps or exp.algorithm.total_timesteps)
    if total < 1:
        raise ValueError("total_timesteps must be >= 1")
    n_sessions = int(np.unique(data.train.session).size)
    if n_sessions < exp.environment.episode_sessions:
        raise ValueError(
            f"the train split has {n_sessions} sessions, fewer than one episode of experiment {exp.name!r} "
            f"(environment.episode_sessions = {exp.environment.episode_sessions}): widen date_ranges.train "
            "or shorten the episode"
        )
    prefix = f"seed_{seed}/" if prefix is None else prefix
    t0 = time.perf_counter()
    with deterministic_torch():
        env = make_vec_env(data.train, exp, obs_bound=data.obs_bound)
        model = build_ppo(exp, env, seed)
        if sink is not None:
            model.set_logger(Logger(folder=None, output_formats=[_MetricsWriter(sink, prefix)]))
        callback = CurriculumEarlyStopping(
            exp, data.val, obs_bound=data.obs_bound, total_timesteps=total, sink=sink, prefix=prefix
        )
        model.learn(total_timesteps=total, callback=callback, progress_bar=progress_bar)
        callback.finish()
        val_metrics = evaluate(model, data.val, exp, obs_bound=data.obs_bound)
        model.policy.set_training_mode(False)
        env.close()
    return SeedResult(
        seed=seed,
        model=model,
        params_hash=params_hash(model),
        val_metrics=val_metrics,
        history=callback.history,
        timesteps=int(model.num_timesteps),
        best_timesteps=int(callback.best_timesteps),
        stopped_early=callback.stopped_early,
        seconds=time.perf_counter() - t0,
    )


def select_median(results: list[SeedResult]) -> SeedResult:
    """The seed whose validation score is the (lower) median; ties broken by seed order."""
    if not results:
        raise ValueError("no seed results to select from")
    ranked = sorted(results, key=lambda r: (r.val_metrics[SELECTION_METRIC], r.seed))
    return ranked[(len(ranked) - 1) // 2]


def train_experiment(
    exp: ExperimentConfig,
    data: TrainingData,
    *,
    total_timesteps: int | None = None,
    progress_bar: bool = False,
    sink: MetricsSink | None = None,
) -> TrainingResult:
    """Train every configured seed and select the median-validation one as the candidate."""
    results = [
        train_seed(exp, data, seed, total_timesteps=total_timesteps, progress_bar=progress_bar, sink=sink)
        for seed in exp.seeds
    ]
    return TrainingResult(seeds=results, selected=select_median(results))


# ---- artefacts -----------------------------------------------------------------------------------
MODEL_FILE = "model.zip"
ONNX_FILE = "policy.onnx"
NORM_STATS_FILE = "norm_stats.json"
CONFIG_FILE = "config.yaml"
LINEAGE_FILE = "lineage.json"
MODEL_HASH_METHOD = "sha256 of the SB3 policy state_dict (names sorted; name|dtype|shape|raw bytes)"


def mint_model_id(exp: ExperimentConfig, model_hash: str) -> str:
    """The model id, minted once here: the join key of registry, backtests, proposals, signals."""
    return f"{exp.name}-{exp.version}-{model_hash[:12]}"


@dataclass(frozen=True)
class ModelPackage:
    model_id: str
    model_hash: str
    onnx_hash: str
    artifact_dir: Path
    model_path: Path
    onnx_path: Path
    norm_stats_path: Path
    config_path: Path
    lineage_path: Path
    parity: ParityReport
    lineage: dict[str, Any]

    @property
    def servable(self) -> bool:
        return self.parity.passed


def package_model(
    exp: ExperimentConfig,
    result: TrainingResult,
    *,
    models_dir: Path,
    norm_stats: NormStats,
    dataset_lineage: Mapping[str, Any],
    parity_obs: np.ndarray,
    position_index: int,
    mlflow_run_id: str | None,
) -> ModelPackage:
    """Write models/<experiment>/<model_id>/ (model.zip, policy.onnx, norm_stats.json, config.yaml,
    lineage.json) for the selected seed and run the ONNX parity check against its SB3 policy."""
    cand = result.selected
    model_hash = cand.params_hash
    model_id = mint_model_id(exp, model_hash)
    folder = Path(models_dir) / exp.name / model_id
    folder.mkdir(parents=True, exist_ok=True)
    feature_order_hash = str(dataset_lineage["feature_order_hash"])

    model_path = folder / MODEL_FILE
    cand.model.save(model_path)
    norm_path = norm_stats.to_json(folder / NORM_STATS_FILE)
    config_path = folder / CONFIG_FILE
    config_path.write_text(yaml.safe_dump(exp.canonical(), sort_keys=False), encoding="utf-8")
    onnx_path = export_onnx(
        cand.model,
        folder / ONNX_FILE,
        {
            "model_id": model_id,
            "model_hash": model_hash,
            "feature_order_hash": feature_order_hash,
            "norm_stats_hash": norm_stats.hash,
            "experiment": exp.name,
            "experiment_version": exp.version,
            "action_encoding": ",".join(
                f"{i}={n}({'+' if p > 0 else ''}{p})" for i, (n, p) in enumerate(zip(ACTION_NAMES, ACTION_TO_POSITION))
            ),
        },
    )
    parity = check_parity(cand.model, onnx_path, parity_obs, position_index, seed=cand.seed)
    onnx_hash = file_hash(onnx_path)
    lineage: dict[str, Any] = {
        "model_id": model_id,
        "model_hash": model_hash,
        "model_hash_method": MODEL_HASH_METHOD,
        "onnx_hash": onnx_hash,
        "experiment": exp.name,
        "experiment_version": exp.version,
        "config_hash": exp.config_hash,
        "reward_config_hash": exp.reward_config_hash,
        "dataset_hash": dataset_lineage["dataset_hash"],
        "feature_order_hash": feature_order_hash,
        "norm_stats_hash": norm_stats.hash,
        "mlflow_run_id": mlflow_run_id,
        "selected_seed": cand.seed,
        "selection": result.selection,
        "seeds": [{k: v for k, v in s.summary().items() if k != "history"} for s in result.seeds],
        "parity": parity.as_dict(),
        "servable": parity.passed,
        "dataset_splits": {
            k: {f: v[f] for f in ("first_session", "last_session", "rows")}
            for k, v in dataset_lineage.get("splits", {}).items()
        },
        "versions": {"torch": torch.__version__, "stable_baselines3": sb3_version, "onnx_opset": ONNX_OPSET},
    }
    lineage_path = folder / LINEAGE_FILE
    lineage_path.write_text(json.dumps(lineage, indent=2, sort_keys=True), encoding="utf-8")
    return ModelPackage(
        model_id=model_id,
        model_hash=model_hash,
        onnx_hash=onnx_hash,
        artifact_dir=folder,
        model_path=model_path,
        onnx_path=onnx_path,
        norm_stats_path=norm_path,
        config_path=config_path,
        lineage_path=lineage_path,
        parity=parity,
        lineage=lineage,
    )
