"""Backtest results in the parquet lake: per-bar series, trades and the report, per model and period.

The partition is the model id for a backtest of the experiment's test split, and
"<model_id>@<start>_<end>" for an explicit period (`backtest_partition`), so a backtest of another
period never overwrites the one a proposal was made from.

    series  dataset "evaluation/backtests/<experiment>"  partition "<model_id>"
            time, session, close, position, equity, drawdown, bar_return, buy_hold_equity,
            baseline_position, baseline_equity, baseline_drawdown (baseline_* null without one)
    trades  dataset "evaluation/trades/<experiment>"     partition "<model_id>"
            entry/exit index and time, side, prices, bars_held, notional, costs, gross/net PnL, return
    report  dataset "evaluation/reports/<experiment>"    partition "<model_id>"
            one row: model_id, experiment, backtest_hash, test_start, test_end, created_at and
            `report` (JSON: metrics, benchmarks, cost sweep, bootstrap, walk-forward, lineage)

A re-run for the same model and period replaces its three partitions (atomic per file).
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
# Joins the model id and an explicit period in a partition key ("@" never occurs in a model id).
PERIOD_SEPARATOR = "@"


def backtest_partition(model_id: str, start: str | None = None, end: str | None = None) -> str:
    """Lake partition of a backtest: the model id for the test split, else "<model_id>@<start>_<end>"."""
    if PERIOD_SEPARATOR in model_id:
        raise ValueError(f"model id {model_id!r} must not contain {PERIOD_SEPARATOR!r}")
    if start is None and end is None:
        return model_id
    if start is None or end is None:
        raise ValueError("a backtest period needs both start and end")
    return f"{model_id}{PERIOD_SEPARATOR}{start}_{end}"


def model_partitions(lake: ParquetLake, experiment: str, model_id: str) -> list[str]:
    """Report partitions of one model: its test-split backtest and any explicit periods."""
    return [
        p for p in lake.partitions(reports_dataset(experiment))
        if p == model_id or p.startswith(f"{model_id}{PERIOD_SEPARATOR}")
    ]


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
    partition: str | None = None,
) -> dict[str, Path]:
    """Write series, trades and report of one backtest under `partition` (default: the model id,
    i.e. its test-split backtest); returns their paths."""
    partition = partition or model_id
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
        "series": lake.write(series_dataset(experiment), partition, series),
        "trades": lake.write(trades_dataset(experiment), partition, trades),
        "report": lake.write(reports_dataset(experiment), partition, row),
    }


def load_backtest_series(lake: ParquetLake, experiment: str, partition: str) -> pl.DataFrame | None:
    """Per-bar series of a backtest (partition: a model id or `backtest_partition(...)`), sorted by
    time (None when never run)."""
    df = lake.read(series_dataset(experiment), partition)
    return df.sort("time") if df is not None and "time" in df.columns else df


def load_backtest_trades(lake: ParquetLake, experiment: str, partition: str) -> pl.DataFrame | None:
    df = lake.read(trades_dataset(experiment), partition)
    return df.sort("entry_index") if df is not None and df.height else df


def load_backtest_report(lake: ParquetLake, experiment: str, partition: str) -> dict[str, Any] | None:
    """The report dict of a backtest (partition: a model id or `backtest_partition(...)`; None when
    never run)."""
    df = lake.read(reports_dataset(experiment), partition)
    if df is None or df.height == 0:
        return None
    return json.loads(df.get_column("report")[0])


def votes(report: dict[str, Any]) -> bool:
    """Whether a backtest report may carry the first vote: only a backtest of the experiment's test
    split (role "vote"); explicit periods are diagnostics, in sample or out of sample. Reports
    written before roles existed vote when they cover the test split."""
    role = report.get("role")
    if role is not None:
        return role == "vote"
    return report.get("period_source", "test_split") == "test_split" and report.get("out_of_sample", True)


def latest_backtest_report(
    lake: ParquetLake, experiment: str, model_id: str | None = None, *, votes_only: bool = True
) -> dict[str, Any] | None:
    """The most recently written report of the experiment (or of one model), leaving out those made
    for a reviewer's backtest request: they are extra evidence attached to a proposal, never what its
    first vote is made from. Diagnostics of explicit periods never vote either: they are left out
    unless `votes_only` is False."""
    dataset = reports_dataset(experiment)
    partitions = model_partitions(lake, experiment, model_id) if model_id else lake.partitions(dataset)
    # One row per partition, read one by one (their null columns may differ in dtype).
    rows = [df.row(0, named=True) for df in (lake.read(dataset, p) for p in partitions) if df is not None and df.height]
    for row in sorted(rows, key=lambda r: r["created_at"], reverse=True):
        report = json.loads(row["report"])
        if report.get("backtest_request_id") is None and (votes(report) or not votes_only):
            return report
    return None
