"""Raw market assets (L0): USD/COP 5-minute bars per session and the daily macro series.

Both validate inside the asset (check_specs) and refuse to write what fails a blocking gate:
a blocking check alone would not undo a write. Downstream automation must require
`AutomationCondition.all_deps_blocking_checks_passed()`.
"""

# No `from __future__ import annotations`: Dagster reads the parameter annotations at definition time.
import json
import warnings
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import dagster as dg

from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_FLAGGED_SCHEMA, MACRO_PARTITION
from usdcop_platform.core.schema import BAR_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.adapters.expectations import BAR_CHECKS, MACRO_CHECKS, CheckOutcome
from usdcop_platform.app.ingest import (
    check_metadata,
    publish_bars,
    publish_macro,
    raw_slice,
    readable_summary,
)
from usdcop_platform.defs.market_data.resources import MacroSourceResource, MarketSourceResource, history_start
from usdcop_platform.defs.market_data.schedules import macro_automation_condition
from usdcop_platform.defs.partitions import add_partition_metadata, session_date, session_partitions
from usdcop_platform.defs.resources import PlatformResource

# BackfillPolicy is "beta" in dagster 1.13; it is the documented way to chunk backfills.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

RAW_BARS_KEY = dg.AssetKey(["raw", "usdcop_m5_ohlcv"])
RAW_MACRO_KEY = dg.AssetKey(["raw", "macro_daily"])
GROUP = "market_data"


def _specs(key: dg.AssetKey, checks: Any) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(c.name, asset=key, blocking=c.blocking, description=c.description) for c in checks]


def _results(key: dg.AssetKey, outcomes: dict[str, CheckOutcome], extra: dict[str, dict[str, Any]] | None = None) -> list[dg.AssetCheckResult]:
    out = []
    for c in outcomes.values():
        meta = check_metadata(c)
        meta.update((extra or {}).get(c.name, {}))
        out.append(
            dg.AssetCheckResult(
                asset_key=key, check_name=c.name, passed=c.passed, metadata=meta,
                severity=dg.AssetCheckSeverity.ERROR if c.blocking else dg.AssetCheckSeverity.WARN,
            )
        )
    return out


def _metadata(summary: dict[str, Any], lake_path: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"dagster/row_count": summary.get("bars_published", summary.get("macro_values", 0)),
                            "lake_path": dg.MetadataValue.path(lake_path)}
    for k, v in readable_summary(summary).items():
        meta[k] = dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
    return meta


@dg.asset(
    key=RAW_BARS_KEY,
    partitions_def=session_partitions,
    # A range of sessions is one run: the file or API is read once, and the per-session upserts are
    # cheap (the whole 2020-2024 history is ~1,221 partitions in a few seconds).
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=_specs(RAW_BARS_KEY, BAR_CHECKS),
    group_name=GROUP,
    kinds={"polars", "parquet"},
    owners=[catalog.OWNER_DATA],
    metadata=catalog.columns(catalog.table_schema(BAR_SCHEMA)),
    code_version="1",
    description="USD/COP 5-minute bars of one trading session (60 UTC instants 13:00-17:55), cleaned and "
    "validated; published by an idempotent upsert keyed on bar time.",
)
def raw_usdcop_m5_ohlcv(
    context: dg.AssetExecutionContext, platform: PlatformResource, market_source: MarketSourceResource
) -> Iterator[Any]:
    sessions = [session_date(k) for k in context.partition_keys]
    calendar = platform.calendar
    start, end = raw_slice(calendar, sessions)
    raw = market_source.build(calendar).bars(start, end)
    context.log.info(f"{len(raw)} raw rows for {len(sessions)} session(s) {sessions[0]}..{sessions[-1]}")
    pub = publish_bars(raw, lake=platform.lake, calendar=calendar, quality=platform.config.quality.bars, sessions=sessions)
    summary = pub.summary()
    extra = {
        c: {"sessions_failing": dg.MetadataValue.json(sorted(s for s, names in pub.refused.items() if c in names))}
        for c in {n for names in pub.refused.values() for n in names}
    }
    checks = _results(RAW_BARS_KEY, pub.checks, extra)
    lake_path = str(platform.lake.root / BARS_DATASET)
    if pub.refused:
        # Sessions that passed are published and recorded one by one; the refused ones are not.
        for key in pub.written:
            context.log_event(
                dg.AssetMaterialization(asset_key=RAW_BARS_KEY, partition=key, metadata=pub.session_metadata(key))
            )
        yield from checks
        raise dg.Failure(
            description=f"refused to publish {len(pub.refused)} session(s) failing blocking gates: "
            + ", ".join(f"{s} ({'/'.join(n)})" for s, n in sorted(pub.refused.items())[:10]),
            metadata=_metadata(summary, lake_path),
        )
    # Each partition's materialization carries its own session's numbers, not the batch's.
    add_partition_metadata(context, {key: pub.session_metadata(key) for key in context.partition_keys})
    yield dg.MaterializeResult(metadata=_run_metadata(summary, lake_path), check_results=checks)


def _run_metadata(summary: dict[str, Any], lake_path: str) -> dict[str, Any]:
    """Metadata every partition of a run shares: the run's range totals as one JSON text under
    `run_summary` (one value, cheap on 1,221 events; never mistaken for the session's own numbers)."""
    return {"lake_path": dg.MetadataValue.path(lake_path),
            "run_summary": dg.MetadataValue.text(json.dumps(readable_summary(summary), default=str))}


class MacroIngestConfig(dg.Config):
    """Observation window; defaults: the features' history before the calendar start .. today (Bogota)."""

    start: str | None = None
    end: str | None = None


@dg.asset(
    key=RAW_MACRO_KEY,
    check_specs=_specs(RAW_MACRO_KEY, MACRO_CHECKS),
    group_name=GROUP,
    kinds={"polars", "parquet"},
    owners=[catalog.OWNER_DATA],
    metadata=catalog.columns(catalog.table_schema(MACRO_FLAGGED_SCHEMA)),
    code_version="1",
    automation_condition=macro_automation_condition(),
    description="Daily macro values of every SSOT variable, long by variable, with availability date "
    "(observation + publication delay) and flags (out of range / jump / level break) that keep bad "
    "values out of features.",
)
def raw_macro_daily(
    context: dg.AssetExecutionContext,
    config: MacroIngestConfig,
    platform: PlatformResource,
    macro_source: MacroSourceResource,
) -> Iterator[Any]:
    cfg, calendar = platform.config, platform.calendar
    end = date.fromisoformat(config.end) if config.end else datetime.now(calendar.tz).date()
    start = date.fromisoformat(config.start) if config.start else history_start(cfg, calendar)
    raw = macro_source.build(cfg, calendar).values(start, end)
    context.log.info(f"{raw.height} macro rows {start}..{end}")
    pub = publish_macro(raw, lake=platform.lake, ssot=cfg.macro, quality=cfg.quality.macro, as_of=end)
    checks = _results(RAW_MACRO_KEY, pub.checks)
    lake_path = str(platform.lake.path(MACRO_DATASET, MACRO_PARTITION))
    if not pub.published:
        yield from checks
        failing = [c.name for c in pub.checks.values() if c.blocking and not c.passed]
        raise dg.Failure(description=f"refused to publish macro: blocking gate(s) failed: {failing}",
                         metadata=_metadata(pub.summary(), lake_path))
    yield dg.MaterializeResult(metadata=_metadata(pub.summary(), lake_path), check_results=checks)
