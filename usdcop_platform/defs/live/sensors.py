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
"""


from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.defs.live.assets import LIVE_OP_NAME, live_signal_job
from usdcop_platform.defs.live.cycle import Bar
from usdcop_platform.defs.live.resources import LiveFeedResource
from usdcop_platform.defs.partitions import session_key
from usdcop_platform.defs.resources import PlatformResource

BAR_TIME_TAG = "usdcop/bar_time"
SENSOR_NAME = "live_bar_sensor"


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


def evaluate_live_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource, live_feed: LiveFeedResource
) -> dg.SensorResult | dg.SkipReason:
    """One tick: plan (see plan_live_runs), then one RunRequest per bar and the new cursor."""
    cfg = platform.config
    calendar = platform.calendar
    now = live_feed.now()
    plan = plan_live_runs(now, context.cursor, calendar, live_feed.source(calendar), cfg.mlops.sensor.max_catchup_bars)
    if plan.skip_reason is not None:
        return dg.SkipReason(plan.skip_reason)
    if platform.store().models.production() is None:
        return dg.SkipReason("no production model in the registry: nothing to serve (approve a proposal first)")
    if plan.dropped:
        context.log.warning(f"catch-up bounded to {cfg.mlops.sensor.max_catchup_bars} bars: {plan.dropped} older "
                            "missed bar(s) of the session are not replayed live")
    key = session_key(calendar.session_of(plan.bars[-1].time))
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
        context: dg.SensorEvaluationContext, platform: PlatformResource, live_feed: LiveFeedResource
    ) -> dg.SensorResult | dg.SkipReason:
        return evaluate_live_sensor(context, platform, live_feed)

    return _live_sensor


live_bar_sensor = build_live_sensor(get_config().mlops.sensor.interval_seconds)
