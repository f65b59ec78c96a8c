"""The live job end to end with execute_in_process on a temporary Dagster instance: sensor
requests → runs → lake bar, features, signal rows; duplicates, off-session bars, model swap."""

from __future__ import annotations

import dagster as dg
import pytest

from usdcop_platform.adapters.store import clear_store_cache
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.defs.live.assets import (
    LIVE_BAR_KEY,
    LIVE_FEATURES_KEY,
    LIVE_JOB_NAME,
    LIVE_OP_NAME,
    LIVE_SIGNAL_KEY,
    clear_live_cycles,
    live_signal,
    live_signal_job,
)
from usdcop_platform.app.live_bars import Bar
from usdcop_platform.defs.live.sensors import live_bar_sensor
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, bogota, make_world


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}")
    yield w
    clear_live_cycles()
    clear_store_cache()


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def job(world):
    defs = dg.Definitions(assets=[live_signal], jobs=[live_signal_job], sensors=[live_bar_sensor],
                          resources=world.resources())
    return defs.resolve_job_def(LIVE_JOB_NAME)


def run_bar(world, instance, bar: Bar, partition=None, fresh_process=True, earlier=()):
    if fresh_process:
        clear_live_cycles()  # each Dagster run is its own process in production
    return job(world).execute_in_process(
        run_config={"ops": {LIVE_OP_NAME: {"config": {"bar": bar.to_dict(), "earlier": [b.to_dict() for b in earlier]}}}},
        partition_key=partition or LIVE_SESSION.isoformat(), instance=instance, raise_on_error=False,
    )


def failure_message(res) -> str:
    events = res.get_step_failure_events()
    assert len(events) == 1, "a deterministic refusal is not retried"
    data = events[0].event_specific_data
    return f"{data.error.message} {getattr(data.user_failure_data, 'description', '') if data.user_failure_data else ''}"


def test_definitions_load(world):
    defs = dg.Definitions(assets=[live_signal], jobs=[live_signal_job], sensors=[live_bar_sensor],
                          resources=world.resources())
    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in live_signal.keys} == {"live/bar", "live/features", "live/trading_signal"}
    assert live_signal_job.executor_def is dg.in_process_executor


def test_sensor_to_signals_end_to_end(world, instance):
    now = bogota(LIVE_SESSION, 8, 16)
    ctx = dg.build_sensor_context(instance=instance, resources=world.resources(now))
    result = live_bar_sensor(ctx)
    assert [r.run_key for r in result.run_requests] == [bogota(LIVE_SESSION, 8, m).isoformat() for m in (0, 5, 10)]
    for req in result.run_requests:
        res = job(world).execute_in_process(run_config=req.run_config, partition_key=req.partition_key,
                                            tags=req.tags, instance=instance)
        assert res.success
        mats = {e.materialization.asset_key: e.materialization for e in res.get_asset_materialization_events()}
        assert set(mats) == {LIVE_BAR_KEY, LIVE_FEATURES_KEY, LIVE_SIGNAL_KEY, dg.AssetKey(["raw", "usdcop_m5_ohlcv"])}
        assert all(m.partition == LIVE_SESSION.isoformat() for m in mats.values())
        assert mats[LIVE_SIGNAL_KEY].metadata["bar_time"].value == req.run_key
    rows = world.store.signals.list(session_date=LIVE_SESSION)
    assert [r["bar_time"].isoformat() for r in rows] == [r.run_key for r in result.run_requests]
    assert {r["model_id"] for r in rows} == {world.model.model_id}
    for r in rows:
        assert r["role"] == "production" and r["model_hash"] == world.model.record["model_hash"]
        assert len(r["features"]) == 15 and r["feature_hash"] and r["risk_status"] in ("APPROVED", "REJECTED")
        assert abs(r["prob_sell"] + r["prob_hold"] + r["prob_buy"] - 1) < 1e-5 and r["latency_ms"] > 0
    part = world.lake.read(BARS_DATASET, LIVE_SESSION.isoformat())
    assert part.height == 3 and part["close"].to_list() == [b.close for b in world.session_bars()[:3]]
    # the writes went through the raw asset's key: its partition's history shows each live bar
    raw = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(["raw", "usdcop_m5_ohlcv"]), asset_partitions=[LIVE_SESSION.isoformat()]), limit=10).records
    assert [r.asset_materialization.metadata["dagster/row_count"].value for r in raw] == [3, 2, 1]
    assert {r.asset_materialization.metadata["written_by"].value for r in raw} == {"live/bar"}
    state = world.store.risk.load("live")
    assert state["last_bar"] == bogota(LIVE_SESSION, 8, 10).isoformat()


def test_same_bar_twice_is_idempotent(world, instance):
    bars = world.session_bars()[:2]
    for b in bars:
        assert run_bar(world, instance, b).success
    before = dict(world.store.risk.load("live"))
    again = run_bar(world, instance, bars[1])
    assert again.success
    mat = [e.materialization for e in again.get_asset_materialization_events()
           if e.materialization.asset_key == LIVE_SIGNAL_KEY][0]
    assert mat.metadata["duplicate"].value is True
    assert not any(e.materialization.asset_key == dg.AssetKey(["raw", "usdcop_m5_ohlcv"])
                   for e in again.get_asset_materialization_events())  # nothing written, nothing recorded
    assert world.store.signals.count(LIVE_SESSION) == 2
    after = dict(world.store.risk.load("live"))
    assert {k: v for k, v in after.items() if k != "updated_at"} == {k: v for k, v in before.items() if k != "updated_at"}


def test_bar_outside_the_session_fails_and_writes_nothing(world, instance):
    off = Bar(bogota(LIVE_SESSION, 3, 0), 4000.0, 4000.0, 4000.0, 4000.0)
    res = run_bar(world, instance, off)
    assert not res.success
    assert "not a bar start of the session grid" in failure_message(res)
    holiday = Bar(bogota(__import__("datetime").date(2024, 3, 25), 9, 0), 4000.0, 4000.0, 4000.0, 4000.0)
    res = run_bar(world, instance, holiday, partition="2024-03-22")
    assert not res.success and "not a trading session" in failure_message(res)
    assert world.store.signals.count() == 0
    assert not world.lake.exists(BARS_DATASET, LIVE_SESSION.isoformat())


def test_production_model_swapped_mid_session(world, instance):
    bars = world.session_bars()[:4]
    for b in bars[:2]:
        assert run_bar(world, instance, b, fresh_process=False).success
    b_model = world.new_model(seed=2)  # approval: b becomes production, a is archived
    for b in bars[2:]:
        assert run_bar(world, instance, b, fresh_process=False).success  # the warm engine hot-reloads
    rows = world.store.signals.list(session_date=LIVE_SESSION)
    assert [r["model_id"] for r in rows] == [world.model.model_id] * 2 + [b_model.model_id] * 2
    assert rows[2]["model_hash"] == b_model.record["model_hash"]


def test_no_production_model_fails_clearly(tmp_path, instance):
    w = make_world(tmp_path, f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}", production=False)
    try:
        res = run_bar(w, instance, w.session_bars()[0])
        assert not res.success
        assert "no production model" in failure_message(res)
        assert w.store.signals.count() == 0
    finally:
        clear_live_cycles()
        clear_store_cache()


def test_catch_up_runs_started_out_of_order_still_process_bars_in_order(world, instance):
    bars = world.session_bars()[:4]
    # the launcher starts the run of the 4th bar first: it processes bars 1-3 before its own
    assert run_bar(world, instance, bars[3], earlier=bars[:3]).success
    for i in (0, 2, 1):
        res = run_bar(world, instance, bars[i], earlier=bars[:i])
        assert res.success
        mat = [e.materialization for e in res.get_asset_materialization_events()
               if e.materialization.asset_key == LIVE_SIGNAL_KEY][0]
        assert mat.metadata["duplicate"].value is True
    rows = world.store.signals.list(session_date=LIVE_SESSION)
    assert [r["bar_time"] for r in rows] == [b.time for b in bars]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)  # written in time order
    assert world.store.risk.load("live")["last_bar"] == bars[3].time.isoformat()
    from usdcop_platform.app.replay import replay_session

    assert replay_session(world.cfg, world.calendar, world.lake, world.store, LIVE_SESSION).matched


def test_live_code_location_loads():
    from usdcop_platform.defs.live.location import defs as location

    dg.Definitions.validate_loadable(location)
    assert location.resolve_job_def(LIVE_JOB_NAME).executor_def is dg.in_process_executor



def test_live_location_on_given_settings(tmp_path):
    """What `usdcop bench live`'s daemon loads: the live location on its settings, with its own
    sensor interval and a frozen feed clock."""
    from usdcop_platform.definitions import live_location
    from usdcop_platform.settings import Settings

    settings = Settings(USDCOP_DATA_DIR=tmp_path / "lake", USDCOP_STATE_DIR=tmp_path / "state",
                        USDCOP_MARKET_SOURCE="file", USDCOP_BARS_FILE=tmp_path / "bars.parquet", REDIS_URL=None)
    now = bogota(LIVE_SESSION, 13, 0).isoformat()
    location = live_location(settings, sensor_interval_s=5, frozen_now=now)
    dg.Definitions.validate_loadable(location)
    (sensor,) = location.sensors
    assert sensor.name == "live_bar_sensor" and sensor.minimum_interval_seconds == 5
    feed = location.resources["live_feed"]
    assert feed.frozen_now == now and feed.bars_file == str(tmp_path / "bars.parquet")
    assert location.resources["platform"].data_dir == str(tmp_path / "lake")
