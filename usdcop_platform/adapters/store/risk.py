"""Risk-manager state (PnL, trades, breaker, cooldown) that survives restarts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from usdcop_platform.adapters.store._sql import dialect_insert, retry_transient
from usdcop_platform.adapters.store.tables import RiskState
from usdcop_platform.adapters.store.types import Record, as_date, as_utc, utcnow

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

COLUMNS = (
    "trading_date",
    "equity",
    "peak_equity",
    "daily_pnl_pct",
    "drawdown_pct",
    "trades_today",
    "consecutive_losses",
    "breaker_active",
    "breaker_reason",
    "cooldown_until",
)
_IGNORED = ("key", "updated_at", "extra")


def _columns(state: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in COLUMNS:
        if key not in state:
            continue
        value = state[key]
        if key == "trading_date":
            value = as_date(value, "trading_date")
        elif key == "cooldown_until" and value is not None:
            # RiskState.to_dict() gives ISO text (the live bar writes it): parse, never crash on it.
            value = as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value, "cooldown_until")
        elif key in ("trades_today", "consecutive_losses"):
            value = int(value)
        elif key == "breaker_active":
            value = bool(value)
        elif key in ("equity", "peak_equity", "daily_pnl_pct", "drawdown_pct") and value is not None:
            value = float(value)
        values[key] = value
    # Keys without a column (e.g. the open position) round-trip through the `extra` JSON column
    # (made JSON-safe by the column's serializer, types.json_serializer).
    values["extra"] = {k: v for k, v in state.items() if k not in COLUMNS and k not in _IGNORED}
    return values


def state_record(row: Mapping[str, Any]) -> Record:
    """What load() returns, from a risk_state row's values: key, updated_at, the columns, and
    the keys kept in `extra` (the inverse of _columns)."""
    return Record({"key": row["key"], "updated_at": row["updated_at"], **{c: row[c] for c in COLUMNS},
                   **(row["extra"] or {})})


def _record(row: RiskState) -> Record:
    return state_record({c: getattr(row, c) for c in ("key", "updated_at", "extra", *COLUMNS)})


def _locked_row(s: Session, key: str) -> RiskState | None:
    """The row under `key`, row-locked until commit (PostgreSQL FOR UPDATE; SQLite already holds
    the write lock since BEGIN IMMEDIATE, and SQLAlchemy leaves FOR UPDATE out there)."""
    stmt = sa.select(RiskState).where(RiskState.key == key).with_for_update()
    return s.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()


class RiskStateRepository:
    """`store.risk`: load() -> dict | None, save(key, state) (an upsert), update(key, fn) (atomic)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def load(self, key: str = "default") -> Record | None:
        with self._store.read_session() as s:
            row = s.get(RiskState, key)
            return None if row is None else _record(row)

    def save(self, key: str, state: Mapping[str, Any]) -> Record:
        """Insert or replace the state stored under `key`; returns what load() will return."""
        values = _columns(state)
        values["updated_at"] = utcnow()
        t = self._store.tuning

        def attempt() -> None:
            with self._store.write_session() as s:
                stmt = dialect_insert(s, RiskState).values(key=key, **values)
                s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=values))

        retry_transient(attempt, t.write_retry_attempts, t.write_retry_base_delay_s, t.write_retry_max_delay_s)
        loaded = self.load(key)
        assert loaded is not None
        return loaded

    def update(self, key: str, fn: Callable[[Record | None], Mapping[str, Any]]) -> Record:
        """Atomic read-modify-write: store fn(current) under `key`, where current is what load()
        returns (None without a row), read and written in ONE transaction holding the row lock.

        A separate load() then save() would overwrite whatever another process (the live bar)
        commits in between. `fn` must be pure: it runs again when the transaction is retried.
        Returns the stored state (what load() returns afterwards).
        """
        t = self._store.tuning

        def attempt() -> Record:
            with self._store.write_session() as s:
                while True:
                    row = _locked_row(s, key)
                    values = _columns(fn(None if row is None else _record(row)))
                    values["updated_at"] = utcnow()
                    stmt = dialect_insert(s, RiskState).values(key=key, **values)
                    if row is not None:
                        s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=values))
                        break
                    # No row to lock: a concurrent first insert must not be overwritten, so insert
                    # only if still absent, else read the now-existing row under its lock again.
                    if s.execute(stmt.on_conflict_do_nothing(index_elements=["key"])).rowcount == 1:
                        break
                stored = _locked_row(s, key)
                assert stored is not None
                return _record(stored)

        return retry_transient(attempt, t.write_retry_attempts, t.write_retry_base_delay_s, t.write_retry_max_delay_s)
