"""Partitions: one trading-session definition for every intraday asset; experiments as dynamic keys.

Sessions are built from the trading calendar (weekends by cron exclusion, Colombian holidays as
explicit dates), so Dagster's partition keys are exactly core.calendar's sessions.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import dagster as dg

from usdcop_platform.contracts.assets import EXPERIMENT_PARTITIONS
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.settings import platform_config

# Holidays are listed explicitly up to this year; the calendar's `holidays` data covers it.
PARTITION_HOLIDAY_HORIZON_YEARS = 3
WEEKEND_EXCLUSION = "0 0 * * 6,0"  # cron: Saturdays and Sundays


def build_session_partitions(calendar: TradingCalendar, horizon_end: date | None = None) -> dg.DailyPartitionsDefinition:
    start = calendar.instrument.calendar_start
    end = horizon_end or date(datetime.now().year + PARTITION_HOLIDAY_HORIZON_YEARS, 12, 31)
    holiday_dates = [datetime(d.year, d.month, d.day) for d in calendar.excluded_dates(start, end)]
    return dg.DailyPartitionsDefinition(
        start_date=start.isoformat(),
        timezone=calendar.instrument.timezone,
        end_offset=1,  # today's session is a partition while it trades (the live path writes into it)
        exclusions=[WEEKEND_EXCLUSION, *holiday_dates],
    )


CALENDAR = TradingCalendar(platform_config().instrument)  # USDCOP_CONFIG_DIR's calendar
session_partitions = build_session_partitions(CALENDAR)
experiment_partitions = dg.DynamicPartitionsDefinition(name=EXPERIMENT_PARTITIONS)


def session_key(d: date) -> str:
    """Partition key of a session date (YYYY-MM-DD)."""
    return d.isoformat()


def session_date(key: str) -> date:
    return date.fromisoformat(key)


def add_partition_metadata(context: dg.AssetExecutionContext, per_partition: dict[str, dict[str, Any]]) -> None:
    """`context.add_asset_metadata(meta, partition_key=key)` for every partition of a range run at once.

    Each partition's materialization event then carries its own metadata (merged over what the
    asset's MaterializeResult shares). The public call re-lists the run's partition range and copies
    the whole accumulated metadata on every call: quadratic, ~5 s of CPU for 1,221 sessions. This
    validates the keys once and merges once into the same accumulator (Dagster 1.13 internals;
    falls back to the public call if they are not there)."""
    step = getattr(context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    try:
        from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
    except ImportError:  # pragma: no cover - a Dagster without these internals
        accumulator = None
    if accumulator is None or not hasattr(accumulator, "per_output_metadata"):
        for key, meta in per_partition.items():  # pragma: no cover - same result, slower
            context.add_asset_metadata(meta, partition_key=key)
        return
    unknown = set(per_partition) - set(context.partition_keys)
    if unknown:
        raise dg.DagsterInvariantViolationError(
            f"metadata for partition(s) {sorted(unknown)[:5]} that this run does not target")
    asset_key = context.assets_def.key
    merged = dict(accumulator.per_output_metadata)
    for key, meta in per_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **meta}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)  # noqa: SLF001
