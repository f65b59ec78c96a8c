"""Features of a bars file and a macro file, no Dagster: the use case behind `usdcop features`.

The files go through the platform's file source and cleaning, then the feature engine; the parquet
holds one row per cleaned bar with W bars of history (time, session, the cleaned prices and the
contract's features by name). Rows that would carry a NaN are not written; bars and macro values
that failed a quality rule are not used and go to `<out>.quarantine.parquet`. The summary says how
many and where.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from usdcop_platform.adapters.sources.base import SourceError
from usdcop_platform.adapters.sources.file import read_bars_file, read_macro_file
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import CleaningError, clean_bars, clean_macro
from usdcop_platform.core.features import FeatureError, compute_features, non_finite_rows


class FeaturesFileError(ValueError):
    """Bad input (option, unreadable file, empty range), with a message naming it."""


def build_features_file(
    bars_path: Path, macro_path: Path, out: Path, start: date | None, end: date | None, cfg: PlatformConfig
) -> dict[str, object]:
    """Clean + compute + write; returns the summary. Raises FeaturesFileError on bad input."""
    if start and end and start > end:
        raise FeaturesFileError(f"--start {start} is after --end {end}")
    if out.suffix != ".parquet":
        raise FeaturesFileError(f"--out must be a .parquet file, got {out}")
    calendar = TradingCalendar(cfg.instrument)
    contract = cfg.features
    try:
        cleaned = clean_bars(read_bars_file(bars_path), calendar, cfg.quality.bars)
        macro = clean_macro(read_macro_file(macro_path), cfg.macro)
    except (SourceError, CleaningError) as exc:
        raise FeaturesFileError(str(exc)) from None
    bars = cleaned.bars
    if end is not None:  # later bars cannot change earlier features; earlier bars are warm-up
        bars = bars.filter(calendar.session_expr() <= end)
    try:
        df = compute_features(bars, macro.frame, contract, calendar, cfg.macro)
    except FeatureError as exc:
        raise FeaturesFileError(f"{bars_path}: {exc}") from None
    if start is not None:
        df = df.filter(pl.col("session") >= start)
    if df.height == 0:
        raise FeaturesFileError(f"no bar with {contract.warmup_bars} bars of history in the requested range")
    bad = non_finite_rows(df, contract)
    if bad.height:
        df = df.join(bad.select("time"), on="time", how="anti")
    if df.height == 0:
        raise FeaturesFileError(f"every row in the range carries NaN features ({_describe(bad)}); nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(out)
    quarantined = pl.concat([cleaned.quarantined, macro.quarantined], how="vertical")
    quarantine_out = out.with_name(f"{out.stem}.quarantine.parquet")
    if quarantined.height:  # never dropped silently: the rows, their rule and value, next to the output
        quarantined.write_parquet(quarantine_out)
    return {
        "out": str(out),
        "rows": df.height,
        "first_bar": df["time"][0].isoformat(),
        "last_bar": df["time"][-1].isoformat(),
        "sessions": df["session"].n_unique(),
        "bars_cleaned": cleaned.bars.height,
        "timezone_repaired": cleaned.report.timezone_repaired,
        "warmup_bars": contract.warmup_bars,
        "rows_with_nan_not_written": bad.height,
        "nan_detail": _describe(bad) if bad.height else "",
        "bars_quarantined": cleaned.report.quarantined,
        "bars_quarantined_by_rule": dict(cleaned.report.quarantine_by_rule),
        "macro_values_flagged": macro.report.flagged,
        "macro_flagged_by_reason": dict(macro.report.flagged_by_reason),
        "quarantine_out": str(quarantine_out) if quarantined.height else "",
        "feature_contract_version": contract.version,
        "feature_order_hash": contract.feature_order_hash,
    }


def _describe(bad: pl.DataFrame) -> str:
    features = sorted({n for row in bad["features"].to_list() for n in row})
    return f"{', '.join(features)} in sessions {bad['session'].min()} .. {bad['session'].max()}"
