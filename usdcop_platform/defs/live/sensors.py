"""The live bar sensor: one run of the live job per new closed bar, exactly once, in order.

Every `sensor.interval_seconds` (config/mlops.yaml, ≤ 30 s) the sensor asks the market source
for the newest closed bar of today's session. Outside the session window (weekends, Colombian
holidays, before the first bar closes, after the last one) it returns a SkipReason saying why.
A new bar yields RunRequest(partition_key=session, run_key=bar time ISO) carrying the bar in the
run config; the cursor advances to it. Dagster never launches two runs with the same run_key
for a sensor, so each bar runs once even if the cursor were lost. After downtime the missed
bars of the session are requested in time order, at most `sensor.max_catchup_bars` of them
(the newest ones); each run also carries the bars requested before it and processes them first
(no-ops when done), under an inter-process lock, so bars reach the live path in time order
whatever order the launcher starts the runs in. Bars off the session grid are never requested.

The sensor never launches a run it knows will fail: before requesting bars it checks that their
features can be built — a production model to serve, W bars of published history before the
session (a data gap fails the warm-up), and macro values usable for the session (stale macro
makes NaN macro features). Otherwise it skips the tick with the reason, and raises one alert per
session and reason (the instance remembers it), not one failed run per bar. The cursor does not
advance, so the bars run once the cause is fixed (within the catch-up bound).
"""


from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.alerts import AlertMessage
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.features import macro_session_features
from usdcop_platform.defs.live.assets import LIVE_OP_NAME, live_signal_job
from usdcop_platform.app.live_cycle import Bar, LiveError, read_macro, warmup_window
from usdcop_platform.defs.live.resources import LiveFeedResource
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.partitions import session_key
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import platform_config

BAR_TIME_TAG = "usdcop/bar_time"
SENSOR_NAME = "live_bar_sensor"
KIND_LIVE_BLOCKED = "live_blocked"
ALERTED_KEY = "usdcop/live_bar_sensor/alerted"  # instance KV: "<session>|<reason kind>" last alerted


@dataclass(frozen=True)
class LivePlan:
    """What one sensor tick decided: bars to run (in order) and the new cursor, or why not."""

    bars: tuple[Bar, ...] = ()
    cursor: str | None = None
    skip_reason: str | None = None
    dropped: int = 0  # missed bars beyond the catch-up bound


def _on_grid(frame: pl.DataFrame, calendar: TradingCalendar) -> list[Bar]:
    bars = [Bar.from_mapping(r) for r in frame.sort("time").iter_rows(named=True)] if frame.height else []
    return [b for b in bars if calendar.is_on_grid(b.time)]


def plan_live_runs(
    now: datetime, cursor: str | None, calendar: TradingCalendar, source: Any, max_catchup: int
) -> LivePlan:
    """Decide a tick (pure apart from the source reads); see the module docstring."""
    session = calendar.session_of(now)
    if not calendar.is_session(session):
        why = calendar.holiday_name(session)
        return LivePlan(cursor=cursor, skip_reason=(
            f"{session} is a Colombian holiday ({why}): no session" if why else f"{session} is a weekend: no session"))
    first_close = calendar.session_open_utc(session) + calendar.bar_delta
    last_close = calendar.session_close_utc(session)
    if now < first_close:
        return LivePlan(cursor=cursor, skip_reason=f"session {session} has no closed bar before "
                        f"{first_close.astimezone(calendar.tz):%H:%M} {calendar.instrument.timezone}")
    if now > last_close + calendar.bar_delta:
        return LivePlan(cursor=cursor, skip_reason=f"session {session} closed at "
                        f"{last_close.astimezone(calendar.tz):%H:%M} {calendar.instrument.timezone}")
    last_done = datetime.fromisoformat(cursor) if cursor else None
    newest_frame = source.latest_bar(now)
    newest = _on_grid(newest_frame, calendar)
    off_grid = newest_frame.height > 0 and not newest
    if off_grid:
        # the newest tick is off the grid (ignored); on-grid bars that closed before it still count
        closed = [b for b in _on_grid(source.bars(session, session), calendar)
                  if calendar.session_of(b.time) == session and b.time + calendar.bar_delta <= now]
        newest = closed[-1:]
    if not newest or (last_done is not None and newest[-1].time <= last_done):
        if off_grid:
            t = newest_frame["time"][-1]
            return LivePlan(cursor=cursor, skip_reason=f"newest bar {t} is outside the session grid: ignored")
        if not newest:
            return LivePlan(cursor=cursor, skip_reason=f"no closed bar of session {session} available yet")
        return LivePlan(cursor=cursor, skip_reason=f"no new bar since {cursor}")
    latest = newest[-1]
    # every closed, on-grid bar of the session after the cursor, up to the newest, in order
    start = last_done if last_done is not None and calendar.session_of(last_done) == session else None
    if start is not None and latest.time - start == calendar.bar_delta:
        return LivePlan(bars=(latest,), cursor=latest.time.isoformat())  # the usual tick: nothing missed
    pending = {b.time: b for b in _on_grid(source.bars(session, session), calendar)
               if calendar.session_of(b.time) == session and b.time <= latest.time
               and b.time + calendar.bar_delta <= now and (start is None or b.time > start)}
    pending[latest.time] = latest
    ordered = [pending[t] for t in sorted(pending)]
    dropped = max(0, len(ordered) - max_catchup)
    ordered = ordered[dropped:]
    return LivePlan(bars=tuple(ordered), cursor=latest.time.isoformat(), dropped=dropped)


def run_request(bar: Bar, session_partition: str, earlier: tuple[Bar, ...] = ()) -> dg.RunRequest:
    """The run of one bar; `earlier` = the bars this tick requested before it (processed first by
    the run, so catch-up stays in time order even if the launcher starts runs out of order)."""
    return dg.RunRequest(
        run_key=bar.time.isoformat(),
        partition_key=session_partition,
        run_config={"ops": {LIVE_OP_NAME: {"config": {"bar": bar.to_dict(),
                                                      "earlier": [b.to_dict() for b in earlier]}}}},
        tags={BAR_TIME_TAG: bar.time.isoformat()},
    )


def live_blocker(cfg: PlatformConfig, calendar: TradingCalendar, lake: ParquetLake, store: Any, session: Any) -> tuple[str, str] | None:
    """(kind, reason) when the live run of a bar of `session` is known to fail, else None.

    kinds: no_production_model, data_gap (fewer than W published bars before the session: the
    warm-up fails), stale_macro (a macro feature has no usable value for the session: NaN)."""
    if store.models.production() is None:
        return "no_production_model", "no production model in the registry: nothing to serve (approve a proposal first)"
    try:
        warmup_window(lake, calendar, cfg.features.warmup_bars, session)
    except LiveError as exc:
        return "data_gap", f"data gap: {exc}"
    macro = read_macro(lake)
    try:
        values = macro_session_features(macro, [session], cfg.features, calendar, cfg.macro)
    except Exception as exc:  # noqa: BLE001 - any failure to build them is the reason to skip
        return "stale_macro", f"stale macro: macro features for session {session} cannot be built ({exc})"
    bad = [n for n in values.columns  # the contract's macro features only
           if n != "session" and (values[n].is_null().any() or not values[n].is_finite().all())]
    if bad:
        last = macro["date"].max() if macro is not None and macro.height else None
        return "stale_macro", (f"stale macro: {', '.join(bad)} have no usable value for session {session} "
                               f"(newest macro date {last}; forward fill limit exceeded): materialize raw/macro_daily")
    return None


def _alert_once(context: dg.SensorEvaluationContext, alerts: AlertsResource, platform: PlatformResource,
                session: Any, kind: str, reason: str) -> None:
    """One alert per session and blocker kind: the instance remembers the last one raised."""
    marker = f"{session}|{kind}"
    storage = context.instance.run_storage
    if storage.get_cursor_values({ALERTED_KEY}).get(ALERTED_KEY) == marker:
        return
    alerts.dispatcher(platform.store(), platform.config.mlops.monitoring.alerts, context.log).emit(
        AlertMessage(KIND_LIVE_BLOCKED, "ERROR", f"live signals paused for session {session}: {reason}",
                     {"session": str(session), "blocker": kind}))
    storage.set_cursor_values({ALERTED_KEY: marker})


def evaluate_live_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource, live_feed: LiveFeedResource,
    alerts: AlertsResource,
) -> dg.SensorResult | dg.SkipReason:
    """One tick: plan (see plan_live_runs), check the runs can succeed (live_blocker), then one
    RunRequest per bar and the new cursor."""
    cfg = platform.config
    calendar = platform.calendar
    now = live_feed.now()
    plan = plan_live_runs(now, context.cursor, calendar, live_feed.source(calendar), cfg.mlops.sensor.max_catchup_bars)
    if plan.skip_reason is not None:
        return dg.SkipReason(plan.skip_reason)
    session = calendar.session_of(plan.bars[-1].time)
    blocker = live_blocker(cfg, calendar, platform.lake, platform.store(), session)
    if blocker is not None:
        kind, reason = blocker
        _alert_once(context, alerts, platform, session, kind, reason)
        return dg.SkipReason(reason)
    if plan.dropped:
        context.log.warning(f"catch-up bounded to {cfg.mlops.sensor.max_catchup_bars} bars: {plan.dropped} older "
                            "missed bar(s) of the session are not replayed live")
    key = session_key(session)
    return dg.SensorResult(run_requests=[run_request(b, key, plan.bars[:i]) for i, b in enumerate(plan.bars)],
                           cursor=plan.cursor)


def build_live_sensor(
    interval_seconds: int, name: str = SENSOR_NAME,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The live bar sensor polling every `interval_seconds` (the code location uses mlops.yaml's)."""

    @dg.sensor(
        name=name,
        job=live_signal_job,
        minimum_interval_seconds=interval_seconds,
        default_status=default_status,
        description="Polls the market source for the newest closed bar; one live run per bar (run_key = bar "
                    "time), skips outside the session and on holidays, catches up missed bars in order.",
    )
    def _live_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformResource, live_feed: LiveFeedResource,
        alerts: AlertsResource,
    ) -> dg.SensorResult | dg.SkipReason:
        return evaluate_live_sensor(context, platform, live_feed, alerts)

    return _live_sensor


live_bar_sensor = build_live_sensor(platform_config().mlops.sensor.interval_seconds)
