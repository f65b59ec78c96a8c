"""File source: the real exports load unchanged; every malformed file fails with a clear error."""

from __future__ import annotations

import gzip
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from usdcop_platform.adapters.sources import (
    FileMacroSource,
    FileMarketSource,
    SourceError,
    build_macro_source,
    build_market_source,
    read_bars_file,
    read_macro_file,
)

HEADER = "time,symbol,open,high,low,close,volume,source\n"
ROW = "2024-03-05 13:00:00+00:00,USD/COP,3900.5,3901.0,3899.0,3900.0,0,twelvedata\n"


def write(tmp_path: Path, name: str, text: str, *, gz: bool = False) -> Path:
    p = tmp_path / name
    if gz:
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p.write_text(text)
    return p


def test_real_bars_file_loads_unchanged(real_bars_path):
    df = read_bars_file(real_bars_path)
    assert df.height == 75_460
    assert df.columns == ["time", "open", "high", "low", "close", "volume", "source"]
    assert df.schema["time"] == pl.Datetime("us", "UTC")
    assert df["time"][0] == datetime(2020, 1, 2, 8, 0, tzinfo=timezone.utc)  # as labelled: repair is cleaning's job
    assert (df["source"] == "twelvedata").sum() == 73_997
    assert (df["source"] == "twelvedata_backfill").sum() == 1_463


def test_real_macro_file_loads(real_macro_path, platform_config):
    cols = [v.column for v in platform_config.macro.variables.values()]
    df = read_macro_file(real_macro_path, cols)
    assert df.height == 10_372 and df.columns == ["date", *cols]
    assert df.schema["date"] == pl.Date and all(df.schema[c] == pl.Float64 for c in cols)
    everything = read_macro_file(real_macro_path)  # every all-numeric column
    assert set(cols) <= set(everything.columns) and "created_at" not in everything.columns


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_formats_roundtrip(tmp_path, fmt):
    text = HEADER + ROW
    if fmt == "parquet":
        p = tmp_path / "bars.parquet"
        read_bars_file(write(tmp_path, "b.csv", text)).write_parquet(p)
    else:
        p = write(tmp_path, f"bars.{fmt}", text, gz=fmt.endswith("gz"))
    df = read_bars_file(p)
    assert df.row(0) == (datetime(2024, 3, 5, 13, tzinfo=timezone.utc), 3900.5, 3901.0, 3899.0, 3900.0, 0.0, "twelvedata")


def test_iso_timestamps_with_z_and_offsets_are_converted_to_utc(tmp_path):
    p = write(tmp_path, "b.csv", "time,open,high,low,close\n2024-03-05T13:00:00Z,1,1,1,1\n2024-03-05 08:05:00-05:00,1,1,1,1\n")
    df = read_bars_file(p)
    assert df["time"].to_list() == [datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc),
                                    datetime(2024, 3, 5, 13, 5, tzinfo=timezone.utc)]
    assert df["volume"].to_list() == [0.0, 0.0]


def test_empty_file(tmp_path):
    with pytest.raises(SourceError, match="empty"):
        read_bars_file(write(tmp_path, "empty.csv", ""))
    with pytest.raises(SourceError, match="empty"):
        read_bars_file(write(tmp_path, "empty.csv.gz", "", gz=True))
    with pytest.raises(SourceError, match="no data rows"):
        read_bars_file(write(tmp_path, "header.csv", HEADER))


def test_truncated_gzip(tmp_path, real_bars_path):
    data = real_bars_path.read_bytes()
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated or corrupt gzip"):
        read_bars_file(p)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        read_bars_file(tmp_path / "nope.csv")


def test_missing_or_wrong_columns(tmp_path):
    with pytest.raises(SourceError, match=r"missing column\(s\) \['close'\]"):
        read_bars_file(write(tmp_path, "b.csv", "time,open,high,low\n2024-03-05 13:00:00+00:00,1,1,1\n"))
    with pytest.raises(SourceError, match="missing timestamp column"):
        read_bars_file(write(tmp_path, "c.csv", "when,open,high,low,close\n2024-03-05 13:00:00+00:00,1,1,1,1\n"))


def test_non_numeric_price(tmp_path):
    bad = ROW.replace("3901.0", "abc")
    with pytest.raises(SourceError, match=r"non-numeric value 'abc' in column 'high' at data row 2"):
        read_bars_file(write(tmp_path, "b.csv", HEADER + ROW + bad))


def test_naive_timestamps(tmp_path):
    naive = ROW.replace("+00:00", "")
    with pytest.raises(SourceError, match="naive timestamp '2024-03-05 13:00:00'"):
        read_bars_file(write(tmp_path, "b.csv", HEADER + naive))
    p = tmp_path / "naive.parquet"
    pl.DataFrame({"time": [datetime(2024, 3, 5, 13)], "open": [1.0], "high": [1.0], "low": [1.0],
                  "close": [1.0]}).write_parquet(p)
    with pytest.raises(SourceError, match="naive timestamps"):
        read_bars_file(p)


def test_unparseable_timestamp(tmp_path):
    with pytest.raises(SourceError, match="unparseable timestamp"):
        read_bars_file(write(tmp_path, "b.csv", HEADER + ROW.replace("2024-03-05 13:00:00", "2024-13-45 13:00:00")))


def test_macro_file_errors(tmp_path, platform_config):
    cols = [v.column for v in platform_config.macro.variables.values()]
    with pytest.raises(SourceError, match="missing macro column"):
        read_macro_file(write(tmp_path, "m.csv", "fecha,x\n2024-01-02,1\n"), cols)
    with pytest.raises(SourceError, match="missing date column"):
        read_macro_file(write(tmp_path, "n.csv", "day,x\n2024-01-02,1\n"))
    with pytest.raises(SourceError, match="non-numeric value 'n/a'"):
        read_macro_file(write(tmp_path, "o.csv", "fecha,x\n2024-01-02,1\n2024-01-03,n/a\n"), ["x"])
    with pytest.raises(SourceError, match="unparseable date"):
        read_macro_file(write(tmp_path, "p.csv", "fecha,x\n02/01/2024,1\n"), ["x"])
    df = read_macro_file(write(tmp_path, "q.csv", "fecha,x\n2024-01-03,\n2024-01-02,2.5\n"), ["x"])
    assert df.rows() == [(date(2024, 1, 2), 2.5), (date(2024, 1, 3), None)]


def test_file_sources_slice_by_labelled_utc_date(tmp_path, calendar, platform_config):
    text = HEADER + ROW + ROW.replace("2024-03-05 13:00", "2024-03-06 08:00") + ROW.replace("2024-03-05", "2024-03-07")
    src = build_market_source("file", calendar, bars_file=write(tmp_path, "b.csv", text))
    assert isinstance(src, FileMarketSource)
    assert src.bars(date(2024, 3, 6), date(2024, 3, 6))["time"].to_list() == [datetime(2024, 3, 6, 8, tzinfo=timezone.utc)]
    assert src.date_span() == (date(2024, 3, 5), date(2024, 3, 7))
    latest = src.latest_bar(datetime(2024, 3, 7, 13, 6, tzinfo=timezone.utc))
    assert latest["time"].to_list() == [datetime(2024, 3, 7, 13, 0, tzinfo=timezone.utc)]
    assert src.latest_bar(datetime(2024, 3, 7, 13, 4, tzinfo=timezone.utc)).height == 0  # bar not closed yet
    m = build_macro_source("file", platform_config.macro, anchor=date(2019, 1, 1),
                           macro_file=write(tmp_path, "m.csv", "fecha,fxrt_index_dxy_usa_d_dxy\n2024-01-02,101\n"))
    assert isinstance(m, FileMacroSource)
    with pytest.raises(SourceError, match="missing macro column"):
        m.values(date(2024, 1, 1), date(2024, 1, 31))


def test_source_selection_errors(calendar, platform_config):
    with pytest.raises(SourceError, match="needs a bars file"):
        build_market_source("file", calendar)
    with pytest.raises(SourceError, match="unknown market source"):
        build_market_source("bloomberg", calendar)
    with pytest.raises(SourceError, match="TWELVEDATA_API_KEY"):
        build_market_source("twelvedata", calendar)
    with pytest.raises(SourceError, match="FRED_API_KEY"):
        build_macro_source("fred", platform_config.macro, anchor=date(2019, 1, 1))
    with pytest.raises(SourceError, match="needs a macro file"):
        build_macro_source("file", platform_config.macro, anchor=date(2019, 1, 1))
