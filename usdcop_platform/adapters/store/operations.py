"""Operational queues: backtest requests (REQUEST_MORE_TESTS), data-quality quarantine, alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import reject_unknown, to_record
from usdcop_platform.adapters.store.errors import NotFoundError
from usdcop_platform.adapters.store.tables import BACKTEST_REQUEST_STATUSES, Alert, BacktestRequest, QuarantineRow
from usdcop_platform.adapters.store.types import Record, as_date, as_utc, jsonable, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store


class BacktestRequestRepository:
    """`store.backtest_requests`."""

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
            row.status, row.updated_at = status, utcnow()
            if dagster_run_id is not None:
                row.dagster_run_id = dagster_run_id
            if error is not None:
                row.error = error
            s.flush()
            return to_record(row)


_QUARANTINE_FIELDS = ("dataset", "partition", "rule", "field", "value", "row", "detected_at")


class QuarantineRepository:
    """`store.quarantine`: row-level data-quality rejects, kept for review."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def add_many(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert rejects (keys: dataset, rule, and optionally partition, field, value, row, detected_at)."""
        now = utcnow()
        values: list[dict[str, Any]] = []
        for r in rows:
            reject_unknown("quarantine", r, _QUARANTINE_FIELDS)
            if not r.get("dataset") or not r.get("rule"):
                raise ValueError(f"quarantine rows need dataset and rule: {dict(r)!r}")
            detected = r.get("detected_at")
            values.append(
                {
                    "dataset": str(r["dataset"]),
                    "partition": None if r.get("partition") is None else str(r["partition"]),
                    "rule": str(r["rule"]),
                    "field": None if r.get("field") is None else str(r["field"]),
                    "value": None if r.get("value") is None else str(r["value"]),
                    "row": jsonable(dict(r.get("row") or {})),
                    "detected_at": as_utc(detected, "detected_at") if detected is not None else now,
                }
            )
        if not values:
            return 0
        with self._store.write_session() as s:
            s.execute(sa.insert(QuarantineRow), values)
        return len(values)

    def list(self, dataset: str | None = None, limit: int = 100, partition: str | None = None) -> list[Record]:
        """Most recent rejects first."""
        stmt = sa.select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit)
        if dataset is not None:
            stmt = stmt.where(QuarantineRow.dataset == dataset)
        if partition is not None:
            stmt = stmt.where(QuarantineRow.partition == partition)
        with self._store.read_session() as s:
            return [to_record(r) for r in s.execute(stmt).scalars()]

    def count(self, dataset: str | None = None, partition: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(QuarantineRow)
        if dataset is not None:
            stmt = stmt.where(QuarantineRow.dataset == dataset)
        if partition is not None:
            stmt = stmt.where(QuarantineRow.partition == partition)
        with self._store.read_session() as s:
            return int(s.execute(stmt).scalar_one())


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
