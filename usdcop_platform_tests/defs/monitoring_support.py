"""A small real world for the monitoring tests: temp lake, real store, registered models, bars,
signals with their raw observations, and a reference train split."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, PlatformConfig, load_platform_config
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.core.datasets import dataset_name
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform_tests.model_artifacts import write_model_artifacts

EXPERIMENT = "smoke"


@dataclass
class World:
    platform: PlatformResource
    store: Any
    lake: ParquetLake
    calendar: TradingCalendar
    cfg: PlatformConfig

    def resources(self, webhook_url: str | None = None) -> dict[str, Any]:
        return {"platform": self.platform, "alerts": AlertsResource(webhook_url=webhook_url)}


def config_copy(tmp_path: Path, **mlops_overrides: Any) -> Path:
    """A copy of config/ with `monitoring` keys of mlops.yaml overridden (dotted: 'performance.rollback_automatic')."""
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    path = target / "mlops.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in mlops_overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return target


def make_world(tmp_path: Path, db_url: str, config_dir: Path | None = None) -> World:
    from usdcop_platform.adapters.store import get_store

    platform = PlatformResource(
        data_dir=str(tmp_path / "lake"),
        models_dir=str(tmp_path / "models"),
        config_dir=str(config_dir or DEFAULT_CONFIG_DIR),
        database_url=db_url,
        state_dir=str(tmp_path / "state"),
    )
    cfg = load_platform_config(platform.config_dir)
    return World(platform, get_store(db_url), platform.lake, TradingCalendar(cfg.instrument), cfg)


def register_model(world: World, model_id: str, *, production: bool = False, sharpe: float | None = None) -> Any:
    exp = world.cfg.experiment(EXPERIMENT)
    model_hash = f"{model_id:0<64}"[:64]
    files = write_model_artifacts(Path(world.platform.models_dir), EXPERIMENT, model_id, model_hash, seed=len(model_id))
    world.store.models.register(
        model_id=model_id, experiment_name=EXPERIMENT, experiment_version=exp.version, model_hash=model_hash, **files
    )
    if sharpe is not None:
        world.store.proposals.upsert(
            model_id=model_id, experiment_name=EXPERIMENT, experiment_version=exp.version,
            recommendation="PROMOTE", confidence=0.85, metrics={"sharpe": sharpe},
        )
    if production:
        world.store.models.set_stage(model_id, "production", reviewer="test")
    return world.store.models.get(model_id)


def write_reference(world: World, rng: np.random.Generator, n: int = 600) -> np.ndarray:
    """Train split with standard-normal market features (state features as the dataset has them)."""
    names = world.cfg.features.names
    x = rng.normal(0.0, 1.0, (n, len(names)))
    frame = pl.DataFrame({name: x[:, j] for j, name in enumerate(names)})
    world.lake.write(dataset_name(EXPERIMENT), "train", frame)
    return x


def write_bars(world: World, session: date, closes: list[float]) -> list[datetime]:
    grid = world.calendar.session_grid_utc(session)[: len(closes)]
    frame = pl.DataFrame(
        {"time": grid, "open": closes, "high": closes, "low": closes, "close": closes, "volume": [0.0] * len(closes)},
        schema={"time": pl.Datetime("us", "UTC"), "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                "close": pl.Float64, "volume": pl.Float64},
    )
    world.lake.write(BARS_DATASET, session.isoformat(), frame)
    return grid


def add_signals(
    world: World,
    session: date,
    model_id: str,
    role: str,
    actions: list[int],
    features: np.ndarray | None = None,
    every: int = 1,
) -> None:
    """Signals on bars 0, every, 2*every, ... of the session (actions[i] for the i-th of them)."""
    grid = world.calendar.session_grid_utc(session)[::every]
    for i, a in enumerate(actions):
        world.store.signals.upsert(
            {
                "bar_time": grid[i], "session_date": session, "model_id": model_id, "role": role,
                "action": a, "raw_action": a, "prob_sell": 0.2, "prob_hold": 0.2, "prob_buy": 0.6,
                "confidence": 0.6, "risk_status": "APPROVED",
                "features": [float(v) for v in features[i]] if features is not None else [],
            }
        )


def at(world: World, session: date, hour: int, minute: int = 0) -> datetime:
    """An instant in Bogota wall-clock time on `session`, as UTC."""
    local = datetime(session.year, session.month, session.day, hour, minute, tzinfo=world.calendar.tz)
    return local.astimezone(timezone.utc)


def sessions_from(world: World, first: date, n: int) -> list[date]:
    return world.calendar.sessions(first, first + timedelta(days=3 * n))[:n]
