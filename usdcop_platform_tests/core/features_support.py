"""Shared inputs of the feature tests: the real 2020–2024 files through the platform's own file
source and cleaning (loaded once per process), and small deterministic synthetic frames."""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.contracts.platform import PlatformConfig, get_config
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import BAR_SCHEMA

MACRO_LEVELS = {"dxy": 100.0, "vix": 20.0, "embi_col": 300.0, "brent": 80.0, "ust10y": 4.0, "ust2y": 4.5, "usdmxn": 18.0}


def config() -> PlatformConfig:
    return get_config()


def small_contract(warmup: int) -> FeatureContract:
    """The v1 contract with another W (for short synthetic series)."""
    return config().features.model_copy(update={"warmup_bars": warmup})


@lru_cache(maxsize=2)
def real_bars(path: str) -> pl.DataFrame:
    """The real bars cleaned by the platform's ingestion code (file source + core.cleaning)."""
    from usdcop_platform.adapters.sources.file import read_bars_file
    from usdcop_platform.core.cleaning import clean_bars

    cfg = config()
    return clean_bars(read_bars_file(Path(path)), TradingCalendar(cfg.instrument), cfg.quality.bars).bars


@lru_cache(maxsize=2)
def real_macro(path: str) -> pl.DataFrame:
    """The real macro file as the published long frame (flags included)."""
    from usdcop_platform.adapters.sources.file import read_macro_file
    from usdcop_platform.core.cleaning import clean_macro

    return clean_macro(read_macro_file(Path(path)), config().macro).frame


def synthetic_bars(
    calendar: TradingCalendar,
    start: date,
    n_sessions: int,
    *,
    seed: int = 0,
    vol: float = 4e-4,
    flat_share: float = 0.3,
    drop_share: float = 0.0,
) -> pl.DataFrame:
    """Random-walk bars on the session grid: some bars close-only (O=H=L=C), others with a range;
    `drop_share` of the bars removed at random (gaps)."""
    rng = np.random.default_rng(seed)
    sessions: list[date] = []
    d = start if calendar.is_session(start) else calendar.next_session(start)
    while len(sessions) < n_sessions:
        sessions.append(d)
        d = calendar.next_session(d)
    times = [t for s in sessions for t in calendar.session_grid_utc(s)]
    n = len(times)
    close = 4000.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0.0, vol, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    flat = rng.random(n) < flat_share
    open_, high, low = np.where(flat, close, open_), np.where(flat, close, high), np.where(flat, close, low)
    df = pl.DataFrame(
        {"time": times, "open": open_, "high": high, "low": low, "close": close, "volume": np.zeros(n)},
        schema=BAR_SCHEMA,
    )
    if drop_share:
        df = df.filter(pl.Series(rng.random(n) >= drop_share))
    return df


def synthetic_macro(start: date, end: date, *, seed: int = 0, missing_share: float = 0.08) -> pl.DataFrame:
    """Long macro frame (date, variable, value, available_date, flagged, flag_reason) on weekdays,
    with a share of missing days per variable."""
    rng = np.random.default_rng(seed)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    days = [d for d in days if d.weekday() < 5]
    frames = []
    for var, level in MACRO_LEVELS.items():
        values = level * np.exp(np.cumsum(rng.normal(0.0, 0.005, len(days))))
        keep = rng.random(len(days)) >= missing_share
        frames.append(
            pl.DataFrame({"date": days, "value": values})
            .filter(pl.Series(keep))
            .with_columns(variable=pl.lit(var))
        )
    out = pl.concat(frames).with_columns(
        available_date=pl.col("date") + pl.duration(days=1),
        flagged=pl.lit(False),
        flag_reason=pl.lit(None, pl.Utf8),
    )
    return out.select("date", "variable", "value", "available_date", "flagged", "flag_reason")
