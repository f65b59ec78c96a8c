"""Column schemas of the frames that flow between layers (polars). One home for each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def bar_frame(row: Mapping[str, Any]) -> pl.DataFrame:
    """One bar (a mapping of BAR_SCHEMA's fields; `volume` may be absent) as a one-row frame."""
    return pl.DataFrame([{c: row.get(c) for c in BAR_SCHEMA}], schema=BAR_SCHEMA)


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

# A backtest's per-bar series (core.backtest.Evaluation.series_frame): the candidate, buy-and-hold and
# the production baseline (null without one). session = days since 1970-01-01 of the trading session.
BACKTEST_SERIES_SCHEMA: dict[str, pl.DataType] = {
    "time": UTC_TIME,
    "session": pl.Int64(),
    "close": pl.Float64(),
    "position": pl.Int8(),
    "equity": pl.Float64(),
    "drawdown": pl.Float64(),
    "bar_return": pl.Float64(),
    "buy_hold_equity": pl.Float64(),
    "baseline_position": pl.Int8(),
    "baseline_equity": pl.Float64(),
    "baseline_drawdown": pl.Float64(),
}

# A backtest's round trips (core.backtest.Trades.to_frame); indices are bar positions in the series.
BACKTEST_TRADES_SCHEMA: dict[str, pl.DataType] = {
    "entry_index": pl.Int64(),
    "exit_index": pl.Int64(),
    "entry_time": UTC_TIME,
    "exit_time": UTC_TIME,
    "side": pl.Int8(),
    "entry_price": pl.Float64(),
    "exit_price": pl.Float64(),
    "bars_held": pl.Int64(),
    "notional": pl.Float64(),
    "costs": pl.Float64(),
    "gross_pnl": pl.Float64(),
    "net_pnl": pl.Float64(),
    "trade_return": pl.Float64(),
}
