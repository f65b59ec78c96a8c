"""`usdcop features --bars FILE --macro FILE --out FILE.parquet [--start D --end D]`.

Research use, no Dagster (the app/features_file.py use case): the files go through the platform's file source and cleaning, then the
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

from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, err_console


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
        from usdcop_platform.app.features_file import FeaturesFileError, build_features_file
        from usdcop_platform.contracts.platform import load_platform_config
        from usdcop_platform.settings import get_settings

        with cli_errors():
            try:
                summary = build_features_file(bars, macro, out, start.date() if start else None,
                                              end.date() if end else None, load_platform_config(get_settings().config_dir))
            except FeaturesFileError as exc:
                raise UserFacingError(str(exc)) from None
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
