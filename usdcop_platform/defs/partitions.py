"""Partitions: one trading-session definition for every intraday asset; experiments as dynamic keys.

Sessions are built from the trading calendar (weekends by cron exclusion, Colombian holidays as
explicit dates), so Dagster's partition keys are exactly core.calendar's sessions.
"""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core.calendar import TradingCalendar

# Holidays are listed explicitly up to this year; the calendar's `holidays` data covers it.
PARTITION_HOLIDAY_HORIZON_YEARS = 3
WEEKEND_EXCLUSION = "0 0 * * 6,0"  # cron: Saturdays and Sundays


def build_session_partitions(calendar: TradingCalendar, horizon_end: date | None = None) -> dg.DailyPartitionsDefinition:
    start = calendar.instrument.calendar_start
    end = horizon_end or date(datetime.now().year + PARTITION_HOLIDAY_HORIZON_YEARS, 12, 31)
    holiday_dates = [datetime(d.year, d.month, d.day) for d in calendar.excluded_dates(start, end)]
    return dg.DailyPartitionsDefinition(
        start_date=start.isoformat(),
        timezone=calendar.instrument.timezone,
        end_offset=1,  # today's session is a partition while it trades (the live path writes into it)
        exclusions=[WEEKEND_EXCLUSION, *holiday_dates],
    )


CALENDAR = TradingCalendar(get_config().instrument)
session_partitions = build_session_partitions(CALENDAR)
experiment_partitions = dg.DynamicPartitionsDefinition(name="experiments")


def session_key(d: date) -> str:
    """Partition key of a session date (YYYY-MM-DD)."""
    return d.isoformat()


def session_date(key: str) -> date:
    return date.fromisoformat(key)
