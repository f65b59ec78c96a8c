"""Model registry: one row per model id (minted once by training), stages, and the registry version.

Stage changes all go through `promote()` / `set_stage()` here, inside a transaction that first
locks the single `registry_version` row (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the write
transaction already holds the database write lock from BEGIN IMMEDIATE). Stage changes are
therefore serialized, and the partial unique index on stage = 'production' stays the last line
of defence: even a writer that bypasses this code cannot create a second production model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from usdcop_platform.adapters.store._sql import to_record
from usdcop_platform.adapters.store.audit import write_audit
from usdcop_platform.adapters.store.errors import ConflictError, ModelNotServable, NotFoundError
from usdcop_platform.adapters.store.tables import STAGES, ModelRegistry, RegistryVersion
from usdcop_platform.adapters.store.types import Record, jsonable, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store


@dataclass(frozen=True)
class ModelRecord:
    """What training registers for a model. `model_id` is minted once and is the join key everywhere."""

    model_id: str
    experiment_name: str
    experiment_version: str
    model_hash: str
    servable: bool = True
    onnx_hash: str | None = None
    norm_stats_hash: str | None = None
    feature_order_hash: str | None = None
    dataset_hash: str | None = None
    config_hash: str | None = None
    reward_config_hash: str | None = None
    mlflow_run_id: str | None = None
    mlflow_model_version: str | None = None
    artifact_dir: str | None = None
    model_path: str | None = None
    onnx_path: str | None = None
    norm_stats_path: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    parity: Mapping[str, Any] = field(default_factory=dict)


_PATH_FIELDS = ("artifact_dir", "model_path", "onnx_path", "norm_stats_path")
# Fields `update()` may change after registration (identity, hashes and stage may not).
UPDATABLE_FIELDS = frozenset(
    {"servable", "mlflow_run_id", "mlflow_model_version", "metrics", "lineage", "parity", "onnx_hash", "onnx_path"}
)


def _column_values(rec: ModelRecord) -> dict[str, Any]:
    values = asdict(rec)
    for key in _PATH_FIELDS:
        if values.get(key) is not None:
            values[key] = str(values[key])
    if values["mlflow_model_version"] is not None:
        values["mlflow_model_version"] = str(values["mlflow_model_version"])
    for key in ("metrics", "lineage", "parity"):
        values[key] = jsonable(dict(values[key] or {}))
    return values


def lock_registry(session: Session) -> RegistryVersion:
    """Take the registry lock for the rest of the transaction (serializes all stage changes)."""
    row = session.execute(
        sa.select(RegistryVersion).where(RegistryVersion.id == 1).with_for_update()
    ).scalar_one_or_none()
    if row is None:  # pragma: no cover - seeded by the initial migration
        raise NotFoundError("registry_version row is missing; run `usdcop db upgrade`")
    return row


def bump_registry_version(session: Session, now: datetime) -> int:
    session.execute(
        sa.update(RegistryVersion)
        .where(RegistryVersion.id == 1)
        .values(version=RegistryVersion.version + 1, updated_at=now)
    )
    return int(session.execute(sa.select(RegistryVersion.version).where(RegistryVersion.id == 1)).scalar_one())


def current_production(session: Session, *, for_update: bool = False) -> ModelRegistry | None:
    stmt = sa.select(ModelRegistry).where(ModelRegistry.stage == "production")
    return session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()


def previous_production(session: Session) -> ModelRegistry | None:
    """The most recently archived model that was once production (and can still be served)."""
    stmt = (
        sa.select(ModelRegistry)
        .where(
            ModelRegistry.stage == "archived",
            ModelRegistry.promoted_at.is_not(None),
            ModelRegistry.servable.is_(True),
        )
        .order_by(ModelRegistry.archived_at.desc(), ModelRegistry.promoted_at.desc())
        .limit(1)
    )
    return session.execute(stmt).scalar_one_or_none()


def get_for_update(session: Session, model_id: str) -> ModelRegistry:
    model = session.get(ModelRegistry, model_id, with_for_update=True)
    if model is None:
        raise NotFoundError(f"model {model_id!r} is not in the registry")
    return model


# Checks a registry row the way the live path will load it; raises to refuse (see adapters/artifacts.py).
Verifier = Callable[[Record], None]


def promote(session: Session, model_id: str, now: datetime, verify: Verifier | None = None) -> tuple[str | None, int]:
    """Make `model_id` production, archiving the current one. Caller holds the registry lock.

    `verify` runs on the locked target row inside this transaction (artefact hashes, loadable by
    the live path): a model whose files changed or cannot be served never becomes production.
    Returns (previous production model id or None, new registry version).
    """
    target = get_for_update(session, model_id)
    if not target.servable:
        raise ModelNotServable(f"model {model_id!r} is not servable (ONNX parity failed); it cannot be production")
    if verify is not None:
        verify(to_record(target))
    current = current_production(session, for_update=True)
    if current is not None and current.model_id == model_id:
        return None, int(session.execute(sa.select(RegistryVersion.version)).scalar_one())
    previous_id = None
    if current is not None:
        previous_id = current.model_id
        current.stage, current.archived_at = "archived", now
        # Flush the archive before the promotion: the unit of work orders UPDATEs by primary key,
        # and the partial unique index must never see two production rows, even mid-statement.
        session.flush()
    target.stage, target.promoted_at, target.archived_at = "production", now, None
    session.flush()
    return previous_id, bump_registry_version(session, now)


class ModelRepository:
    """`store.models`."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def register(self, record: ModelRecord | None = None, /, **kwargs: Any) -> Record:
        """Register a model in stage 'staging'. Idempotent for the same model_id and model_hash;
        the same id with another model_hash is a ConflictError (ids are minted once)."""
        if record is None:
            record = ModelRecord(**kwargs)
        elif kwargs:
            raise TypeError("pass either a ModelRecord or keyword fields, not both")
        values = _column_values(record)
        with self._store.write_session() as s:
            existing = s.get(ModelRegistry, record.model_id)
            if existing is not None:
                if existing.model_hash != record.model_hash:
                    raise ConflictError(
                        f"model {record.model_id!r} is already registered with model_hash "
                        f"{existing.model_hash[:12]}…, not {record.model_hash[:12]}…; model ids are minted once"
                    )
                return to_record(existing)
            row = ModelRegistry(**values, stage="staging", created_at=utcnow())
            s.add(row)
            s.flush()
            return to_record(row)

    def get(self, model_id: str) -> Record | None:
        with self._store.read_session() as s:
            row = s.get(ModelRegistry, model_id)
            return to_record(row) if row is not None else None

    def require(self, model_id: str) -> Record:
        row = self.get(model_id)
        if row is None:
            raise NotFoundError(f"model {model_id!r} is not in the registry")
        return row

    def list(self, stage: str | None = None, experiment: str | None = None) -> list[Record]:
        """Models, newest first, optionally filtered by stage and experiment name."""
        if stage is not None and stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
        stmt = sa.select(ModelRegistry).order_by(ModelRegistry.created_at.desc(), ModelRegistry.model_id)
        if stage is not None:
            stmt = stmt.where(ModelRegistry.stage == stage)
        if experiment is not None:
            stmt = stmt.where(ModelRegistry.experiment_name == experiment)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]

    def production(self) -> Record | None:
        with self._store.read_session() as s:
            row = current_production(s)
            return to_record(row) if row is not None else None

    def previous_production(self) -> Record | None:
        with self._store.read_session() as s:
            row = previous_production(s)
            return to_record(row) if row is not None else None

    def update(self, model_id: str, **changes: Any) -> Record:
        """Change post-registration fields (servable, MLflow version, metrics, lineage, parity, ONNX)."""
        bad = sorted(set(changes) - UPDATABLE_FIELDS)
        if bad:
            raise ValueError(f"cannot update {', '.join(bad)}; updatable: {', '.join(sorted(UPDATABLE_FIELDS))}")
        if "mlflow_model_version" in changes and changes["mlflow_model_version"] is not None:
            changes["mlflow_model_version"] = str(changes["mlflow_model_version"])
        if changes.get("onnx_path") is not None:
            changes["onnx_path"] = str(changes["onnx_path"])
        with self._store.write_session() as s:
            row = get_for_update(s, model_id)
            if changes.get("servable") is False and row.stage == "production":
                raise ConflictError(f"model {model_id!r} is production; roll back before marking it not servable")
            for key, value in changes.items():
                setattr(row, key, jsonable(dict(value)) if key in ("metrics", "lineage", "parity") else value)
            s.flush()
            return to_record(row)

    def set_stage(self, model_id: str, stage: str, *, reviewer: str = "system", notes: str = "") -> Record:
        """Move a model to `stage` in one audited transaction; to 'production' archives the current one."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
        with self._store.write_session() as s:
            lock_registry(s)
            now = utcnow()
            target = get_for_update(s, model_id)
            from_stage = target.stage
            before = current_production(s)
            previous_id = before.model_id if before is not None else None
            if stage == "production":
                previous_id, version = promote(s, model_id, now)
            elif from_stage == stage:
                version = int(s.execute(sa.select(RegistryVersion.version)).scalar_one())
            else:
                target.stage = stage
                target.archived_at = now if stage == "archived" else None
                s.flush()
                version = bump_registry_version(s, now)
            write_audit(
                s,
                action="SET_STAGE",
                model_id=model_id,
                reviewer=reviewer,
                notes=notes,
                previous_production_model_id=previous_id,
                details={"from": from_stage, "to": stage, "registry_version": version},
                now=now,
            )
            s.flush()
            return to_record(target)
