"""Trading calendar: the one home of sessions, holidays, the bar grid and annualization.

A session is a Bogota weekday that is not a Colombian public holiday. Bars are labelled by
their start time; 08:00..12:55 Bogota (UTC-5, no DST) is 13:00..17:55 UTC, 60 bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import numpy as np
import polars as pl

from usdcop_platform.contracts.instrument import InstrumentConfig

UTC = timezone.utc


@dataclass(frozen=True)
class TradingCalendar:
    instrument: InstrumentConfig
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", ZoneInfo(self.instrument.timezone))

    # ---- holidays -------------------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    def _holidays(self, year: int) -> holidays.HolidayBase:
        return _country_holidays(self.instrument.holiday_country, year)

    def is_holiday(self, d: date) -> bool:
        return d in self._holidays(d.year)

    def holiday_name(self, d: date) -> str | None:
        return self._holidays(d.year).get(d)

    # ---- sessions -------------------------------------------------------------------------
    def is_session(self, d: date) -> bool:
        return d.weekday() < 5 and not self.is_holiday(d)

    def sessions(self, start: date, end: date) -> list[date]:
        """Trading sessions in [start, end], inclusive, ascending."""
        out: list[date] = []
        d = start
        while d <= end:
            if self.is_session(d):
                out.append(d)
            d += timedelta(days=1)
        return out

    def next_session(self, d: date) -> date:
        n = d + timedelta(days=1)
        while not self.is_session(n):
            n += timedelta(days=1)
        return n

    def previous_session(self, d: date) -> date:
        p = d - timedelta(days=1)
        while not self.is_session(p):
            p -= timedelta(days=1)
        return p

    def excluded_dates(self, start: date, end: date) -> list[date]:
        """Weekdays in [start, end] that are not sessions (Colombian holidays)."""
        out: list[date] = []
        d = start
        while d <= end:
            if d.weekday() < 5 and self.is_holiday(d):
                out.append(d)
            d += timedelta(days=1)
        return out

    # ---- the bar grid ---------------------------------------------------------------------
    @property
    def bars_per_session(self) -> int:
        return self.instrument.bars_per_session

    @property
    def bar_delta(self) -> timedelta:
        return timedelta(minutes=self.instrument.bar_minutes)

    def session_open_utc(self, d: date) -> datetime:
        return datetime.combine(d, self.instrument.first_bar_start, tzinfo=self._tz).astimezone(UTC)

    def session_close_utc(self, d: date) -> datetime:
        return datetime.combine(d, self.instrument.session_close, tzinfo=self._tz).astimezone(UTC)

    def session_grid_utc(self, d: date) -> list[datetime]:
        """The bar start instants (UTC, tz-aware) of session d: 60 bars for the default instrument."""
        first = self.session_open_utc(d)
        return [first + i * self.bar_delta for i in range(self.bars_per_session)]

    def session_of(self, instant: datetime) -> date:
        """The Bogota calendar date of an instant (the session it would belong to)."""
        if instant.tzinfo is None:
            raise ValueError(f"naive timestamp {instant!r}: instants must carry a timezone")
        return instant.astimezone(self._tz).date()

    def session_expr(self, col: str | pl.Expr = "time") -> pl.Expr:
        """session_of for a column of instants (see the module function session_expr)."""
        return session_expr(self.instrument.timezone, col)

    def grid_index_expr(self, col: str | pl.Expr = "time") -> pl.Expr:
        """bar_index for a column of instants: index 0..N-1 within the session's grid, null off the grid.

        The time of day only (whether the date is a session is the caller's check). With local time
        h:m:s in the instrument's timezone, k = (60h + m - first_bar_minutes) / bar_minutes must be an
        integer in [0, bars_per_session) and the instant a whole minute."""
        inst = self.instrument
        local = (pl.col(col) if isinstance(col, str) else col).dt.convert_time_zone(inst.timezone)
        first = inst.first_bar_start.hour * 60 + inst.first_bar_start.minute
        minutes = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32) - first
        aligned = (
            (local.dt.second() == 0)
            & (local.dt.nanosecond() == 0)
            & (minutes >= 0)
            & (minutes % inst.bar_minutes == 0)
            & (minutes // inst.bar_minutes < self.bars_per_session)
        )
        return pl.when(aligned).then(minutes // inst.bar_minutes).otherwise(None).cast(pl.Int32)

    def bar_index(self, instant: datetime) -> int | None:
        """Index 0..59 of a bar start within its session, or None when off the grid."""
        local = instant.astimezone(self._tz)
        first = datetime.combine(local.date(), self.instrument.first_bar_start, tzinfo=self._tz)
        offset = (local - first).total_seconds()
        step = self.instrument.bar_minutes * 60
        if offset < 0 or offset % step != 0:
            return None
        idx = int(offset // step)
        return idx if idx < self.bars_per_session else None

    def is_on_grid(self, instant: datetime) -> bool:
        """True when instant is a bar start of a trading session."""
        return self.bar_index(instant) is not None and self.is_session(self.session_of(instant))

    def is_open(self, instant: datetime) -> bool:
        """True while the market is open: a session day, between the open and the close."""
        if instant.tzinfo is None:
            raise ValueError(f"naive timestamp {instant!r}: instants must carry a timezone")
        d = self.session_of(instant)
        return self.is_session(d) and self.session_open_utc(d) <= instant < self.session_close_utc(d)

    def last_closed_bar(self, now: datetime) -> datetime | None:
        """Start instant of the newest bar that has closed at `now`, within today's session."""
        d = self.session_of(now)
        if not self.is_session(d):
            return None
        closed = [t for t in self.session_grid_utc(d) if t + self.bar_delta <= now]
        return closed[-1] if closed else None

    # ---- periods per year (core.metrics.Annualization turns them into annualization factors) --
    def sessions_per_year(self, start: date | None = None, end: date | None = None) -> float:
        """Average sessions per calendar year, counted from the calendar over [start, end]
        (default: the five full years 2020-2024)."""
        start = start or date(2020, 1, 1)
        end = end or date(2024, 12, 31)
        n = len(self.sessions(start, end))
        years = ((end - start).days + 1) / 365.25
        return n / years

    def bars_per_year(self) -> float:
        """Average bars per calendar year: sessions_per_year() x bars per session."""
        return self.sessions_per_year() * self.bars_per_session

    def session_grid_array(self, sessions: list[date]) -> np.ndarray:
        """All bar instants of the given sessions as datetime64[us] UTC (naive, UTC by convention)."""
        out = [t.replace(tzinfo=None) for d in sessions for t in self.session_grid_utc(d)]
        return np.array(out, dtype="datetime64[us]")


def session_expr(timezone: str, col: str | pl.Expr = "time") -> pl.Expr:
    """The session of each instant of a column: its calendar date in the instrument's timezone (the
    vectorized TradingCalendar.session_of; the one expression of a bar's session)."""
    times = pl.col(col) if isinstance(col, str) else col
    return times.dt.convert_time_zone(timezone).dt.date()


@lru_cache(maxsize=256)
def _country_holidays(country: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, years=year)


@lru_cache(maxsize=4)
def default_calendar(config_dir: str | None = None) -> TradingCalendar:
    from usdcop_platform.contracts.platform import get_config

    return TradingCalendar(get_config(config_dir).instrument)
