"""An ensemble's member graphs as ONE onnxruntime session: a live bar pays one session run
(onnxruntime's per-run overhead, the Python wrapper around it) instead of one per member.

The fused graph is the members' graphs side by side, each under its own name prefix (input
`m{i}_obs`, outputs `m{i}_probabilities`, `m{i}_value`): the same nodes, weights and kernels, so
each member's output is what its own session gives. That is checked, not assumed: `fuse` runs
both on probe observations and refuses (returns None, the caller serves member by member) unless
every output is equal bit for bit, and also when the graphs cannot share one model (different
ONNX IR or opset versions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from usdcop_platform.core.onnx_policy import OnnxPolicy, session_options

log = logging.getLogger(__name__)

PROBE_ROWS = 16  # probe observations the fused graph must reproduce exactly (per member)


class FusedPolicies:
    """The member policies' graphs in one session (build it with `fuse`, which verifies it)."""

    def __init__(self, policies: Sequence[OnnxPolicy]) -> None:
        import onnx
        from onnx import compose, helper

        models = [onnx.load(str(p.path)) for p in policies]
        irs = {m.ir_version for m in models}
        opsets = {tuple(sorted((o.domain, o.version) for o in m.opset_import)) for m in models}
        if len(irs) != 1 or len(opsets) != 1:
            raise ValueError(f"members differ in ONNX IR {sorted(irs)} or opsets {sorted(opsets)}")
        prefixed = [compose.add_prefix(m, f"m{i}_") for i, m in enumerate(models)]
        graph = helper.make_graph(
            nodes=[n for m in prefixed for n in m.graph.node], name="ensemble",
            inputs=[x for m in prefixed for x in m.graph.input], outputs=[x for m in prefixed for x in m.graph.output],
            initializer=[x for m in prefixed for x in m.graph.initializer])
        fused = helper.make_model(graph, opset_imports=models[0].opset_import, ir_version=models[0].ir_version)
        onnx.checker.check_model(fused)
        self._session = ort.InferenceSession(fused.SerializeToString(), session_options(),
                                             providers=["CPUExecutionProvider"])
        self.input_names = [f"m{i}_{p.input_name}" for i, p in enumerate(policies)]
        self.output_names = [f"m{i}_{name}" for i, p in enumerate(policies) for name in p.output_names]
        self.size = len(policies)

    def run(self, observations: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One float32 observation batch (n, d) per member -> every member's outputs, in order
        (probabilities (n, 3), value (n,) for member 0, then member 1, ...)."""
        return self._session.run(self.output_names, dict(zip(self.input_names, observations)))

    def probabilities(self, observations: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each member's probabilities (n, 3) for its own observations (n, d)."""
        return self.run(observations)[0::2]


def fuse(policies: Sequence[OnnxPolicy], n_features: int, *, seed: int = 0) -> FusedPolicies | None:
    """The policies fused into one session, or None (serve them one by one) when they cannot be
    or the fused graph does not give every member's own outputs bit for bit on probe
    observations (one row, the live shape, and a batch)."""
    if len(policies) < 2:
        return None
    try:
        fused = FusedPolicies(policies)
    except Exception as exc:  # noqa: BLE001 - whatever onnx refuses: serve the members one by one
        log.warning("ensemble graphs not fused (%s): each member runs its own session", exc)
        return None
    probe = np.random.default_rng(seed).normal(0.0, 2.0, size=(PROBE_ROWS, n_features)).astype(np.float32)
    for rows in (probe[:1], probe):
        got = fused.run([rows] * len(policies))
        own = [out for p in policies for out in p.predict_proba(rows)]
        if not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got, own)):
            log.warning("the fused ensemble graph differs from its members' own sessions: each member runs its own")
            return None
    return fused
