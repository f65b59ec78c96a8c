"""Synthetic feature frames for the training tests (datasets, env, training, ONNX, assets).

The frame has the exact layout of features/m5_features (time, session, open, high, low, close
and the contract's 15 features) over real calendar sessions. Prices are a random walk; the
market features are random except log_ret_5m, which is the walk's own log return.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import date
from typing import Any
from pathlib import Path

import numpy as np
import polars as pl

from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.env import MarketData
from usdcop_platform.core.schema import UTC_TIME

FEATURES_DATASET = "features/m5_features"
POSITION_INDEX = 13  # contract v1


def synthetic_features(
    calendar: TradingCalendar, contract: FeatureContract, start: date, end: date, *, seed: int = 0
) -> pl.DataFrame:
    sessions = calendar.sessions(start, end)
    per = calendar.bars_per_session
    n = len(sessions) * per
    rng = np.random.default_rng(seed)
    log_close = np.log(4000.0) + np.cumsum(rng.normal(0.0, 5e-4, n))
    close = np.exp(log_close)
    times = calendar.session_grid_array(sessions)
    cols: dict[str, np.ndarray] = {}
    for name in contract.names:
        cols[name] = rng.normal(0.0, 1.0, n)
    cols["log_ret_5m"] = np.r_[0.0, np.diff(log_close)]
    cols["position"] = np.zeros(n)
    cols["time_norm"] = np.tile(np.arange(per) / (per - 1), len(sessions))
    return pl.DataFrame(
        {
            "time": pl.Series(times).dt.replace_time_zone("UTC").cast(UTC_TIME),
            "session": pl.Series(np.repeat(np.array(sessions, dtype="datetime64[D]"), per)).cast(pl.Date),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            **{name: cols[name] for name in contract.names},
        }
    )


def write_feature_partitions(lake, frame: pl.DataFrame) -> list[str]:
    """Write the frame as one lake partition per session (as the features asset does)."""
    keys = []
    for (session,), part in frame.group_by("session", maintain_order=True):
        key = session.isoformat()
        lake.write(FEATURES_DATASET, key, part)
        keys.append(key)
    return keys


def synthetic_market(n_sessions: int, seed: int) -> MarketData:
    """Normalized-looking random observations over a random-walk close, 60 bars a session."""
    rng = np.random.default_rng(seed)
    n = 60 * n_sessions
    obs = np.clip(rng.normal(size=(n, 15)), -5, 5).astype(np.float32)
    obs[:, POSITION_INDEX] = 0
    obs[:, 14] = np.tile(np.arange(60) / 59, n_sessions)
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    return MarketData(obs, close, np.repeat(np.arange(n_sessions), 60), POSITION_INDEX)


def tiny(exp: ExperimentConfig, **algorithm) -> ExperimentConfig:
    """The experiment shrunk (2 envs x 128 steps, batch 128, 1 epoch), re-validated."""
    raw = exp.canonical()
    raw["algorithm"]["hyperparameters"].update({"n_steps": 128, "batch_size": 128, "n_epochs": 1, **algorithm.pop("hp", {})})
    raw["algorithm"].update({"n_envs": 2, "total_timesteps": 1024, **algorithm})
    return ExperimentConfig.model_validate(raw)


_MLFLOW_TEMPLATE: Path | None = None


def fresh_mlflow_uri(directory: Path) -> str:
    """sqlite:/// URI of a new, already-migrated MLflow database in `directory`.

    Creating MLflow's schema takes seconds; it is done once per process and the file copied."""
    global _MLFLOW_TEMPLATE
    if _MLFLOW_TEMPLATE is None or not _MLFLOW_TEMPLATE.exists():
        from mlflow import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="usdcop-mlflow-template-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MLFLOW_TEMPLATE = template
    target = Path(directory) / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MLFLOW_TEMPLATE, target)
    return f"sqlite:///{target}"


def command_app(register: Any) -> Any:
    """A typer app holding one domain's commands (a group, so each command keeps its name)."""
    import typer

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    register(app)
    return app


def seed_smoke_features(settings: Any, platform_config: Any, calendar: TradingCalendar) -> str:
    """Synthetic feature partitions over the smoke experiment's span in the settings' lake, and a
    fresh migrated MLflow database at the settings' state dir; returns its URI."""
    from usdcop_platform.defs.resources import PlatformResource

    exp = platform_config.experiment("smoke")
    lake = PlatformResource.from_settings(settings).lake
    write_feature_partitions(lake, synthetic_features(calendar, platform_config.features,
                                                      exp.date_ranges.train.start, exp.date_ranges.test.end))
    return fresh_mlflow_uri(settings.state_dir)
