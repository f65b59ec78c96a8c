"""Experiment contracts: the frozen content of each experiment name+version, immutable once recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import dialect_insert, to_record
from usdcop_platform.adapters.store.errors import ExperimentContractConflict
from usdcop_platform.adapters.store.tables import ExperimentContractRow
from usdcop_platform.adapters.store.types import Record, utcnow
from usdcop_platform.contracts.experiment import ExperimentConfig

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store


class ContractRepository:
    """`store.contracts`."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def record(self, experiment_config: ExperimentConfig, feature_order_hash: str) -> Record:
        """Record `experiment_config` under its name+version; the same content again is a no-op.

        Raises ExperimentContractConflict when name+version is already recorded with another
        config hash or feature order hash (change the version to change the experiment).
        """
        cfg = experiment_config
        values = {
            "name": cfg.name,
            "version": cfg.version,
            "config_hash": cfg.config_hash,
            "reward_config_hash": cfg.reward_config_hash,
            "feature_order_hash": feature_order_hash,
            "content": cfg.canonical(),
            "recorded_at": utcnow(),
        }
        with self._store.write_session() as s:
            s.execute(
                dialect_insert(s, ExperimentContractRow).values(**values).on_conflict_do_nothing(
                    index_elements=["name", "version"]
                )
            )
            row = s.get(ExperimentContractRow, (cfg.name, cfg.version))
            assert row is not None  # inserted or already present
            for field in ("config_hash", "feature_order_hash"):
                stored, new = getattr(row, field), values[field]
                if stored != new:
                    raise ExperimentContractConflict(cfg.name, cfg.version, field, stored, new)
            return to_record(row)

    def get(self, name: str, version: str) -> Record | None:
        with self._store.read_session() as s:
            row = s.get(ExperimentContractRow, (name, version))
            return to_record(row) if row is not None else None

    def list(self, name: str | None = None) -> list[Record]:
        stmt = sa.select(ExperimentContractRow).order_by(
            ExperimentContractRow.name, ExperimentContractRow.recorded_at
        )
        if name is not None:
            stmt = stmt.where(ExperimentContractRow.name == name)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]
