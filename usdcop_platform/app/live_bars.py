"""The bars and the features of one live session: what the live cycle, replay and the live
sensor's readiness rule share.

A bar is on the session grid or it is refused (BarOutsideSession). The features of bar t in
session D are, by definition,

    IncrementalFeatureEngine.warm_up(the W bars before D's open).update(b) for every bar b of D
    the live path consumed before t, in order, then .update(t, position held coming into t)

SessionFeatures is that engine plus the bars it consumed; build_session_features makes it from
the lake, resume_session_features from a feature-cache entry. Both run the same float
operations, so they agree bit for bit (app/live_cycle.py's docstring says where each is used).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform.core.features import IncrementalFeatureEngine
from usdcop_platform.core.schema import BAR_SCHEMA, bar_frame

class LiveError(RuntimeError):
    """The bar cannot go through the live path; the message says why."""


class BarOutsideSession(LiveError):
    """A bar that is not on the trading-session grid (weekend, holiday, off-hours, off-grid)."""


class StaleBar(LiveError):
    """A bar older than the newest bar already processed, with no signal of its own."""



# ---- bars ------------------------------------------------------------------------------------


def _utc(value: datetime | str) -> datetime:
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    if t.tzinfo is None:
        raise LiveError(f"bar time {value!r} is naive; bars carry UTC instants")
    return t.astimezone(timezone.utc)


@dataclass(frozen=True)
class Bar:
    """One 5-minute bar (labelled by its start, UTC)."""

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> "Bar":
        try:
            return cls(_utc(row["time"]), float(row["open"]), float(row["high"]), float(row["low"]),
                       float(row["close"]), float(row.get("volume") or 0.0))
        except KeyError as exc:
            raise LiveError(f"bar is missing field {exc.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "open": self.open, "high": self.high, "low": self.low,
                "close": self.close, "volume": self.volume}

    def row(self) -> dict[str, Any]:
        """The bar as a row of BAR_SCHEMA (an aware `time`)."""
        return {"time": self.time, "open": self.open, "high": self.high, "low": self.low, "close": self.close,
                "volume": self.volume}

    def to_frame(self) -> pl.DataFrame:
        return bar_frame(self.row())


def validate_bar(bar: Bar, calendar: TradingCalendar) -> date:
    """The bar's session; BarOutsideSession unless it is a bar start of a trading session.
    Prices are judged by the batch bar rules in LiveCycle.screen (a refused bar is quarantined
    and gets a signal row saying why), not here."""
    session = calendar.session_of(bar.time)
    if not calendar.is_session(session):
        why = calendar.holiday_name(session) or "weekend"
        raise BarOutsideSession(f"bar {bar.time.isoformat()} falls on {session} which is not a trading session ({why})")
    if calendar.bar_index(bar.time) is None:
        local = bar.time.astimezone(calendar.tz)
        raise BarOutsideSession(f"bar {bar.time.isoformat()} ({local:%H:%M} {calendar.instrument.timezone}) is not a "
                                f"bar start of the session grid")
    return session


def bar_rows(frame: pl.DataFrame | None) -> list[Bar]:
    if frame is None or frame.height == 0:
        return []
    return [Bar.from_mapping(r) for r in frame.sort("time").iter_rows(named=True)]


def upsert_bar(lake: ParquetLake, bar: Bar, session: date, existing: pl.DataFrame | None = None) -> pl.DataFrame:
    """Insert/replace the bar in its session partition of the raw bars (keyed on time); returns the
    partition as written. `existing`: the partition as the caller holds it (current), else read."""
    new = bar.to_frame()
    if existing is None:
        existing = lake.read(BARS_DATASET, session.isoformat())
    if existing is not None:
        extra = [c for c in existing.columns if c not in new.columns]
        new = new.with_columns(pl.lit(None, existing.schema[c]).alias(c) for c in extra)
        new = new.with_columns(pl.col(c).cast(existing.schema[c]) for c in existing.columns)
    return lake.merge_write(BARS_DATASET, session.isoformat(), existing, new)


def warmup_window(lake: ParquetLake, calendar: TradingCalendar, warmup: int, session: date) -> pl.DataFrame:
    """The last `warmup` published bars strictly before `session` (walking back partitions)."""
    key = session.isoformat()
    earlier = [p for p in lake.partitions(BARS_DATASET) if p < key]
    frames: list[pl.DataFrame] = []
    n = 0
    while earlier and n < warmup:
        part = lake.read(BARS_DATASET, earlier.pop())
        if part is not None and part.height:
            frames.insert(0, part.select(list(BAR_SCHEMA)))
            n += part.height
    if n < warmup:
        raise LiveError(f"the lake holds {n} bars before session {session}; the feature contract needs "
                        f"warmup_bars W={warmup}: ingest more history first (usdcop ingest)")
    return pl.concat(frames, how="vertical").sort("time").tail(warmup)


def read_macro(lake: ParquetLake) -> pl.DataFrame | None:
    return lake.read(MACRO_DATASET, MACRO_PARTITION)


# ---- features of a session -------------------------------------------------------------------


@dataclass
class SessionFeatures:
    """The feature engine of one session and the session bars it has consumed.

    The journal names the consumed bars by their index on the session grid (0..59): a few
    bytes each instead of an ISO instant, written with every bar."""

    session: date
    engine: IncrementalFeatureEngine
    warmup_first: datetime
    warmup_last: datetime
    n_warmup: int
    open_utc: datetime  # the session's first bar start
    bar_seconds: float
    consumed: list[datetime] = field(default_factory=list)
    _indices: list[int] = field(init=False, repr=False)  # index_of each consumed bar, kept as they come

    def __post_init__(self) -> None:
        self._indices = [self.index_of(t) for t in self.consumed]

    @classmethod
    def start(cls, calendar: TradingCalendar, session: date, engine: IncrementalFeatureEngine,
              warmup_first: datetime, warmup_last: datetime, n_warmup: int) -> "SessionFeatures":
        return cls(session, engine, warmup_first, warmup_last, n_warmup, calendar.session_open_utc(session),
                   calendar.bar_delta.total_seconds())

    @property
    def last_time(self) -> datetime | None:
        return self.consumed[-1] if self.consumed else None

    def consume(self, t: datetime) -> None:
        """Record that the engine has been updated with the session bar starting at `t`."""
        self.consumed.append(t)
        self._indices.append(self.index_of(t))

    def index_of(self, t: datetime) -> int:
        return int((t - self.open_utc).total_seconds() // self.bar_seconds)

    def time_of(self, index: int) -> datetime:
        return self.open_utc + timedelta(seconds=index * self.bar_seconds)

    def inputs(self) -> dict[str, Any]:
        """What the features of the next bar are computed from (recorded in the journal)."""
        return {**self._window, "session_bar_indices": list(self._indices)}

    @functools.cached_property
    def _window(self) -> dict[str, Any]:
        return {"session": self.session.isoformat(), "warmup_first": self.warmup_first.isoformat(),
                "warmup_last": self.warmup_last.isoformat(), "n_warmup": self.n_warmup}

    def cache_meta(self) -> dict[str, Any]:
        """The feature-cache entry after the last consumed bar (resume_session_features reads it)."""
        return {"session": self.session.isoformat(), "warmup_first": self.warmup_first.isoformat(),
                "warmup_last": self.warmup_last.isoformat(), "n_warmup": self.n_warmup,
                "session_bars": [t.isoformat() for t in self.consumed[:-1]],
                "engine_state": self.engine.state_dict()}


def build_session_features(
    cfg: PlatformConfig, calendar: TradingCalendar, lake: ParquetLake, session: date,
    macro: pl.DataFrame | None, prior_bars: list[Bar],
) -> SessionFeatures:
    """Warm up on the W bars before the session's open, then consume `prior_bars` in order."""
    window = warmup_window(lake, calendar, cfg.features.warmup_bars, session)
    engine = IncrementalFeatureEngine(cfg.features, calendar, cfg.macro)
    engine.warm_up(window, macro)
    sf = SessionFeatures.start(calendar, session, engine, window["time"][0], window["time"][-1], window.height)
    for b in prior_bars:
        engine.update(b.to_dict() | {"time": b.time})
        sf.consume(b.time)
    return sf


def resume_session_features(
    cfg: PlatformConfig, calendar: TradingCalendar, meta: Mapping[str, Any], macro: pl.DataFrame | None,
    last_bar: datetime,
) -> SessionFeatures:
    """Rebuild from a feature-cache entry (the engine state after `last_bar`)."""
    engine = IncrementalFeatureEngine.from_state(meta["engine_state"], cfg.features, calendar, cfg.macro, macro)
    sf = SessionFeatures.start(calendar, date.fromisoformat(meta["session"]), engine, _utc(meta["warmup_first"]),
                               _utc(meta["warmup_last"]), int(meta["n_warmup"]))
    for t in [_utc(t) for t in meta["session_bars"]] + [last_bar]:
        sf.consume(t)
    return sf
