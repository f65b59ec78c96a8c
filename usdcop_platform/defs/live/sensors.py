"""The live bar sensor: one run of the live job per new closed bar, exactly once, in order.

Every `sensor.interval_seconds` (config/mlops.yaml, ≤ 30 s) it plans a tick with
app.live_runs.plan_live_runs (skips say why: weekend, holiday, outside the session window, no
new bar), checks the runs can succeed with app.live_runs.live_blocker and requests one run per
bar (run_key = bar time, so Dagster never launches a bar twice even if the cursor were lost).
A blocked tick skips with the reason and raises one alert per session and reason (the instance
remembers it), not one failed run per bar; the cursor does not advance, so the bars run once
the cause is fixed (within the catch-up bound).
"""


from typing import Any

import dagster as dg

from usdcop_platform.app.live_bars import Bar
from usdcop_platform.app.live_runs import live_blocker, live_run_config, live_run_tags, plan_live_runs
from usdcop_platform.core.alerts import AlertMessage
from usdcop_platform.defs.live.assets import live_signal_job
from usdcop_platform.defs.live.resources import LiveFeedResource
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.partitions import session_key
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import platform_config

SENSOR_NAME = "live_bar_sensor"
KIND_LIVE_BLOCKED = "live_blocked"
ALERTED_KEY = "usdcop/live_bar_sensor/alerted"  # instance KV: "<session>|<reason kind>" last alerted


def run_request(bar: Bar, session_partition: str, earlier: tuple[Bar, ...] = ()) -> dg.RunRequest:
    """The run of one bar (app.live_runs.live_run_config), keyed by the bar's time."""
    return dg.RunRequest(run_key=bar.time.isoformat(), partition_key=session_partition,
                         run_config=live_run_config(bar, earlier), tags=live_run_tags(bar))


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
