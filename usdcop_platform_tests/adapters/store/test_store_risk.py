"""store.risk.update: one read-modify-write transaction, so a concurrent writer's update is never lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest

from usdcop_platform.adapters.store import Record, Store

BAR = datetime(2024, 3, 5, 14, 0, tzinfo=timezone.utc)


def test_update_reads_and_returns_what_load_returns(store: Store) -> None:
    seen: list[Record | None] = []

    def bump(cur: Record | None) -> dict[str, Any]:
        seen.append(cur)
        return {"trades_today": (cur.trades_today if cur else 0) + 1, "position": -1}

    first = store.risk.update("k", bump)
    assert seen == [None] and first == store.risk.load("k")
    second = store.risk.update("k", bump)
    assert seen[1] == first and second.trades_today == 2 and second.position == -1
    assert second == store.risk.load("k") and store.risk.load("other") is None


@pytest.mark.parametrize("existing", [True, False], ids=["row", "first-row"])
def test_concurrent_updates_are_not_lost(store: Store, existing: bool) -> None:
    """A (the live bar) holds its transaction while B (the API's trade result) starts: B must
    wait and build on A's write. As load() then save() in two transactions, B's write would be
    overwritten by A's (A computed from the state before B) and this fails."""
    if existing:
        store.risk.save("live", {"consecutive_losses": 2, "position": 0})
    a_inside = threading.Event()

    def full(cur: Record | None) -> dict[str, Any]:  # whole states, as RiskState.to_dict() gives
        return {"consecutive_losses": 0, "position": 0, "last_bar": None, **(cur or {})}

    def live_bar(cur: Record | None) -> dict[str, Any]:
        a_inside.set()
        time.sleep(0.3)  # the bar's work, inside the transaction
        return {**full(cur), "position": 1, "last_bar": BAR.isoformat()}

    def trade_result(cur: Record | None) -> dict[str, Any]:
        return {**full(cur), "consecutive_losses": full(cur)["consecutive_losses"] + 1}

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(store.risk.update, "live", live_bar)
        assert a_inside.wait(10)
        b = pool.submit(store.risk.update, "live", trade_result)
        a.result(30), b.result(30)

    final = store.risk.load("live")
    assert final is not None
    assert final.position == 1 and final.last_bar == BAR.isoformat()  # A's write
    assert final.consecutive_losses == (3 if existing else 1)  # B's write
