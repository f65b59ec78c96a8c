"""Risk-manager state (PnL, trades, breaker, cooldown) that survives restarts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from usdcop_platform.adapters.store._sql import dialect_insert, retry_transient
from usdcop_platform.adapters.store.tables import RiskState
from usdcop_platform.adapters.store.types import Record, as_date, as_utc, jsonable, utcnow

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
            value = as_utc(value, "cooldown_until")
        elif key in ("trades_today", "consecutive_losses"):
            value = int(value)
        elif key == "breaker_active":
            value = bool(value)
        elif key in ("equity", "peak_equity", "daily_pnl_pct", "drawdown_pct") and value is not None:
            value = float(value)
        values[key] = value
    # Keys without a column (e.g. the open position) round-trip through the `extra` JSON column.
    values["extra"] = jsonable({k: v for k, v in state.items() if k not in COLUMNS and k not in _IGNORED})
    return values


class RiskStateRepository:
    """`store.risk`: load() -> dict | None, save(key, state) (an upsert)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def load(self, key: str = "default") -> Record | None:
        with self._store.read_session() as s:
            row = s.get(RiskState, key)
            if row is None:
                return None
            data = {c: getattr(row, c) for c in COLUMNS}
            data.update(row.extra or {})
            return Record(key=row.key, updated_at=row.updated_at, **data)

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
