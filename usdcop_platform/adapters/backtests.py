"""Backtest results in the parquet lake: per-bar series, trades and the report, per model id.

    series  dataset "evaluation/backtests/<experiment>"  partition "<model_id>"
            time, session, close, position, equity, drawdown, bar_return, buy_hold_equity,
            baseline_position, baseline_equity, baseline_drawdown (baseline_* null without one)
    trades  dataset "evaluation/trades/<experiment>"     partition "<model_id>"
            entry/exit index and time, side, prices, bars_held, notional, costs, gross/net PnL, return
    report  dataset "evaluation/reports/<experiment>"    partition "<model_id>"
            one row: model_id, experiment, backtest_hash, test_start, test_end, created_at and
            `report` (JSON: metrics, benchmarks, cost sweep, bootstrap, walk-forward, lineage)

A re-run for the same model replaces its three partitions (atomic per file).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store.types import jsonable

SERIES_DATASET = "evaluation/backtests/{experiment}"
TRADES_DATASET = "evaluation/trades/{experiment}"
REPORTS_DATASET = "evaluation/reports/{experiment}"


def series_dataset(experiment: str) -> str:
    return SERIES_DATASET.format(experiment=experiment)


def trades_dataset(experiment: str) -> str:
    return TRADES_DATASET.format(experiment=experiment)


def reports_dataset(experiment: str) -> str:
    return REPORTS_DATASET.format(experiment=experiment)


def report_json(report: dict[str, Any]) -> str:
    """The report as JSON (non-finite floats -> null, numpy -> Python, dates -> ISO)."""
    return json.dumps(jsonable(report), sort_keys=True)


def save_backtest(
    lake: ParquetLake,
    experiment: str,
    model_id: str,
    *,
    series: pl.DataFrame,
    trades: pl.DataFrame,
    report: dict[str, Any],
) -> dict[str, Path]:
    """Write series, trades and report of one model's backtest; returns their paths."""
    created = datetime.now(timezone.utc)
    row = pl.DataFrame(
        {
            "model_id": [model_id],
            "experiment": [experiment],
            "backtest_hash": [report.get("backtest_hash")],
            "test_start": [report.get("test_start")],
            "test_end": [report.get("test_end")],
            "created_at": [created],
            "report": [report_json({**report, "created_at": created.isoformat()})],
        },
        schema_overrides={"created_at": pl.Datetime("us", "UTC")},
    )
    return {
        "series": lake.write(series_dataset(experiment), model_id, series),
        "trades": lake.write(trades_dataset(experiment), model_id, trades),
        "report": lake.write(reports_dataset(experiment), model_id, row),
    }


def load_backtest_series(lake: ParquetLake, experiment: str, model_id: str) -> pl.DataFrame | None:
    """Per-bar series of a model's latest backtest, sorted by time (None when never run)."""
    df = lake.read(series_dataset(experiment), model_id)
    return df.sort("time") if df is not None and "time" in df.columns else df


def load_backtest_trades(lake: ParquetLake, experiment: str, model_id: str) -> pl.DataFrame | None:
    df = lake.read(trades_dataset(experiment), model_id)
    return df.sort("entry_index") if df is not None and df.height else df


def load_backtest_report(lake: ParquetLake, experiment: str, model_id: str) -> dict[str, Any] | None:
    """The report dict of a model's latest backtest (None when never run)."""
    df = lake.read(reports_dataset(experiment), model_id)
    if df is None or df.height == 0:
        return None
    return json.loads(df.get_column("report")[0])


def latest_backtest_report(lake: ParquetLake, experiment: str) -> dict[str, Any] | None:
    """The most recently written report of any model of the experiment."""
    frames = lake.read_many(reports_dataset(experiment), lake.partitions(reports_dataset(experiment)))
    if frames is None:
        return None
    newest = frames.sort("created_at").tail(1)
    return json.loads(newest.get_column("report")[0])
