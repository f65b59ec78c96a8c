"""Model lifecycle actions shared by the CLI, the admin API and the monitoring assets.

No Dagster import: the API and the CLI call these with a store and an alert dispatcher.

* rollback_production(): the store's atomic rollback (current production -> archived, the most
  recently archived ex-production model -> production, registry version bumped, one audit row
  ROLLBACK or AUTO_ROLLBACK) followed by an alert. No previous model -> NotFoundError with a
  message that says so.
* propose_rollback(): realized degradation beyond the rollback threshold files a rollback
  proposal: an audit row ROLLBACK_PROPOSED on the production model plus an ERROR alert. It is
  approved by running the rollback (CLI or API). At most one open proposal per production model:
  a second call while the model is still production returns the existing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from usdcop_platform.core.alerts import rollback_alert, rollback_proposal_alert

ROLLBACK_PROPOSED = "ROLLBACK_PROPOSED"
SYSTEM_REVIEWER = "system:monitoring"


@dataclass(frozen=True)
class RollbackProposal:
    audit_id: int
    model_id: str
    target_model_id: str | None
    reason: str
    created: bool  # False when an open proposal already existed


def rollback_production(
    store: Any, dispatcher: Any | None, *, reviewer: str, notes: str, automatic: bool = False,
    verify: Any | None = None, expected_version: int | None = None, expected_production: str | None = None,
) -> Any:
    """Restore the previous production model; returns the store's result record. `verify` checks
    the target's artefacts in the transaction; `expected_*` is the optimistic precondition.

    Raises NotFoundError (no previous production model) and ConflictError (concurrent change,
    registry moved since the caller looked, target artefacts refused)."""
    if not notes or not notes.strip():
        raise ValueError("a rollback needs notes saying why")
    result = store.approvals.rollback(
        reviewer=reviewer, notes=notes, automatic=automatic, verify=verify,
        expected_version=expected_version, expected_production=expected_production,
    )
    if dispatcher is not None:
        dispatcher.emit(
            rollback_alert(
                restored_model_id=result["model_id"],
                replaced_model_id=result["previous_production_model_id"],
                reviewer=reviewer,
                automatic=automatic,
                notes=notes,
            )
        )
    return result


def open_rollback_proposal(store: Any, model_id: str) -> Any | None:
    """The ROLLBACK_PROPOSED audit row of `model_id` filed since it (last) became production."""
    model = store.models.get(model_id)
    if model is None or model["stage"] != "production":
        return None
    promoted_at = model["promoted_at"]
    for row in store.audit.list(limit=20, model_id=model_id, action=ROLLBACK_PROPOSED):
        if promoted_at is None or row["created_at"] >= promoted_at:
            return row
    return None


def propose_rollback(
    store: Any, dispatcher: Any | None, *, model_id: str, reason: str, details: Mapping[str, Any] | None = None
) -> RollbackProposal:
    existing = open_rollback_proposal(store, model_id)
    if existing is not None:
        return RollbackProposal(
            existing["id"], model_id, existing["details"].get("target_model_id"), existing["notes"], created=False
        )
    target = store.models.previous_production()
    target_id = target["model_id"] if target is not None else None
    row = store.audit.append(
        ROLLBACK_PROPOSED,
        SYSTEM_REVIEWER,
        model_id=model_id,
        notes=reason,
        previous_production_model_id=model_id,  # production is unchanged by a proposal
        details={"target_model_id": target_id, **dict(details or {})},
    )
    if dispatcher is not None:
        dispatcher.emit(rollback_proposal_alert(model_id=model_id, target_model_id=target_id, reason=reason))
    return RollbackProposal(row["id"], model_id, target_id, reason, created=True)
