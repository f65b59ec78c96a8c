"""Shared steps of the research use cases (learnability, real-data study): train one seed of an
experiment and backtest its ONNX policy out of sample, and score any position series the same way.

The steps are the ones a production model takes: core.training (PPO, curriculum, early stopping),
core.training.package_model (ONNX export behind the parity gate), core.onnx_policy (onnxruntime, as
serving loads it), core.policy_runner (the per-bar decision of the backtest and the live path) and
core.backtest (the metrics of the promotion gate).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.backtest import backtest
from usdcop_platform.core.features import feature_matrix
from usdcop_platform.core.learnability import round_trips_per_20_sessions
from usdcop_platform.core.metrics import Annualization

INITIAL_CAPITAL = 100_000.0
CONFIDENCE = 0.95


class PolicyStudyError(ValueError):
    """A study step that cannot produce an honest result (e.g. a model failing ONNX parity)."""


def split_arrays(dataset: ds.ExperimentDataset, split: str) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """(close, session ordinals, frame) of one split of a dataset."""
    frame = dataset.splits[split]
    close = frame.get_column("close").cast(pl.Float64).to_numpy()
    sessions = frame.get_column("session").cast(pl.Date).cast(pl.Int32).to_numpy().astype(np.int64)
    return close, sessions, frame


def position_metrics(
    close: np.ndarray, positions: np.ndarray, sessions: np.ndarray, cost_bps: float, ann: Annualization
) -> dict[str, Any]:
    """The promotion gate's backtest of a position series, reduced to what studies report."""
    m = backtest(
        close, positions, sessions, cost_bps=cost_bps, initial_capital=INITIAL_CAPITAL, annualization=ann,
        confidence=CONFIDENCE,
    ).metrics
    return {
        "sharpe": float(m["sharpe"]),
        "total_return": float(m["total_return"]),
        "max_drawdown": float(m["max_drawdown"]),
        "turnover": float(m["turnover"]),
        "exposure": float(m["exposure"]),
        "trades": int(m["trades"]),
        "round_trips_per_20_sessions": round_trips_per_20_sessions(positions, sessions),
    }


def train_and_backtest(
    cfg: PlatformConfig,
    dataset: ds.ExperimentDataset,
    exp: ExperimentConfig,
    ann: Annualization,
    *,
    total_timesteps: int | None,
    models_dir: Path,
    split: str = "test",
) -> dict[str, Any]:
    """Train the experiment's seed(s), package the median seed to ONNX (parity gate), reload it with
    onnxruntime and run it bar by bar over `split`; returns its metrics and training facts."""
    from usdcop_platform.core.normalization import NormStats
    from usdcop_platform.core.onnx_policy import OnnxPolicy
    from usdcop_platform.core.policy_runner import run_policy_over_bars
    from usdcop_platform.core.training import TrainingData, package_model, train_experiment

    contract = cfg.features
    position_index = contract.names.index("position")
    data = TrainingData(
        train=dataset.market_data("train", contract), val=dataset.market_data("val", contract),
        obs_bound=contract.normalization_clip,
    )
    t0 = time.perf_counter()
    result = train_experiment(exp, data, total_timesteps=total_timesteps)
    train_seconds = time.perf_counter() - t0
    package = package_model(
        exp, result, models_dir=models_dir, norm_stats=dataset.norm_stats, dataset_lineage=dataset.lineage,
        parity_obs=np.vstack([dataset.normalized("val", contract), dataset.normalized("test", contract)]),
        position_index=position_index, mlflow_run_id=None,
    )
    if not package.servable:
        raise PolicyStudyError(f"{package.model_id}: ONNX parity failed ({package.parity.as_dict()})")
    close, sessions, frame = split_arrays(dataset, split)
    run = run_policy_over_bars(
        OnnxPolicy(package.onnx_path), NormStats.from_json(package.norm_stats_path), feature_matrix(frame, contract),
        sessions, flat_at_session_end=exp.environment.flat_at_session_end, position_index=position_index,
    )
    selected = result.selected
    return {
        "seed": selected.seed,
        "model_id": package.model_id,
        "timesteps": selected.timesteps,
        "best_timesteps": selected.best_timesteps,
        "train_seconds": round(train_seconds, 2),
        "steps_per_second": round(selected.timesteps / train_seconds, 1) if train_seconds else None,
        **position_metrics(close, run.positions, sessions, float(exp.environment.cost_bps), ann),
    }
