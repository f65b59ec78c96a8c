"""Quarantine tables in the parquet lake: rows that failed a rule, with the rule and the value.

Layout: quarantine/usdcop_m5_ohlcv/<session>.parquet and quarantine/macro_daily/all.parquet,
QUARANTINE_SCHEMA. Re-running a partition replaces its quarantine rows (idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform.core.schema import QUARANTINE_SCHEMA

QUARANTINE_DATASETS: dict[str, str] = {
    BARS_DATASET: "quarantine/usdcop_m5_ohlcv",
    MACRO_DATASET: "quarantine/macro_daily",
}


def write_quarantine(lake: ParquetLake, dataset: str, partitions: Iterable[str], rows: pl.DataFrame) -> int:
    """Replace the quarantine of each partition in `partitions` with its rows from `rows`."""
    target = QUARANTINE_DATASETS[dataset]
    by_part = {k[0]: df for k, df in rows.partition_by("partition", as_dict=True).items()} if rows.height else {}
    for p in partitions:
        part = by_part.get(p)
        if part is None or part.is_empty():
            lake.delete(target, p)
        else:
            lake.write(target, p, part.select(list(QUARANTINE_SCHEMA)))
    return rows.height


def write_macro_quarantine(lake: ParquetLake, rows: pl.DataFrame) -> int:
    """The macro quarantine is recomputed over the whole series: one partition, replaced."""
    target = QUARANTINE_DATASETS[MACRO_DATASET]
    if rows.is_empty():
        lake.delete(target, MACRO_PARTITION)
    else:
        lake.write(target, MACRO_PARTITION, rows.select(list(QUARANTINE_SCHEMA)))
    return rows.height


def read_quarantine(
    lake: ParquetLake,
    dataset: str | None = None,
    start: date | None = None,
    end: date | None = None,
    rule: str | None = None,
) -> pl.DataFrame:
    """Quarantined rows of one or all datasets, optionally by partition date range and rule."""
    frames = []
    for ds, target in QUARANTINE_DATASETS.items():
        if dataset is not None and dataset not in (ds, target, ds.split("/")[-1]):
            continue
        parts = lake.partitions(target)
        if ds == BARS_DATASET:
            parts = [p for p in parts if (start is None or p >= start.isoformat()) and (end is None or p <= end.isoformat())]
        df = lake.read_many(target, parts)
        if df is not None:
            frames.append(df)
    out = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    if start is not None:
        out = out.filter(pl.col("partition") >= start.isoformat())
    if end is not None:
        out = out.filter(pl.col("partition") <= end.isoformat())
    if rule:
        out = out.filter(pl.col("rule") == rule)
    return out.sort("dataset", "partition", "rule")
