"""`usdcop features --bars FILE --macro FILE --out FILE.parquet [--start D --end D]`.

Research use, no Dagster: the files go through the platform's file source and cleaning, then the
feature engine; the parquet holds one row per cleaned bar with W bars of history: time (UTC),
session, the cleaned open/high/low/close the features were computed from, and the contract's
features by name (position 0, time_norm filled), so anyone can check them against another
implementation. Rows that would carry a NaN (a macro value missing beyond the forward-fill limit,
or a z-score without enough history) are not written; the summary says how many and where.
Bars and macro values that failed a quality rule are not used either: the summary counts them by
rule and `<out>.quarantine.parquet` holds them (rule, field, value, the row), as `usdcop quarantine
list` shows them for the lake.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, err_console


def build_features_file(
    bars_path: Path, macro_path: Path, out: Path, start: date | None, end: date | None, config_dir: Path | None = None
) -> dict[str, object]:
    """Clean + compute + write; returns the summary. Raises UserFacingError on bad input."""
    import polars as pl

    from usdcop_platform.adapters.sources.base import SourceError
    from usdcop_platform.adapters.sources.file import read_bars_file, read_macro_file
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.cleaning import CleaningError, clean_bars, clean_macro
    from usdcop_platform.core.features import FeatureError, compute_features, non_finite_rows
    from usdcop_platform.settings import get_settings

    if start and end and start > end:
        raise UserFacingError(f"--start {start} is after --end {end}")
    if out.suffix != ".parquet":
        raise UserFacingError(f"--out must be a .parquet file, got {out}")
    cfg = load_platform_config(config_dir or get_settings().config_dir)
    calendar = TradingCalendar(cfg.instrument)
    contract = cfg.features
    try:
        cleaned = clean_bars(read_bars_file(bars_path), calendar, cfg.quality.bars)
        macro = clean_macro(read_macro_file(macro_path), cfg.macro)
    except (SourceError, CleaningError) as exc:
        raise UserFacingError(str(exc)) from None
    bars = cleaned.bars
    if end is not None:  # later bars cannot change earlier features; earlier bars are warm-up
        bars = bars.filter(calendar.session_expr() <= end)
    try:
        df = compute_features(bars, macro.frame, contract, calendar, cfg.macro)
    except FeatureError as exc:
        raise UserFacingError(f"{bars_path}: {exc}") from None
    if start is not None:
        df = df.filter(pl.col("session") >= start)
    if df.height == 0:
        raise UserFacingError(f"no bar with {contract.warmup_bars} bars of history in the requested range")
    bad = non_finite_rows(df, contract)
    if bad.height:
        df = df.join(bad.select("time"), on="time", how="anti")
    if df.height == 0:
        raise UserFacingError(f"every row in the range carries NaN features ({_describe(bad)}); nothing written")
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


def _describe(bad) -> str:  # noqa: ANN001 - polars frame from non_finite_rows
    features = sorted({n for row in bad["features"].to_list() for n in row})
    return f"{', '.join(features)} in sessions {bad['session'].min()} .. {bad['session'].max()}"


def register(app: typer.Typer) -> None:
    @app.command("features")
    def features_cmd(
        bars: Path = typer.Option(..., "--bars", help="bars export (CSV, CSV.gz or parquet)"),
        macro: Path = typer.Option(..., "--macro", help="daily macro export (wide, one column per variable)"),
        out: Path = typer.Option(..., "--out", help="output parquet file"),
        start: datetime = typer.Option(None, "--start", formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="first session written"),
        end: datetime = typer.Option(None, "--end", formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="last session written"),
    ) -> None:
        """Clean bars and macro from files and compute the feature contract per bar (no Dagster)."""
        with cli_errors():
            summary = build_features_file(bars, macro, out, start.date() if start else None, end.date() if end else None)
        table = Table(title="usdcop features", show_header=False)
        for key, value in summary.items():
            if key != "nan_detail":
                table.add_row(key, str(value))
        console.print(table)
        if summary["quarantine_out"]:
            err_console.print(
                f"[yellow]warning:[/] {summary['bars_quarantined']} bar(s) quarantined "
                f"{summary['bars_quarantined_by_rule'] or ''} and {summary['macro_values_flagged']} macro value(s) "
                f"flagged {summary['macro_flagged_by_reason'] or ''}: not used; rows, rules and values in "
                f"{summary['quarantine_out']}",
                soft_wrap=True, highlight=False,
            )
        if summary["rows_with_nan_not_written"]:
            err_console.print(
                f"[yellow]warning:[/] {summary['rows_with_nan_not_written']} row(s) not written: NaN in "
                f"{summary['nan_detail']} (macro missing beyond the forward-fill limit or z-score history too short)",
                soft_wrap=True,
            )
