"""Monitoring sensors and freshness checks: retraining trigger (drift streak, degradation,
schedule, cooldown; never promotes), run-failure alerts, session-aware freshness."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest

from usdcop_platform.defs.evaluation.assets import BACKTEST_KEY, PROPOSAL_KEY
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.defs.monitoring.assets import MonitoringRunConfig
from usdcop_platform.defs.monitoring.checks import BARS_FRESH_CHECK, FRESHNESS_CHECKS, SIGNALS_FRESH_CHECK
from usdcop_platform.defs.monitoring.jobs import monitoring_freshness_job, retrain_experiment_job
from usdcop_platform.defs.monitoring.schedules import FRESHNESS_OPS, freshness_schedule, realized_performance_schedule
from usdcop_platform.app.monitoring import evaluate_retrain
from usdcop_platform.defs.monitoring.sensors import (
    monitoring_run_failure_sensor,
    retrain_trigger_sensor,
)
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.training.assets import DATASET_KEY, MODEL_KEY
from usdcop_platform_tests.defs.monitoring_support import (
    EXPERIMENT,
    add_signals,
    at,
    make_world,
    register_model,
    write_bars,
)
from usdcop_platform_tests.webhook_receiver import webhook_receiver

D = date(2024, 3, 5)


@pytest.fixture
def world(tmp_path, sqlite_url):
    return make_world(tmp_path, sqlite_url)


def _drift(world, when: datetime, status: str, model_id: str = "m-prod") -> None:
    share = {"DRIFT": 0.4, "OK": 0.05, "SKIPPED": None}[status]
    row = h.history_row(h.DRIFT_SCHEMA, checked_at=when, status=status, model_id=model_id, drift_share=share, threshold=0.15)
    h.append(world.lake, h.DRIFT_DATASET, world.calendar.session_of(when), row)


def _perf(world, when: datetime, status: str) -> None:
    row = h.history_row(h.PERFORMANCE_SCHEMA, checked_at=when, model_id="m-prod", status=status, reason=f"graded {status}")
    h.append(world.lake, h.PERFORMANCE_HISTORY_DATASET, world.calendar.session_of(when), row)


def _decide(world, now, last=None):
    return evaluate_retrain(now, world.store, world.lake, world.calendar, world.cfg, last)


def test_drift_streak_triggers_and_skips_do_not_break_it(world) -> None:
    prod = register_model(world, "m-prod", production=True)
    now = prod["promoted_at"] + timedelta(hours=1)
    n = world.cfg.mlops.drift.consecutive_checks_for_retrain
    assert n == 3
    base = prod["promoted_at"]
    _drift(world, base + timedelta(minutes=1), "DRIFT")
    _drift(world, base + timedelta(minutes=2), "OK")  # breaks the streak
    _drift(world, base + timedelta(minutes=3), "DRIFT")
    _drift(world, base + timedelta(minutes=4), "SKIPPED")  # neither extends nor breaks
    _drift(world, base + timedelta(minutes=5), "DRIFT")
    assert _decide(world, now).reasons == []
    _drift(world, base + timedelta(minutes=6), "DRIFT")
    d = _decide(world, now)
    assert d.experiment == EXPERIMENT and d.kinds == ["drift"] and "3 consecutive drift checks" in d.reasons[0]
    # after a trigger only newer checks count (and the cooldown holds within the session)
    assert "cooldown" in _decide(world, now, last=now).skip
    later = now + timedelta(days=1)
    assert _decide(world, later, last=now).reasons == []


def test_degradation_and_schedule_triggers(world) -> None:
    prod = register_model(world, "m-prod", production=True)
    t = prod["promoted_at"] + timedelta(minutes=1)
    _perf(world, t, "OK")
    assert _decide(world, t).reasons == []
    _perf(world, t + timedelta(minutes=1), "WARN")
    assert _decide(world, t + timedelta(minutes=2)).kinds == ["degradation"]
    far = prod["promoted_at"] + timedelta(days=40)  # > retrain.every_sessions (20) sessions later
    d = _decide(world, far, last=t + timedelta(minutes=2))
    assert d.kinds == ["schedule"] and "sessions since" in d.reasons[0]


def test_no_production_model_skips(world) -> None:
    assert "no production model" in _decide(world, datetime.now(timezone.utc)).skip


def test_sensor_launches_the_retrain_job_for_the_experiment_and_never_promotes(world) -> None:
    prod = register_model(world, "m-prod", production=True)
    for i in range(3):
        _drift(world, prod["promoted_at"] + timedelta(seconds=i + 1), "DRIFT")
    with webhook_receiver() as rx, dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=world.resources(rx.url))
        skip = retrain_trigger_sensor(ctx)
        assert "not registered" in skip.skip_message
        instance.add_dynamic_partitions(experiment_partitions.name, [EXPERIMENT])
        ctx = dg.build_sensor_context(instance=instance, resources=world.resources(rx.url))
        req = retrain_trigger_sensor(ctx)
        assert isinstance(req, dg.RunRequest)
        assert req.partition_key == EXPERIMENT and req.tags["usdcop/retrain_triggers"] == "drift"
        assert req.tags["usdcop/production_model"] == "m-prod" and ctx.cursor
        assert any("retraining launched for experiment smoke" in t for t in rx.texts())
        again = retrain_trigger_sensor(dg.build_sensor_context(instance=instance, resources=world.resources(), cursor=ctx.cursor))
        assert "cooldown" in again.skip_message
    assert retrain_trigger_sensor.job_name == retrain_experiment_job.name
    # the launched chain ends at the proposal (PENDING_APPROVAL); nothing in it promotes
    from usdcop_platform.definitions import defs

    job = defs.resolve_job_def(retrain_experiment_job.name)
    assert job.asset_layer.executable_asset_keys == {DATASET_KEY, MODEL_KEY, BACKTEST_KEY, PROPOSAL_KEY}
    assert job.partitions_def == experiment_partitions
    assert world.store.models.production()["model_id"] == "m-prod"


def test_run_failure_sensor_records_an_alert(world) -> None:
    @dg.op
    def explode() -> None:
        raise RuntimeError("the bar source is down")

    @dg.job
    def doomed() -> None:
        explode()

    with webhook_receiver() as rx:
        _fail_and_sense(world, doomed, rx.url)
        (alert,) = world.store.alerts.list(kind="run_failure")
        assert alert["severity"] == "ERROR" and "of job doomed failed" in alert["message"]
        assert alert["delivered"] and "doomed" in rx.texts()[0]


def _fail_and_sense(world, job: dg.JobDefinition, webhook_url: str, tags: dict[str, str] | None = None):
    """Run a failing job on a test instance and feed its failure to the run-failure sensor."""
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
        ctx = dg.build_run_status_sensor_context(
            sensor_name=monitoring_run_failure_sensor.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources=world.resources(webhook_url),
        ).for_run_failure()
        monitoring_run_failure_sensor(ctx)
    return result


def test_run_failure_sensor_fails_the_backtest_request_the_run_served(world) -> None:
    from usdcop_platform.app.backtest_requests import BACKTEST_REQUEST_TAG

    register_model(world, "m-cand")
    req = world.store.backtest_requests.create("m-cand", date(2024, 3, 1), date(2024, 3, 8), requested_by="ana")
    world.store.backtest_requests.update_status(req["id"], "LAUNCHED", dagster_run_id="pending")

    @dg.op
    def crash() -> None:
        raise RuntimeError("worker lost")

    @dg.job
    def evaluate_like() -> None:
        crash()

    with webhook_receiver() as rx:
        result = _fail_and_sense(world, evaluate_like, rx.url, tags={BACKTEST_REQUEST_TAG: str(req["id"])})
    row = world.store.backtest_requests.get(req["id"])
    assert row["status"] == "FAILED" and result.run_id in row["error"]
    assert row["dagster_run_id"] == result.run_id


def _freshness(world, as_of, webhook_url=None):
    defs = dg.Definitions(asset_checks=FRESHNESS_CHECKS, jobs=[monitoring_freshness_job], resources=world.resources(webhook_url))
    cfg = MonitoringRunConfig(as_of=as_of.isoformat())
    result = defs.resolve_job_def(monitoring_freshness_job.name).execute_in_process(
        run_config=dg.RunConfig(ops={name: cfg for name in FRESHNESS_OPS}), raise_on_error=False
    )
    assert result.success
    evals = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {e.check_name: e for e in evals}


def test_freshness_is_session_aware(world) -> None:
    register_model(world, "m-prod", production=True)
    grid = write_bars(world, D, [4000.0] * 24)  # 08:00 .. 09:55
    add_signals(world, D, "m-prod", "production", [1] * 24)
    fresh = _freshness(world, at(world, D, 10, 0))  # the 09:55 bar closed at 10:00
    assert fresh[BARS_FRESH_CHECK].passed and fresh[SIGNALS_FRESH_CHECK].passed
    assert fresh[BARS_FRESH_CHECK].metadata["age_minutes"].value == 0.0
    with webhook_receiver() as rx:
        stale = _freshness(world, at(world, D, 10, 40), rx.url)
        assert not stale[BARS_FRESH_CHECK].passed and stale[BARS_FRESH_CHECK].severity == dg.AssetCheckSeverity.WARN
        assert not stale[SIGNALS_FRESH_CHECK].passed
        assert "40.0 min old > 15" in stale[BARS_FRESH_CHECK].metadata["reason"].value
        assert len(world.store.alerts.list(kind="freshness")) == 2 and len(rx.received) == 2
        _freshness(world, at(world, D, 10, 45), rx.url)  # still stale: no second alert in the window
        assert len(world.store.alerts.list(kind="freshness")) == 2
    closed = _freshness(world, at(world, D, 20, 0))  # evening: nothing expected
    assert closed[BARS_FRESH_CHECK].passed and "market closed" in closed[BARS_FRESH_CHECK].metadata["reason"].value
    assert grid[-1] == datetime(2024, 3, 5, 14, 55, tzinfo=timezone.utc)


def test_monitoring_schedules_are_in_bogota_time() -> None:
    assert freshness_schedule.cron_schedule == "*/5 8-12 * * 1-5"
    assert realized_performance_schedule.cron_schedule == "15 13 * * 1-5"
    assert freshness_schedule.execution_timezone == realized_performance_schedule.execution_timezone == "America/Bogota"


def test_schedule_run_configs_run_their_jobs(world) -> None:
    """The run config each schedule tick builds is valid for its job (empty world: steps skip)."""
    from usdcop_platform.defs.monitoring.definitions import defs as monitoring_defs
    from usdcop_platform.defs.monitoring.schedules import feature_drift_schedule

    defs = dg.Definitions.merge(monitoring_defs, dg.Definitions(resources=world.resources()))
    tick = at(world, D, 13, 15)
    with dg.instance_for_test() as instance:
        for schedule in (feature_drift_schedule, realized_performance_schedule, freshness_schedule):
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as ctx:
                (req,) = schedule.evaluate_tick(ctx).run_requests
            result = defs.resolve_job_def(schedule.job_name).execute_in_process(
                run_config=req.run_config, instance=instance, raise_on_error=False
            )
            assert result.success, schedule.name
