"""ONNX export of a stable-baselines3 PPO policy and the blocking parity check.

The exported graph computes, for observations x (n, d) float32,

    probabilities = softmax(action_net(mlp_actor(x)))    (n, 3), order SELL/HOLD/BUY
    value         = value_net(mlp_critic(x))             (n,)

with opset >= 17 through the TorchScript exporter (`dynamo=False`: torch 2.13's default dynamo
exporter needs onnxscript). Parity (REFERENCE.md "ONNX"): over at least PARITY_MIN_OBSERVATIONS
observations, random ones drawn from the observation space and real ones from the dataset,

    max |p_onnx - p_sb3| <= PARITY_MAX_ABS_DIFF   and   argmax p_onnx == SB3 predict(deterministic)

A model that fails is not servable (the training asset records it so and its blocking check fails).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from stable_baselines3 import PPO

from usdcop_platform.core.actions import N_ACTIONS
from usdcop_platform.core.onnx_policy import INPUT_NAME, OUTPUT_PROBS, OUTPUT_VALUE, OnnxPolicy

# Definitions from REFERENCE.md, not tunables.
ONNX_OPSET = 17
PARITY_MIN_OBSERVATIONS = 1000
PARITY_MAX_ABS_DIFF = 1e-5


class _ProbabilitiesAndValue(torch.nn.Module):
    """The SB3 actor-critic forward pass, ending in softmax probabilities instead of a sample."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.policy
        features = p.extract_features(obs)
        if p.share_features_extractor:
            latent_pi, latent_vf = p.mlp_extractor(features)
        else:
            latent_pi = p.mlp_extractor.forward_actor(features[0])
            latent_vf = p.mlp_extractor.forward_critic(features[1])
        probs = torch.softmax(p.action_net(latent_pi), dim=-1)
        value = p.value_net(latent_vf).squeeze(-1)
        return probs, value


def export_onnx(model: PPO, path: Path | str, metadata: Mapping[str, str]) -> Path:
    """Write the policy's probabilities+value graph to `path` with `metadata` as metadata_props."""
    path = Path(path)
    policy = model.policy
    n_features = int(np.prod(policy.observation_space.shape))
    if getattr(policy.action_space, "n", None) != N_ACTIONS:
        raise ValueError(f"policy must have {N_ACTIONS} discrete actions")
    module = _ProbabilitiesAndValue(policy).eval()
    dummy = torch.zeros((1, n_features), dtype=torch.float32)
    buffer = io.BytesIO()
    was_training = policy.training
    policy.set_training_mode(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deliberate (no onnxscript dependency); silence its notice.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (dummy,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_PROBS, OUTPUT_VALUE],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_PROBS: {0: "batch"}, OUTPUT_VALUE: {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
    finally:
        policy.set_training_mode(was_training)
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, {str(k): str(v) for k, v in metadata.items()})
    graph.doc_string = "USD/COP PPO policy: obs -> softmax probabilities (SELL, HOLD, BUY) and value"
    onnx.checker.check_model(graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(path))
    return path


@dataclass(frozen=True)
class ParityReport:
    n_observations: int
    n_random: int
    n_real: int
    max_abs_diff_probs: float
    max_abs_diff_value: float
    argmax_mismatches: int
    tolerance: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sb3_reference(model: PPO, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SB3 policy's probabilities, values and deterministic `predict` actions for obs (n, d)."""
    policy = model.policy
    policy.set_training_mode(False)
    with torch.no_grad():
        t = torch.as_tensor(obs, dtype=torch.float32)
        probs = policy.get_distribution(t).distribution.probs.numpy()
        values = policy.predict_values(t).squeeze(-1).numpy()
    actions, _ = model.predict(obs, deterministic=True)
    return probs, values, np.asarray(actions)


def parity_observations(
    model: PPO, real_obs: np.ndarray, position_index: int, *, seed: int, n_total: int = PARITY_MIN_OBSERVATIONS
) -> tuple[np.ndarray, int, int]:
    """Half random draws from the observation space, half real dataset rows (positions re-drawn
    from {-1, 0, +1}), at least `n_total` in all. Returns (obs, n_random, n_real)."""
    if real_obs.ndim != 2 or real_obs.shape[0] == 0:
        raise ValueError("parity needs real observations from the dataset (none given)")
    rng = np.random.default_rng(seed)
    space = model.observation_space
    n_real = min(real_obs.shape[0], n_total // 2)
    n_random = max(n_total - n_real, n_total // 2)
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    random_obs = rng.uniform(low, high, size=(n_random, low.size))
    random_obs[:, position_index] = rng.integers(-1, 2, n_random)
    idx = rng.choice(real_obs.shape[0], size=n_real, replace=False)
    real = np.array(real_obs[np.sort(idx)], dtype=np.float64)
    real[:, position_index] = rng.integers(-1, 2, n_real)
    return np.vstack([random_obs, real]).astype(np.float32), n_random, n_real


def check_parity(
    model: PPO,
    onnx_path: Path | str,
    real_obs: np.ndarray,
    position_index: int,
    *,
    seed: int = 0,
    n_total: int = PARITY_MIN_OBSERVATIONS,
    tolerance: float = PARITY_MAX_ABS_DIFF,
) -> ParityReport:
    """Compare the ONNX graph (onnxruntime, as served) with the SB3 policy; see the module docstring."""
    if n_total < PARITY_MIN_OBSERVATIONS:
        raise ValueError(f"parity needs at least {PARITY_MIN_OBSERVATIONS} observations, got {n_total}")
    obs, n_random, n_real = parity_observations(model, real_obs, position_index, seed=seed, n_total=n_total)
    ref_probs, ref_values, ref_actions = sb3_reference(model, obs)
    probs, values = OnnxPolicy(onnx_path).predict_proba(obs)
    dp = float(np.max(np.abs(probs.astype(np.float64) - ref_probs)))
    dv = float(np.max(np.abs(values.astype(np.float64) - ref_values)))
    mismatches = int(np.count_nonzero(probs.argmax(axis=1) != ref_actions))
    return ParityReport(
        n_observations=int(obs.shape[0]),
        n_random=n_random,
        n_real=n_real,
        max_abs_diff_probs=dp,
        max_abs_diff_value=dv,
        argmax_mismatches=mismatches,
        tolerance=tolerance,
        passed=bool(dp <= tolerance and mismatches == 0 and np.isfinite(probs).all()),
    )
