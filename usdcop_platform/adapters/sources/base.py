"""Source interfaces: market bars and daily macro values, whatever the vendor.

A market source returns *raw* bars (cleaning happens in core.cleaning): `time` tz-aware UTC as
labelled by the vendor, open/high/low/close/volume Float64, optionally `source`. Raw rows are
selected by their labelled UTC date, so a session's mislabelled backfill rows travel with it.
A macro source returns a wide daily frame: `date` (Date) + one Float64 column per SSOT variable,
named by the variable's source column (config/macro_variables_ssot.yaml).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

import polars as pl

from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import BAR_SCHEMA

# Sources deliver bars in the published column layout (cleaning then decides which rows publish).
RAW_BAR_SCHEMA: dict[str, pl.DataType] = dict(BAR_SCHEMA)


class SourceError(RuntimeError):
    """A source could not deliver data; the message names the file or endpoint and the reason."""


@runtime_checkable
class MarketSource(Protocol):
    name: str

    def bars(self, start: date, end: date) -> pl.DataFrame:
        """Raw bars whose labelled UTC date is in [start, end]."""
        ...

    def latest_bar(self, now: datetime) -> pl.DataFrame:
        """The newest bar of today's session that has closed at `now` (0 or 1 row)."""
        ...


@runtime_checkable
class MacroSource(Protocol):
    name: str

    def values(self, start: date, end: date) -> pl.DataFrame:
        """Wide daily frame for observation dates in [start, end]."""
        ...


def empty_raw_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_BAR_SCHEMA)


def slice_by_utc_date(raw: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    lo = datetime.combine(start, datetime.min.time(), tzinfo=timezone.utc)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    return raw.filter((pl.col("time") >= lo) & (pl.col("time") < hi))


def newest_closed(raw: pl.DataFrame, calendar: TradingCalendar, now: datetime) -> pl.DataFrame:
    """The latest raw row of now's session whose bar has closed (start + bar length <= now)."""
    if now.tzinfo is None:
        raise ValueError(f"naive timestamp {now!r}: `now` must carry a timezone")
    session = calendar.session_of(now)
    if not calendar.is_session(session):
        return raw.head(0)
    opened = calendar.session_open_utc(session)
    closed = raw.filter((pl.col("time") >= opened) & (pl.col("time") + calendar.bar_delta <= now))
    return closed.sort("time").tail(1)


def macro_history_start(calendar: TradingCalendar, first_session: date, sessions_back: int) -> date:
    """The date `sessions_back` trading sessions before `first_session`: macro history the
    features need before the first bar (their rolling z-score window)."""
    d = first_session
    for _ in range(sessions_back):
        d = calendar.previous_session(d)
    return d
