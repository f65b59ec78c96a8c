"""`usdcop ingest` and `usdcop quarantine list`.

`ingest()` is reusable (the demo calls it): it materializes raw/macro_daily and then
raw/usdcop_m5_ohlcv for the whole session range in one run (the asset's single-run backfill
policy; `chunk_sessions` bounds it) through Dagster on the local instance (DAGSTER_HOME, default
.usdcop/dagster_home: the UI shows what the CLI did), and returns one summary dict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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

DEFAULT_SYNTHETIC_SESSIONS = 63  # the synthetic default span: ~3 months of sessions
SOURCES = ("synthetic", "file")
SUMMARY_KEYS = (
    "sessions", "bars_published", "timezone_repaired", "duplicates_dropped", "holiday_bars_dropped",
    "off_session_dropped", "quarantined", "incomplete_sessions", "macro_values_flagged",
)
_SUMMED = (
    "sessions", "sessions_missing", "raw_rows", "bars_published", "timezone_repaired", "duplicates_dropped",
    "holiday_bars_dropped", "off_session_dropped", "quarantined", "incomplete_sessions",
)

RUN_LOG_LEVEL = "WARNING"  # Dagster's console logger during `usdcop ingest` (events still reach the instance)

ProgressFn = Callable[[int, int, dict[str, Any]], None]


def _resolve_sessions(
    source: str, calendar: Any, start: date | None, end: date | None, bars: Path | None, today: date
) -> list[date]:
    from usdcop_platform.adapters.sources import FileMarketSource

    if source == "file":
        if bars is None:
            raise UserFacingError("--source file needs --bars PATH")
        lo, hi = FileMarketSource(bars, calendar).date_span(as_of=today)  # future-dated rows: quarantined
        start, end = start or lo, end or hi
    else:
        end = end or calendar.previous_session(today)  # the last closed session
        if start is None:
            start = end
            for _ in range(DEFAULT_SYNTHETIC_SESSIONS - 1):
                start = calendar.previous_session(start)
    end = min(end, today)  # partitions exist up to today's session
    if start > end:
        raise UserFacingError(f"--start {start} is after --end {end}")
    first = calendar.instrument.calendar_start
    sessions = calendar.sessions(max(start, first), end)
    if not sessions:
        raise UserFacingError(f"no trading session between {start} and {end} (calendar starts {first})")
    return sessions


def _quarantine_future_bars(settings: Any, calendar: Any, bars: Path) -> int:
    """Quarantine the file's bars dated after today (rule future_dated, in the session partition
    they claim; replaced when that partition is ingested). Returns how many."""
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.adapters.sources import FileMarketSource
    from usdcop_platform.core.cleaning import BARS_DATASET, quarantine_future_bars
    from usdcop_platform.app.quarantine import write_quarantine

    today = datetime.now(calendar.tz).date()
    rows = quarantine_future_bars(FileMarketSource(bars, calendar).frame(), calendar, today)
    if rows.height:
        write_quarantine(ParquetLake(settings.data_dir), BARS_DATASET, rows["partition"].unique().to_list(), rows)
    return rows.height


def _failure_metadata(result: Any) -> dict[str, Any]:
    """Metadata of a refusal (the asset's dg.Failure): the counts of what was published anyway."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data is not None:
            return {k: v.value for k, v in event.step_failure_data.user_failure_data.metadata.items()}
    return {}


def _run_metadata(result: Any, node: str) -> dict[str, Any]:
    """The run's range totals: the Failure's metadata, or the `run_summary` every partition's
    materialization shares (a partition's own numbers are not the run's)."""
    if not result.success:
        return _failure_metadata(result)
    mats = result.asset_materializations_for_node(node)
    if not mats:
        return {}
    meta = {k: v.value for k, v in mats[0].metadata.items()}
    if "run_summary" in meta:  # a range run of the bars: its totals, shared by every partition
        return json.loads(meta["run_summary"])
    return meta


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
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Materialize the raw assets for [start, end] from `source` into the configured lake.

    source: "synthetic" (default span: the last DEFAULT_SYNTHETIC_SESSIONS sessions) or "file"
    (default span: the bars file's dates; macro skipped when `macro` is None).
    Returns the summary: sessions, bars_published, timezone_repaired, duplicates_dropped,
    holiday_bars_dropped, off_session_dropped, quarantined, incomplete_sessions,
    macro_values_flagged, and more (refused sessions, per-rule counts, first/last bar, ...).
    Raises UserFacingError on bad input (unreadable file, empty range).
    """
    from usdcop_platform.adapters.expectations import start_gx_worker

    start_gx_worker()  # GX's import (3-4 s of CPU) overlaps Dagster's start-up on the other core
    import dagster as dg

    from usdcop_platform.adapters.sources import SourceError
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.cleaning import CleaningError
    from usdcop_platform.defs.market_data.assets import raw_macro_daily, raw_usdcop_m5_ohlcv
    from usdcop_platform.defs.market_data.resources import MacroSourceResource, MarketSourceResource, history_start
    from usdcop_platform.defs.resources import PlatformResource
    from usdcop_platform.settings import get_settings

    if source not in SOURCES:
        raise UserFacingError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    s = settings or get_settings()
    if instance is None:  # the one local instance every CLI command records in (the UI shows it)
        with open_local_instance(s) as local:
            return ingest(source=source, bars=bars, macro=macro, start=start, end=end, seed=seed, settings=s,
                          instance=local, chunk_sessions=chunk_sessions, progress=progress)
    cfg = load_platform_config(s.config_dir)
    calendar = TradingCalendar(cfg.instrument)
    bars_path = Path(bars) if bars else None
    macro_path = Path(macro) if macro else None
    for p in (bars_path, macro_path):
        if p is not None and not p.exists():
            raise UserFacingError(f"{p}: file not found")
    t0 = time.perf_counter()
    try:
        future_dated = _quarantine_future_bars(s, calendar, bars_path) if source == "file" and bars_path else 0
        sessions = _resolve_sessions(source, calendar, start, end, bars_path, datetime.now(calendar.tz).date())
    except SourceError as exc:
        raise UserFacingError(str(exc)) from None
    use_seed = s.synthetic_seed if seed is None else seed
    resources = {
        "platform": PlatformResource.from_settings(s),
        "market_source": MarketSourceResource(
            kind=source, bars_file=str(bars_path) if bars_path else None, seed=use_seed, edge=s.synthetic_edge
        ),
        "macro_source": MacroSourceResource(
            kind=source, macro_file=str(macro_path) if macro_path else None, seed=use_seed
        ),
    }
    tags = {"usdcop/command": "ingest", "usdcop/source": source}
    summary: dict[str, Any] = {
        "source": source, "start": sessions[0].isoformat(), "end": sessions[-1].isoformat(),
        "sessions_expected": len(sessions), "lake": str(s.data_dir), "future_dated_quarantined": future_dated,
    }

    # macro first: the features of a session read the macro known before it
    if source == "synthetic" or macro_path is not None:
        macro_cfg = {"start": history_start(cfg, calendar, sessions[0]).isoformat(), "end": sessions[-1].isoformat()}
        result = _materialize(
            dg, [raw_macro_daily], resources, instance, tags,
            run_config={"ops": {raw_macro_daily.op.name: {"config": macro_cfg}}},
        )
        meta = _run_metadata(result, raw_macro_daily.op.name)
        for k in ("macro_values", "macro_values_flagged", "macro_flagged_by_reason", "macro_variables_missing",
                  "macro_first_date", "macro_last_date"):
            summary[k] = meta.get(k)
        summary["macro_published"] = bool(result.success)
        summary["macro_refused"] = not result.success
    else:
        summary.update(macro_values=None, macro_values_flagged=None, macro_published=False, macro_refused=False)

    chunk = chunk_sessions or len(sessions)  # one run for the range (the asset's single-run backfill policy)
    chunks = [sessions[i : i + chunk] for i in range(0, len(sessions), chunk)]
    totals: dict[str, Any] = {k: 0 for k in _SUMMED}
    refused: list[str] = []
    by_rule: dict[str, int] = {}
    firsts, lasts, weighted = [], [], 0.0
    for i, part in enumerate(chunks):
        range_tags = {
            **tags,
            "dagster/asset_partition_range_start": part[0].isoformat(),
            "dagster/asset_partition_range_end": part[-1].isoformat(),
        }
        try:
            result = _materialize(dg, [raw_usdcop_m5_ohlcv], resources, instance, range_tags)
        except (SourceError, CleaningError) as exc:
            raise UserFacingError(str(exc)) from None
        meta = _run_metadata(result, raw_usdcop_m5_ohlcv.op.name)
        for k in _SUMMED:
            totals[k] += int(meta.get(k) or 0)
        refused += list(meta.get("refused_sessions") or [])
        for rule, n in (meta.get("quarantine_by_rule") or {}).items():
            by_rule[rule] = by_rule.get(rule, 0) + int(n)
        if meta.get("first_bar"):
            firsts.append(meta["first_bar"])
        if meta.get("last_bar"):
            lasts.append(meta["last_bar"])
        # the asset's metadata shows completeness in percent (core.display); the summary keeps the fraction
        weighted += float(meta.get("completeness_mean_pct") or 0.0) / 100.0 * int(meta.get("sessions") or 0)
        if progress is not None:
            progress(i + 1, len(chunks), meta)
    summary.update(totals)
    summary.update(
        sessions_refused=len(refused),
        refused_sessions=sorted(refused),
        quarantine_by_rule=by_rule,
        completeness_mean=round(weighted / totals["sessions"], 6) if totals["sessions"] else 0.0,
        first_bar=min(firsts) if firsts else None,
        last_bar=max(lasts) if lasts else None,
        chunks=len(chunks),
        wall_seconds=round(time.perf_counter() - t0, 3),
    )
    return summary


def _materialize(dg: Any, assets: list[Any], resources: dict[str, Any], instance: Any, tags: dict[str, str],
                 run_config: dict[str, Any] | None = None) -> Any:
    """dg.materialize that keeps refusals (a failed gate) as results and re-raises the user's
    source errors (unreadable file, ...) as themselves."""
    quiet = {"loggers": {"console": {"config": {"log_level": RUN_LOG_LEVEL}}}}  # the summary says it all
    result = dg.materialize(assets, resources=resources, instance=instance, tags=tags,
                            run_config={**quiet, **(run_config or {})}, raise_on_error=False)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data.user_failure_data is None:
                err = event.step_failure_data.error
                cause = err.cause or err
                raise UserFacingError(_one_line(cause))
    return result


# Errors whose message is complete on its own (file, row/key, reason): shown as is, one line.
_SELF_EXPLAINING = ("SourceError", "CleaningError", "ConfigError", "FeatureError")


def _one_line(cause: Any) -> str:
    """A failed step's error as one clean line: "macro.csv: non-numeric value ...", not
    "ingest failed: usdcop_platform.adapters.sources.base.SourceError: ..." (nor a traceback)."""
    message = cause.message.strip()
    if cause.cls_name in _SELF_EXPLAINING:
        head = message.split(": ", 1)
        if len(head) == 2 and head[0].endswith(cause.cls_name):
            return head[1].strip()
        return message
    return f"ingest failed: {message.splitlines()[0] if message else cause.cls_name}"


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


__all__ = ["DEFAULT_SYNTHETIC_SESSIONS", "SUMMARY_KEYS", "ingest", "register"]
