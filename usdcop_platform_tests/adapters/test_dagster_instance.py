"""The local Dagster instance (adapters/dagster_instance.py): the faster SQLite event log records a
range run exactly as the stock storage would — every partition's materialization with its own
metadata, the asset's latest event, check executions — and `dagster dev` reads the same home."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition time.
import dagster as dg
import pytest

from usdcop_platform.adapters.dagster_instance import FastSqliteEventLogStorage, ensure_local_home, open_instance


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
          backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("rows_positive", asset="ranged")])
def ranged(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for i, key in enumerate(context.partition_keys):
        context.add_asset_metadata({"dagster/row_count": i + 1, "own": key}, partition_key=key)
    return dg.MaterializeResult(metadata={"run_total": len(context.partition_keys)},
                                check_results=[dg.AssetCheckResult(passed=True)])


def _run(instance: dg.DagsterInstance, first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([ranged], instance=instance, tags={
        "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})


@pytest.mark.parametrize("batched", [True, False])
def test_range_run_is_recorded_per_partition(tmp_path, monkeypatch, batched) -> None:
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "100000" if batched else "0")
    with open_instance(tmp_path / "home") as instance:
        assert isinstance(instance.event_log_storage, FastSqliteEventLogStorage)
        assert _run(instance, "2024-01-01", "2024-01-31").success
        key = dg.AssetKey("ranged")
        assert len(instance.get_materialized_partitions(key)) == 31
        ids = instance.event_log_storage.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION)
        assert len(ids) == 31 and len(set(ids.values())) == 31
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=["2024-01-05"]), limit=1).records[0]
        meta = rec.asset_materialization.metadata
        assert meta["dagster/row_count"].value == 5 and meta["own"].value == "2024-01-05"
        assert meta["run_total"].value == 31
        latest = instance.get_latest_materialization_event(key)
        assert latest is not None and latest.dagster_event.partition == "2024-01-31"
        # a second run adds events after the first (storage ids keep growing per partition)
        assert _run(instance, "2024-01-05", "2024-01-06").success
        again = instance.event_log_storage.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION)
        assert again["2024-01-05"] > ids["2024-01-05"] and again["2024-01-04"] == ids["2024-01-04"]
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(key, "rows_positive")])
        assert check  # planned + evaluated check rows recorded


def test_home_keeps_a_users_own_dagster_yaml(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ensure_local_home(home)
    assert "FastSqlite" not in (home / "dagster.yaml").read_text()
    fresh = ensure_local_home(tmp_path / "fresh")
    assert "FastSqliteEventLogStorage" in (fresh / "dagster.yaml").read_text()


def test_planned_check_rows_name_their_partition_without_copying_the_partitions_definition(tmp_path, monkeypatch) -> None:
    """One planned row per partition, each small and readable: the run's partition subset (which
    serializes the whole partitions definition) is not copied into every row."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
    from dagster._serdes import deserialize_value

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    with open_instance(tmp_path / "home") as instance:
        result = _run(instance, "2024-01-01", "2024-03-31")
        assert result.success
        with instance.event_log_storage.index_connection() as conn:
            rows = conn.execute(sa.select(AssetCheckExecutionsTable.c.partition,
                                          AssetCheckExecutionsTable.c.evaluation_event)
                                .where(AssetCheckExecutionsTable.c.run_id == result.run_id)
                                .where(AssetCheckExecutionsTable.c.partition.isnot(None))).all()
        assert sorted(r.partition for r in rows) == [k for k in ranged.partitions_def.get_partition_keys()
                                                      if "2024-01-01" <= k <= "2024-03-31"]
        planned = deserialize_value(rows[0].evaluation_event)
        assert planned.dagster_event.event_specific_data.check_name == "rows_positive"
        assert planned.dagster_event.event_specific_data.partitions_subset is None
        assert max(len(r.evaluation_event) for r in rows) < 4_000
