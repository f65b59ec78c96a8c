"""Human approval (the second vote) and rollback, each with its audit row (adapters/store/audit.py).

`decide()` is one transaction: lock the registry, lock the proposal, check it is still
PENDING_APPROVAL and not expired, then APPROVE (proposal APPROVED, its model production, the
previous production model archived, registry version bumped), REJECT, or REQUEST_MORE_TESTS
(a backtest request for a new period), and write the audit row. A unique-index violation from
a concurrent promotion rolls everything back and surfaces as ConflictError (HTTP 409).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from usdcop_platform.adapters.store.audit import write_audit
from usdcop_platform.adapters.store.errors import ConflictError, NotFoundError, OverrideNoteRequired, RegistryChanged
from usdcop_platform.adapters.store.registry import (
    Verifier,
    current_production,
    lock_registry,
    previous_production,
    promote,
)
from usdcop_platform.adapters.store.tables import BacktestRequest, PromotionProposal
from usdcop_platform.adapters.store.types import Record, as_date, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

DECISIONS = ("APPROVE", "REJECT", "REQUEST_MORE_TESTS")
DECISION_STATUS = {"APPROVE": "APPROVED", "REJECT": "REJECTED", "REQUEST_MORE_TESTS": "MORE_TESTS_REQUESTED"}
class ApprovalService:
    """`store.approvals`: the second vote and rollbacks, each one audited transaction."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def decide(
        self,
        proposal_id: str,
        decision: str,
        reviewer: str,
        notes: str = "",
        promote_to_production: bool = True,
        backtest_start: date | str | None = None,
        backtest_end: date | str | None = None,
        verify: Verifier | None = None,
    ) -> Record:
        """Record a human decision on a proposal (see the module docstring). An APPROVE that
        promotes runs `verify` on the model's registry row inside the transaction.

        Raises NotFoundError (no such proposal), ConflictError (not PENDING_APPROVAL, expired,
        model not servable, concurrent promotion), OverrideNoteRequired (approving a REJECT
        recommendation without notes), ValueError (bad decision or backtest period).
        """
        decision = str(decision).upper()
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if not reviewer or not reviewer.strip():
            raise ValueError("a decision needs the reviewer (the authenticated caller)")
        notes = notes or ""
        start, end = as_date(backtest_start, "backtest_start"), as_date(backtest_end, "backtest_end")
        if decision == "REQUEST_MORE_TESTS":
            if start is None or end is None:
                raise ValueError("REQUEST_MORE_TESTS needs the new backtest period (backtest_start and backtest_end)")
            if start > end:
                raise ValueError(f"backtest_start {start} is after backtest_end {end}")

        expired_at: datetime | None = None
        try:
            with self._store.write_session() as s:
                lock_registry(s)
                proposal = s.get(PromotionProposal, proposal_id, with_for_update=True)
                if proposal is None:
                    raise NotFoundError(f"proposal {proposal_id!r} does not exist")
                if proposal.status != "PENDING_APPROVAL":
                    raise ConflictError(
                        f"proposal {proposal_id!r} is {proposal.status}, not PENDING_APPROVAL; "
                        f"it was decided by {proposal.decided_by or 'nobody'}"
                    )
                now = utcnow()
                current = current_production(s)
                current_id = current.model_id if current is not None else None
                if proposal.expires_at is not None and proposal.expires_at < now:
                    proposal.status, proposal.decided_at = "EXPIRED", now
                    write_audit(
                        s,
                        action="EXPIRE",
                        reviewer=reviewer,
                        model_id=proposal.model_id,
                        proposal_id=proposal_id,
                        notes=f"{decision} attempted after expiry",
                        previous_production_model_id=current_id,
                        details={"expires_at": proposal.expires_at, "attempted_decision": decision},
                        now=now,
                    )
                    expired_at = proposal.expires_at
                else:
                    return self._apply(
                        s, proposal, decision, reviewer, notes, promote_to_production, start, end, current_id, now,
                        verify,
                    )
        except sa.exc.IntegrityError as exc:
            raise ConflictError(
                f"proposal {proposal_id!r} could not be applied: a concurrent change won "
                f"({str(exc.orig).splitlines()[0]})"
            ) from None
        raise ConflictError(f"proposal {proposal_id!r} expired at {expired_at.isoformat()}; it is now EXPIRED")

    def _apply(
        self,
        s: Session,
        proposal: PromotionProposal,
        decision: str,
        reviewer: str,
        notes: str,
        promote_to_production: bool,
        start: date | None,
        end: date | None,
        current_id: str | None,
        now: datetime,
        verify: Verifier | None = None,
    ) -> Record:
        if decision == "APPROVE" and proposal.recommendation == "REJECT" and not notes.strip():
            raise OverrideNoteRequired(
                f"proposal {proposal.proposal_id!r} was recommended REJECT by the rules; "
                "approving it needs notes explaining the override"
            )
        promoted = False
        previous_id = current_id
        version: int | None = None
        backtest_request_id: int | None = None
        if decision == "APPROVE" and promote_to_production:
            previous_id, version = promote(s, proposal.model_id, now, verify)
            promoted = True
        elif decision == "REQUEST_MORE_TESTS":
            request = BacktestRequest(
                proposal_id=proposal.proposal_id,
                model_id=proposal.model_id,
                start_date=start,
                end_date=end,
                status="PENDING",
                requested_by=reviewer,
                created_at=now,
                updated_at=now,
            )
            s.add(request)
            s.flush()
            backtest_request_id = request.id
        proposal.status = DECISION_STATUS[decision]
        proposal.decided_at, proposal.decided_by, proposal.decision_notes = now, reviewer, notes
        details: dict[str, Any] = {"recommendation": proposal.recommendation, "promoted": promoted}
        if version is not None:
            details["registry_version"] = version
        if backtest_request_id is not None:
            details.update(backtest_request_id=backtest_request_id, backtest_start=start, backtest_end=end)
        audit = write_audit(
            s,
            action=decision,
            reviewer=reviewer,
            model_id=proposal.model_id,
            proposal_id=proposal.proposal_id,
            notes=notes,
            previous_production_model_id=previous_id,
            details=details,
            now=now,
        )
        return Record(
            proposal_id=proposal.proposal_id,
            model_id=proposal.model_id,
            decision=decision,
            status=proposal.status,
            promoted=promoted,
            previous_production_model_id=previous_id,
            registry_version=version,
            audit_id=audit.id,
            backtest_request_id=backtest_request_id,
            decided_at=now,
            decided_by=reviewer,
        )

    def rollback(
        self,
        reviewer: str,
        notes: str = "",
        automatic: bool = False,
        *,
        expected_version: int | None = None,
        expected_production: str | None = None,
        verify: Verifier | None = None,
    ) -> Record:
        """Restore the previous production model atomically (current -> archived, previous -> production).

        Optimistic precondition: with `expected_version` (the registry version the caller saw) or
        `expected_production` (the production model id it saw), a registry that moved since is a
        RegistryChanged (409) and nothing changes, so N concurrent rollbacks from one view flip
        production once, not N times. `verify` checks the target's artefacts in the transaction.
        Raises NotFoundError when no archived model was ever production.
        """
        if not reviewer or not reviewer.strip():
            raise ValueError("a rollback needs the reviewer (the authenticated caller, or 'system')")
        try:
            with self._store.write_session() as s:
                locked = lock_registry(s)
                now = utcnow()
                current = current_production(s)
                current_id = current.model_id if current is not None else None
                if expected_version is not None and locked.version != expected_version:
                    raise RegistryChanged(
                        f"rollback refused: the registry is at version {locked.version}, not the expected "
                        f"{expected_version} (production is now {current_id or 'none'}); re-read it and retry"
                    )
                if expected_production is not None and current_id != expected_production:
                    raise RegistryChanged(
                        f"rollback refused: production is {current_id or 'none'}, not the expected "
                        f"{expected_production!r} (registry version {locked.version}); re-read it and retry"
                    )
                target = previous_production(s)
                if target is None:
                    raise NotFoundError(
                        "no previous production model to roll back to: no archived model was ever production"
                    )
                current_id, version = promote(s, target.model_id, now, verify)
                action = "AUTO_ROLLBACK" if automatic else "ROLLBACK"
                audit = write_audit(
                    s,
                    action=action,
                    reviewer=reviewer,
                    model_id=target.model_id,
                    notes=notes,
                    previous_production_model_id=current_id,
                    details={"registry_version": version, "automatic": automatic, "verified": verify is not None},
                    now=now,
                )
                return Record(
                    action=action,
                    model_id=target.model_id,
                    previous_production_model_id=current_id,
                    registry_version=version,
                    audit_id=audit.id,
                    rolled_back_at=now,
                )
        except sa.exc.IntegrityError as exc:
            raise ConflictError(f"rollback lost a race with a concurrent change ({str(exc.orig).splitlines()[0]})") from None


__all__ = ["DECISIONS", "ApprovalService"]
