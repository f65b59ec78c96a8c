"""`features/m5_features`: the 15-value observation per bar, for a range of session partitions in one run.

A run over sessions [first, last] (one partition is a range of one) reads the published bars of
the range plus the earlier partitions holding W bars of warm-up — once — and only macro values
dated before the last session, computes the features in one vectorized pass, and splits them per
session. I/O is linear in the range: a backfill of the whole history is one run.

It validates inside the asset (check_specs) and writes a session's lake partition only when
every blocking check passes on that session's rows (a blocking check alone would not undo a
write). Each session partition gets its own materialization metadata (row count, first/last bar,
its check results); the range's check results name the failing sessions:

* no_nan_after_warmup      — no NaN/inf in any published row (a macro value missing beyond the
                             forward-fill limit fails here; nothing with a NaN is published);
* feature_order_hash       — the written columns hash to the contract's feature_order_hash;
* indicator_ranges         — RSI and ADX within [0, 100], atr_pct ≥ 0;
* matches_full_history     — the range's rows equal the full-history computation (≤ 1e-9), run
                             once per range (free when the warm-up window starts at the first
                             published partition: the window then *is* the full history);
* warmup_window_gaps (WARN)— missing bars inside the window read (features stay defined on the
                             bar series; the gap is reported, not repaired).

A session without any published bar is materialized with 0 rows and `published: false`.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` annotation at load.

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from dagster import AssetExecutionContext

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.features import feature_order_hash
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.display import num
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
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
from usdcop_platform.defs import catalog
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY, RAW_MACRO_KEY
from usdcop_platform.defs.partitions import (
    CALENDAR,
    add_partition_metadata,
    session_date,
    session_key,
    session_partitions,
)
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import platform_config

FEATURES_DATASET = "features/m5_features"
FEATURES_KEY = dg.AssetKey(["features", "m5_features"])

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


def lookback_sessions(contract: FeatureContract, calendar: TradingCalendar) -> int:
    return LOOKBACK_FACTOR * warmup_sessions(contract, calendar)


CONTRACT = platform_config().features  # the contract the definitions are built with (column schema, lookback)
LOOKBACK_SESSIONS = lookback_sessions(CONTRACT, CALENDAR)


# ---- reading --------------------------------------------------------------------------------


def read_full_history(lake: ParquetLake, session: date) -> pl.DataFrame | None:
    """Every published bar up to and including `session` (the full-history reference)."""
    key = session_key(session)
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
    lo, hi = session_key(first), session_key(last)
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
    failed: dict[date, list[str]] = {}
    meta: dict[str, dict[str, Any]] = {}
    passed: dict[str, bool] = {}

    def fail(check: str, sessions: list[date]) -> None:
        for d in sessions:
            failed.setdefault(d, []).append(check)
        passed[check] = not sessions

    bad = non_finite_rows(df, contract)
    offending = sorted({n for row in bad["features"].to_list() for n in row})
    bad_sessions = _sessions_of(bad)
    fail(CHECK_NO_NAN, bad_sessions)
    meta[CHECK_NO_NAN] = {
        "rows_with_nan": bad.height, "features_with_nan": ", ".join(offending) or "none",
        "sessions_failing": ", ".join(d.isoformat() for d in bad_sessions[:50]) or "none",
        "first_bad_bar": str(bad["time"][0]) if bad.height else "none",
    }

    got = feature_order_hash(c for c in df.columns if c not in BAR_COLUMNS)
    fail(CHECK_ORDER, _sessions_of(df) if got != contract.feature_order_hash else [])
    meta[CHECK_ORDER] = {"feature_order_hash": got, "contract_feature_order_hash": contract.feature_order_hash}

    out_of_range = pl.lit(False)
    counts: dict[str, int] = {}
    for n in _indicator_names("rsi", contract) + _indicator_names("adx", contract):
        cond = ~pl.col(n).is_between(0.0, 100.0) & pl.col(n).is_not_nan()
        counts[f"{n}_out_of_range"] = df.filter(cond).height
        out_of_range = out_of_range | cond
    for n in _indicator_names("atr_pct", contract):
        cond = (pl.col(n) < 0.0) & pl.col(n).is_not_nan()
        counts[f"{n}_out_of_range"] = df.filter(cond).height
        out_of_range = out_of_range | cond
    range_bad = _sessions_of(df.filter(out_of_range))
    fail(CHECK_RANGES, range_bad)
    meta[CHECK_RANGES] = {**counts, "sessions_failing": ", ".join(d.isoformat() for d in range_bad[:50]) or "none"}

    names = list(contract.names)
    if full is None:
        fail(CHECK_PARITY, [])
        meta[CHECK_PARITY] = {"max_abs_difference": 0.0, "tolerance": num(PARITY_TOLERANCE), "rows": df.height,
                              "compared": "window read is the full history (identical computation)"}
    else:
        diffs = {d: max_abs_difference(df.filter(pl.col("session") == d), full.filter(pl.col("session") == d), names)
                 for d in sorted(set(_sessions_of(df)) | set(_sessions_of(full)))}
        parity_bad = [d for d, v in diffs.items() if not v <= PARITY_TOLERANCE]
        fail(CHECK_PARITY, parity_bad)
        worst = max((v for v in diffs.values() if np.isfinite(v)), default=0.0)
        meta[CHECK_PARITY] = {
            "max_abs_difference": num(worst) if not parity_bad or np.isfinite(worst) else "rows or NaN positions differ",
            "tolerance": num(PARITY_TOLERANCE), "rows": df.height, "full_history_rows": full.height,
            "compared": "range vs full-history computation, once per range",
            "sessions_failing": ", ".join(d.isoformat() for d in parity_bad[:50]) or "none",
        }

    gaps = history_gaps(None if window_bars is None else window_bars["time"], calendar)
    gap_sessions = [date.fromisoformat(k) for k in gaps["sessions_with_gaps"]]
    for d in gap_sessions:
        failed.setdefault(d, []).append(CHECK_GAPS)
    passed[CHECK_GAPS] = gaps["missing_bars"] == 0
    meta[CHECK_GAPS] = {
        "missing_bars": gaps["missing_bars"], "missing_sessions": gaps["missing_sessions"],
        "sessions_with_gaps": ", ".join(gaps["sessions_with_gaps"][:50]) or "none",
    }
    return RangeOutcome(failed_by_session=failed, check_metadata=meta, passed=passed)


def _check_results(outcome: RangeOutcome) -> list[dg.AssetCheckResult]:
    out = []
    for spec in _SPECS:
        ok = outcome.passed[spec.name]
        sev = dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN
        failing = outcome.check_metadata[spec.name].get("sessions_failing")
        out.append(dg.AssetCheckResult(
            check_name=spec.name, passed=ok, severity=sev, metadata=outcome.check_metadata[spec.name],
            description=None if ok else f"failed on session(s) {failing}" if failing else None,
        ))
    return out


# ---- the asset ------------------------------------------------------------------------------

_SPECS = [
    dg.AssetCheckSpec(CHECK_NO_NAN, asset=FEATURES_KEY, blocking=True,
                      description="No NaN or ±inf in any published row (macro beyond the ffill limit fails here)."),
    dg.AssetCheckSpec(CHECK_ORDER, asset=FEATURES_KEY, blocking=True,
                      description="Written feature columns hash to the contract's feature_order_hash."),
    dg.AssetCheckSpec(CHECK_RANGES, asset=FEATURES_KEY, blocking=True,
                      description="RSI and ADX within [0, 100]; atr_pct >= 0."),
    dg.AssetCheckSpec(CHECK_PARITY, asset=FEATURES_KEY, blocking=True,
                      description="Range features equal the full-history computation to 1e-9 (once per range)."),
    dg.AssetCheckSpec(CHECK_GAPS, asset=FEATURES_KEY,
                      description="Warn: bars missing inside the window read."),
]

WRITE_THREADS = 4  # concurrent partition writes (parquet encoding releases the GIL)


with warnings.catch_warnings():
    # allow_nonexistent_upstream_partitions is beta in dagster 1.13; we rely on it knowingly
    warnings.simplefilter("ignore", dg.BetaWarning)
    _LOOKBACK_MAPPING = dg.TimeWindowPartitionMapping(
        start_offset=-LOOKBACK_SESSIONS, allow_nonexistent_upstream_partitions=True)


@dg.asset(
    key=FEATURES_KEY,
    partitions_def=session_partitions,
    # a range of sessions is one run: the warm-up is read once and the features computed in one pass
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        # the first sessions of the calendar have less history than the lookback: not an error
        dg.AssetDep(RAW_BARS_KEY, partition_mapping=_LOOKBACK_MAPPING),
        dg.AssetDep(RAW_MACRO_KEY),
    ],
    check_specs=_SPECS,
    group_name="features",
    kinds={"polars", "parquet"},
    owners=[catalog.OWNER_DATA],
    metadata=catalog.columns(catalog.table_schema(
        dict(empty_features(CONTRACT).schema), catalog.feature_descriptions(CONTRACT))),
    description="The 15-value observation (feature contract) for every bar of a session with W bars of history.",
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
)
def m5_features(context: AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    config = platform.config
    contract = config.features
    calendar = platform.calendar
    lake = platform.lake
    sessions = [session_date(k) for k in context.partition_keys]
    first, last = sessions[0], sessions[-1]

    macro_all = read_macro(lake)
    if contract_needs_macro(contract) and macro_all is None:
        raise dg.Failure(f"{MACRO_DATASET} has no data: materialize raw/macro_daily before the features")
    macro = macro_all.filter(pl.col("date") < last) if macro_all is not None else None  # nothing from the last session on

    bars, from_start = read_range(lake, first, last, contract.warmup_bars, lookback_sessions(contract, calendar))
    try:
        df = range_features(bars, macro, first, last, config, calendar)
        # the full-history reference, once per range; the window already is it when it starts at the first partition
        full = None if from_start else range_features(read_full_history(lake, last), macro_all, first, last, config, calendar)
    except FeatureError as exc:
        raise dg.Failure(f"features for sessions {first}..{last}: {exc}") from exc

    window = _range_window(bars, first, contract.warmup_bars, calendar)
    outcome = evaluate_range(df, full, contract, window, calendar)
    local = calendar.session_expr()
    bar_counts = dict(bars.group_by(local.alias("d")).len().iter_rows()) if bars is not None else {}
    by_session = df.partition_by("session", as_dict=True) if df.height else {}

    todo: list[tuple[str, pl.DataFrame]] = []
    per_partition: dict[str, dict[str, Any]] = {}
    published = refused = 0
    for d in sessions:
        key = session_key(d)
        part = by_session.get((d,), None)
        rows = empty_features(contract) if part is None else part
        session_bars = int(bar_counts.get(d, 0))
        failed = sorted(set(outcome.failed_by_session.get(d, [])))
        blocking_failed = [c for c in failed if c in BLOCKING_CHECKS]
        ok = not blocking_failed and session_bars > 0
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
        if ok:
            todo.append((key, rows))
            meta["path"] = dg.MetadataValue.path(str(lake.path(FEATURES_DATASET, key)))
            published += 1
        else:
            refused += 1
        per_partition[key] = meta
    add_partition_metadata(context, per_partition)
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        list(pool.map(lambda kp: lake.write(FEATURES_DATASET, kp[0], kp[1]), todo))
    if refused:
        context.log.warning(f"features {first}..{last}: {refused} session(s) not published")
    n_bars = 0 if bars is None else bars.height
    in_range = sum(int(bar_counts.get(d, 0)) for d in sessions)
    return dg.MaterializeResult(
        metadata={  # what every partition of the run shares: the run's range, under run_* names
            "run_sessions": len(sessions),
            "run_sessions_published": published,
            "run_sessions_not_published": refused,
            "run_history_bars_read": n_bars - in_range,
            "run_full_history_compared": "window" if full is None else "separate read",
            "warmup_bars": contract.warmup_bars,
            "feature_contract_version": contract.version,
            "feature_order_hash": contract.feature_order_hash,
        },
        check_results=_check_results(outcome),
    )


def _range_window(bars: pl.DataFrame | None, first: date, warmup: int, calendar: TradingCalendar) -> pl.DataFrame | None:
    """The last W bars before the range plus the range's own bars (where the gap check looks)."""
    if bars is None:
        return None
    local = calendar.session_expr()
    before = bars.filter(local < first).tail(warmup)
    own = bars.filter(local >= first)
    return pl.concat([before, own]) if before.height or own.height else None
