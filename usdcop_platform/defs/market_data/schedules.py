"""Automation of the raw assets.

- Bars: a schedule shortly after each session's close (Bogota), one run for today's session
  partition, skipped on weekends and Colombian holidays.
- Macro: declarative automation, `on_cron` each weekday morning before the open (Bogota),
  evaluated by `market_data_automation` (running by default).
- Backfill of the whole history: the bars asset's BackfillPolicy runs chunks of
  BACKFILL_CHUNK_SESSIONS sessions per run (the Dagster UI shows backfill progress per run;
  `usdcop ingest` shows a progress bar per chunk).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from usdcop_platform.defs.partitions import CALENDAR, session_key, session_partitions

BACKFILL_CHUNK_SESSIONS = 250  # ~one year of sessions per run: ~15k bars, seconds per run
BAR_SETTLE_MINUTES = 10  # after the close, so the vendor has the last bar
MACRO_LEAD_MINUTES = 60  # before the first bar, so features of the day see yesterday's values
WEEKDAYS = "1-5"


def _cron_at(t: datetime, days: str) -> str:
    return f"{t.minute} {t.hour} * * {days}"


def bars_cron() -> str:
    """Cron (instrument timezone) for the bars run: session close + settle delay, weekdays."""
    close = datetime.combine(datetime.min.date(), CALENDAR.instrument.session_close)
    return _cron_at(close + timedelta(minutes=BAR_SETTLE_MINUTES), WEEKDAYS)


def macro_cron() -> str:
    """Cron (instrument timezone) for the macro run: first bar - lead, weekdays."""
    first = datetime.combine(datetime.min.date() + timedelta(days=1), CALENDAR.instrument.first_bar_start)
    return _cron_at(first - timedelta(minutes=MACRO_LEAD_MINUTES), WEEKDAYS)


def macro_automation_condition() -> dg.AutomationCondition:
    return dg.AutomationCondition.on_cron(macro_cron(), CALENDAR.instrument.timezone)


# Declarative automation needs a sensor to evaluate it; this one runs by default (the code
# location's default_automation_condition_sensor starts stopped) and covers the raw assets only.
market_data_automation = dg.AutomationConditionSensorDefinition(
    "market_data_automation",
    target=dg.AssetSelection.assets(dg.AssetKey(["raw", "macro_daily"])),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates raw/macro_daily's on_cron condition (weekday mornings, Bogota).",
)

raw_bars_job = dg.define_asset_job(
    "raw_bars_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["raw", "usdcop_m5_ohlcv"])),
    partitions_def=session_partitions,
    description="Ingest, validate and publish the bars of one session partition.",
)


@dg.schedule(
    name="raw_bars_after_close",
    job=raw_bars_job,
    cron_schedule=bars_cron(),
    execution_timezone=CALENDAR.instrument.timezone,
    description="Materialize today's session of raw/usdcop_m5_ohlcv after the close (skips non-sessions).",
)
def raw_bars_after_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    now = context.scheduled_execution_time
    today = (now.astimezone(CALENDAR.tz) if now else datetime.now(CALENDAR.tz)).date()
    if not CALENDAR.is_session(today):
        name = CALENDAR.holiday_name(today) or "weekend"
        return dg.SkipReason(f"{today} is not a trading session ({name})")
    key = session_key(today)
    return dg.RunRequest(run_key=f"raw_bars:{key}", partition_key=key)
