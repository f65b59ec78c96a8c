"""Future-dated bars in an export: quarantined with a clear rule, never widening the ingest range,
and a file of only future rows is refused with a message that says so (issue 19)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import polars as pl
from typer.testing import CliRunner

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import FUTURE_DATED, quarantine_future_bars

HEADER = "time,symbol,open,high,low,close,volume,source\n"
PAST = date(2024, 3, 5)
FUTURE = date(2031, 5, 15)


def _rows(calendar: TradingCalendar, session: date, price: float = 4000.0) -> str:
    out = []
    for i, t in enumerate(calendar.session_grid_utc(session)):
        c = price + i * 0.5
        out.append(f"{t:%Y-%m-%d %H:%M:%S}+00:00,USD/COP,{c},{c + 1},{c - 1},{c},0,twelvedata\n")
    return "".join(out)


def _ingest(path):
    from usdcop_platform.cli import app

    return CliRunner().invoke(app, ["ingest", "--source", "file", "--bars", str(path), "--json"])


def test_quarantine_rows_name_the_rule_and_the_instant(calendar) -> None:
    t = datetime(2031, 5, 15, 14, 0, tzinfo=timezone.utc)
    raw = pl.DataFrame({"time": [t - timedelta(days=3000), t], "open": [1.0, 1.0], "high": [1.0, 1.0],
                        "low": [1.0, 1.0], "close": [1.0, 1.0], "volume": [0.0, 0.0]},
                       schema_overrides={"time": pl.Datetime("us", "UTC")})
    q = quarantine_future_bars(raw, calendar, date(2026, 1, 1))
    assert q.height == 1 and q["rule"][0] == FUTURE_DATED and q["partition"][0] == "2031-05-15"
    assert q["value"][0] == "2031-05-15T14:00:00Z is after today (2026-01-01)"


def test_future_rows_are_quarantined_and_do_not_widen_the_range(isolated_settings, tmp_path, calendar) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + _rows(calendar, PAST) + "".join(_rows(calendar, FUTURE).splitlines(keepends=True)[:3]))
    out = _ingest(path)
    assert out.exit_code == 0, out.output
    summary = json.loads(next(ln for ln in out.output.splitlines() if ln.startswith("{")))
    assert summary["end"] == PAST.isoformat() and summary["sessions_expected"] == 1
    assert summary["future_dated_quarantined"] == 3 and summary["bars_published"] == 60
    q = ParquetLake(isolated_settings.data_dir).read("quarantine/usdcop_m5_ohlcv", FUTURE.isoformat())
    assert q is not None and set(q["rule"]) == {FUTURE_DATED} and q.height == 3


def test_a_file_of_only_future_rows_says_so(isolated_settings, tmp_path, calendar) -> None:
    path = tmp_path / "future.csv"
    path.write_text(HEADER + _rows(calendar, FUTURE))
    out = _ingest(path)
    assert out.exit_code != 0
    assert "all 60 bars are dated after today" in out.output and "--start" not in out.output
    assert "Traceback" not in out.output
    q = ParquetLake(isolated_settings.data_dir).read("quarantine/usdcop_m5_ohlcv", FUTURE.isoformat())
    assert q is not None and q.height == 60
