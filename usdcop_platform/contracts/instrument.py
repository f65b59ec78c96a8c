"""Instrument and session contract (config/instrument.yaml)."""

from __future__ import annotations

from datetime import date, datetime, time

from pydantic import field_validator, model_validator

from usdcop_platform.contracts.base import StrictModel


class InstrumentConfig(StrictModel):
    symbol: str
    timezone: str
    holiday_country: str = "CO"
    fed_holiday_market: str = "XFED"
    bar_minutes: int
    first_bar_start: time
    last_bar_start: time
    session_close: time
    calendar_start: date

    @field_validator("bar_minutes")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0 or 60 % v != 0:
            raise ValueError("must be a positive divisor of 60")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _ordered(self) -> "InstrumentConfig":
        if not self.first_bar_start <= self.last_bar_start < self.session_close:
            raise ValueError("need first_bar_start <= last_bar_start < session_close")
        return self

    @property
    def bars_per_session(self) -> int:
        """Bars in one session, derived from the grid (60 for 08:00..12:55 at 5 minutes)."""
        start = datetime.combine(date.min, self.first_bar_start)
        last = datetime.combine(date.min, self.last_bar_start)
        return int((last - start).total_seconds() // (self.bar_minutes * 60)) + 1
