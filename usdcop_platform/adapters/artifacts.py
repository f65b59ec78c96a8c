"""Verification of a model's artefacts before it becomes production (approval or rollback).

The check is the live path's own loader (core.inference.InferenceEngine.load_member): the ONNX
file's sha256 equals the registry's onnx_hash, the norm stats' hash equals norm_stats_hash, the
ONNX metadata names this model and the contract's feature order, onnxruntime opens it and a
warm-up returns a probability vector. The store runs it on the locked registry row, inside the
promotion's transaction, so a model the live path would refuse (e.g. a policy.onnx with flipped
bytes) never becomes production and the previous one keeps serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usdcop_platform.adapters.store.errors import ModelNotServable
from usdcop_platform.contracts.features import FeatureContract


class ArtifactVerifier:
    """Callable store verifier: raises ModelNotServable (HTTP 409) naming what is wrong."""

    def __init__(self, contract: FeatureContract, models_root: Path | str | None) -> None:
        self.contract = contract
        self.models_root = models_root

    def __call__(self, record: Any) -> None:
        from usdcop_platform.core.inference import InferenceEngine, InferenceError  # onnxruntime: load on use

        engine = InferenceEngine(None, self.contract, None, models_root=self.models_root)  # type: ignore[arg-type]
        try:
            engine.load_member(record, 1.0)
        except InferenceError as exc:
            raise ModelNotServable(
                f"model {record['model_id']!r} refused: the live path could not load it ({exc})"
            ) from None


def verifier_for(settings: Any) -> ArtifactVerifier:
    """The verifier of this deployment (config/ feature contract, Settings.models_dir)."""
    from usdcop_platform.contracts.platform import get_config

    return ArtifactVerifier(get_config(str(settings.config_dir)).features, settings.models_dir)
