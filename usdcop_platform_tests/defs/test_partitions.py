"""The session partitions are exactly the calendar's sessions."""

from __future__ import annotations

from datetime import date

from usdcop_platform.defs.partitions import CALENDAR, build_session_partitions


def test_partition_keys_equal_calendar_sessions() -> None:
    parts = build_session_partitions(CALENDAR, horizon_end=date(2026, 12, 31))
    keys = [k for k in parts.get_partition_keys() if k <= "2026-12-31"]
    expected = [d.isoformat() for d in CALENDAR.sessions(date(2020, 1, 1), date.fromisoformat(keys[-1]))]
    assert keys == expected
    assert "2024-03-25" not in keys and "2024-03-26" in keys
    assert "2026-07-13" not in keys or keys[-1] < "2026-07-13"
    per_year = sum(1 for k in keys if k.startswith("2023"))
    assert 240 <= per_year <= 250
    assert parts.timezone == "America/Bogota"


def test_add_partition_metadata_rejects_partitions_outside_the_run() -> None:
    import dagster as dg

    from usdcop_platform.defs.partitions import add_partition_metadata

    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def ranged(context) -> None:  # noqa: ANN001 - Dagster injects the context
        add_partition_metadata(context, {k: {"own": k} for k in context.partition_keys})
        add_partition_metadata(context, {"2024-02-01": {"own": "x"}})

    result = dg.materialize([ranged], raise_on_error=False, tags={
        "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"})
    assert not result.success
    assert "2024-02-01" in str(result.get_step_failure_events()[0].step_failure_data.error)


def test_add_partition_metadata_gives_each_partition_its_own() -> None:
    import dagster as dg

    from usdcop_platform.defs.partitions import add_partition_metadata

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
              backfill_policy=dg.BackfillPolicy.single_run())
    def ranged(context):  # noqa: ANN001, ANN202 - Dagster injects the context (string annotations break it here)
        add_partition_metadata(context, {k: {"own": k, "shared": "mine"} for k in context.partition_keys})
        return dg.MaterializeResult(metadata={"shared": "run", "total": len(context.partition_keys)})

    result = dg.materialize([ranged], tags={
        "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"})
    mats = {m.partition: {k: v.value for k, v in m.metadata.items()} for m in result.asset_materializations_for_node("ranged")}
    assert sorted(mats) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert all(m["own"] == k and m["shared"] == "mine" and m["total"] == 3 for k, m in mats.items())


def test_config_dir_builds_the_partitions_and_sensor_intervals(tmp_path) -> None:  # noqa: ANN001
    """USDCOP_CONFIG_DIR, not the repo's config/, fixes what the definitions are built with, in a fresh process."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR

    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    for name, old, new in (("instrument.yaml", 'calendar_start: "2020-01-01"', 'calendar_start: "2022-01-03"'),
                           ("mlops.yaml", "interval_seconds: 5 ", "interval_seconds: 17 "),
                           ("mlops.yaml", "sensor_interval_seconds: 300", "sensor_interval_seconds: 301")):
        text = (cfg / name).read_text()
        assert text.count(old) == 1, f"{name} no longer has {old!r}: update this test"
        (cfg / name).write_text(text.replace(old, new))
    probe = (
        "import json\n"
        "from usdcop_platform.defs.partitions import session_partitions\n"
        "from usdcop_platform.defs.live.sensors import live_bar_sensor\n"
        "from usdcop_platform.defs.monitoring.sensors import retrain_trigger_sensor\n"
        "print(json.dumps([session_partitions.get_first_partition_key(), live_bar_sensor.minimum_interval_seconds,"
        " retrain_trigger_sensor.minimum_interval_seconds]))\n"
    )
    env = {**os.environ, "USDCOP_CONFIG_DIR": str(cfg)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["2022-01-03", 17, 301]
