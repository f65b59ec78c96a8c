"""Monitoring history in the lake: one partition per session (Bogota date of the check).

Datasets (each row stamped with `checked_at`, UTC; upserts keyed on it, so a re-run replaces):

    monitoring/feature_drift         one row per drift check (OK, DRIFT or SKIPPED + reason)
    monitoring/performance_history   one row per realized-performance check of the production model
    monitoring/realized_sessions     realized PnL per (model, role, session)   partition = that session
    monitoring/realized_signals      realized PnL per signal                    partition = its session
    monitoring/shadow_ab_report      one row per challenger per report
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake

DRIFT_DATASET = "monitoring/feature_drift"
PERFORMANCE_HISTORY_DATASET = "monitoring/performance_history"
REALIZED_SESSIONS_DATASET = "monitoring/realized_sessions"
REALIZED_SIGNALS_DATASET = "monitoring/realized_signals"
AB_REPORT_DATASET = "monitoring/shadow_ab_report"

UTC_US = pl.Datetime("us", "UTC")

DRIFT_SCHEMA: dict[str, pl.DataType] = {
    "checked_at": UTC_US,
    "status": pl.Utf8(),  # OK | DRIFT | SKIPPED
    "reason": pl.Utf8(),
    "model_id": pl.Utf8(),
    "experiment": pl.Utf8(),
    "drift_share": pl.Float64(),
    "threshold": pl.Float64(),
    "n_reference": pl.Int64(),
    "n_current": pl.Int64(),
    "drifted_features": pl.Utf8(),
    "live_sessions": pl.Utf8(),
    "report_json": pl.Utf8(),
}

PERFORMANCE_SCHEMA: dict[str, pl.DataType] = {
    "checked_at": UTC_US,
    "model_id": pl.Utf8(),
    "status": pl.Utf8(),  # core.performance.DegradationStatus or NO_PRODUCTION
    "reason": pl.Utf8(),
    "realized_sharpe": pl.Float64(),
    "expected_sharpe": pl.Float64(),
    "drop": pl.Float64(),
    "n_sessions": pl.Int64(),
    "prob_at_least_expected": pl.Float64(),
    "action": pl.Utf8(),  # none | rollback_proposed | rolled_back | rollback_impossible | already_proposed
}

AB_SCHEMA: dict[str, pl.DataType] = {
    "checked_at": UTC_US,
    "challenger_model_id": pl.Utf8(),
    "sessions": pl.Int64(),
    "method": pl.Utf8(),
    "mean_diff": pl.Float64(),
    "statistic": pl.Float64(),
    "p_value": pl.Float64(),
    "needed_sessions": pl.Int64(),
    "significant": pl.Boolean(),
    "challenger_pnl": pl.Float64(),
    "production_pnl": pl.Float64(),
    "verdict": pl.Utf8(),
}


def history_row(schema: dict[str, pl.DataType], **values: Any) -> pl.DataFrame:
    """One row in `schema`; missing columns are null (a typo in a column name is an error)."""
    unknown = set(values) - set(schema)
    if unknown:
        raise KeyError(f"unknown history column(s) {sorted(unknown)}")
    return pl.DataFrame([{k: values.get(k) for k in schema}], schema=schema)


def append(lake: ParquetLake, dataset: str, session: date, row: pl.DataFrame) -> None:
    lake.upsert(dataset, session.isoformat(), row, key="checked_at")


def read_recent(lake: ParquetLake, dataset: str, *, sessions: int, before: date | None = None) -> pl.DataFrame | None:
    """Rows of the newest `sessions` partitions (at or before `before`), oldest first."""
    keys = [k for k in lake.partitions(dataset) if before is None or k <= before.isoformat()]
    frame = lake.read_many(dataset, keys[-sessions:]) if sessions > 0 else None
    if frame is None:
        return None
    return frame.sort("checked_at") if "checked_at" in frame.columns else frame


def latest_row(lake: ParquetLake, dataset: str, where: pl.Expr | None = None) -> dict[str, Any] | None:
    """The newest row (by checked_at) matching `where`, scanning partitions newest first."""
    for key in reversed(lake.partitions(dataset)):
        frame = lake.read(dataset, key)
        if frame is None:
            continue
        if where is not None:
            frame = frame.filter(where)
        if frame.height:
            return frame.sort("checked_at").row(-1, named=True)
    return None


def read_since(lake: ParquetLake, dataset: str, since: datetime, *, sessions: int) -> pl.DataFrame:
    """Rows with checked_at > since from the newest `sessions` partitions (empty frame if none)."""
    frame = read_recent(lake, dataset, sessions=sessions)
    if frame is None:
        return pl.DataFrame()
    return frame.filter(pl.col("checked_at") > since)


def write_sessions(lake: ParquetLake, dataset: str, frame: pl.DataFrame, sessions: Iterable[date]) -> int:
    """Replace the partitions of `sessions` with their rows of `frame` (keyed by session_date)."""
    n = 0
    for d in sessions:
        part = frame.filter(pl.col("session_date") == d)
        if part.height:
            lake.write(dataset, d.isoformat(), part)
            n += 1
    return n
