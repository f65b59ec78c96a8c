"""app.ingest_range: bad input is refused before any run, with the option named (the chunked runs
themselves are exercised through `usdcop ingest` in defs/test_market_data.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.app.ingest_range import IngestError, IngestRequest, ingest_range, resolve_sessions
from usdcop_platform.core.calendar import TradingCalendar


@pytest.fixture
def calendar(platform_config) -> TradingCalendar:
    return TradingCalendar(platform_config.instrument)


def _never(*_: object, **__: object) -> object:
    raise AssertionError("no run may be launched for a refused request")


@pytest.mark.parametrize("request_, message", [
    (IngestRequest(source="twelvedata"), "--source must be one of synthetic, file"),
    (IngestRequest(source="file"), "--source file needs --bars PATH"),
    (IngestRequest(source="file", bars=Path("/nonexistent/bars.csv")), "/nonexistent/bars.csv: file not found"),
    (IngestRequest(start=date(2024, 3, 8), end=date(2024, 3, 1)), "--start 2024-03-08 is after --end 2024-03-01"),
])
def test_bad_requests_name_the_option_and_launch_nothing(request_, message, platform_config, calendar, tmp_path):
    with pytest.raises(IngestError, match=message):
        ingest_range(request_, config=platform_config, calendar=calendar, lake=ParquetLake(tmp_path),
                     launch=_never, today=date(2024, 6, 3))


def test_a_range_without_a_session_is_refused(calendar):
    with pytest.raises(IngestError, match="no trading session between 2024-03-23 and 2024-03-24"):
        resolve_sessions("synthetic", calendar, date(2024, 3, 23), date(2024, 3, 24), None, date(2024, 6, 3))


def test_the_synthetic_default_is_the_last_63_closed_sessions(calendar):
    sessions = resolve_sessions("synthetic", calendar, None, None, None, date(2024, 6, 4))
    assert len(sessions) == 63 and sessions[-1] == date(2024, 5, 31)  # 3 June 2024 is a Colombian holiday
