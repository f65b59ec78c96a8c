"""Real inputs for the live benchmark and the live tests: a lake of synthetic sessions and small,
genuine ONNX policies registered in the SQL store.

The policies are linear-softmax graphs written with onnx.helper (no torch): the same input
and outputs ("obs" → "probabilities", "value") and metadata_props (model_id, model_hash,
feature_order_hash, norm_stats_hash) as core.onnx_export writes, norm stats fitted on features
computed from the lake's bars, and registry rows with the file hashes training records. They
exercise every verification the serving engine makes, quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto, helper, numpy_helper

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.base import content_hash, file_hash
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION, clean_macro
from usdcop_platform.core.features import compute_features, feature_matrix
from usdcop_platform.core.normalization import NormStats
from usdcop_platform.core.onnx_policy import INPUT_NAME, OUTPUT_PROBS, OUTPUT_VALUE
from usdcop_platform.core.schema import BAR_SCHEMA
from usdcop_platform.core.synthetic import synthetic_bars, synthetic_macro

FIXTURE_EXPERIMENT = "smoke"
ONNX_OPSET = 17
MACRO_HISTORY_DAYS = 800  # > the 252-session z-score window of the macro features


def seed_lake(lake: ParquetLake, cfg: PlatformConfig, calendar: TradingCalendar, first: date, last: date,
              seed: int = 7) -> list[date]:
    """Clean synthetic bars of sessions [first, last] (one partition each) and synthetic macro
    history ending at `last`, published as the ingestion would. Returns the sessions written."""
    bars = synthetic_bars(calendar, first, last, seed, quirks=False)
    local = bars.with_columns(session=calendar.session_expr())
    sessions = []
    for (d,), part in local.group_by(["session"], maintain_order=True):
        lake.write(BARS_DATASET, d.isoformat(), part.select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()]))
        sessions.append(d)
    start = date.fromordinal(last.toordinal() - MACRO_HISTORY_DAYS)
    wide = synthetic_macro(cfg.macro, start, start, last, seed)
    lake.write(MACRO_DATASET, MACRO_PARTITION, clean_macro(wide, cfg.macro).frame)
    return sorted(sessions)


def lake_feature_matrix(lake: ParquetLake, cfg: PlatformConfig, calendar: TradingCalendar) -> np.ndarray:
    """Raw contract features of every bar in the lake (rows with NaN dropped)."""
    parts = lake.partitions(BARS_DATASET)
    bars = lake.read_many(BARS_DATASET, parts)
    macro = lake.read(MACRO_DATASET, MACRO_PARTITION)
    x = feature_matrix(compute_features(bars, macro, cfg.features, calendar, cfg.macro), cfg.features)
    return x[np.isfinite(x).all(axis=1)]


def linear_policy_graph(weights: np.ndarray, bias: np.ndarray, value_w: np.ndarray,
                        metadata: dict[str, str]) -> onnx.ModelProto:
    """obs (n, d) → probabilities = softmax(obs W + b) (n, 3), value = Σ obs·v (n,)."""
    d = weights.shape[0]
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_PROBS], axis=1),
        helper.make_node("Mul", [INPUT_NAME, "v"], ["xv"]),
        helper.make_node("ReduceSum", ["xv", "axes"], [OUTPUT_VALUE], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "linear_policy",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info(OUTPUT_PROBS, TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info(OUTPUT_VALUE, TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
            numpy_helper.from_array(value_w.astype(np.float32), "v"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 9
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


@dataclass(frozen=True)
class FixtureModel:
    model_id: str
    record: dict[str, Any]  # registry fields
    onnx_path: Path
    norm_stats: NormStats


def make_model(models_dir: Path, cfg: PlatformConfig, train_matrix: np.ndarray, seed: int,
               experiment: str = FIXTURE_EXPERIMENT, scale: float = 1.5) -> FixtureModel:
    """Write models/<experiment>/<model_id>/{policy.onnx, norm_stats.json} and return its
    registry fields (hashes computed the way training computes them)."""
    contract = cfg.features
    rng = np.random.default_rng(seed)
    d = contract.n_features
    w = rng.normal(scale=scale, size=(d, 3))
    b = rng.normal(scale=0.3, size=3)
    v = rng.normal(size=d)
    model_hash = content_hash({"W": w.round(12).tolist(), "b": b.round(12).tolist(), "seed": seed})
    model_id = f"{experiment}-fixture-{model_hash[:12]}"
    folder = Path(models_dir) / experiment / model_id
    folder.mkdir(parents=True, exist_ok=True)
    stats = NormStats.fit(train_matrix, contract)
    norm_path = stats.to_json(folder / "norm_stats.json")
    meta = {"model_id": model_id, "model_hash": model_hash, "feature_order_hash": contract.feature_order_hash,
            "norm_stats_hash": stats.hash, "experiment": experiment}
    onnx_path = folder / "policy.onnx"
    onnx.save(linear_policy_graph(w, b, v, meta), str(onnx_path))
    record = dict(
        model_id=model_id, experiment_name=experiment, experiment_version="fixture", model_hash=model_hash,
        servable=True, onnx_hash=file_hash(onnx_path), norm_stats_hash=stats.hash,
        feature_order_hash=contract.feature_order_hash, artifact_dir=str(folder), onnx_path=str(onnx_path),
        norm_stats_path=str(norm_path),
    )
    return FixtureModel(model_id, record, onnx_path, stats)


def register(store: Any, model: FixtureModel, stage: str | None = "production") -> Any:
    store.models.register(**model.record)
    if stage is not None and stage != "staging":
        store.models.set_stage(model.model_id, stage, reviewer="fixture", notes="live fixture")
    return store.models.get(model.model_id)
