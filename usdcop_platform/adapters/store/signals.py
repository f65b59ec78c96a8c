"""Trading signals with per-inference lineage: one row per (bar_time, model_id), written idempotently."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import dialect_insert, reject_unknown, retry_transient, to_record
from usdcop_platform.adapters.store.tables import ACTIONS, RISK_STATUSES, SIGNAL_ROLES, TradingSignal
from usdcop_platform.adapters.store.types import Record, as_date, as_utc, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

REQUIRED = (
    "bar_time",
    "session_date",
    "model_id",
    "role",
    "action",
    "prob_sell",
    "prob_hold",
    "prob_buy",
    "confidence",
    "raw_action",
    "risk_status",
)
OPTIONAL = (
    "model_hash",
    "failing_check",
    "position_recommendation",
    "feature_hash",
    "feature_order_hash",
    "norm_stats_hash",
    "features",
    "latency_ms",
    "created_at",
)
_FLOATS = ("prob_sell", "prob_hold", "prob_buy", "confidence")


def _finite(name: str, value: Any) -> float:
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"signal {name} is {x}; NaN/inf never reaches the signals table")
    return x


def _finite_list(name: str, values: Any) -> list[float]:
    """[_finite(name[i], v) ...], the element's name formatted only for the one that fails."""
    xs = [float(v) for v in values]
    if not all(map(math.isfinite, xs)):
        i = next(i for i, x in enumerate(xs) if not math.isfinite(x))
        _finite(f"{name}[{i}]", xs[i])
    return xs


def normalize_signal(signal: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a signal dict and coerce it to column values (ValueError names the bad field)."""
    reject_unknown("signal", signal, REQUIRED + OPTIONAL)
    missing = [k for k in REQUIRED if signal.get(k) is None]
    if missing:
        raise ValueError(f"signal is missing {', '.join(missing)}")
    row: dict[str, Any] = {k: signal[k] for k in OPTIONAL if signal.get(k) is not None}
    row["bar_time"] = as_utc(signal["bar_time"], "bar_time")
    row["session_date"] = as_date(signal["session_date"], "session_date")
    row["model_id"] = str(signal["model_id"])
    for key, allowed in (("role", SIGNAL_ROLES), ("risk_status", RISK_STATUSES)):
        if signal[key] not in allowed:
            raise ValueError(f"signal {key} must be one of {', '.join(allowed)}, not {signal[key]!r}")
        row[key] = signal[key]
    for key in ("action", "raw_action"):
        value = int(signal[key])
        if value not in ACTIONS:
            raise ValueError(f"signal {key} must be 0 (SELL), 1 (HOLD) or 2 (BUY), not {signal[key]!r}")
        row[key] = value
    for key in _FLOATS:
        row[key] = _finite(key, signal[key])
    if "position_recommendation" in row:
        row["position_recommendation"] = _finite("position_recommendation", row["position_recommendation"])
    if "latency_ms" in row:
        row["latency_ms"] = float(row["latency_ms"])
    row["features"] = _finite_list("features", signal.get("features") or [])
    row["created_at"] = as_utc(row["created_at"], "created_at") if "created_at" in row else utcnow()
    return row


class SignalRepository:
    """`store.signals`."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def upsert(self, signal: Mapping[str, Any]) -> Record:
        """Write a signal once per (bar_time, model_id) and return the stored row.

        INSERT ... ON CONFLICT DO NOTHING: re-running a bar keeps the first signal (the one that
        was acted on) and never duplicates. A dropped connection or busy database is retried
        with backoff; if a failed attempt had committed, the retry is a no-op.
        """
        row = normalize_signal(signal)
        t = self._store.tuning

        def attempt() -> Record:
            with self._store.write_session() as s:
                s.execute(
                    dialect_insert(s, TradingSignal)
                    .values(**row)
                    .on_conflict_do_nothing(index_elements=["bar_time", "model_id"])
                )
                stored = s.execute(
                    sa.select(TradingSignal).where(
                        TradingSignal.bar_time == row["bar_time"], TradingSignal.model_id == row["model_id"]
                    )
                ).scalar_one()
                return to_record(stored)

        return retry_transient(attempt, t.write_retry_attempts, t.write_retry_base_delay_s, t.write_retry_max_delay_s)

    def list(
        self,
        session_date: date | str | None = None,
        model_id: str | None = None,
        role: str | None = None,
        *,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """Signals in bar order; with `limit`, the most recent `limit` of them (still in bar order)."""
        stmt = sa.select(TradingSignal)
        if session_date is not None:
            stmt = stmt.where(TradingSignal.session_date == as_date(session_date, "session_date"))
        if model_id is not None:
            stmt = stmt.where(TradingSignal.model_id == model_id)
        if role is not None:
            stmt = stmt.where(TradingSignal.role == role)
        if since is not None:
            stmt = stmt.where(TradingSignal.bar_time >= as_utc(since, "since"))
        stmt = stmt.order_by(TradingSignal.bar_time.desc(), TradingSignal.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._store.read_session() as s:
            rows = [to_record(r) for r in s.execute(stmt).scalars()]
        rows.reverse()
        return rows

    def latest(self, model_id: str | None = None, role: str | None = None) -> Record | None:
        rows = self.list(model_id=model_id, role=role, limit=1)
        return rows[0] if rows else None

    def count(self, session_date: date | str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(TradingSignal)
        if session_date is not None:
            stmt = stmt.where(TradingSignal.session_date == as_date(session_date, "session_date"))
        with self._store.read_session() as s:
            return int(s.execute(stmt).scalar_one())
