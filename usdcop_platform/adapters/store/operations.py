"""Operational queues: backtest requests (REQUEST_MORE_TESTS) and alerts.

Quarantined rows live in the parquet lake (quarantine/<dataset>/<partition>), not here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import to_record
from usdcop_platform.adapters.store.audit import write_audit
from usdcop_platform.adapters.store.errors import NotFoundError
from usdcop_platform.adapters.store.tables import (
    BACKTEST_REQUEST_STATUSES,
    Alert,
    BacktestRequest,
    PromotionProposal,
)
from usdcop_platform.adapters.store.types import Record, as_date, as_utc, jsonable, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store


# Proposal statuses whose evidence may still change: attachments to a decided proposal are frozen.
_AWAITING_DECISION = ("PENDING_APPROVAL", "MORE_TESTS_REQUESTED")
# A request in these states has finished; a late launch report must not reopen it.
_FINISHED = ("DONE", "FAILED")
# Key metrics of an additional backtest copied into the audit row (the full set is on the proposal).
_AUDIT_METRICS = ("sharpe", "total_return", "max_drawdown", "trades", "n_bars")


class BacktestRequestRepository:
    """`store.backtest_requests`: PENDING -> LAUNCHED -> DONE | FAILED.

    `complete()` is the one way a request reaches DONE: one transaction attaches the backtest to
    its proposal (`promotion_proposals.additional_backtests`), sends the proposal from
    MORE_TESTS_REQUESTED back to PENDING_APPROVAL for the reviewer to decide again, marks the
    request DONE and writes the MORE_TESTS_COMPLETED audit row. DONE is final.
    """

    def __init__(self, store: "Store") -> None:
        self._store = store

    def create(
        self,
        model_id: str,
        start_date: date | str,
        end_date: date | str,
        requested_by: str,
        proposal_id: str | None = None,
    ) -> Record:
        start, end = as_date(start_date, "start_date"), as_date(end_date, "end_date")
        if start is None or end is None or start > end:
            raise ValueError(f"backtest period {start}..{end} is empty or reversed")
        now = utcnow()
        row = BacktestRequest(
            proposal_id=proposal_id,
            model_id=model_id,
            start_date=start,
            end_date=end,
            status="PENDING",
            requested_by=requested_by,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._store.write_session() as s:
                s.add(row)
                s.flush()
                return to_record(row)
        except sa.exc.IntegrityError:
            raise NotFoundError(f"backtest request refers to an unknown model {model_id!r} or proposal {proposal_id!r}") from None

    def get(self, request_id: int) -> Record | None:
        with self._store.read_session() as s:
            row = s.get(BacktestRequest, request_id)
            return to_record(row) if row is not None else None

    def list(self, status: str | None = None, model_id: str | None = None) -> list[Record]:
        """Requests, oldest first (the order a launcher should serve them)."""
        stmt = sa.select(BacktestRequest).order_by(BacktestRequest.created_at, BacktestRequest.id)
        if status is not None:
            stmt = stmt.where(BacktestRequest.status == status)
        if model_id is not None:
            stmt = stmt.where(BacktestRequest.model_id == model_id)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]

    def update_status(
        self, request_id: int, status: str, dagster_run_id: str | None = None, error: str | None = None
    ) -> Record:
        if status not in BACKTEST_REQUEST_STATUSES:
            raise ValueError(f"status must be one of {', '.join(BACKTEST_REQUEST_STATUSES)}, not {status!r}")
        with self._store.write_session() as s:
            row = s.get(BacktestRequest, request_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"backtest request {request_id} does not exist")
            # The launcher reports LAUNCHED after submitting the run, which may already have ended.
            if not (status == "LAUNCHED" and row.status in _FINISHED):
                row.status = status
            row.updated_at = utcnow()
            if dagster_run_id is not None:
                row.dagster_run_id = dagster_run_id
            if error is not None:
                row.error = error
            s.flush()
            return to_record(row)

    def complete(
        self,
        request_id: int,
        *,
        metrics: Mapping[str, Any],
        series_partition: str,
        dagster_run_id: str | None = None,
        expires_at: datetime | None = None,
        completed_by: str = "system",
    ) -> Record:
        """Attach the finished backtest of a request to its proposal and mark the request DONE.

        The entry on the proposal is keyed by the request id, so completing a request again
        replaces it instead of adding a second one (and writes no second audit row). A proposal
        returning to PENDING_APPROVAL gets `expires_at` (a fresh review window) when given.
        Returns {request, proposal (None without one), reopened, audit_id}.
        """
        now = utcnow()
        with self._store.write_session() as s:
            found = s.get(BacktestRequest, request_id)
            if found is None:
                raise NotFoundError(f"backtest request {request_id} does not exist")
            # Lock order proposal -> request, as in ApprovalService.decide.
            proposal = (
                s.get(PromotionProposal, found.proposal_id, with_for_update=True) if found.proposal_id else None
            )
            req = s.get(BacktestRequest, request_id, with_for_update=True, populate_existing=True)
            assert req is not None  # requests are never deleted
            first = req.status != "DONE"
            entry = jsonable(
                {
                    "request_id": req.id,
                    "start": req.start_date,
                    "end": req.end_date,
                    "requested_by": req.requested_by,
                    "requested_at": req.created_at,
                    "completed_at": now,
                    "dagster_run_id": dagster_run_id,
                    "series_partition": series_partition,
                    "metrics": dict(metrics),
                }
            )
            reopened = False
            audit_id: int | None = None
            if proposal is not None and proposal.status in _AWAITING_DECISION:
                current = list(proposal.additional_backtests or [])
                ids = [e.get("request_id") for e in current]
                if req.id in ids:
                    current[ids.index(req.id)] = entry
                else:
                    current.append(entry)
                proposal.additional_backtests = current
            if first and proposal is not None and proposal.status == "MORE_TESTS_REQUESTED":
                proposal.status = "PENDING_APPROVAL"
                # Who asked and why stays in the audit log and on the request row.
                proposal.decided_at = proposal.decided_by = proposal.decision_notes = None
                if expires_at is not None:
                    proposal.expires_at = as_utc(expires_at, "expires_at")
                reopened = True
            if first and proposal is not None:
                audit_id = write_audit(
                    s,
                    action="MORE_TESTS_COMPLETED",
                    reviewer=completed_by,
                    model_id=req.model_id,
                    proposal_id=proposal.proposal_id,
                    notes=(
                        f"backtest {req.start_date}..{req.end_date} requested by {req.requested_by} is done"
                        + ("; the proposal is PENDING_APPROVAL again" if reopened else "")
                    ),
                    details={
                        "backtest_request_id": req.id,
                        "backtest_start": req.start_date,
                        "backtest_end": req.end_date,
                        "series_partition": series_partition,
                        "dagster_run_id": dagster_run_id,
                        "reopened": reopened,
                        **{k: metrics.get(k) for k in _AUDIT_METRICS if k in metrics},
                    },
                    now=now,
                ).id
            req.status, req.error, req.updated_at = "DONE", None, now
            if dagster_run_id is not None:
                req.dagster_run_id = dagster_run_id
            s.flush()
            return Record(
                request=to_record(req),
                proposal=to_record(proposal) if proposal is not None else None,
                reopened=reopened,
                audit_id=audit_id,
            )

    def fail(self, request_id: int, error: str, *, dagster_run_id: str | None = None) -> Record:
        """Mark a request FAILED with the error; its proposal stays MORE_TESTS_REQUESTED.

        A DONE request stays DONE (its results are attached): a failed re-run changes nothing.
        """
        with self._store.write_session() as s:
            row = s.get(BacktestRequest, request_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"backtest request {request_id} does not exist")
            if row.status != "DONE":
                row.status, row.error, row.updated_at = "FAILED", str(error), utcnow()
                if dagster_run_id is not None:
                    row.dagster_run_id = dagster_run_id
                s.flush()
            return to_record(row)


class AlertRepository:
    """`store.alerts`: an outbox; a notifier delivers pending alerts and records failures."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def add(self, kind: str, severity: str, message: str, details: Mapping[str, Any] | None = None) -> Record:
        row = Alert(kind=kind, severity=severity, message=message, details=jsonable(dict(details or {})), created_at=utcnow())
        with self._store.write_session() as s:
            s.add(row)
            s.flush()
            return to_record(row)

    def pending(self, max_attempts: int | None = None, limit: int = 100) -> list[Record]:
        """Undelivered alerts, oldest first; with max_attempts, those not yet tried that often."""
        stmt = sa.select(Alert).where(Alert.delivered.is_(False)).order_by(Alert.id).limit(limit)
        if max_attempts is not None:
            stmt = stmt.where(Alert.attempts < max_attempts)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]

    def _change(self, alert_id: int, **changes: Any) -> Record:
        with self._store.write_session() as s:
            row = s.get(Alert, alert_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"alert {alert_id} does not exist")
            row.attempts = row.attempts + 1
            for key, value in changes.items():
                setattr(row, key, value)
            s.flush()
            return to_record(row)

    def mark_delivered(self, alert_id: int) -> Record:
        return self._change(alert_id, delivered=True, last_error=None)

    def mark_failed(self, alert_id: int, error: str) -> Record:
        return self._change(alert_id, last_error=str(error))

    def list(self, limit: int = 100, kind: str | None = None) -> list[Record]:
        """Most recent alerts first."""
        stmt = sa.select(Alert).order_by(Alert.id.desc()).limit(limit)
        if kind is not None:
            stmt = stmt.where(Alert.kind == kind)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]
