"""The live job: one bar → live/bar → live/features → live/trading_signal, in one in-process step.

The three assets share one op (one step, no IO manager hand-offs: a 5-minute cadence cannot
afford per-step process overhead); each returns its own MaterializeResult so the asset graph
shows bar → features → signal with the bar's metadata. The op calls app.live_runs.process_bar
(app.live_cycle.LiveCycle, the same code `usdcop replay` and `usdcop bench live` run). Partitioned by trading session: the
sensor requests partition = the bar's session, run_key = the bar's time.
"""


import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg

from usdcop_platform.adapters.store.tables import TradingSignal
from usdcop_platform.contracts import assets as asset_paths
from usdcop_platform.core.actions import ACTION_NAMES
from usdcop_platform.core.display import num, prob
from usdcop_platform.core.features import FeatureError
from usdcop_platform.core.inference import InferenceEngine, InferenceError, InvalidObservation
from usdcop_platform.core.schema import BAR_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.app.live_bars import Bar, LiveError, validate_bar
from usdcop_platform.app.live_cycle import CycleResult, LiveCycle
from usdcop_platform.app.live_runs import LIVE_JOB_NAME, LIVE_OP_NAME, process_bar
from usdcop_platform.defs.live.resources import FeatureCacheResource
from usdcop_platform.defs.partitions import session_key, session_partitions
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import platform_config

LIVE_BAR_KEY = dg.AssetKey(["live", "bar"])
LIVE_FEATURES_KEY = dg.AssetKey(["live", "features"])
LIVE_SIGNAL_KEY = dg.AssetKey(["live", "trading_signal"])
GROUP = "live"
# A run whose database stayed down beyond the cycle's own retry budget is retried whole (the
# bar is idempotent); a few minutes of retries still lands before the next bar matters.
RUN_RETRIES = 2
RUN_RETRY_DELAY_S = 10
_CONTRACT = platform_config().features  # the live observation's columns (catalog column schema)


class BarConfig(dg.Config):
    """The bar the sensor saw (UTC ISO time, OHLCV)."""

    time: str
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


class LiveRunConfig(dg.Config):
    bar: BarConfig
    # Missed bars of the session before `bar` that the same sensor tick requested: processed
    # first, in order (already-processed ones are no-ops), so whichever catch-up run the
    # launcher starts first, bars go through the live path in time order.
    earlier: list[BarConfig] = []


_CYCLES: dict[tuple[Any, ...], LiveCycle] = {}
_CYCLES_LOCK = threading.Lock()


def live_cycle(platform: PlatformResource, feature_cache: FeatureCacheResource) -> LiveCycle:
    """One LiveCycle per process and storage configuration (the engine and features stay warm
    when several bars run in one process; each Dagster run process builds its own)."""
    key = (platform.database_url, platform.data_dir, platform.models_dir, platform.config_dir,
           feature_cache.redis_url, feature_cache.namespace)
    with _CYCLES_LOCK:
        cycle = _CYCLES.get(key)
        if cycle is None:
            cfg = platform.config
            store = platform.store()
            engine = InferenceEngine(store, cfg.features, cfg.mlops.ensemble, models_root=platform.models_path)
            cycle = LiveCycle(cfg, platform.calendar, platform.lake, store, engine,
                              feature_cache.cache(cfg.instrument))
            _CYCLES[key] = cycle
        return cycle


def clear_live_cycles() -> None:
    with _CYCLES_LOCK:
        _CYCLES.clear()


@dg.multi_asset(
    name=LIVE_OP_NAME,
    specs=[
        dg.AssetSpec(LIVE_BAR_KEY, group_name=GROUP, skippable=False, kinds={"polars", "parquet"},
                     owners=[catalog.OWNER_MLOPS], metadata=catalog.columns(catalog.table_schema(BAR_SCHEMA)),
                     description="The bar, upserted into today's partition of raw/usdcop_m5_ohlcv (keyed on time) and "
                     "recorded as a materialization of that partition: the raw asset owns what it holds."),
        dg.AssetSpec(LIVE_FEATURES_KEY, deps=[LIVE_BAR_KEY], group_name=GROUP, skippable=False,
                     kinds={"python", "redis"}, owners=[catalog.OWNER_MLOPS],
                     metadata=catalog.columns(catalog.table_schema(
                         catalog.live_feature_schema(_CONTRACT), catalog.feature_descriptions(_CONTRACT))),
                     description="The bar's 15 raw contract values (incremental engine), cached in the feature cache."),
        dg.AssetSpec(LIVE_SIGNAL_KEY, deps=[LIVE_FEATURES_KEY], group_name=GROUP, skippable=False,
                     kinds={"onnx", "sql"}, owners=[catalog.OWNER_MLOPS],
                     metadata=catalog.columns(catalog.sql_table_schema(TradingSignal.__table__)),
                     description="Ensemble inference + risk manager → one trading_signals row per bar and model."),
    ],
    partitions_def=session_partitions,
    retry_policy=dg.RetryPolicy(max_retries=RUN_RETRIES, delay=RUN_RETRY_DELAY_S),
)
def live_signal(
    context: dg.AssetExecutionContext, config: LiveRunConfig, platform: PlatformResource,
    feature_cache: FeatureCacheResource,
) -> Iterator[dg.MaterializeResult]:
    try:
        bar = Bar.from_mapping(config.bar.model_dump())
        if session_key(validate_bar(bar, platform.calendar)) != context.partition_key:
            raise LiveError(f"bar {bar.time.isoformat()} does not belong to partition {context.partition_key}")
        earlier = [Bar.from_mapping(b.model_dump()) for b in config.earlier]
        result = process_bar(live_cycle(platform, feature_cache), bar, earlier, platform.state_dir, context.log)
    except (LiveError, InferenceError, FeatureError, InvalidObservation) as exc:
        # deterministic refusals: retrying the same bar cannot help (a database outage can, and
        # propagates as DatabaseUnavailable to the retry policy)
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
    if result.duplicate:
        context.log.info(f"bar {bar.time.isoformat()} was already processed: returning its stored signal(s)")
    if result.session_bars is not None:  # the write goes through the raw asset's key
        context.log_event(raw_bar_written(result, context.partition_key))
    yield from materializations(result)


def raw_bar_written(result: CycleResult, partition: str) -> dg.AssetMaterialization:
    """The raw bars partition the live bar was upserted into, as a materialization of its own key."""
    return dg.AssetMaterialization(asset_key=dg.AssetKey(list(asset_paths.RAW_BARS)), partition=partition, metadata={
        "dagster/row_count": int(result.session_bars or 0), "written_by": "live/bar",
        "bar_time": result.bar.time.isoformat(), "published": True,
    })


def materializations(result: CycleResult) -> Iterator[dg.MaterializeResult]:
    """The bar's three materializations: bar, features and signal metadata of one cycle result."""
    bar, first = result.bar, result.signals[0]
    common = {"bar_time": bar.time.isoformat(), "duplicate": result.duplicate}
    yield dg.MaterializeResult(asset_key=LIVE_BAR_KEY, metadata={
        **common, "close": bar.close, "lake_dataset": "raw/usdcop_m5_ohlcv", "columns": list(BAR_SCHEMA),
    })
    yield dg.MaterializeResult(asset_key=LIVE_FEATURES_KEY, metadata={
        **common, "feature_hash": first["feature_hash"] or "",
        "feature_source": result.pending.feature_source if result.pending else "stored",
        "features": dg.MetadataValue.json([num(float(v)) for v in (first["features"] or [])]),
    })
    yield dg.MaterializeResult(asset_key=LIVE_SIGNAL_KEY, metadata={
        **common,
        "models": ", ".join(r["model_id"] for r in result.signals),
        "action": ACTION_NAMES[int(first["action"])],
        "raw_action": ACTION_NAMES[int(first["raw_action"])],
        "risk_status": first["risk_status"],
        "failing_check": first["failing_check"] or "",
        "position_recommendation": num(float(first["position_recommendation"])),
        "confidence": prob(float(first["confidence"])),
        **({f"ms_{k}": round(v, 3) for k, v in result.timings_ms.items()}),
    })


live_signal_job = dg.define_asset_job(
    LIVE_JOB_NAME,
    selection=[LIVE_BAR_KEY, LIVE_FEATURES_KEY, LIVE_SIGNAL_KEY],
    partitions_def=session_partitions,
    executor_def=dg.in_process_executor,
    description="One bar through the live path (sensor-launched; run_key = bar time).",
)
