"""A small real world for the live tests: a temporary lake of synthetic sessions, a SQL store
(SQLite or the real PostgreSQL) with real ONNX fixture models, and the live resources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store import get_store
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.bench.tcp_proxy import TcpProxy  # noqa: F401 - the fault tests take it from here
from usdcop_platform.contracts.platform import PlatformConfig, get_config
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.inference import InferenceEngine
from usdcop_platform.core.synthetic import synthetic_bars
from usdcop_platform.app.live_bars import Bar
from usdcop_platform.app.live_cycle import LiveCycle
from usdcop_platform.defs.live.resources import FeatureCacheResource, LiveFeedResource
from usdcop_platform.defs.resources import PlatformResource

SEED = 7  # lake and live feed share it: the sensor sees the same synthetic bars the lake holds
HISTORY_FIRST = date(2024, 2, 19)
HISTORY_LAST = date(2024, 3, 4)
LIVE_SESSION = date(2024, 3, 5)  # a Tuesday
HOLIDAY = date(2024, 3, 25)  # San José (observed)
SATURDAY = date(2024, 3, 9)


def bogota(d: date, hh: int, mm: int) -> datetime:
    """UTC instant of a Bogota wall-clock time (UTC-5, no DST)."""
    return datetime(d.year, d.month, d.day, hh, mm, tzinfo=timezone.utc) + timedelta(hours=5)


@dataclass
class LiveWorld:
    root: Path
    cfg: PlatformConfig
    calendar: TradingCalendar
    lake: ParquetLake
    db_url: str
    store: Any
    train: np.ndarray
    model: fx.FixtureModel

    @property
    def platform(self) -> PlatformResource:
        return PlatformResource(data_dir=str(self.root / "lake"), models_dir=str(self.root / "models"),
                                config_dir=str(self.cfg.config_dir), database_url=self.db_url,
                                state_dir=str(self.root / "state"))

    def feed(self, now: datetime | None = None, **kw: Any) -> LiveFeedResource:
        return LiveFeedResource(market_source=kw.pop("market_source", "synthetic"), synthetic_seed=SEED,
                                frozen_now=now.isoformat() if now else None, **kw)

    def cache_resource(self, redis_url: str | None = None) -> FeatureCacheResource:
        return FeatureCacheResource(redis_url=redis_url, namespace=f"usdcop:test:{self.root.name}")

    def resources(self, now: datetime | None = None, redis_url: str | None = None) -> dict[str, Any]:
        from usdcop_platform.defs.monitoring.resources import AlertsResource

        return {"platform": self.platform, "live_feed": self.feed(now), "feature_cache": self.cache_resource(redis_url),
                "alerts": AlertsResource()}

    def session_bars(self, d: date = LIVE_SESSION) -> list[Bar]:
        frame = synthetic_bars(self.calendar, d, d, SEED, quirks=False)
        return [Bar.from_mapping(r) for r in frame.iter_rows(named=True)]

    def new_model(self, seed: int, stage: str | None = "production") -> fx.FixtureModel:
        m = fx.make_model(self.root / "models", self.cfg, self.train, seed=seed)
        fx.register(self.store, m, stage=stage)
        return m

    def cycle(self, cache: Any = None) -> LiveCycle:
        engine = InferenceEngine(self.store, self.cfg.features, self.cfg.mlops.ensemble,
                                 models_root=self.root / "models")
        return LiveCycle(self.cfg, self.calendar, self.lake, self.store, engine, cache)


def make_world(root: Path, db_url: str, *, production: bool = True) -> LiveWorld:
    cfg = get_config()
    calendar = TradingCalendar(cfg.instrument)
    lake = ParquetLake(root / "lake")
    fx.seed_lake(lake, cfg, calendar, HISTORY_FIRST, HISTORY_LAST, seed=SEED)
    train = fx.lake_feature_matrix(lake, cfg, calendar)
    store = get_store(db_url)
    model = fx.make_model(root / "models", cfg, train, seed=1)
    fx.register(store, model, stage="production" if production else None)
    return LiveWorld(root, cfg, calendar, lake, db_url, store, train, model)
