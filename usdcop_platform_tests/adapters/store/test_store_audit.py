"""The approval audit log is append-only, enforced by database triggers (not just the repository)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from usdcop_platform.adapters.store import Store


def test_audit_rows_cannot_be_updated_or_deleted(store: Store) -> None:
    row = store.audit.append("APPROVE", "ana", model_id="m-1", proposal_id="p-1", notes="ok", details={"x": 1})
    assert row.id and row.created_at.tzinfo is not None
    for stmt, params in (
        ("UPDATE approval_audit_log SET notes = :notes WHERE id = :id", {"notes": "tampered", "id": row.id}),
        ("DELETE FROM approval_audit_log WHERE id = :id", {"id": row.id}),
        ("DELETE FROM approval_audit_log", {}),
    ):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text(stmt), params)
    if store.dialect == "postgresql":
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE approval_audit_log"))
    [kept] = store.audit.list()
    assert (kept.id, kept.notes, kept.details) == (row.id, "ok", {"x": 1})


def test_repository_has_no_update_or_delete(store: Store) -> None:
    public = {name for name in dir(store.audit) if not name.startswith("_")}
    assert public == {"append", "list"}


def test_audit_list_filters_and_order(store: Store) -> None:
    for i in range(3):
        store.audit.append("APPROVE", "ana", model_id=f"m-{i}")
    store.audit.append("ROLLBACK", "system", model_id="m-0")
    assert [r.model_id for r in store.audit.list(limit=2)] == ["m-0", "m-2"]
    assert [r.action for r in store.audit.list(model_id="m-0")] == ["ROLLBACK", "APPROVE"]
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        store.audit.append("approve; drop table", "ana")
