"""`store.trials`: the append-only trial ledger (one row per trial of an experiment family).

Rows are only ever inserted (database triggers refuse UPDATE and DELETE). `record` is idempotent on
`trial_id`, so a retried Dagster step never counts a trial twice, while a genuine retraining (a
new run) always adds rows: N grows with every training seed, search trial and retraining.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import dialect_insert, to_record
from usdcop_platform.adapters.store.tables import TRIAL_KINDS, TrialLedgerRow
from usdcop_platform.adapters.store.types import Record, jsonable, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

REQUIRED = ("trial_id", "family", "experiment_version", "kind", "config_hash", "data_hash")
COLUMNS = frozenset(c.key for c in TrialLedgerRow.__table__.columns) - {"id", "created_at"}


class TrialRepository:
    """`store.trials`."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def record(self, trials: Sequence[Mapping[str, Any]]) -> list[Record]:
        """Append trials (each a mapping of ledger columns); a trial_id already present is kept as
        it is. Returns the rows of the given trial ids, in the given order."""
        values = [self._values(t, i) for i, t in enumerate(trials)]
        if not values:
            return []
        with self._store.write_session() as s:
            for v in values:
                s.execute(dialect_insert(s, TrialLedgerRow).values(**v).on_conflict_do_nothing(index_elements=["trial_id"]))
            ids = [v["trial_id"] for v in values]
            rows = {r.trial_id: r for r in s.execute(sa.select(TrialLedgerRow).where(TrialLedgerRow.trial_id.in_(ids))).scalars()}
            return [to_record(rows[i]) for i in ids]

    @staticmethod
    def _values(trial: Mapping[str, Any], index: int) -> dict[str, Any]:
        unknown = set(trial) - COLUMNS
        if unknown:
            raise ValueError(f"trial {index}: unknown ledger field(s) {sorted(unknown)}")
        missing = [k for k in REQUIRED if not trial.get(k)]
        if missing:
            raise ValueError(f"trial {index}: missing {missing}")
        if trial["kind"] not in TRIAL_KINDS:
            raise ValueError(f"trial {index}: kind {trial['kind']!r} is not one of {TRIAL_KINDS}")
        return {**trial, "details": jsonable(dict(trial.get("details") or {})), "created_at": utcnow()}

    def family(self, family: str) -> list[Record]:
        """Every trial of a family (its name across versions), oldest first."""
        stmt = sa.select(TrialLedgerRow).where(TrialLedgerRow.family == family).order_by(TrialLedgerRow.id)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]

    def count(self, family: str) -> int:
        stmt = sa.select(sa.func.count()).select_from(TrialLedgerRow).where(TrialLedgerRow.family == family)
        with self._store.read_session() as s:
            return int(s.execute(stmt).scalar_one())
