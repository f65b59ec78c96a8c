"""Backtest series and trades of a proposal, read from the lake and shaped for display.

The evaluation step writes them per model id and period through adapters.backtests (series with
the candidate's equity/drawdown and the buy-and-hold and production-baseline equities; trades
with their net PnL); the proposal's lineage names the partition its first vote was made from
(`backtest_partition`, the model id for the test split). The proposal's `series_path` is used
when it points at a parquet file elsewhere.

Long series are downsampled for display with a min/max bucket rule: the n points are split into
b = max_points // 2 equal buckets and each bucket keeps its lowest and highest point (in time
order). Unlike plain striding this keeps every peak and every trough, so the drawn maximum
drawdown equals the computed one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.core.metrics import drawdown_series

# Default cap on points returned per series (API) and drawn per chart (page).
DEFAULT_MAX_POINTS = 2000
# Realised PnL of a trade after costs (core.backtest.Trades).
PNL_COLUMN = "net_pnl"
# Benchmark equity columns of the series (adapters.backtests), drawn beside the candidate.
OVERLAY_COLUMNS = ("buy_hold_equity", "baseline_equity")


def _read_parquet(path: str | None) -> pl.DataFrame | None:
    if not path:
        return None
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        return pl.read_parquet(p)
    return None


def proposal_partition(proposal: Mapping[str, Any]) -> str:
    """The lake partition of the backtest the proposal was made from."""
    return (proposal.get("lineage") or {}).get("backtest_partition") or proposal["model_id"]


def load_series(lake: ParquetLake, proposal: Mapping[str, Any]) -> pl.DataFrame | None:
    """The proposal's mark-to-market series sorted by time, or None when it was not written."""
    df = bt_store.load_backtest_series(lake, proposal["experiment_name"], proposal_partition(proposal))
    if df is None:
        df = _read_parquet(proposal.get("series_path"))
    if df is None or df.height == 0:
        return None
    return df.sort("time") if "time" in df.columns else df


def load_trades(lake: ParquetLake, proposal: Mapping[str, Any]) -> pl.DataFrame | None:
    df = bt_store.load_backtest_trades(lake, proposal["experiment_name"], proposal_partition(proposal))
    return None if df is None or df.height == 0 else df


def trade_pnl(trades: pl.DataFrame | None) -> list[float]:
    if trades is None or PNL_COLUMN not in trades.columns:
        return []
    return [float(x) for x in trades[PNL_COLUMN].to_list() if x is not None]


def minmax_indices(values: Sequence[float] | np.ndarray, max_points: int) -> np.ndarray:
    """Indices kept by the min/max bucket rule (see module docstring); all of them when n ≤ max_points.

    The first and last points are always kept so the curve starts and ends where the data does.
    """
    v = np.asarray(values, dtype=float)
    n = v.size
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep = {0, n - 1}
    filled = np.where(np.isfinite(v), v, np.nan)
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        chunk = filled[a:b]
        if np.all(np.isnan(chunk)):
            keep.add(a)
            continue
        keep.add(a + int(np.nanargmin(chunk)))
        keep.add(a + int(np.nanargmax(chunk)))
    return np.array(sorted(keep))


@dataclass(frozen=True)
class DisplaySeries:
    """Equity and drawdown at the kept indices (union of both series' extremes)."""

    time: list[datetime]
    equity: list[float | None]
    drawdown: list[float | None]
    points: int
    total_points: int
    overlays: dict[str, list[float | None]] = field(default_factory=dict)


def _finite_or_none(xs: np.ndarray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in xs]


def display_series(df: pl.DataFrame | None, max_points: int = DEFAULT_MAX_POINTS) -> DisplaySeries:
    """Downsample equity and drawdown together so both charts share the same x positions."""
    if df is None or df.height == 0 or "equity" not in df.columns:
        return DisplaySeries([], [], [], 0, 0 if df is None else df.height)
    equity = df["equity"].cast(pl.Float64).to_numpy()
    if "drawdown" in df.columns:
        drawdown = df["drawdown"].cast(pl.Float64).to_numpy()
    else:  # older series: derive it the one way the platform defines it
        drawdown = drawdown_series(equity, float(equity[0]))
    half = max(2, max_points // 2)
    idx = np.union1d(minmax_indices(equity, half), minmax_indices(drawdown, half))
    if idx.size > max_points:  # union can exceed the cap by a few points: stride it down
        idx = idx[np.linspace(0, idx.size - 1, max_points).astype(int)]
    times = df["time"].to_list() if "time" in df.columns else [None] * df.height
    overlays = {
        col: _finite_or_none(df[col].cast(pl.Float64).fill_null(float("nan")).to_numpy()[idx])
        for col in OVERLAY_COLUMNS
        if col in df.columns and df[col].null_count() < df.height
    }
    return DisplaySeries(
        time=[times[i] for i in idx],
        equity=_finite_or_none(equity[idx]),
        drawdown=_finite_or_none(drawdown[idx]),
        points=int(idx.size),
        total_points=df.height,
        overlays=overlays,
    )


def monthly_returns(df: pl.DataFrame | None, tz: ZoneInfo) -> list[tuple[str, float]]:
    """Return of each calendar month from the mark-to-market equity:

        r_m = E(last bar of m) / E(last bar of m−1) − 1,
    and for the first month E(first bar) stands in for the previous month's close.
    Months are those of the session date (or of the bar time in the market time zone).
    """
    if df is None or df.height == 0 or "equity" not in df.columns:
        return []
    if "session" in df.columns:
        month = pl.col("session").cast(pl.Date).dt.strftime("%Y-%m")
    else:
        month = pl.col("time").dt.convert_time_zone(str(tz)).dt.strftime("%Y-%m")
    last = (
        df.with_columns(month.alias("_month"))
        .group_by("_month", maintain_order=True)
        .agg(pl.col("equity").last().alias("close"))
        .sort("_month")
    )
    closes = last["close"].cast(pl.Float64).to_list()
    prev = float(df["equity"][0])
    out: list[tuple[str, float]] = []
    for label, close in zip(last["_month"].to_list(), closes):
        out.append((label, close / prev - 1.0 if prev else 0.0))
        prev = close
    return out


def iso(value: Any) -> Any:
    """JSON-friendly instants and dates."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def trade_records(trades: pl.DataFrame | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` trades as JSON-ready dicts (non-finite floats → None)."""
    if trades is None:
        return []
    out = []
    for row in trades.head(limit).iter_rows(named=True):
        rec = {}
        for k, v in row.items():
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            rec[k] = iso(v)
        out.append(rec)
    return out
