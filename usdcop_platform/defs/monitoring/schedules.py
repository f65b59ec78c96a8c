"""Monitoring schedules in the instrument's timezone (America/Bogota), derived from config.

* drift: hourly at `drift_minute` from the first full hour of the session to the close
  (08:00-13:00 -> 09:00 ... 13:00): never before the open, and only on trading sessions;
* realized performance + A/B report: `report_minutes_after_close` after the close;
* freshness checks: every `check_every_minutes` while bars are being produced.
Holidays are not expressible in cron: each tick asks the calendar and skips with the reason.
"""


from datetime import datetime, timedelta

import dagster as dg

from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.defs.monitoring.assets import (
    FEATURE_DRIFT_KEY,
    REALIZED_PERFORMANCE_KEY,
    SHADOW_AB_KEY,
    SHADOW_SIGNALS_KEY,
    MonitoringRunConfig,
)
from usdcop_platform.defs.monitoring.checks import FRESHNESS_CHECKS
from usdcop_platform.defs.monitoring.jobs import monitoring_drift_job, monitoring_freshness_job, monitoring_performance_job
from usdcop_platform.defs.partitions import CALENDAR
from usdcop_platform.settings import platform_config

WEEKDAYS = "1-5"


def drift_cron(cfg: PlatformConfig) -> str:
    inst, minute = cfg.instrument, cfg.mlops.monitoring.drift_minute
    first = inst.first_bar_start.hour + 1
    last = inst.session_close.hour if inst.session_close.minute <= minute else inst.session_close.hour - 1
    return f"{minute} {first}-{last} * * {WEEKDAYS}"


def report_cron(cfg: PlatformConfig) -> str:
    close = datetime.combine(datetime.min, cfg.instrument.session_close)
    t = close + timedelta(minutes=cfg.mlops.monitoring.report_minutes_after_close)
    return f"{t.minute} {t.hour} * * {WEEKDAYS}"


def freshness_cron(cfg: PlatformConfig) -> str:
    inst, every = cfg.instrument, cfg.mlops.monitoring.freshness.check_every_minutes
    return f"*/{every} {inst.first_bar_start.hour}-{inst.last_bar_start.hour} * * {WEEKDAYS}"


def _session_tick(context: dg.ScheduleEvaluationContext, calendar: TradingCalendar) -> tuple[datetime, str | None]:
    t = context.scheduled_execution_time
    d = calendar.session_of(t)
    if not calendar.is_session(d):
        return t, f"{d.isoformat()} is not a trading session ({calendar.holiday_name(d) or 'weekend'})"
    return t, None


def _as_of_config(op_names: list[str], t: datetime) -> dg.RunConfig:
    return dg.RunConfig(ops={name: MonitoringRunConfig(as_of=t.isoformat()) for name in op_names})


_cfg = platform_config()  # USDCOP_CONFIG_DIR's session hours and timezone
DRIFT_OP = FEATURE_DRIFT_KEY.to_python_identifier()
PERFORMANCE_OPS = [k.to_python_identifier() for k in (SHADOW_SIGNALS_KEY, REALIZED_PERFORMANCE_KEY, SHADOW_AB_KEY)]
FRESHNESS_OPS = [c.node_def.name for c in FRESHNESS_CHECKS]


@dg.schedule(
    name="feature_drift_schedule",
    cron_schedule=drift_cron(_cfg),
    execution_timezone=_cfg.instrument.timezone,
    job=monitoring_drift_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly feature drift during the session (Bogota time); skips non-sessions",
)
def feature_drift_schedule(context: dg.ScheduleEvaluationContext):
    t, skip = _session_tick(context, CALENDAR)
    if skip:
        return dg.SkipReason(skip)
    return dg.RunRequest(run_key=f"drift:{t.isoformat()}", run_config=_as_of_config([DRIFT_OP], t))


@dg.schedule(
    name="realized_performance_schedule",
    cron_schedule=report_cron(_cfg),
    execution_timezone=_cfg.instrument.timezone,
    job=monitoring_performance_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Realized performance and the shadow A/B report after the session close",
)
def realized_performance_schedule(context: dg.ScheduleEvaluationContext):
    t, skip = _session_tick(context, CALENDAR)
    if skip:
        return dg.SkipReason(skip)
    return dg.RunRequest(run_key=f"performance:{t.isoformat()}", run_config=_as_of_config(PERFORMANCE_OPS, t))


@dg.schedule(
    name="freshness_schedule",
    cron_schedule=freshness_cron(_cfg),
    execution_timezone=_cfg.instrument.timezone,
    job=monitoring_freshness_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Session-aware freshness of bars and signals while the market is open",
)
def freshness_schedule(context: dg.ScheduleEvaluationContext):
    t, skip = _session_tick(context, CALENDAR)
    if skip:
        return dg.SkipReason(skip)
    return dg.RunRequest(run_key=f"freshness:{t.isoformat()}", run_config=_as_of_config(FRESHNESS_OPS, t))


MONITORING_SCHEDULES = [feature_drift_schedule, realized_performance_schedule, freshness_schedule]
