"""Build the features of a range of sessions: the use case behind features/m5_features.

Reads the published bars of sessions [first, last] plus the earlier partitions holding W bars of
warm-up (once) and only macro values dated before the last session, computes the features in one
vectorized pass, runs the range's checks (app-level, pure: `evaluate_range`) and writes each
session whose rows pass every blocking check. Returns per-session metadata as plain values; the
asset turns them into Dagster metadata and check results (see defs/features/assets.py for the
checks' meaning).

No Dagster here: the lake, config and calendar are passed in.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.features import FeatureContract, feature_order_hash
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform.core.display import num
from usdcop_platform.core.features import (
    BAR_COLUMNS,
    FEATURE_SPECS,
    FeatureError,
    Macro,
    Wilder,
    compute_features,
    history_gaps,
    max_abs_difference,
    non_finite_rows,
    warmup_sessions,
)

FEATURES_DATASET = "features/m5_features"

# The partition equals the full-history computation to this tolerance (REFERENCE.md warm-up rule).
PARITY_TOLERANCE = 1e-9
# Lookback sessions declared to Dagster: twice the sessions W bars fill, so sessions missing up to
# half their bars still cover W; the asset reads further back itself when gaps are larger.
LOOKBACK_FACTOR = 2

CHECK_NO_NAN = "no_nan_after_warmup"
CHECK_ORDER = "feature_order_hash"
CHECK_RANGES = "indicator_ranges"
CHECK_PARITY = "matches_full_history"
CHECK_GAPS = "warmup_window_gaps"
BLOCKING_CHECKS = (CHECK_NO_NAN, CHECK_ORDER, CHECK_RANGES, CHECK_PARITY)

WRITE_THREADS = 4  # concurrent partition writes (parquet encoding releases the GIL)


class FeatureBuildError(RuntimeError):
    """The range cannot be computed (no macro series where the contract needs one, a feature error)."""


def lookback_sessions(contract: FeatureContract, calendar: TradingCalendar) -> int:
    return LOOKBACK_FACTOR * warmup_sessions(contract, calendar)


# ---- reading --------------------------------------------------------------------------------


def read_full_history(lake: ParquetLake, session: date) -> pl.DataFrame | None:
    """Every published bar up to and including `session` (the full-history reference)."""
    key = session.isoformat()
    paths = [lake.path(BARS_DATASET, p) for p in lake.partitions(BARS_DATASET) if p <= key]
    if not paths:
        return None
    return pl.scan_parquet(paths).collect().sort("time")


def read_macro(lake: ParquetLake) -> pl.DataFrame | None:
    return lake.read(MACRO_DATASET, MACRO_PARTITION)


# ---- computing ------------------------------------------------------------------------------


def empty_features(contract: FeatureContract) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {
        "time": pl.Datetime("us", "UTC"),
        "session": pl.Date(),
        **{c: pl.Float64() for c in BAR_COLUMNS[2:]},
        **{n: pl.Float64() for n in contract.names},
    }
    return pl.DataFrame(schema=schema)


def contract_needs_macro(contract: FeatureContract) -> bool:
    return any(isinstance(FEATURE_SPECS[n], Macro) for n in contract.names)


# ---- checks ---------------------------------------------------------------------------------


def _indicator_names(kind: str, contract: FeatureContract) -> list[str]:
    return [n for n in contract.names if isinstance(FEATURE_SPECS[n], Wilder) and FEATURE_SPECS[n].indicator == kind]  # type: ignore[union-attr]


# ---- the range computation ------------------------------------------------------------------


def read_range(lake: ParquetLake, first: date, last: date, warmup: int, step: int) -> tuple[pl.DataFrame | None, bool]:
    """Bars of the sessions first..last plus the earlier partitions holding at least `warmup` bars
    before `first`, read once. Also says whether the read starts at the first published partition
    (the window is then the full history)."""
    lo, hi = first.isoformat(), last.isoformat()
    keys = lake.partitions(BARS_DATASET)
    earlier = [p for p in keys if p < lo]
    own = [p for p in keys if lo <= p <= hi]
    frames: list[pl.DataFrame] = []
    n_before = 0
    while earlier and n_before < warmup:
        block, earlier = earlier[-step:], earlier[:-step]
        got = lake.read_many(BARS_DATASET, block)
        if got is not None:
            frames.insert(0, got)
            n_before += got.height
    got = lake.read_many(BARS_DATASET, own) if own else None
    if got is not None:
        frames.append(got)
    bars = pl.concat(frames, how="vertical").sort("time") if frames else None
    return bars, not earlier


def range_features(
    bars: pl.DataFrame | None, macro: pl.DataFrame | None, first: date, last: date, config: PlatformConfig,
    calendar: TradingCalendar,
) -> pl.DataFrame:
    """compute_features over `bars`, restricted to sessions first..last (rows with W earlier bars only)."""
    contract = config.features
    if bars is None or bars.height <= contract.warmup_bars:
        return empty_features(contract)
    df = compute_features(bars, macro, contract, calendar, config.macro)
    return df.filter(pl.col("session").is_between(first, last))


@dataclass
class RangeOutcome:
    """Per-check pass/fail of a range, by session, plus the range-level metadata of each check."""

    failed_by_session: dict[date, list[str]]
    check_metadata: dict[str, dict[str, Any]]
    passed: dict[str, bool]


def _sessions_of(frame: pl.DataFrame) -> list[date]:
    return sorted(set(frame["session"].to_list())) if frame.height else []


def evaluate_range(
    df: pl.DataFrame,
    full: pl.DataFrame | None,
    contract: FeatureContract,
    window_bars: pl.DataFrame | None,
    calendar: TradingCalendar,
) -> RangeOutcome:
    """The checks of a range frame (pure: no I/O). `full` None means the window is the full history."""
    checks = {
        CHECK_NO_NAN: _no_nan_check(df, contract),
        CHECK_ORDER: _order_check(df, contract),
        CHECK_RANGES: _ranges_check(df, contract),
        CHECK_PARITY: _parity_check(df, full, contract),
        CHECK_GAPS: _gaps_check(window_bars, calendar),
    }
    failed: dict[date, list[str]] = {}
    for check, (failing, _meta, _passed) in checks.items():
        for d in failing:
            failed.setdefault(d, []).append(check)
    return RangeOutcome(failed_by_session=failed, check_metadata={c: m for c, (_f, m, _p) in checks.items()},
                        passed={c: ok for c, (_f, _m, ok) in checks.items()})


# Each check of a range: (the sessions it fails, its metadata, whether it passed).
_Check = tuple[list[date], dict[str, Any], bool]


def _listed(sessions: list[date]) -> str:
    return ", ".join(d.isoformat() for d in sessions[:50]) or "none"


def _no_nan_check(df: pl.DataFrame, contract: FeatureContract) -> _Check:
    bad = non_finite_rows(df, contract)
    offending = sorted({n for row in bad["features"].to_list() for n in row})
    sessions = _sessions_of(bad)
    return sessions, {
        "rows_with_nan": bad.height, "features_with_nan": ", ".join(offending) or "none",
        "sessions_failing": _listed(sessions), "first_bad_bar": str(bad["time"][0]) if bad.height else "none",
    }, not sessions


def _order_check(df: pl.DataFrame, contract: FeatureContract) -> _Check:
    got = feature_order_hash(c for c in df.columns if c not in BAR_COLUMNS)
    sessions = _sessions_of(df) if got != contract.feature_order_hash else []
    return sessions, {"feature_order_hash": got, "contract_feature_order_hash": contract.feature_order_hash}, not sessions


def _ranges_check(df: pl.DataFrame, contract: FeatureContract) -> _Check:
    """RSI and ADX within [0, 100], ATR% non-negative (NaN is the NaN check's)."""
    out_of_range = pl.lit(False)
    counts: dict[str, int] = {}
    conditions = [(n, ~pl.col(n).is_between(0.0, 100.0)) for n in
                  _indicator_names("rsi", contract) + _indicator_names("adx", contract)]
    conditions += [(n, pl.col(n) < 0.0) for n in _indicator_names("atr_pct", contract)]
    for n, outside in conditions:
        cond = outside & pl.col(n).is_not_nan()
        counts[f"{n}_out_of_range"] = df.filter(cond).height
        out_of_range = out_of_range | cond
    sessions = _sessions_of(df.filter(out_of_range))
    return sessions, {**counts, "sessions_failing": _listed(sessions)}, not sessions


def _parity_check(df: pl.DataFrame, full: pl.DataFrame | None, contract: FeatureContract) -> _Check:
    """The range's values against the full-history computation, session by session."""
    if full is None:
        return [], {"max_abs_difference": 0.0, "tolerance": num(PARITY_TOLERANCE), "rows": df.height,
                    "compared": "window read is the full history (identical computation)"}, True
    names = list(contract.names)
    diffs = {d: max_abs_difference(df.filter(pl.col("session") == d), full.filter(pl.col("session") == d), names)
             for d in sorted(set(_sessions_of(df)) | set(_sessions_of(full)))}
    sessions = [d for d, v in diffs.items() if not v <= PARITY_TOLERANCE]
    worst = max((v for v in diffs.values() if np.isfinite(v)), default=0.0)
    return sessions, {
        "max_abs_difference": num(worst) if not sessions or np.isfinite(worst) else "rows or NaN positions differ",
        "tolerance": num(PARITY_TOLERANCE), "rows": df.height, "full_history_rows": full.height,
        "compared": "range vs full-history computation, once per range", "sessions_failing": _listed(sessions),
    }, not sessions


def _gaps_check(window_bars: pl.DataFrame | None, calendar: TradingCalendar) -> _Check:
    gaps = history_gaps(None if window_bars is None else window_bars["time"], calendar)
    return [date.fromisoformat(k) for k in gaps["sessions_with_gaps"]], {
        "missing_bars": gaps["missing_bars"], "missing_sessions": gaps["missing_sessions"],
        "sessions_with_gaps": ", ".join(gaps["sessions_with_gaps"][:50]) or "none",
    }, gaps["missing_bars"] == 0


def _range_window(bars: pl.DataFrame | None, first: date, warmup: int, calendar: TradingCalendar) -> pl.DataFrame | None:
    """The last W bars before the range plus the range's own bars (where the gap check looks)."""
    if bars is None:
        return None
    local = calendar.session_expr()
    before = bars.filter(local < first).tail(warmup)
    own = bars.filter(local >= first)
    return pl.concat([before, own]) if before.height or own.height else None


# ---- the use case ---------------------------------------------------------------------------


@dataclass
class FeaturesBuild:
    outcome: RangeOutcome
    # session key -> its own metadata (plain values; "path" is the written file's path, when published)
    per_session: dict[str, dict[str, Any]]
    published: int
    refused: int
    history_bars_read: int  # bars read before the range (the warm-up)
    full_history_compared: str  # "window" (the read was the full history) | "separate read"


def build_features(lake: ParquetLake, config: PlatformConfig, calendar: TradingCalendar,
                   sessions: list[date]) -> FeaturesBuild:
    """Compute, check and publish the features of `sessions` (consecutive partitions, one range)."""
    contract = config.features
    first, last = sessions[0], sessions[-1]
    macro_all = read_macro(lake)
    if contract_needs_macro(contract) and macro_all is None:
        raise FeatureBuildError(f"{MACRO_DATASET} has no data: materialize raw/macro_daily before the features")
    macro = macro_all.filter(pl.col("date") < last) if macro_all is not None else None  # nothing from the last session on

    bars, from_start = read_range(lake, first, last, contract.warmup_bars, lookback_sessions(contract, calendar))
    try:
        df = range_features(bars, macro, first, last, config, calendar)
        # the full-history reference, once per range; the window already is it when it starts at the first partition
        full = None if from_start else range_features(read_full_history(lake, last), macro_all, first, last, config, calendar)
    except FeatureError as exc:
        raise FeatureBuildError(f"features for sessions {first}..{last}: {exc}") from exc

    outcome = evaluate_range(df, full, contract, _range_window(bars, first, contract.warmup_bars, calendar), calendar)
    local = calendar.session_expr()
    bar_counts = dict(bars.group_by(local.alias("d")).len().iter_rows()) if bars is not None else {}
    by_session = df.partition_by("session", as_dict=True) if df.height else {}
    todo: list[tuple[str, pl.DataFrame]] = []
    per_session: dict[str, dict[str, Any]] = {}
    for d in sessions:
        key = d.isoformat()
        part = by_session.get((d,), None)
        rows = empty_features(contract) if part is None else part
        meta = _session_metadata(rows, int(bar_counts.get(d, 0)), sorted(set(outcome.failed_by_session.get(d, []))))
        if meta["published"]:
            todo.append((key, rows))
            meta["path"] = str(lake.path(FEATURES_DATASET, key))
        per_session[key] = meta
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        list(pool.map(lambda kp: lake.write(FEATURES_DATASET, kp[0], kp[1]), todo))
    in_range = sum(int(bar_counts.get(d, 0)) for d in sessions)
    return FeaturesBuild(
        outcome=outcome, per_session=per_session, published=len(todo), refused=len(sessions) - len(todo),
        history_bars_read=(0 if bars is None else bars.height) - in_range,
        full_history_compared="window" if full is None else "separate read",
    )


def _session_metadata(rows: pl.DataFrame, session_bars: int, failed: list[str]) -> dict[str, Any]:
    """One session's own numbers: published only when no blocking check failed on its rows and it has bars."""
    ok = not [c for c in failed if c in BLOCKING_CHECKS] and session_bars > 0
    meta: dict[str, Any] = {
        "dagster/row_count": rows.height if ok else 0,
        "rows": rows.height if ok else 0,
        "published": ok,
        "session_bars": session_bars,
        "warmup_dropped_rows": session_bars - rows.height,
        "failed_checks": ", ".join(failed) or "none",
        "checks": {c: ("FAIL" if c in failed else "PASS") for c in (*BLOCKING_CHECKS, CHECK_GAPS)},
        "first_bar": str(rows["time"][0]) if rows.height else "",
        "last_bar": str(rows["time"][-1]) if rows.height else "",
    }
    if session_bars == 0:
        meta["reason"] = "no published bars for this session"
    return meta
