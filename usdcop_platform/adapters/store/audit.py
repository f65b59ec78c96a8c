"""The append-only audit log: one writer (`write_audit`, inside the caller's transaction) and its
repository (`store.audit`). A leaf module: approvals, proposals, operations, registry and API keys
all write their audit rows through it, so none of them imports another to audit."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from usdcop_platform.adapters.store._sql import to_record
from usdcop_platform.adapters.store.tables import ApprovalAuditLog
from usdcop_platform.adapters.store.types import Record, jsonable, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

# Audit actions written by the store; other components may append their own (UPPER_SNAKE_CASE).
AUDIT_ACTIONS = (
    "APPROVE", "REJECT", "REQUEST_MORE_TESTS", "MORE_TESTS_COMPLETED", "ROLLBACK", "AUTO_ROLLBACK", "EXPIRE",
    "SET_STAGE", "KEY_CREATE", "KEY_REVOKE",
)
_ACTION_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")


def write_audit(
    session: Session,
    *,
    action: str,
    reviewer: str,
    model_id: str | None = None,
    proposal_id: str | None = None,
    notes: str = "",
    previous_production_model_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> ApprovalAuditLog:
    """Append one audit row inside the caller's transaction."""
    if not _ACTION_RE.match(action):
        raise ValueError(f"audit action must be UPPER_SNAKE_CASE (e.g. {', '.join(AUDIT_ACTIONS)}), not {action!r}")
    if not reviewer or not reviewer.strip():
        raise ValueError("audit rows need a reviewer (the authenticated caller, or 'system')")
    row = ApprovalAuditLog(
        action=action,
        model_id=model_id,
        proposal_id=proposal_id,
        reviewer=reviewer,
        notes=notes or "",
        previous_production_model_id=previous_production_model_id,
        details=jsonable(dict(details or {})),
        created_at=now or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


class AuditRepository:
    """`store.audit`: append and read. There is deliberately no update or delete."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def append(
        self,
        action: str,
        reviewer: str,
        *,
        model_id: str | None = None,
        proposal_id: str | None = None,
        notes: str = "",
        previous_production_model_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Record:
        with self._store.write_session() as s:
            return to_record(
                write_audit(
                    s,
                    action=action,
                    reviewer=reviewer,
                    model_id=model_id,
                    proposal_id=proposal_id,
                    notes=notes,
                    previous_production_model_id=previous_production_model_id,
                    details=details,
                )
            )

    def list(
        self,
        limit: int = 100,
        model_id: str | None = None,
        *,
        proposal_id: str | None = None,
        action: str | None = None,
    ) -> list[Record]:
        """Audit rows, newest first."""
        stmt = sa.select(ApprovalAuditLog).order_by(ApprovalAuditLog.id.desc()).limit(limit)
        if model_id is not None:
            stmt = stmt.where(ApprovalAuditLog.model_id == model_id)
        if proposal_id is not None:
            stmt = stmt.where(ApprovalAuditLog.proposal_id == proposal_id)
        if action is not None:
            stmt = stmt.where(ApprovalAuditLog.action == action)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]


__all__ = ["AUDIT_ACTIONS", "AuditRepository", "write_audit"]
