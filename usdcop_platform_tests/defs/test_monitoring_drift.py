"""monitoring/feature_drift: skip without live data, drift + WARN check + webhook alert, history, schedule."""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import numpy as np
import pytest

from usdcop_platform.app import monitoring_history as h
from usdcop_platform.defs.monitoring.assets import FEATURE_DRIFT_KEY, MonitoringRunConfig, feature_drift
from usdcop_platform.defs.monitoring.checks import DRIFT_CHECK, feature_drift_below_threshold
from usdcop_platform.defs.monitoring.schedules import feature_drift_schedule
from usdcop_platform_tests.defs.monitoring_support import (
    add_signals,
    at,
    config_copy,
    make_world,
    register_model,
    write_reference,
)
from usdcop_platform_tests.webhook_receiver import webhook_receiver

D = date(2024, 3, 5)  # a Tuesday session; the previous session is Monday 2024-03-04
PREV = date(2024, 3, 4)


@pytest.fixture
def world(tmp_path, sqlite_url):
    return make_world(tmp_path, sqlite_url)


def _run(world, as_of, webhook_url=None):
    return dg.materialize(
        [feature_drift, feature_drift_below_threshold],
        resources=world.resources(webhook_url),
        run_config=dg.RunConfig(ops={"monitoring__feature_drift": MonitoringRunConfig(as_of=as_of.isoformat())}),
        raise_on_error=False,
    )


def _materialization(result):
    mats = result.get_asset_materialization_events()
    return mats[-1].event_specific_data.materialization if mats else None


def _check(result):
    evals = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {e.check_name: e for e in evals}


def _live(world, rng, shift_features: int):
    """Live raw observations: the first `shift_features` market features shifted by 3 sigma."""
    names = world.cfg.features.names
    x = rng.normal(0.0, 1.0, (60, len(names)))
    market = [j for j, n in enumerate(names) if n not in world.cfg.features.state_features]
    for j in market[:shift_features]:
        x[:, j] += 3.0
    return x


def test_no_live_data_is_skipped_with_a_reason(world) -> None:
    rng = np.random.default_rng(0)
    register_model(world, "m-prod", production=True)
    write_reference(world, rng)
    result = _run(world, at(world, D, 10))
    assert result.success  # not a failure
    assert _materialization(result) is None
    obs = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    meta = obs[0].event_specific_data.asset_observation.metadata
    assert obs[0].event_specific_data.asset_observation.asset_key == FEATURE_DRIFT_KEY
    assert meta["status"].value == "SKIPPED" and "no live data yet: 0 live observations" in meta["reason"].value
    skipped = [e for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert skipped, "the drift check step is skipped along with the asset"
    hist = h.read_recent(world.lake, h.DRIFT_DATASET, sessions=1)
    assert hist["status"].to_list() == ["SKIPPED"] and "no live data" in hist["reason"][0]


def test_no_production_model_is_skipped(world) -> None:
    result = _run(world, at(world, D, 10))
    assert result.success
    assert "no production model" in h.read_recent(world.lake, h.DRIFT_DATASET, sessions=1)["reason"][0]


def test_missing_reference_is_a_clear_failure(world) -> None:
    register_model(world, "m-prod", production=True)
    result = _run(world, at(world, D, 10))
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "reference missing" in failure.event_specific_data.error.message


def test_drift_above_threshold_warns_alerts_and_keeps_history(world) -> None:
    rng = np.random.default_rng(1)
    register_model(world, "m-prod", production=True)
    write_reference(world, rng)
    add_signals(world, PREV, "m-prod", "production", [1] * 60, _live(world, rng, shift_features=4))
    with webhook_receiver() as rx:
        result = _run(world, at(world, D, 10), webhook_url=rx.url)
        assert result.success
        mat = _materialization(result)
        assert mat.metadata["status"].value == "DRIFT"
        # a share of the features: in percent, 2 decimals (core.display)
        assert mat.metadata["drift_share_pct"].value == pytest.approx(100 * 4 / 13, abs=0.005)
        assert mat.metadata["drift_threshold_pct"].value == 15.0
        assert mat.metadata["n_current"].value == 60 and mat.metadata["live_sessions"].value == PREV.isoformat()
        assert "| log_ret_5m |" in mat.metadata["features"].value
        check = _check(result)[DRIFT_CHECK]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert len(rx.received) == 1 and "drift share 0.31 above threshold 0.15" in rx.texts()[0]
    hist = h.read_recent(world.lake, h.DRIFT_DATASET, sessions=1)
    row = hist.row(-1, named=True)
    assert row["status"] == "DRIFT" and row["model_id"] == "m-prod" and row["n_reference"] == 600
    report = json.loads(row["report_json"])
    assert {f["name"] for f in report["features"]} == set(world.cfg.features.market_features)
    assert [a["kind"] for a in world.store.alerts.list()] == ["feature_drift"]


def test_no_drift_passes_without_alert(world) -> None:
    rng = np.random.default_rng(2)
    register_model(world, "m-prod", production=True)
    write_reference(world, rng)
    add_signals(world, PREV, "m-prod", "production", [1] * 60, _live(world, rng, shift_features=0))
    with webhook_receiver() as rx:
        result = _run(world, at(world, D, 10), webhook_url=rx.url)
        assert result.success and _check(result)[DRIFT_CHECK].passed
        assert rx.received == []
    assert h.read_recent(world.lake, h.DRIFT_DATASET, sessions=1)["status"].to_list() == ["OK"]


def test_webhook_timeout_keeps_the_alert_and_does_not_fail_the_run(tmp_path, sqlite_url) -> None:
    from usdcop_platform.defs.monitoring.sensors import alert_delivery_sensor

    config = config_copy(tmp_path, **{"monitoring.alerts.webhook_timeout_seconds": 0.3, "monitoring.alerts.webhook_attempts": 2,
                                     "monitoring.alerts.webhook_backoff_seconds": 0.0})
    world = make_world(tmp_path, sqlite_url, config)
    rng = np.random.default_rng(3)
    register_model(world, "m-prod", production=True)
    write_reference(world, rng)
    add_signals(world, PREV, "m-prod", "production", [1] * 60, _live(world, rng, shift_features=6))
    with webhook_receiver() as rx:
        rx.delay_s = 1.0  # slower than the configured 0.3 s timeout
        result = _run(world, at(world, D, 10), webhook_url=rx.url)
        assert result.success  # pipeline unaffected
        (pending,) = world.store.alerts.pending()
        assert pending["kind"] == "feature_drift" and "timed out" in pending["last_error"]
        rx.delay_s = 0.0
        out = alert_delivery_sensor(dg.build_sensor_context(resources=world.resources(rx.url)))
        assert "redelivered: 1" in out.skip_message
        assert world.store.alerts.pending() == []
        assert any("drift share" in t for t in rx.texts())


def test_schedule_runs_hourly_in_bogota_and_skips_holidays(world) -> None:
    assert feature_drift_schedule.execution_timezone == "America/Bogota"
    assert feature_drift_schedule.cron_schedule == "0 9-13 * * 1-5"
    tick = at(world, D, 10)
    # contexts as context managers: they close the instance they open (no leak into later tests)
    with dg.instance_for_test() as instance, dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as ctx:
        req = feature_drift_schedule.evaluate_tick(ctx).run_requests[0]
        assert req.run_config["ops"]["monitoring__feature_drift"]["config"]["as_of"] == tick.isoformat()
    holiday = at(world, date(2024, 3, 25), 10)  # San José, Colombia
    with dg.instance_for_test() as instance, dg.build_schedule_context(instance=instance, scheduled_execution_time=holiday) as ctx:
        result = feature_drift_schedule.evaluate_tick(ctx)
        assert not result.run_requests and "not a trading session" in result.skip_message


def test_sustained_drift_alerts_at_onset_and_at_the_retrain_streak(world) -> None:
    rng = np.random.default_rng(4)
    register_model(world, "m-prod", production=True)
    write_reference(world, rng)
    add_signals(world, PREV, "m-prod", "production", [1] * 60, _live(world, rng, shift_features=5))
    n = world.cfg.mlops.drift.consecutive_checks_for_retrain
    for hour in range(9, 9 + n + 1):
        assert _run(world, at(world, D, hour)).success
    hist = h.read_recent(world.lake, h.DRIFT_DATASET, sessions=1)
    assert hist["status"].to_list() == ["DRIFT"] * (n + 1)
    messages = [a["message"] for a in world.store.alerts.list(kind="feature_drift")]
    assert len(messages) == 2  # onset and the retrain streak, not every hourly check
    assert f"{n} consecutive check(s)" in messages[0] and "1 consecutive check(s)" in messages[1]
