"""The local Dagster instance every CLI command records in (DAGSTER_HOME, default .usdcop/dagster_home).

Dagster's stock SQLite event log opens a new SQLAlchemy engine for every statement and fsyncs
every commit; a backfill of 1,221 session partitions writes ~2 events per partition plus one
planned check row per partition and check, so the bookkeeping (≈ 50 ms an event) dwarfed the
data work (minutes for seconds). `FastSqliteEventLogStorage` keeps the same schema and files
(the UI and `dagster dev` read them unchanged) and only changes how they are written:

* one pooled engine per shard, reused (engine creation was most of the per-event CPU, and
  closing the last connection of a WAL database checkpoints it);
* `PRAGMA synchronous=NORMAL` on the WAL databases Dagster already uses: a commit no longer
  waits for fsync; the database cannot be corrupted by a crash, at worst the last events of a
  run are lost on power failure (the lake data itself is written before its events);
* the planned-check rows of a multi-partition run serialize their event once, not once per
  partition, without the run's partition subset (each row names its partition; the subset carries
  the whole partitions definition, 17 kB a row, 217 MB for one 2020-2024 backfill), and go in
  with executemany (compiling a 1,221-row VALUES statement cost seconds);
* batches of asset events (the per-partition materializations and planned events of a range run,
  sent as one batch when DAGSTER_EVENT_BATCH_SIZE > 0, which `open_instance` sets) are written
  with one executemany insert per shard in one transaction instead of one transaction per event.

`ensure_local_home()` writes the instance's dagster.yaml (only when absent: a user's own file
wins), so `dagster dev` with the same DAGSTER_HOME shows what the CLI did.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import create_db_conn_string  # noqa: F401 - same conn strings as the base

SQLITE_BUSY_TIMEOUT_S = 30
INSTANCE_YAML = """\
# Written by usdcop (adapters/dagster_instance.py): the local instance of the CLI and `dagster dev`.
event_log_storage:
  module: usdcop_platform.adapters.dagster_instance
  class: FastSqliteEventLogStorage
  config:
    base_dir: {base_dir}
telemetry:
  enabled: false
"""


def _relaxed_sync(dbapi_conn: Any, _record: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


class FastSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage with reused engines, WAL + synchronous=NORMAL and one serialization per
    planned check (same tables and files as the stock storage)."""

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        self._engines: dict[str, sa.engine.Engine] = {}
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> FastSqliteEventLogStorage:  # type: ignore[override]
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> sa.engine.Engine:
        engine = self._engines.get(shard)
        if engine is None:
            # Pooled connections stay open: closing the last connection of a WAL database
            # checkpoints (and fsyncs) it, which NullPool did after every statement.
            engine = sa.create_engine(
                self.conn_string_for_shard(shard), pool_size=2, max_overflow=4,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            )
            sa.event.listen(engine, "connect", _relaxed_sync)
            self._engines[shard] = engine
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:  # type: ignore[override]
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _store_asset_check_evaluation_planned(self, event: Any, event_id: int | None) -> None:
        from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
        from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
        from dagster._serdes import serialize_value
        from dagster_shared.record import copy as copy_record

        planned = event.dagster_event.event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        # Each row names its partition in its own column; the stored event drops the run's partition
        # subset, which serializes the whole partitions definition (every holiday exclusion: 17 kB)
        # and would be copied into every row (1,224 sessions x 10 checks = 217 MB for one backfill).
        slim = event._replace(dagster_event=event.dagster_event._replace(
            event_specific_data=copy_record(planned, partitions_subset=None))) if planned.partitions_subset else event
        payload = serialize_value(slim)  # once, not once per partition
        stamp = self._event_insert_timestamp(event)
        rows = [
            dict(asset_key=planned.asset_key.to_string(), check_name=planned.check_name, partition=key,
                 run_id=event.run_id, execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                 evaluation_event=payload, evaluation_event_timestamp=stamp, evaluation_event_storage_id=event_id)
            for key in keys
        ]
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), rows)  # executemany, not one giant VALUES

    def store_event_batch(self, events: Any) -> None:
        from dagster._core.events import DagsterEventType

        batchable = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION,
                     DagsterEventType.ASSET_MATERIALIZATION_PLANNED}
        events = [e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize]
        rest = [e for e in events if e.get_dagster_event().event_type not in batchable]
        batch = [e for e in events if e.get_dagster_event().event_type in batchable]
        for event in rest:  # e.g. planned checks: one by one, as the stock storage does
            self.store_event(event)
        for run_id in dict.fromkeys(e.run_id for e in batch):
            self._store_asset_batch([e for e in batch if e.run_id == run_id])

    def _store_asset_batch(self, events: list[Any]) -> None:
        """One run's asset events: one executemany insert into the run shard, one into the index shard
        (with their tags), and the asset table updated from the last event of each asset and type
        (what the stock PostgreSQL storage does for a batch)."""
        from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

        rows = [self._event_to_row(e) for e in events]  # each event serialized once, for both shards
        table = SqlEventLogStorageTable
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(table.insert(), rows)  # executemany: no giant multi-VALUES statement to compile
        with self.index_transaction() as conn:
            conn.execute(table.insert(), rows)
            # the transaction holds the database's write lock: the newest ids are ours, in order
            last = conn.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
            ids = list(range(last - len(events) + 1, last + 1))
            self._store_asset_event_tags(conn, events, ids)
            latest = {(e.dagster_event.asset_key, e.dagster_event_type): (e, i) for e, i in zip(events, ids)}
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        super().dispose()


def ensure_local_home(home: Path) -> Path:
    """Create DAGSTER_HOME with the usdcop instance config unless it already has a dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(INSTANCE_YAML.format(base_dir=(home / "history" / "runs").as_posix()))
    return home


EVENT_BATCH_SIZE = "100000"  # a range run's per-partition events go to the storage as one batch


def open_instance(home: Path) -> Any:
    """The persistent instance at `home` (the caller disposes it, or uses it in a `with`)."""
    import os

    import dagster as dg

    # Dagster reads this at every event: batches of asset events reach store_event_batch (above)
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
    return dg.DagsterInstance.from_config(str(ensure_local_home(home)))
