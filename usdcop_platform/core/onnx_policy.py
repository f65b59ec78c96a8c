"""ONNX policy inference: the one way backtests and live inference run a trained policy.

Imports numpy and onnxruntime only (serving processes never import torch). The graph, written by
core.onnx_export, maps observations (n, d) float32 to

    probabilities (n, 3) = softmax(action logits), order SELL/HOLD/BUY (core.actions)
    value (n,)           = the critic's state value

and carries metadata_props (feature_order_hash, model_id, ...) so a caller can refuse a model
built for another feature contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "obs"
OUTPUT_PROBS = "probabilities"
OUTPUT_VALUE = "value"


class OnnxPolicyError(ValueError):
    """The ONNX file is missing, malformed, or not a policy of this platform."""


def session_options() -> ort.SessionOptions:
    """How every policy session runs: one intra-op thread (see OnnxPolicy), all graph optimizations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxPolicy:
    """A loaded policy graph. One intra-op thread: a 15x64x64 MLP is latency-bound, and serving
    runs several models side by side."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxPolicyError(f"{self.path}: ONNX policy file not found")
        try:
            self._session = ort.InferenceSession(str(self.path), session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise OnnxPolicyError(f"{self.path}: not a loadable ONNX model ({exc})") from exc
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or outputs != [OUTPUT_PROBS, OUTPUT_VALUE]:
            raise OnnxPolicyError(
                f"{self.path}: expected one input and outputs [{OUTPUT_PROBS}, {OUTPUT_VALUE}], got "
                f"{[i.name for i in inputs]} -> {outputs}"
            )
        self.input_name: str = inputs[0].name
        shape = inputs[0].shape
        self.n_features: int = int(shape[1]) if isinstance(shape[1], int) else -1
        self.output_names: list[str] = outputs
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        # Preallocated single-observation input: predict_one copies into it, no per-call allocation.
        self._one = np.zeros((1, max(self.n_features, 1)), dtype=np.float32)
        self._feed = {self.input_name: self._one}

    @property
    def model_id(self) -> str | None:
        return self.metadata.get("model_id")

    @property
    def feature_order_hash(self) -> str | None:
        return self.metadata.get("feature_order_hash")

    def predict_proba(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """obs (n, d) -> (probabilities (n, 3) float32, value (n,) float32)."""
        x = np.ascontiguousarray(obs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or (self.n_features > 0 and x.shape[1] != self.n_features):
            raise OnnxPolicyError(f"observations must be (n, {self.n_features}); got {obs.shape}")
        probs, value = self._session.run(self.output_names, {self.input_name: x})
        return probs, value

    def predict_one(self, obs: np.ndarray) -> tuple[np.ndarray, float]:
        """One observation (d,) -> (probabilities (3,), value): the live-inference fast path."""
        self._one[0] = obs  # raises on a wrong length
        probs, value = self._session.run(self.output_names, self._feed)
        return probs[0], float(value[0])

    def check_feature_order(self, feature_order_hash: str) -> None:
        """Refuse a model trained on another observation layout (train/serve skew)."""
        if self.feature_order_hash != feature_order_hash:
            raise OnnxPolicyError(
                f"{self.path}: model feature_order_hash {self.feature_order_hash} does not match "
                f"the contract's {feature_order_hash}"
            )
