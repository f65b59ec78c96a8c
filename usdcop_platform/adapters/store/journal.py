"""`store.journal`: the live journal, one append-only row per live state and bar.

Only the live bar's transaction writes it (adapters/store/live.py, in the same statement as the
signals on PostgreSQL); database triggers refuse UPDATE and DELETE, so a journal is what the live
path saw when it traded the bar, and a retried bar keeps the first write.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from usdcop_platform.adapters.store.tables import LiveJournalRow
from usdcop_platform.adapters.store.types import Record, as_utc

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store


class JournalRepository:
    """`store.journal`: load(risk_key, bar_time) and bars(risk_key) (reads only)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def load(self, risk_key: str, bar_time: datetime) -> Record | None:
        """The journal the live path wrote for `bar_time` under the live state `risk_key`, or None."""
        stmt = sa.select(LiveJournalRow.journal).where(
            LiveJournalRow.risk_key == risk_key, LiveJournalRow.bar_time == as_utc(bar_time, "bar_time"))
        with self._store.read_session() as s:
            doc = s.execute(stmt).scalar_one_or_none()
        return None if doc is None else Record(doc)

    def bars(self, risk_key: str) -> list[datetime]:
        """The bar times journaled under `risk_key`, oldest first."""
        stmt = (sa.select(LiveJournalRow.bar_time).where(LiveJournalRow.risk_key == risk_key)
                .order_by(LiveJournalRow.bar_time))
        with self._store.read_session() as s:
            return list(s.execute(stmt).scalars())
