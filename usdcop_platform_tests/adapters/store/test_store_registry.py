"""Model registry: the database itself allows at most one production model; stages and versions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from usdcop_platform.adapters.store import ConflictError, ModelNotServable, ModelRecord, NotFoundError, Record, Store

INSERT_MODEL = sa.text(
    "INSERT INTO model_registry (model_id, experiment_name, experiment_version, stage, servable, model_hash, "
    "metrics, lineage, parity, created_at) VALUES (:id, 'raw', '1', :stage, :servable, :hash, '{}', '{}', '{}', :now)"
)


def _raw_insert(conn: sa.Connection, model_id: str, stage: str) -> None:
    conn.execute(
        INSERT_MODEL,
        {"id": model_id, "stage": stage, "servable": True, "hash": "e" * 64, "now": datetime.now(timezone.utc)},
    )


def test_partial_unique_index_rejects_a_second_production_row_on_insert(store: Store) -> None:
    with store.engine.begin() as conn:
        _raw_insert(conn, "raw-1", "production")
        _raw_insert(conn, "raw-2", "staging")
        _raw_insert(conn, "raw-3", "staging")  # many non-production rows are fine
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            _raw_insert(conn, "raw-4", "production")


def test_partial_unique_index_rejects_a_second_production_row_on_update(store: Store) -> None:
    with store.engine.begin() as conn:
        _raw_insert(conn, "raw-1", "production")
        _raw_insert(conn, "raw-2", "staging")
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE model_registry SET stage = 'production' WHERE model_id = :id"), {"id": "raw-2"})
    with store.engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM model_registry WHERE stage = 'production'")).scalar_one()
    assert n == 1


def test_stage_check_constraint(store: Store) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            _raw_insert(conn, "raw-x", "champion")


def test_register_is_idempotent_and_ids_are_minted_once(store: Store) -> None:
    rec = ModelRecord(model_id="m-1", experiment_name="baseline", experiment_version="1.0.0", model_hash="a" * 64,
                      metrics={"sharpe": 1.2, "profit_factor": float("inf")}, lineage={"dataset_hash": "f" * 64})
    row = store.models.register(rec)
    assert row.stage == "staging" and row.servable is True
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset().total_seconds() == 0
    assert row.metrics == {"sharpe": 1.2, "profit_factor": None}  # no JSON for inf: stored as null
    assert store.models.register(rec) == row
    with pytest.raises(ConflictError, match="minted once"):
        store.models.register(model_id="m-1", experiment_name="baseline", experiment_version="1.0.0",
                              model_hash="b" * 64)
    assert [r.model_id for r in store.models.list()] == ["m-1"]
    assert store.models.get("nope") is None
    with pytest.raises(NotFoundError):
        store.models.require("nope")
    with pytest.raises(TypeError):
        row["stage"] = "production"  # records are read-only


def test_set_stage_keeps_one_production_and_bumps_the_version(store: Store, make_model: Callable[..., Record]) -> None:
    a, b = make_model(), make_model()
    assert store.registry_version() == 0
    store.models.set_stage(a.model_id, "production", reviewer="ops")
    assert store.models.production().model_id == a.model_id
    assert store.registry_version() == 1
    store.models.set_stage(b.model_id, "production", reviewer="ops")
    assert store.models.production().model_id == b.model_id
    assert store.models.get(a.model_id).stage == "archived"
    assert store.models.previous_production().model_id == a.model_id
    assert store.registry_version() == 2
    assert [r.model_id for r in store.models.list(stage="production")] == [b.model_id]
    assert {r.model_id for r in store.models.list(experiment="baseline")} == {a.model_id, b.model_id}
    audit = store.audit.list(model_id=b.model_id)
    assert audit[0].action == "SET_STAGE" and audit[0].previous_production_model_id == a.model_id
    with pytest.raises(ValueError):
        store.models.set_stage(a.model_id, "champion")


def test_a_model_that_failed_parity_cannot_be_production(store: Store, make_model: Callable[..., Record]) -> None:
    m = make_model(servable=False, parity={"max_abs_diff": 3e-4, "passed": False})
    with pytest.raises(ModelNotServable):
        store.models.set_stage(m.model_id, "production")
    assert store.models.production() is None
    assert store.registry_version() == 0


def test_update_post_registration_fields(store: Store, make_model: Callable[..., Record]) -> None:
    m = make_model()
    row = store.models.update(m.model_id, mlflow_model_version=3, parity={"passed": True})
    assert row.mlflow_model_version == "3" and row.parity == {"passed": True}
    with pytest.raises(ValueError, match="cannot update"):
        store.models.update(m.model_id, model_hash="0" * 64)
