"""Per-session return series of every ledger trial, in the parquet lake.

    dataset "evaluation/trials/<family>"   partition "<trial_id>"
            session (date), split ("val" | "test"), session_return (compounded over the session's bars)

The SQL ledger row names its partition (`returns_partition`); PBO (CSCV) reads the family's test
series back and aligns them on their common sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake

TRIALS_DATASET = "evaluation/trials/{family}"


def trials_dataset(family: str) -> str:
    return TRIALS_DATASET.format(family=family)


def save_trial_returns(lake: ParquetLake, family: str, trial_id: str, frame: pl.DataFrame) -> Path:
    missing = {"session", "split", "session_return"} - set(frame.columns)
    if missing:
        raise ValueError(f"trial {trial_id} return series lacks column(s) {sorted(missing)}")
    return lake.write(trials_dataset(family), trial_id, frame)


def load_trial_returns(
    lake: ParquetLake, family: str, partitions: Iterable[str], split: str = "test"
) -> dict[str, pl.DataFrame]:
    """{partition: (session, session_return)} of one split, for the partitions present in the lake."""
    out: dict[str, pl.DataFrame] = {}
    for p in partitions:
        df = lake.read(trials_dataset(family), p)
        if df is not None and df.height:
            out[p] = df.filter(pl.col("split") == split).select("session", "session_return").sort("session")
    return out
