"""Ingest a range of sessions: the use case behind `usdcop ingest`, `usdcop run` and `bench ingest`.

Resolves the session span (the bars file's dates, or the last DEFAULT_SYNTHETIC_SESSIONS closed
sessions), quarantines a file's future-dated bars, then launches raw/macro_daily and
raw/usdcop_m5_ohlcv for the range through `launch` (runs of the Dagster graph: the shells pass an
adapters.dagster_runs.DagsterRunLauncher) and totals what the runs reported. The per-run work
itself (clean, gates, upsert, quarantine) is app/ingest.py, inside the assets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.sources import FileMarketSource, macro_history_start
from usdcop_platform.app.quarantine import write_quarantine
from usdcop_platform.contracts.assets import RAW_BARS, RAW_MACRO, AssetPath
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET, quarantine_future_bars

DEFAULT_SYNTHETIC_SESSIONS = 63  # the synthetic default span: ~3 months of sessions
SOURCES = ("synthetic", "file")
# Run metadata summed over the chunks of a range.
SUMMED = (
    "sessions", "sessions_missing", "raw_rows", "bars_published", "timezone_repaired", "duplicates_dropped",
    "holiday_bars_dropped", "off_session_dropped", "quarantined", "incomplete_sessions",
)
MACRO_KEYS = ("macro_values", "macro_values_flagged", "macro_flagged_by_reason", "macro_variables_missing",
              "macro_first_date", "macro_last_date")

ProgressFn = Callable[[int, int, dict[str, Any]], None]


class IngestError(ValueError):
    """Bad ingest input (unknown source, missing file, empty range), naming the option."""


class RunOutcomeLike(Protocol):
    success: bool
    metadata: dict[str, Any]


class Launch(Protocol):
    """Materialize one asset (a contracts.assets path), optionally over a partition range."""

    def __call__(self, path: AssetPath, *, tags: dict[str, str], op_config: dict[str, Any] | None = None,
                 partition_range: tuple[str, str] | None = None) -> RunOutcomeLike: ...


@dataclass(frozen=True)
class IngestRequest:
    source: str = "synthetic"
    bars: Path | None = None
    macro: Path | None = None
    start: date | None = None
    end: date | None = None
    chunk_sessions: int | None = None  # default: the whole range in one run (single-run backfill policy)
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise IngestError(f"--source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        for p in (self.bars, self.macro):
            if p is not None and not p.exists():
                raise IngestError(f"{p}: file not found")
        if self.source == "file" and self.bars is None:
            raise IngestError("--source file needs --bars PATH")


def resolve_sessions(source: str, calendar: TradingCalendar, start: date | None, end: date | None,
                     bars: Path | None, today: date) -> list[date]:
    """The sessions to ingest: the given bounds, else the bars file's span (file) or the last
    DEFAULT_SYNTHETIC_SESSIONS closed sessions (synthetic); never past today's session."""
    if source == "file":
        if bars is None:
            raise IngestError("--source file needs --bars PATH")
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
        raise IngestError(f"--start {start} is after --end {end}")
    first = calendar.instrument.calendar_start
    sessions = calendar.sessions(max(start, first), end)
    if not sessions:
        raise IngestError(f"no trading session between {start} and {end} (calendar starts {first})")
    return sessions


def quarantine_future_file_bars(lake: ParquetLake, calendar: TradingCalendar, bars: Path, today: date) -> int:
    """Quarantine the file's bars dated after today (rule future_dated, in the session partition
    they claim; replaced when that partition is ingested). Returns how many."""
    rows = quarantine_future_bars(FileMarketSource(bars, calendar).frame(), calendar, today)
    if rows.height:
        write_quarantine(lake, BARS_DATASET, rows["partition"].unique().to_list(), rows)
    return rows.height


def ingest_range(
    request: IngestRequest,
    *,
    config: PlatformConfig,
    calendar: TradingCalendar,
    lake: ParquetLake,
    launch: Launch,
    today: date,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Materialize the raw assets for the request's range; returns the summary (sessions,
    bars_published, timezone_repaired, duplicates_dropped, holiday_bars_dropped, off_session_dropped,
    quarantined, incomplete_sessions, macro_values_flagged, refused sessions, per-rule counts,
    first/last bar, chunks, wall_seconds...). A refusal is in the summary, not raised."""
    request.validate()
    t0 = time.perf_counter()
    future_dated = quarantine_future_file_bars(lake, calendar, request.bars, today) \
        if request.source == "file" and request.bars else 0
    sessions = resolve_sessions(request.source, calendar, request.start, request.end, request.bars, today)
    summary: dict[str, Any] = {
        "source": request.source, "start": sessions[0].isoformat(), "end": sessions[-1].isoformat(),
        "sessions_expected": len(sessions), "lake": str(lake.root), "future_dated_quarantined": future_dated,
    }
    # macro first: the features of a session read the macro known before it
    if request.source == "synthetic" or request.macro is not None:
        summary.update(_ingest_macro(config, calendar, sessions, launch, request.tags))
    else:
        summary.update(macro_values=None, macro_values_flagged=None, macro_published=False, macro_refused=False)
    summary.update(_ingest_bars(sessions, request.chunk_sessions, launch, request.tags, progress))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _ingest_macro(config: PlatformConfig, calendar: TradingCalendar, sessions: list[date], launch: Launch,
                  tags: dict[str, str]) -> dict[str, Any]:
    start = macro_history_start(calendar, sessions[0], config.features.macro_zscore_window)
    outcome = launch(RAW_MACRO, tags=tags, op_config={"start": start.isoformat(), "end": sessions[-1].isoformat()})
    out = {k: outcome.metadata.get(k) for k in MACRO_KEYS}
    out.update(macro_published=bool(outcome.success), macro_refused=not outcome.success)
    return out


def _ingest_bars(sessions: list[date], chunk_sessions: int | None, launch: Launch, tags: dict[str, str],
                 progress: ProgressFn | None) -> dict[str, Any]:
    chunk = chunk_sessions or len(sessions)  # one run for the range (the asset's single-run backfill policy)
    chunks = [sessions[i : i + chunk] for i in range(0, len(sessions), chunk)]
    totals: dict[str, Any] = {k: 0 for k in SUMMED}
    refused: list[str] = []
    by_rule: dict[str, int] = {}
    firsts, lasts, weighted = [], [], 0.0
    for i, part in enumerate(chunks):
        meta = launch(RAW_BARS, tags=tags, partition_range=(part[0].isoformat(), part[-1].isoformat())).metadata
        for k in SUMMED:
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
    return {
        **totals,
        "sessions_refused": len(refused),
        "refused_sessions": sorted(refused),
        "quarantine_by_rule": by_rule,
        "completeness_mean": round(weighted / totals["sessions"], 6) if totals["sessions"] else 0.0,
        "first_bar": min(firsts) if firsts else None,
        "last_bar": max(lasts) if lasts else None,
        "chunks": len(chunks),
    }
