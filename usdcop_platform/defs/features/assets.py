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

The computation, checks and writes are the app/features.py use case; this module wires the
resources and turns its result into Dagster metadata and check results.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` annotation at load.

import warnings
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from usdcop_platform.app.features import (
    BLOCKING_CHECKS,
    CHECK_GAPS,
    CHECK_NO_NAN,
    CHECK_ORDER,
    CHECK_PARITY,
    CHECK_RANGES,
    FEATURES_DATASET,
    FeatureBuildError,
    RangeOutcome,
    build_features,
    empty_features,
    lookback_sessions,
)
from usdcop_platform.defs import catalog
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY, RAW_MACRO_KEY
from usdcop_platform.defs.partitions import CALENDAR, add_partition_metadata, session_date, session_partitions
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import platform_config

FEATURES_KEY = dg.AssetKey(["features", "m5_features"])
CONTRACT = platform_config().features  # the contract the definitions are built with (column schema, lookback)
LOOKBACK_SESSIONS = lookback_sessions(CONTRACT, CALENDAR)

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
    sessions = [session_date(k) for k in context.partition_keys]
    contract = platform.config.features
    try:
        built = build_features(platform.lake, platform.config, platform.calendar, sessions)
    except FeatureBuildError as exc:
        raise dg.Failure(str(exc)) from exc
    add_partition_metadata(context, {key: _partition_metadata(meta) for key, meta in built.per_session.items()})
    if built.refused:
        context.log.warning(f"features {sessions[0]}..{sessions[-1]}: {built.refused} session(s) not published")
    return dg.MaterializeResult(
        metadata={  # what every partition of the run shares: the run's range, under run_* names
            "run_sessions": len(sessions),
            "run_sessions_published": built.published,
            "run_sessions_not_published": built.refused,
            "run_history_bars_read": built.history_bars_read,
            "run_full_history_compared": built.full_history_compared,
            "warmup_bars": contract.warmup_bars,
            "feature_contract_version": contract.version,
            "feature_order_hash": contract.feature_order_hash,
        },
        check_results=_check_results(built.outcome),
    )


def _partition_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """A session's metadata with its written file as a path entry."""
    return {**meta, "path": dg.MetadataValue.path(meta["path"])} if "path" in meta else meta


__all__ = ["BLOCKING_CHECKS", "CHECK_GAPS", "CONTRACT", "FEATURES_DATASET", "FEATURES_KEY", "LOOKBACK_SESSIONS",
           "empty_features", "m5_features"]
