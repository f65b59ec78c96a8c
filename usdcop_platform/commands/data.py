"""`usdcop ingest` and `usdcop quarantine list`.

`ingest()` is reusable (the demo calls it): it materializes raw/macro_daily and then
raw/usdcop_m5_ohlcv for the whole session range in one run (the asset's single-run backfill
policy; `chunk_sessions` bounds it) through Dagster on the local instance (DAGSTER_HOME, default
.usdcop/dagster_home: the UI shows what the CLI did), and returns one summary dict.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer

from usdcop_platform.commands.common import (
    UserFacingError,
    cli_errors,
    console,
    err_console,
    open_local_instance,
    print_json,
)

SUMMARY_KEYS = (
    "sessions", "bars_published", "timezone_repaired", "duplicates_dropped", "holiday_bars_dropped",
    "off_session_dropped", "quarantined", "incomplete_sessions", "macro_values_flagged",
)


def ingest(
    *,
    source: str = "synthetic",
    bars: Path | str | None = None,
    macro: Path | str | None = None,
    start: date | None = None,
    end: date | None = None,
    seed: int | None = None,
    settings: Any = None,
    instance: Any = None,
    chunk_sessions: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Materialize the raw assets for [start, end] from `source` into the configured lake: the
    app.ingest_range use case, its runs launched through usdcop_platform.definitions.

    source: "synthetic" (default span: the last DEFAULT_SYNTHETIC_SESSIONS sessions) or "file"
    (default span: the bars file's dates; macro skipped when `macro` is None). Returns the summary
    (app.ingest_range.ingest_range). Raises UserFacingError on bad input (unreadable file, empty range).
    """
    from usdcop_platform.adapters.expectations import start_gx_worker

    start_gx_worker()  # GX's import (3-4 s of CPU) overlaps Dagster's start-up on the other core
    from usdcop_platform.settings import get_settings

    s = settings or get_settings()
    if instance is None:  # the one local instance every CLI command records in (the UI shows it)
        with open_local_instance(s) as local:
            return ingest(source=source, bars=bars, macro=macro, start=start, end=end, seed=seed, settings=s,
                          instance=local, chunk_sessions=chunk_sessions, progress=progress)
    from usdcop_platform import definitions
    from usdcop_platform.adapters.dagster_runs import DagsterRunLauncher, RunError
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.adapters.sources import SourceError
    from usdcop_platform.app.ingest_range import IngestError, IngestRequest, ingest_range
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.cleaning import CleaningError

    request = IngestRequest(source=source, bars=Path(bars) if bars else None, macro=Path(macro) if macro else None,
                            start=start, end=end, chunk_sessions=chunk_sessions,
                            tags={"usdcop/command": "ingest", "usdcop/source": source})
    cfg = load_platform_config(s.config_dir)
    calendar = TradingCalendar(cfg.instrument)
    # the request's source, files and seed, bound into the graph's own source resources
    run_settings = s.model_copy(update={
        "market_source": source, "macro_source": source, "bars_file": request.bars, "macro_file": request.macro,
        "synthetic_seed": s.synthetic_seed if seed is None else seed,
    })
    launch = DagsterRunLauncher(definitions.asset_def, definitions.build_resources(run_settings), instance)
    try:
        return ingest_range(request, config=cfg, calendar=calendar, lake=ParquetLake(s.data_dir), launch=launch,
                            today=datetime.now(calendar.tz).date(), progress=progress)
    except (IngestError, RunError, SourceError, CleaningError) as exc:
        raise UserFacingError(str(exc)) from None


def _summary_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"usdcop ingest ({summary['source']}) {summary['start']} .. {summary['end']}")
    table.add_column("item")
    table.add_column("value", justify="right")
    order = ("sessions_expected", *SUMMARY_KEYS[:1], "sessions_missing", "sessions_refused", *SUMMARY_KEYS[1:],
             "macro_values", "first_bar", "last_bar", "completeness_mean", "chunks", "wall_seconds", "lake",
             "future_dated_quarantined")
    for k in order:
        if k in summary:
            v = summary[k]
            table.add_row(k, "" if v is None else (f"{v:,}" if isinstance(v, int) else str(v)))
    if summary.get("quarantine_by_rule"):
        table.add_row("quarantine_by_rule", json.dumps(summary["quarantine_by_rule"]))
    if summary.get("refused_sessions"):
        table.add_row("refused_sessions", ", ".join(summary["refused_sessions"][:10]))
    return table


def _quarantine_table(rows: Any, limit: int) -> Any:
    """The rule columns of each row; the row's JSON is printed after the table (_print_quarantine)."""
    from rich.table import Table

    table = Table(title=f"quarantined rows ({rows.height})")
    table.add_column("#", justify="right", no_wrap=True)
    for col in ("dataset", "partition", "rule", "field", "value"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(rows.head(limit).iter_rows(named=True), start=1):
        table.add_row(str(i), r["dataset"], r["partition"], r["rule"], r["field"] or "", r["value"] or "")
    return table


def _print_quarantine(rows: Any, limit: int) -> None:
    """Table, then each row's raw JSON on its own line, unwrapped: a JSON column squeezed into the
    terminal's width was folded one character wide, unreadable and impossible to copy."""
    console.print(_quarantine_table(rows, limit))
    for i, r in enumerate(rows.head(limit).iter_rows(named=True), start=1):
        typer.echo(f"#{i} {r['row']}")
    if rows.height > limit:
        console.print(f"({rows.height - limit} more: --limit N)")


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        source: str = typer.Option("synthetic", "--source", help="synthetic | file"),
        bars: Path = typer.Option(None, "--bars", help="bars export (CSV, CSV.gz or parquet) for --source file"),
        macro: Path = typer.Option(None, "--macro", help="daily macro export for --source file"),
        start: datetime = typer.Option(None, "--start", formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="first session"),
        end: datetime = typer.Option(None, "--end", formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="last session"),
        seed: int = typer.Option(None, "--seed", help="synthetic seed (default USDCOP_SYNTHETIC_SEED)"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    ) -> None:
        """Materialize raw/usdcop_m5_ohlcv and raw/macro_daily for a date range and print the summary."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with cli_errors():
            if as_json:
                summary = ingest(source=source, bars=bars, macro=macro, start=start.date() if start else None,
                                 end=end.date() if end else None, seed=seed)
            else:
                with Progress(TextColumn("[bold]ingest[/] {task.description}"), BarColumn(),
                              TextColumn("{task.completed}/{task.total} chunks"), TimeElapsedColumn(),
                              console=err_console, transient=True) as bar:
                    task = bar.add_task("bars", total=None)

                    def on_chunk(done: int, total: int, meta: dict[str, Any]) -> None:
                        bar.update(task, total=total, completed=done,
                                   description=f"bars -> {meta.get('last_bar') or ''}")

                    summary = ingest(source=source, bars=bars, macro=macro, start=start.date() if start else None,
                                     end=end.date() if end else None, seed=seed, progress=on_chunk)
        if as_json:
            print_json(summary)
        else:
            console.print(_summary_table(summary))
        if summary.get("sessions_refused") or summary.get("macro_refused"):
            what = [f"{summary['sessions_refused']} session(s)"] if summary.get("sessions_refused") else []
            what += ["the macro series"] if summary.get("macro_refused") else []
            err_console.print(f"[bold red]error:[/] blocking quality gates refused to publish {' and '.join(what)}")
            raise typer.Exit(1)

    quarantine_app = typer.Typer(help="Rows that failed a quality rule (never silently dropped).", no_args_is_help=True)
    app.add_typer(quarantine_app, name="quarantine")

    @quarantine_app.command("list")
    def quarantine_list(
        dataset: str = typer.Option(None, "--dataset", help="usdcop_m5_ohlcv | macro_daily (default: both)"),
        start: datetime = typer.Option(None, "--start", formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="first partition"),
        end: datetime = typer.Option(None, "--end", formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="last partition"),
        rule: str = typer.Option(None, "--rule", help="only this rule (e.g. high_below_low, spike, jump)"),
        limit: int = typer.Option(50, "--limit", min=1),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    ) -> None:
        """List quarantined rows with their rule and value."""
        from usdcop_platform.adapters.lake import ParquetLake
        from usdcop_platform.app.quarantine import read_quarantine
        from usdcop_platform.settings import get_settings

        with cli_errors():
            rows = read_quarantine(
                ParquetLake(get_settings().data_dir), dataset, start.date() if start else None,
                end.date() if end else None, rule,
            )
        if as_json:
            print_json({"count": rows.height, "rows": rows.head(limit).to_dicts()})
            return
        if rows.is_empty():
            console.print("no quarantined rows")
            return
        _print_quarantine(rows, limit)
        by_rule = rows.group_by("rule").len().sort("rule")
        console.print("by rule: " + ", ".join(f"{r}={n}" for r, n in by_rule.iter_rows()))


__all__ = ["SUMMARY_KEYS", "ingest", "register"]
