"""Promotion proposals (the first vote): one per model id, idempotent under re-runs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import dialect_insert, to_record
from usdcop_platform.adapters.store.errors import ConflictError, NotFoundError
from usdcop_platform.adapters.store.audit import write_audit
from usdcop_platform.adapters.store.registry import lock_registry
from usdcop_platform.adapters.store.tables import (
    PROPOSAL_STATUSES,
    RECOMMENDATIONS,
    ModelRegistry,
    PromotionProposal,
)
from usdcop_platform.adapters.store.types import Record, as_date, as_utc, jsonable, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

# Fields a re-run may refresh while the proposal is still PENDING_APPROVAL.
_CONTENT_FIELDS = (
    "experiment_name",
    "experiment_version",
    "recommendation",
    "confidence",
    "reasons",
    "criteria",
    "metrics",
    "baseline_comparison",
    "lineage",
    "statistical_statement",
    "backtest_hash",
    "test_start",
    "test_end",
    "series_path",
    "expires_at",
)


def new_proposal_id() -> str:
    return f"prop_{uuid.uuid4().hex[:16]}"


class ProposalRepository:
    """`store.proposals`."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def upsert(
        self,
        *,
        model_id: str,
        experiment_name: str,
        experiment_version: str,
        recommendation: str,
        confidence: float,
        reasons: Sequence[str] = (),
        criteria: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        baseline_comparison: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
        statistical_statement: str | None = None,
        backtest_hash: str | None = None,
        test_start: date | str | None = None,
        test_end: date | str | None = None,
        series_path: str | PurePath | None = None,
        expires_at: datetime | None = None,
        proposal_id: str | None = None,
    ) -> Record:
        """Create the proposal of `model_id` (status PENDING_APPROVAL), or return the existing one.

        Idempotent per model id: a re-run never duplicates. While the proposal is still pending,
        a re-run refreshes its content (same proposal_id); once decided it is never changed.
        """
        if recommendation not in RECOMMENDATIONS:
            raise ValueError(f"recommendation must be one of {', '.join(RECOMMENDATIONS)}, not {recommendation!r}")
        content: dict[str, Any] = {
            "experiment_name": experiment_name,
            "experiment_version": experiment_version,
            "recommendation": recommendation,
            "confidence": float(confidence),
            "reasons": [str(r) for r in reasons],
            "criteria": jsonable(dict(criteria or {})),
            "metrics": jsonable(dict(metrics or {})),
            "baseline_comparison": jsonable(dict(baseline_comparison or {})),
            "lineage": jsonable(dict(lineage or {})),
            "statistical_statement": statistical_statement,
            "backtest_hash": backtest_hash,
            "test_start": as_date(test_start, "test_start"),
            "test_end": as_date(test_end, "test_end"),
            "series_path": str(series_path) if series_path is not None else None,
            "expires_at": as_utc(expires_at, "expires_at") if expires_at is not None else None,
        }
        with self._store.write_session() as s:
            stmt = (
                dialect_insert(s, PromotionProposal)
                .values(
                    proposal_id=proposal_id or new_proposal_id(),
                    model_id=model_id,
                    status="PENDING_APPROVAL",
                    created_at=utcnow(),
                    **content,
                )
                .on_conflict_do_nothing(index_elements=["model_id"])
            )
            if s.get(ModelRegistry, model_id) is None:
                raise NotFoundError(f"cannot propose model {model_id!r}: it is not in the registry")
            try:
                s.execute(stmt)
            except sa.exc.IntegrityError as exc:
                raise ConflictError(
                    f"proposal for model {model_id!r} conflicts with an existing row ({str(exc.orig).splitlines()[0]})"
                ) from None
            row = s.execute(
                sa.select(PromotionProposal).where(PromotionProposal.model_id == model_id).with_for_update()
            ).scalar_one()
            if row.status == "PENDING_APPROVAL":
                for key in _CONTENT_FIELDS:
                    if getattr(row, key) != content[key]:
                        setattr(row, key, content[key])
                s.flush()
            return to_record(row)

    def get(self, proposal_id: str) -> Record | None:
        with self._store.read_session() as s:
            row = s.get(PromotionProposal, proposal_id)
            return to_record(row) if row is not None else None

    def require(self, proposal_id: str) -> Record:
        row = self.get(proposal_id)
        if row is None:
            raise NotFoundError(f"proposal {proposal_id!r} does not exist")
        return row

    def by_model(self, model_id: str) -> Record | None:
        with self._store.read_session() as s:
            row = s.execute(
                sa.select(PromotionProposal).where(PromotionProposal.model_id == model_id)
            ).scalar_one_or_none()
            return to_record(row) if row is not None else None

    def list(self, status: str | None = None, limit: int | None = None) -> list[Record]:
        """Proposals, newest first, optionally by status."""
        if status is not None and status not in PROPOSAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(PROPOSAL_STATUSES)}, not {status!r}")
        stmt = sa.select(PromotionProposal).order_by(
            PromotionProposal.created_at.desc(), PromotionProposal.proposal_id
        )
        if status is not None:
            stmt = stmt.where(PromotionProposal.status == status)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]

    def expire_due(self, reviewer: str = "system") -> list[str]:
        """Mark pending proposals past their expires_at as EXPIRED (audited); returns their ids."""
        with self._store.write_session() as s:
            lock_registry(s)
            now = utcnow()
            due = s.execute(
                sa.select(PromotionProposal)
                .where(
                    PromotionProposal.status == "PENDING_APPROVAL",
                    PromotionProposal.expires_at.is_not(None),
                    PromotionProposal.expires_at < now,
                )
                .with_for_update()
            ).scalars().all()
            for p in due:
                p.status, p.decided_at = "EXPIRED", now
                write_audit(
                    s,
                    action="EXPIRE",
                    reviewer=reviewer,
                    model_id=p.model_id,
                    proposal_id=p.proposal_id,
                    notes="expired without a decision",
                    details={"expires_at": p.expires_at},
                    now=now,
                )
            return [p.proposal_id for p in due]
