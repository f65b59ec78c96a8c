"""Walk-forward reports in the parquet lake, one per experiment config.

    dataset "evaluation/walk_forward/<experiment>"   partition = the config hash's first 16 hex digits
            one row: config_hash, created_at, report (JSON: folds, aggregate, total_timesteps)

evaluation/walk_forward writes it; the promotion proposal (its stability criterion) and the CLI (is
a walk-forward of this config and budget there yet?) read it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import polars as pl

from usdcop_platform.adapters.backtests import report_json

DATASET = "evaluation/walk_forward/{experiment}"


def report_partition(config_hash: str) -> str:
    return config_hash[:16]


def save_report(lake: Any, experiment: str, config_hash: str, report: dict[str, Any]) -> None:
    row = pl.DataFrame({"config_hash": [config_hash], "created_at": [datetime.now(timezone.utc).isoformat()],
                        "report": [report_json(report)]})
    lake.write(DATASET.format(experiment=experiment), report_partition(config_hash), row)


def load_report(
    lake: Any, experiment: str, config_hash: str, *, total_timesteps: int | None = None
) -> dict[str, Any] | None:
    """The walk-forward report of this exact experiment config (None when never run); with
    `total_timesteps`, only one whose folds were trained on that budget (a quick run's folds never
    stand in for a full-budget model's)."""
    df = lake.read(DATASET.format(experiment=experiment), report_partition(config_hash))
    if df is None or df.height == 0 or df.get_column("config_hash")[0] != config_hash:
        return None
    report = json.loads(df.get_column("report")[0])
    if total_timesteps is not None and report.get("folds") and report.get("total_timesteps") != total_timesteps:
        return None
    return report
