"""`features/m5_features`: the 15-value observation per bar, one session partition at a time.

Each partition reads its own session's published bars plus earlier sessions for warm-up (the
lookback partition mapping; the asset walks further back when gaps leave fewer than W bars),
and only macro values dated before the session. It validates inside the asset (check_specs)
and writes the lake partition only when every blocking check passes (a blocking check alone
would not undo a write):

* no_nan_after_warmup      — no NaN/inf in any published row (a macro value missing beyond the
                             forward-fill limit fails here; nothing with a NaN is published);
* feature_order_hash       — the written columns hash to the contract's feature_order_hash;
* indicator_ranges         — RSI and ADX within [0, 100], atr_pct ≥ 0;
* matches_full_history     — the partition's rows equal the full-history computation (≤ 1e-9);
* warmup_window_gaps (WARN)— missing bars inside the warm-up window (features stay defined on
                             the bar series; the gap is reported, not repaired).
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` annotation at load.

import warnings
from datetime import date

import dagster as dg
import numpy as np
import polars as pl
from dagster import AssetExecutionContext

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.base import sha256_hex
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.contracts.platform import PlatformConfig, get_config
from usdcop_platform.core.calendar import TradingCalendar
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
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY, RAW_MACRO_KEY
from usdcop_platform.defs.partitions import CALENDAR, session_date, session_key, session_partitions
from usdcop_platform.defs.resources import PlatformResource

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


LOOKBACK_SESSIONS = lookback_sessions(get_config().features, CALENDAR)


# ---- reading --------------------------------------------------------------------------------


def read_history(lake: ParquetLake, session: date, warmup: int, step: int) -> pl.DataFrame | None:
    """Bars of `session` and of the earlier partitions holding at least `warmup` bars before it
    (every earlier bar near the start of the data). Reads `step` partitions at a time, so the
    usual case is exactly the declared lookback."""
    key = session_key(session)
    earlier = [p for p in lake.partitions(BARS_DATASET) if p < key]
    frames: list[pl.DataFrame] = []
    n_before = 0
    while earlier and n_before < warmup:
        block, earlier = earlier[-step:], earlier[:-step]
        got = lake.read_many(BARS_DATASET, block)
        if got is not None:
            frames.insert(0, got)
            n_before += got.height
    own = lake.read(BARS_DATASET, key)
    if own is not None:
        frames.append(own)
    return pl.concat(frames, how="vertical").sort("time") if frames else None


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


def session_features(
    bars: pl.DataFrame | None, macro: pl.DataFrame | None, session: date, config: PlatformConfig, calendar: TradingCalendar
) -> pl.DataFrame:
    """compute_features over the given bars, restricted to `session` (empty when no bar of the
    session has W earlier bars)."""
    contract = config.features
    if bars is None or bars.height <= contract.warmup_bars:
        return empty_features(contract)
    df = compute_features(bars, macro, contract, calendar, config.macro)
    return df.filter(pl.col("session") == session)


def contract_needs_macro(contract: FeatureContract) -> bool:
    return any(isinstance(FEATURE_SPECS[n], Macro) for n in contract.names)


# ---- checks ---------------------------------------------------------------------------------


def _indicator_names(kind: str, contract: FeatureContract) -> list[str]:
    return [n for n in contract.names if isinstance(FEATURE_SPECS[n], Wilder) and FEATURE_SPECS[n].indicator == kind]  # type: ignore[union-attr]


def evaluate_checks(
    df: pl.DataFrame,
    contract: FeatureContract,
    full: pl.DataFrame,
    window_bars: pl.DataFrame | None,
    calendar: TradingCalendar,
) -> list[dg.AssetCheckResult]:
    """The asset's check results for one partition frame (pure: no I/O)."""
    results: list[dg.AssetCheckResult] = []

    bad = non_finite_rows(df, contract)
    offending = sorted({n for row in bad["features"].to_list() for n in row})
    results.append(
        dg.AssetCheckResult(
            check_name=CHECK_NO_NAN,
            passed=bad.height == 0,
            metadata={"rows_with_nan": bad.height, "features_with_nan": ", ".join(offending) or "none",
                      "first_bad_bar": str(bad["time"][0]) if bad.height else "none"},
            description=None if bad.height == 0 else f"{bad.height} row(s) carry NaN/inf in {offending}",
        )
    )

    columns = [c for c in df.columns if c not in BAR_COLUMNS]
    got = sha256_hex(",".join(columns))
    results.append(
        dg.AssetCheckResult(
            check_name=CHECK_ORDER,
            passed=got == contract.feature_order_hash,
            metadata={"feature_order_hash": got, "contract_feature_order_hash": contract.feature_order_hash},
        )
    )

    violations: dict[str, int] = {}
    for n in _indicator_names("rsi", contract) + _indicator_names("adx", contract):
        violations[n] = df.filter(~pl.col(n).is_between(0.0, 100.0) & pl.col(n).is_not_nan()).height
    for n in _indicator_names("atr_pct", contract):
        violations[n] = df.filter((pl.col(n) < 0.0) & pl.col(n).is_not_nan()).height
    results.append(
        dg.AssetCheckResult(
            check_name=CHECK_RANGES,
            passed=not any(violations.values()),
            metadata={f"{n}_out_of_range": v for n, v in violations.items()},
        )
    )

    diff = max_abs_difference(df, full, list(contract.names))
    results.append(
        dg.AssetCheckResult(
            check_name=CHECK_PARITY,
            passed=diff <= PARITY_TOLERANCE,
            metadata={"max_abs_difference": diff if np.isfinite(diff) else "rows or NaN positions differ",
                      "tolerance": PARITY_TOLERANCE, "rows": df.height, "full_history_rows": full.height},
        )
    )

    gaps = history_gaps(None if window_bars is None else window_bars["time"], calendar)
    results.append(
        dg.AssetCheckResult(
            check_name=CHECK_GAPS,
            passed=gaps["missing_bars"] == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "missing_bars": gaps["missing_bars"],
                "missing_sessions": gaps["missing_sessions"],
                "sessions_with_gaps": ", ".join(gaps["sessions_with_gaps"][:20]) or "none",
            },
        )
    )
    return results


def _warmup_window(bars: pl.DataFrame | None, session: date, warmup: int, calendar: TradingCalendar) -> pl.DataFrame | None:
    """The last W bars before the session plus the session's own bars."""
    if bars is None:
        return None
    local = pl.col("time").dt.convert_time_zone(calendar.instrument.timezone).dt.date()
    before = bars.filter(local < session).tail(warmup)
    own = bars.filter(local == session)
    return pl.concat([before, own]) if before.height or own.height else None


# ---- the asset ------------------------------------------------------------------------------

_SPECS = [
    dg.AssetCheckSpec(CHECK_NO_NAN, asset=FEATURES_KEY, blocking=True,
                      description="No NaN or ±inf in any published row (macro beyond the ffill limit fails here)."),
    dg.AssetCheckSpec(CHECK_ORDER, asset=FEATURES_KEY, blocking=True,
                      description="Written feature columns hash to the contract's feature_order_hash."),
    dg.AssetCheckSpec(CHECK_RANGES, asset=FEATURES_KEY, blocking=True,
                      description="RSI and ADX within [0, 100]; atr_pct >= 0."),
    dg.AssetCheckSpec(CHECK_PARITY, asset=FEATURES_KEY, blocking=True,
                      description="Partition features equal the full-history computation to 1e-9."),
    dg.AssetCheckSpec(CHECK_GAPS, asset=FEATURES_KEY,
                      description="Warn: bars missing inside the warm-up window."),
]


with warnings.catch_warnings():
    # allow_nonexistent_upstream_partitions is beta in dagster 1.13; we rely on it knowingly
    warnings.simplefilter("ignore", dg.BetaWarning)
    _LOOKBACK_MAPPING = dg.TimeWindowPartitionMapping(
        start_offset=-LOOKBACK_SESSIONS, allow_nonexistent_upstream_partitions=True)


@dg.asset(
    key=FEATURES_KEY,
    partitions_def=session_partitions,
    deps=[
        # the first sessions of the calendar have less history than the lookback: not an error
        dg.AssetDep(RAW_BARS_KEY, partition_mapping=_LOOKBACK_MAPPING),
        dg.AssetDep(RAW_MACRO_KEY),
    ],
    check_specs=_SPECS,
    group_name="features",
    kinds={"polars", "parquet"},
    description="The 15-value observation (feature contract) for every bar of a session with W bars of history.",
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
)
def m5_features(context: AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
    config = platform.config
    contract = config.features
    calendar = platform.calendar
    lake = platform.lake
    session = session_date(context.partition_key)

    macro_all = read_macro(lake)
    if contract_needs_macro(contract) and macro_all is None:
        raise dg.Failure(f"{MACRO_DATASET} has no data: materialize raw/macro_daily before the features")
    macro = macro_all.filter(pl.col("date") < session) if macro_all is not None else None  # only earlier macro

    bars = read_history(lake, session, contract.warmup_bars, lookback_sessions(contract, calendar))
    try:
        df = session_features(bars, macro, session, config, calendar)
        full = session_features(read_full_history(lake, session), macro_all, session, config, calendar)
    except FeatureError as exc:
        raise dg.Failure(f"features for session {session}: {exc}") from exc

    checks = evaluate_checks(df, contract, full, _warmup_window(bars, session, contract.warmup_bars, calendar), calendar)
    failed = [c.check_name for c in checks if not c.passed and c.check_name in BLOCKING_CHECKS]
    session_bars = 0 if bars is None else bars.filter(
        pl.col("time").dt.convert_time_zone(calendar.instrument.timezone).dt.date() == session
    ).height
    metadata: dict[str, object] = {
        "rows": df.height,
        "session_bars": session_bars,
        "warmup_dropped_rows": session_bars - df.height,
        "history_bars_read": 0 if bars is None else bars.height - session_bars,
        "warmup_bars": contract.warmup_bars,
        "feature_contract_version": contract.version,
        "feature_order_hash": contract.feature_order_hash,
        "published": not failed,
    }
    if failed:
        context.log.error(f"features {session}: not written, failed checks {failed}")
        metadata["failed_checks"] = ", ".join(failed)
    else:
        path = lake.write(FEATURES_DATASET, session_key(session), df)
        metadata["path"] = dg.MetadataValue.path(str(path))
        if df.height:
            metadata["first_bar"] = str(df["time"][0])
            metadata["last_bar"] = str(df["time"][-1])
    return dg.MaterializeResult(metadata=metadata, check_results=checks)  # type: ignore[arg-type]
