"""Real, servable model files for registry fixtures: promotion and rollback verify them the way
the live path loads them (adapters/artifacts.py), so a fixture model needs a real policy.onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_model_artifacts(models_dir: Path, experiment: str, model_id: str, model_hash: str, seed: int) -> dict[str, Any]:
    """A real, servable policy.onnx + norm_stats.json for a fixture model (what promotion and
    rollback verify); returns the registry fields that describe them."""
    import onnx

    from usdcop_platform.bench.live_fixtures import linear_policy_graph
    from usdcop_platform.contracts.base import file_hash
    from usdcop_platform.contracts.platform import get_config
    from usdcop_platform.core.normalization import NormStats

    contract = get_config().features
    rng = np.random.default_rng(seed)
    d = contract.n_features
    folder = models_dir / experiment / model_id
    folder.mkdir(parents=True, exist_ok=True)
    stats = NormStats.fit(rng.normal(size=(256, d)), contract)
    norm_path = stats.to_json(folder / "norm_stats.json")
    meta = {"model_id": model_id, "model_hash": model_hash, "feature_order_hash": contract.feature_order_hash,
            "norm_stats_hash": stats.hash, "experiment": experiment}
    onnx_path = folder / "policy.onnx"
    onnx.save(linear_policy_graph(rng.normal(size=(d, 3)), rng.normal(size=3), rng.normal(size=d), meta), str(onnx_path))
    return dict(onnx_hash=file_hash(onnx_path), onnx_path=str(onnx_path), norm_stats_path=str(norm_path),
                norm_stats_hash=stats.hash, feature_order_hash=contract.feature_order_hash, artifact_dir=str(folder))
