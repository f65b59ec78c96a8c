"""Monitoring sensors: retraining trigger, run-failure alerts, alert redelivery.

Retraining trigger (every `retrain.sensor_interval_seconds`). For the production model's
experiment it launches `retrain_experiment_job` (dataset -> model -> backtest -> proposal) when,
since the last trigger (sensor cursor), any of these holds:

* drift   — the newest `drift.consecutive_checks_for_retrain` drift checks of the production model
            (SKIPPED runs ignored) all exceeded the drift threshold;
* degradation — a realized-performance check graded the production model WARN or ROLLBACK;
* schedule — `retrain.every_sessions` sessions passed since the last trigger or the promotion.

`retrain.cooldown_sessions` sessions must separate two triggers (the decision is
app.monitoring.evaluate_retrain). The job ends at a PENDING_APPROVAL proposal: promotion stays a
human decision.
"""


import json
from datetime import datetime, timezone

import dagster as dg

from usdcop_platform.adapters.store import NotFoundError
from usdcop_platform.core.alerts import retrain_alert, run_failure_alert
from usdcop_platform.app.monitoring import challengers, evaluate_retrain
from usdcop_platform.defs.monitoring.assets import SHADOW_SIGNALS_KEY, MonitoringRunConfig
from usdcop_platform.defs.monitoring.jobs import monitoring_shadow_job, retrain_experiment_job
from usdcop_platform.defs.monitoring.resources import AlertsResource
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import platform_config

_cfg = platform_config()  # USDCOP_CONFIG_DIR's sensor intervals


def _cursor_time(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    value = json.loads(cursor).get("last_trigger_at")
    return datetime.fromisoformat(value) if value else None


@dg.sensor(
    name="retrain_trigger_sensor",
    job=retrain_experiment_job,
    minimum_interval_seconds=_cfg.mlops.monitoring.retrain.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Drift for N consecutive checks, realized degradation, or the retrain cadence -> "
    "dataset -> training -> backtest -> proposal for the production experiment (never promotes)",
)
def retrain_trigger_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource, alerts: AlertsResource):
    now = datetime.now(timezone.utc)
    last = _cursor_time(context.cursor)
    store = platform.store()
    decision = evaluate_retrain(now, store, platform.lake, platform.calendar, platform.config, last)
    if decision.skip:
        return dg.SkipReason(decision.skip)
    if not decision.reasons:
        return dg.SkipReason(f"no retraining trigger for {decision.experiment} (production {decision.model_id})")
    assert decision.experiment is not None
    if not context.instance.has_dynamic_partition(experiment_partitions.name, decision.experiment):
        return dg.SkipReason(f"experiment partition {decision.experiment!r} is not registered yet")
    run_key = f"retrain:{decision.experiment}:{now.isoformat()}"
    context.update_cursor(json.dumps({"last_trigger_at": now.isoformat(), "experiment": decision.experiment}))
    alerts.dispatcher(store, platform.config.mlops.monitoring.alerts, context.log).emit(
        retrain_alert(experiment=decision.experiment, reasons=decision.reasons, run_key=run_key)
    )
    return dg.RunRequest(
        run_key=run_key,
        partition_key=decision.experiment,
        tags={
            "usdcop/retrain_triggers": ",".join(decision.kinds),
            "usdcop/production_model": decision.model_id or "",
        },
    )


def _backtest_request_id(tags: dict[str, str]) -> int | None:
    from usdcop_platform.app.backtest_requests import BacktestRequestError, request_id_of_run

    try:
        return request_id_of_run(tags)
    except BacktestRequestError:
        return None


@dg.run_failure_sensor(
    name="monitoring_run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records an alert (log, store, webhook) for every failed run; a failed run that served a "
                "backtest request marks the request FAILED",
)
def monitoring_run_failure_sensor(context: dg.RunFailureSensorContext, platform: PlatformResource, alerts: AlertsResource):
    run = context.dagster_run
    store = platform.store()
    # a run can die outside the asset code (crash, cancellation, bad run config): the request
    # it served must not stay LAUNCHED forever
    request_id = _backtest_request_id(run.tags)
    if request_id is not None:
        try:
            store.backtest_requests.fail(request_id, f"dagster run {run.run_id} failed: {context.failure_event.message}",
                                         dagster_run_id=run.run_id)
        except NotFoundError:
            context.log.warning(f"run {run.run_id} names backtest request {request_id}, which does not exist")
    alerts.dispatcher(platform.store(), platform.config.mlops.monitoring.alerts, context.log).emit(
        run_failure_alert(
            job_name=run.job_name,
            run_id=run.run_id,
            error=context.failure_event.message,
            partition=run.tags.get("dagster/partition"),
        )
    )


@dg.sensor(
    name="alert_delivery_sensor",
    minimum_interval_seconds=_cfg.mlops.monitoring.alerts.retry_every_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-posts alerts whose webhook delivery failed (timeouts, outages) until they are delivered",
)
def alert_delivery_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource, alerts: AlertsResource):
    dispatcher = alerts.dispatcher(platform.store(), platform.config.mlops.monitoring.alerts, context.log)
    out = dispatcher.retry_pending()
    return dg.SkipReason(f"alerts redelivered: {out.delivered}, still failing: {out.failed}")


@dg.sensor(
    name="shadow_signals_sensor",
    job=monitoring_shadow_job,
    minimum_interval_seconds=_cfg.mlops.monitoring.shadow.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the challengers on each new production signal (one run per newest bar, exactly once)",
)
def shadow_signals_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    store = platform.store()
    if not challengers(store, platform.config.mlops.monitoring.shadow.max_challengers):
        return dg.SkipReason("no challenger: no servable staging model has a PENDING_APPROVAL proposal")
    newest = store.signals.latest(role="production")
    if newest is None:
        return dg.SkipReason("no production signal yet")
    bar = newest["bar_time"].isoformat()
    if context.cursor == bar:
        return dg.SkipReason(f"no new production signal since {bar}")
    context.update_cursor(bar)
    return dg.RunRequest(
        run_key=f"shadow:{bar}",
        run_config=dg.RunConfig(
            ops={SHADOW_SIGNALS_KEY.to_python_identifier(): MonitoringRunConfig(as_of=datetime.now(timezone.utc).isoformat())}
        ),
    )


MONITORING_SENSORS = [
    retrain_trigger_sensor,
    shadow_signals_sensor,
    monitoring_run_failure_sensor,
    alert_delivery_sensor,
]
