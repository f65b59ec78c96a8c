"""Write-after-validate for the raw assets: clean -> quality gates -> publish -> quarantine.

Plain functions (no Dagster), so the assets, the ingest command and the benchmark share one
path. A session that fails a blocking gate is not written (the rest of the range is); the rows
that failed go to quarantine as `gate:<check>`. The macro series is published whole or not at all.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.contracts.quality import BarQuality, MacroQuality
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.display import metric_entries, pct
from usdcop_platform.core.cleaning import (
    BARS_DATASET,
    MACRO_DATASET,
    MACRO_PARTITION,
    CleanReport,
    MacroReport,
    clean_bars,
    clean_macro_long,
    macro_long,
    merge_macro,
)
from usdcop_platform.core.quality import PRICE_COLUMNS, bar_gate_frame, macro_gate_frame, macro_staleness, quarantine_frame, text
from usdcop_platform.adapters.expectations import (
    BAR_CHECKS,
    SESSION_CHECKS,
    CheckOutcome,
    validate_bar_rows,
    validate_bar_sessions,
    validate_macro_rows,
    validate_macro_variables,
    validate_quarantine,
)
from usdcop_platform.app.macro_acceptance import read_acceptances
from usdcop_platform.app.quarantine import write_macro_quarantine, write_quarantine


WRITE_THREADS = 4  # concurrent partition writes (I/O + zstd outside the GIL)


def readable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A publication summary as operators read it (asset metadata, `usdcop ingest`): fractions of
    a whole as `<name>_pct` percentages, other floats to 4 significant digits (core.display)."""
    return metric_entries(summary)


def raw_slice(calendar: TradingCalendar, sessions: list[date]) -> tuple[date, date]:
    """Labelled-UTC dates a run over `sessions` reads: from the first session to the day before the
    session after the last one. Consecutive runs therefore cover every day exactly once, and junk
    on weekends/holidays is counted by the partition before it, whatever the chunking."""
    return sessions[0], calendar.next_session(sessions[-1]) - timedelta(days=1)


@dataclass
class BarsPublication:
    report: CleanReport
    requested: list[str]
    written: list[str]
    refused: dict[str, list[str]]
    checks: dict[str, CheckOutcome]
    metrics: pl.DataFrame  # core.quality.session_metrics of the cleaned bars
    bars_written: int
    quarantined: int
    repaired_by_session: dict[str, int] = field(default_factory=dict)
    # session -> names of the checks (blocking or warn) that failed on that session's rows
    failed_by_session: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r = self.report
        written = self.metrics.filter(pl.col("session").is_in(self.written))
        completeness = written["completeness"]
        return {
            "sessions_requested": len(self.requested),
            "sessions": len(self.written),
            "sessions_refused": len(self.refused),
            "refused_sessions": sorted(self.refused),
            "sessions_missing": r.sessions_missing or 0,
            "raw_rows": r.raw_rows,
            "bars_published": self.bars_written,
            "timezone_repaired": r.timezone_repaired,
            "duplicates_dropped": r.duplicates_dropped,
            "holiday_bars_dropped": r.holiday_bars_dropped,
            "off_session_dropped": r.off_session_dropped,
            "quarantined": self.quarantined,
            "quarantine_by_rule": dict(r.quarantine_by_rule),
            "incomplete_sessions": int((written["missing_bars"] > 0).sum()),
            "completeness_mean": float(completeness.mean()) if written.height else 0.0,  # type: ignore[arg-type]
            "completeness_min": float(completeness.min()) if written.height else 0.0,  # type: ignore[arg-type]
            "first_bar": _iso(written["first_bar"].min() if written.height else None),
            "last_bar": _iso(written["last_bar"].max() if written.height else None),
        }

    def session_metadata(self, session: str) -> dict[str, Any]:
        """What this run did to one session partition: its own row count, first/last bar, quality
        metrics and check results (never the batch's). A session with no bar has 0 rows, is not
        published, and fails bars_completeness."""
        failed = sorted(self.failed_by_session.get(session, []))
        published = session in self.written
        row = self.metrics.filter(pl.col("session") == session)
        m = row.row(0, named=True) if not row.is_empty() else {}
        bars = int(m.get("bars") or 0)
        return {
            "dagster/row_count": bars if published else 0,
            "published": published,
            "bars": bars,
            "completeness_pct": pct(float(m.get("completeness") or 0.0)),
            "gaps": int(m.get("gaps") or 0),
            "max_stale_run": int(m.get("max_stale_run") or 0),
            "timezone_repaired": self.repaired_by_session.get(session, 0),
            "first_bar": _iso(m.get("first_bar")) or "",
            "last_bar": _iso(m.get("last_bar")) or "",
            "failed_checks": ", ".join(failed) or "none",
            "checks": {c: ("FAIL" if c in failed else "PASS") for c in self.checks},
        }


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def publish_bars(
    raw: pl.DataFrame,
    *,
    lake: ParquetLake,
    calendar: TradingCalendar,
    quality: BarQuality,
    sessions: list[date],
    detected_at: datetime | None = None,
) -> BarsPublication:
    """Clean `raw`, run the gates, upsert each passing session into raw/usdcop_m5_ohlcv/<session>,
    replace the quarantine of every requested session."""
    when = detected_at or datetime.now(timezone.utc)
    keys = [d.isoformat() for d in sessions]
    result = clean_bars(raw, calendar, quality, expected_sessions=sessions, detected_at=when)
    requested = set(keys)
    bars = result.bars.filter(
        calendar.session_expr().is_in(sessions)
    )
    gate = bar_gate_frame(bars, calendar, quality)
    metrics = with_empty_sessions(result.sessions, keys, calendar.bars_per_session)
    checks: dict[str, CheckOutcome] = {}
    checks.update(validate_bar_rows(gate, quality, calendar.bars_per_session))
    checks.update(validate_bar_sessions(metrics, quality))
    checks.update(validate_quarantine(result.quarantined))
    failed_by_session = _failed_by_session(checks, gate, metrics, result.quarantined, keys)

    refused: dict[str, list[str]] = {}
    gate_rows: list[pl.DataFrame] = []
    present = set(gate["session"].unique().to_list())
    for c in checks.values():
        if not c.blocking or c.passed:
            continue
        if c.table_level_failure:
            bad = present | requested
        else:
            idx = sorted(c.failed_rows())
            rows = gate[idx]
            bad = set(rows["session"].to_list())
            gate_rows.append(
                quarantine_frame(
                    rows, dataset=BARS_DATASET, partition=pl.col("session"), rule=f"gate:{c.name}",
                    field=",".join(sorted({e.column or "" for e in c.expectations if not e.success})),
                    value=text("o=", pl.col("open"), " h=", pl.col("high"), " l=", pl.col("low"), " c=", pl.col("close")),
                    row_columns=["time", *PRICE_COLUMNS, "volume"], detected_at=when,
                )
            )
        for s in bad:
            refused.setdefault(s, []).append(c.name)

    todo: list[tuple[str, pl.DataFrame]] = []
    if bars.height:
        by_session = bars.with_columns(
            calendar.session_expr().dt.to_string("%Y-%m-%d").alias("_s")
        ).partition_by("_s", as_dict=True, include_key=False)
        todo = [(key, part) for (key,), part in sorted(by_session.items()) if key not in refused and key in requested]
    # One file per session: parquet encoding releases the GIL, so a few threads overlap the writes.
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        list(pool.map(lambda kp: lake.upsert(BARS_DATASET, kp[0], kp[1], key="time"), todo))
    written = [k for k, _ in todo]
    n_written = sum(p.height for _, p in todo)
    quarantined = pl.concat([result.quarantined, *gate_rows], how="vertical") if gate_rows else result.quarantined
    write_quarantine(lake, BARS_DATASET, keys, quarantined)
    return BarsPublication(
        report=result.report, requested=keys, written=written, refused=refused, checks=checks,
        metrics=metrics, bars_written=n_written, quarantined=quarantined.height,
        repaired_by_session=result.repaired_by_session, failed_by_session=failed_by_session,
    )


def with_empty_sessions(metrics: pl.DataFrame, sessions: list[str], bars_per_session: int) -> pl.DataFrame:
    """core.quality.session_metrics plus one all-missing row per requested session without any bar,
    so the completeness gate fails on it by name instead of never seeing it."""
    missing = sorted(set(sessions) - set(metrics["session"].to_list()))
    if not missing:
        return metrics
    n = len(missing)
    empty = pl.DataFrame({
        "session": missing, "bars": [0] * n, "completeness": [0.0] * n, "missing_bars": [bars_per_session] * n,
        "gaps": [1] * n, "max_stale_run": [0] * n, "large_moves": [0] * n,
        "first_bar": [None] * n, "last_bar": [None] * n,
    }, schema=metrics.schema)
    return pl.concat([metrics, empty]).sort("session")


def _failed_by_session(
    checks: dict[str, CheckOutcome], gate: pl.DataFrame, metrics: pl.DataFrame, quarantined: pl.DataFrame,
    sessions: list[str],
) -> dict[str, list[str]]:
    """session -> failed checks: row-level failures mapped through the frame each check ran on
    (bar rows or per-session metrics); a table-level failure counts against every session."""
    frames = {c.name: metrics if c.name in SESSION_CHECKS else gate for c in BAR_CHECKS}
    out: dict[str, list[str]] = {}
    for c in checks.values():
        if c.passed:
            continue
        if c.name == "bars_quarantine":
            bad = set(quarantined["partition"].to_list()) & set(sessions)
        elif c.table_level_failure:
            bad = set(sessions)
        else:
            frame = frames[c.name]
            bad = set(frame[sorted(c.failed_rows())]["session"].to_list())
        for s in bad:
            out.setdefault(s, []).append(c.name)
    return out


@dataclass
class MacroPublication:
    report: MacroReport
    published: bool
    checks: dict[str, CheckOutcome]
    staleness: pl.DataFrame

    def summary(self) -> dict[str, Any]:
        r = self.report
        return {
            "macro_published": self.published,
            "macro_values": r.values,
            "macro_variables": r.variables,
            "macro_variables_missing": r.variables_missing,
            "macro_values_flagged": r.flagged,
            "macro_flagged_by_reason": dict(r.flagged_by_reason),
            "macro_flagged_by_variable": dict(r.flagged_by_variable),
            "macro_first_date": r.first_date.isoformat() if r.first_date else None,
            "macro_last_date": r.last_date.isoformat() if r.last_date else None,
        }


def publish_macro(
    raw_wide: pl.DataFrame,
    *,
    lake: ParquetLake,
    ssot: MacroSSOT,
    quality: MacroQuality,
    as_of: date,
    detected_at: datetime | None = None,
) -> MacroPublication:
    """Merge new observations into raw/macro_daily/all (keyed on date, variable), re-flag the whole
    series, run the gates; publish and replace the macro quarantine only when every blocking gate passes."""
    new_long, _ = macro_long(raw_wide, ssot)
    merged = merge_macro(lake.read(MACRO_DATASET, MACRO_PARTITION), new_long)
    result = clean_macro_long(merged, ssot, raw_rows=raw_wide.height, detected_at=detected_at,
                              accepted=read_acceptances(lake))  # an operator's re-accepted values
    staleness = macro_staleness(result.frame, ssot, as_of)
    checks: dict[str, CheckOutcome] = {}
    checks.update(validate_macro_rows(macro_gate_frame(result.detail, ssot)))
    checks.update(validate_macro_variables(staleness, quality.max_staleness_business_days))
    ok = all(c.passed for c in checks.values() if c.blocking)
    if ok:
        lake.write(MACRO_DATASET, MACRO_PARTITION, result.frame)
        write_macro_quarantine(lake, result.quarantined)
    return MacroPublication(report=result.report, published=ok, checks=checks, staleness=staleness)


def check_metadata(c: CheckOutcome, limit: int = 20) -> dict[str, Any]:
    """Asset-check metadata: failing expectations with counts and samples (JSON)."""
    failing = [e for e in c.summary() if not e["success"]]
    return {
        "description": c.description,
        "expectations": len(c.expectations),
        "failing": json.dumps(failing[:limit], default=str),
        **({k: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for k, v in c.extra.items()}),
    }


__all__ = [
    "BarsPublication",
    "MacroPublication",
    "check_metadata",
    "publish_bars",
    "publish_macro",
    "raw_slice",
    "readable_summary",
]
