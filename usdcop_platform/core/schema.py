"""Column schemas of the frames that flow between layers (polars). One home for each."""

from __future__ import annotations

import polars as pl

UTC_TIME = pl.Datetime("us", "UTC")

# Cleaned/published 5-minute bars: one row per on-grid bar start, UTC instants.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "time": UTC_TIME,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}

# Daily macro, long by variable: each value with the date it was observed and the date it may be used.
MACRO_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "variable": pl.Utf8(),
    "value": pl.Float64(),
    "available_date": pl.Date(),
}

# Quarantined rows: never silently dropped.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.Utf8(),
    "partition": pl.Utf8(),
    "rule": pl.Utf8(),
    "field": pl.Utf8(),
    "value": pl.Utf8(),
    "row": pl.Utf8(),
    "detected_at": UTC_TIME,
}
