"""The live bar sensor on a real Dagster test instance (build_sensor_context): skips outside the
session and on holidays, one run request per new bar, cursor, bounded in-order catch-up."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import polars as pl
import pytest

from usdcop_platform.adapters.store import clear_store_cache
from usdcop_platform.app.live_runs import BAR_TIME_TAG, LIVE_OP_NAME, plan_live_runs
from usdcop_platform.defs.live.sensors import live_bar_sensor
from usdcop_platform_tests.defs.live_support import HOLIDAY, LIVE_SESSION, SATURDAY, bogota, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_sensor")
    w = make_world(root, f"sqlite:///{(root / 'db.sqlite').as_posix()}")
    yield w
    clear_store_cache()


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(world, instance, now, cursor=None, **feed):
    resources = world.resources(now)
    if feed:
        resources["live_feed"] = world.feed(now, **feed)
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return live_bar_sensor(ctx)


def requests(result):
    assert isinstance(result, dg.SensorResult), result
    return result.run_requests


def test_interval_comes_from_config(platform_config):
    assert live_bar_sensor.minimum_interval_seconds == platform_config.mlops.sensor.interval_seconds <= 30
    assert live_bar_sensor.job_name == "live_signal_job"


@pytest.mark.parametrize("now,why", [
    (bogota(SATURDAY, 9, 7), "weekend"),
    (bogota(HOLIDAY, 9, 7), "holiday (Saint Joseph's Day"),
    (bogota(LIVE_SESSION, 7, 59), "no closed bar before 08:05"),
    (bogota(LIVE_SESSION, 8, 3), "no closed bar before 08:05"),
    (bogota(LIVE_SESSION, 13, 30), "closed at 13:00"),
])
def test_skips_outside_the_session(world, instance, now, why):
    result = tick(world, instance, now)
    assert isinstance(result, dg.SkipReason) and why in result.skip_message


def test_catch_up_then_one_request_per_new_bar(world, instance):
    now = bogota(LIVE_SESSION, 9, 7)  # bars 08:00 .. 09:00 have closed
    reqs = requests(tick(world, instance, now))
    assert len(reqs) == 13
    times = [r.run_key for r in reqs]
    assert times == sorted(times) and times[0] == bogota(LIVE_SESSION, 8, 0).isoformat()
    assert times[-1] == bogota(LIVE_SESSION, 9, 0).isoformat()
    assert {r.partition_key for r in reqs} == {LIVE_SESSION.isoformat()}
    first = reqs[0]
    assert first.tags[BAR_TIME_TAG] == first.run_key
    bar = first.run_config["ops"][LIVE_OP_NAME]["config"]["bar"]
    expected = world.session_bars()[0]
    assert bar["time"] == first.run_key and bar["close"] == expected.close
    # each run carries the bars requested before it, so runs started out of order still go in order
    earlier = [b["time"] for b in reqs[5].run_config["ops"][LIVE_OP_NAME]["config"]["earlier"]]
    assert earlier == times[:5] and reqs[0].run_config["ops"][LIVE_OP_NAME]["config"]["earlier"] == []
    cursor = tick(world, instance, now).cursor
    assert cursor == times[-1]
    again = tick(world, instance, now + timedelta(seconds=30), cursor=cursor)
    assert isinstance(again, dg.SkipReason) and "no new bar" in again.skip_message
    later = requests(tick(world, instance, bogota(LIVE_SESSION, 9, 10), cursor=cursor))
    assert [r.run_key for r in later] == [bogota(LIVE_SESSION, 9, 5).isoformat()]


def test_downtime_catches_up_in_order(world, instance):
    cursor = bogota(LIVE_SESSION, 9, 0).isoformat()
    reqs = requests(tick(world, instance, bogota(LIVE_SESSION, 9, 31), cursor=cursor))
    assert [r.run_key for r in reqs] == [bogota(LIVE_SESSION, 9, m).isoformat() for m in (5, 10, 15, 20, 25)]


def test_catch_up_is_bounded(world):
    src = world.feed().source(world.calendar)
    plan = plan_live_runs(bogota(LIVE_SESSION, 10, 2), None, world.calendar, src, max_catchup=5)
    assert [b.time for b in plan.bars] == [bogota(LIVE_SESSION, 9, 55 - 5 * i) for i in range(4, -1, -1)]
    assert plan.dropped == 19 and plan.cursor == bogota(LIVE_SESSION, 9, 55).isoformat()


def test_cursor_from_yesterday_catches_up_today_from_the_open(world, instance):
    reqs = requests(tick(world, instance, bogota(LIVE_SESSION, 8, 11), cursor=bogota(LIVE_SESSION - timedelta(days=1), 12, 55).isoformat()))
    assert [r.run_key for r in reqs] == [bogota(LIVE_SESSION, 8, 0).isoformat(), bogota(LIVE_SESSION, 8, 5).isoformat()]


def test_bar_outside_the_session_is_never_requested(world, instance, tmp_path):
    good = world.session_bars()[:3]
    rows = [b.to_dict() | {"time": b.time} for b in good]
    # an off-grid tick at 08:17 Bogota arrives after the 08:10 bar
    rows.append({"time": bogota(LIVE_SESSION, 8, 17), "open": 4000.0, "high": 4000.0, "low": 4000.0,
                 "close": 4000.0, "volume": 0.0})
    path = tmp_path / "bars.parquet"
    pl.DataFrame(rows).with_columns(pl.col("time").dt.cast_time_unit("us")).write_parquet(path)
    now = bogota(LIVE_SESSION, 8, 23)
    reqs = requests(tick(world, instance, now, market_source="file", bars_file=str(path)))
    assert [r.run_key for r in reqs] == [bogota(LIVE_SESSION, 8, m).isoformat() for m in (0, 5, 10)]
    result = tick(world, instance, now, cursor=bogota(LIVE_SESSION, 8, 10).isoformat(), market_source="file",
                  bars_file=str(path))
    assert isinstance(result, dg.SkipReason) and "outside the session grid" in result.skip_message
    # once a real bar is newest again, only on-grid bars are requested
    rows.append(good[0].to_dict() | {"time": bogota(LIVE_SESSION, 8, 15), "close": 4001.0})
    path2 = tmp_path / "bars2.parquet"
    pl.DataFrame(rows).with_columns(pl.col("time").dt.cast_time_unit("us")).write_parquet(path2)
    reqs = requests(tick(world, instance, bogota(LIVE_SESSION, 8, 21), market_source="file", bars_file=str(path2)))
    assert [r.run_key for r in reqs] == [bogota(LIVE_SESSION, 8, m).isoformat() for m in (0, 5, 10, 15)]


def test_no_production_model_skips(tmp_path, instance):
    w = make_world(tmp_path, f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}", production=False)
    result = tick(w, instance, bogota(LIVE_SESSION, 9, 7))
    assert isinstance(result, dg.SkipReason) and "no production model" in result.skip_message


# ---- the sensor never launches a run it knows will fail -------------------------------------------


def _fresh_world(tmp_path):
    return make_world(tmp_path, f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}")


def test_stale_macro_skips_with_the_reason_and_one_alert(tmp_path, instance):
    from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION

    w = _fresh_world(tmp_path)
    macro = w.lake.read(MACRO_DATASET, MACRO_PARTITION)
    w.lake.write(MACRO_DATASET, MACRO_PARTITION, macro.filter(pl.col("date") < LIVE_SESSION - timedelta(days=20)))
    with dg.instance_for_test() as inst:
        for minute in (7, 12, 17):  # three ticks with new bars: three skips, one alert
            result = tick(w, inst, bogota(LIVE_SESSION, 9, minute))
            assert isinstance(result, dg.SkipReason) and "stale macro" in result.skip_message, result
        assert "raw/macro_daily" in result.skip_message
        alerts = w.store.alerts.list(kind="live_blocked")
        assert len(alerts) == 1 and "stale macro" in alerts[0]["message"]
        assert inst.get_runs() == []


def test_data_gap_before_the_session_skips(tmp_path):
    from usdcop_platform.core.cleaning import BARS_DATASET

    w = _fresh_world(tmp_path)
    for key in w.lake.partitions(BARS_DATASET):
        if key < LIVE_SESSION.isoformat():
            w.lake.delete(BARS_DATASET, key)
    with dg.instance_for_test() as inst:
        result = tick(w, inst, bogota(LIVE_SESSION, 9, 7))
        assert isinstance(result, dg.SkipReason) and result.skip_message.startswith("data gap")
        assert len(w.store.alerts.list(kind="live_blocked")) == 1


def test_fixed_cause_resumes_the_requests(tmp_path):
    """After the skip the cursor did not move: once macro is back, the bars are requested."""
    from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION

    w = _fresh_world(tmp_path)
    macro = w.lake.read(MACRO_DATASET, MACRO_PARTITION)
    w.lake.write(MACRO_DATASET, MACRO_PARTITION, macro.filter(pl.col("date") < LIVE_SESSION - timedelta(days=20)))
    with dg.instance_for_test() as inst:
        assert isinstance(tick(w, inst, bogota(LIVE_SESSION, 8, 11)), dg.SkipReason)
        w.lake.write(MACRO_DATASET, MACRO_PARTITION, macro)
        reqs = requests(tick(w, inst, bogota(LIVE_SESSION, 8, 11)))
        assert [r.run_key for r in reqs] == [bogota(LIVE_SESSION, 8, m).isoformat() for m in (0, 5)]
