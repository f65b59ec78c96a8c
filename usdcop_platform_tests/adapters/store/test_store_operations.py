"""Risk state, backtest requests, quarantine and the alert outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from usdcop_platform.adapters.store import NotFoundError, Record, Store


def test_risk_state_round_trips_and_survives_a_new_store(store: Store, db_url: str) -> None:
    assert store.risk.load() is None
    cooldown = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)
    state = dict(trading_date=date(2024, 3, 4), equity=99_000.0, peak_equity=100_000.0, daily_pnl_pct=-1.0,
                 drawdown_pct=-1.0, trades_today=np.int64(4), consecutive_losses=2, breaker_active=False,
                 breaker_reason=None, cooldown_until=cooldown, position=-1)
    saved = store.risk.save("default", state)
    assert saved.position == -1 and saved.trades_today == 4 and saved.cooldown_until == cooldown
    store.risk.save("default", {**state, "breaker_active": True, "breaker_reason": "daily loss -2.1%"})

    fresh = Store(db_url)  # a restart: state comes back from the database
    try:
        loaded = fresh.risk.load("default")
    finally:
        fresh.dispose()
    assert loaded.breaker_active is True and loaded.breaker_reason == "daily loss -2.1%"
    assert loaded.trading_date == date(2024, 3, 4) and loaded.equity == 99_000.0 and loaded.position == -1
    assert store.risk.load("other") is None


def test_backtest_requests(store: Store, make_model: Callable[..., Record]) -> None:
    m = make_model()
    req = store.backtest_requests.create(m.model_id, "2023-01-02", "2023-06-30", requested_by="ana")
    assert req.status == "PENDING"
    launched = store.backtest_requests.update_status(req.id, "LAUNCHED", dagster_run_id="run-123")
    assert (launched.status, launched.dagster_run_id) == ("LAUNCHED", "run-123")
    store.backtest_requests.update_status(req.id, "FAILED", error="no bars")
    assert store.backtest_requests.list(status="FAILED")[0].error == "no bars"
    with pytest.raises(ValueError):
        store.backtest_requests.update_status(req.id, "RUNNING")
    with pytest.raises(ValueError):
        store.backtest_requests.create(m.model_id, "2023-06-30", "2023-01-02", requested_by="ana")
    with pytest.raises(NotFoundError):
        store.backtest_requests.create("ghost", "2023-01-02", "2023-01-03", requested_by="ana")
    with pytest.raises(NotFoundError):
        store.backtest_requests.update_status(10_000, "DONE")


def test_alert_outbox(store: Store) -> None:
    a = store.alerts.add("drift", "warning", "drift share 0.27 > 0.15", {"share": 0.27})
    b = store.alerts.add("breaker", "critical", "circuit breaker tripped")
    assert [x.id for x in store.alerts.pending()] == [a.id, b.id]
    failed = store.alerts.mark_failed(a.id, "webhook 503")
    assert failed.attempts == 1 and failed.last_error == "webhook 503" and not failed.delivered
    done = store.alerts.mark_delivered(a.id)
    assert done.delivered and done.attempts == 2
    assert [x.id for x in store.alerts.pending()] == [b.id]
    store.alerts.mark_failed(b.id, "timeout")
    assert store.alerts.pending(max_attempts=1) == []
    assert [x.kind for x in store.alerts.list()] == ["breaker", "drift"]
    with pytest.raises(NotFoundError):
        store.alerts.mark_delivered(10_000)


def test_records_are_detached_read_only_dicts(store: Store) -> None:
    row = store.alerts.add("x", "info", "m")
    assert isinstance(row, dict) and row.kind == row["kind"] == "x"
    with pytest.raises(TypeError):
        row.update(kind="y")
    with pytest.raises(AttributeError):
        row.missing  # noqa: B018
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(row)) == row and copy.deepcopy(row) == row
    assert dict(row)["kind"] == "x"
    assert row.created_at - datetime.now(timezone.utc) < timedelta(minutes=1)
