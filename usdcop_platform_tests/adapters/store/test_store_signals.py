"""Trading signals: idempotent per (bar_time, model_id), retried on transient errors, exactly once."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg2
import pytest
from sqlalchemy import event

from usdcop_platform.adapters.store import DatabaseUnavailable, Store, StoreTuning

BAR = datetime(2024, 3, 4, 13, 5, tzinfo=timezone.utc)  # 08:05 Bogota


def signal(**overrides: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(
        bar_time=BAR, session_date=date(2024, 3, 4), model_id="m-1", role="production", model_hash="a" * 64,
        action=2, prob_sell=0.1, prob_hold=0.2, prob_buy=0.7, confidence=0.7, raw_action=2,
        risk_status="APPROVED", position_recommendation=0.0875, feature_hash="f" * 64,
        feature_order_hash="o" * 64, norm_stats_hash="n" * 64, features=[0.01 * i for i in range(15)],
        latency_ms=3.2,
    )
    s.update(overrides)
    return s


def test_upsert_is_idempotent(store: Store) -> None:
    first = store.signals.upsert(signal())
    again = store.signals.upsert(signal(action=1, raw_action=1, risk_status="REJECTED", failing_check="confidence"))
    assert again == first  # the first signal (the one acted on) is kept; no duplicate
    assert store.signals.count() == 1
    assert first.bar_time == BAR and first.bar_time.tzinfo is not None
    assert first.features == pytest.approx([0.01 * i for i in range(15)])
    store.signals.upsert(signal(model_id="m-2", role="shadow"))
    store.signals.upsert(signal(bar_time=BAR + timedelta(minutes=5)))
    assert store.signals.count(session_date="2024-03-04") == 3
    assert [s.role for s in store.signals.list(model_id="m-1")] == ["production", "production"]
    assert [s.model_id for s in store.signals.list(role="shadow")] == ["m-2"]
    assert store.signals.latest(model_id="m-1").bar_time == BAR + timedelta(minutes=5)
    assert store.signals.list(session_date=date(2024, 3, 5)) == []
    assert len(store.signals.list(limit=2)) == 2


def test_bad_signals_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.signals.upsert(signal(bar_time=datetime(2024, 3, 4, 8, 5)))
    with pytest.raises(ValueError, match="NaN"):
        store.signals.upsert(signal(features=[float("nan")] * 15))
    with pytest.raises(ValueError, match=r"signal features\[3\] is inf; NaN/inf"):
        store.signals.upsert(signal(features=[0.5, 1, 2.0, float("inf"), float("nan")]))
    with pytest.raises(ValueError, match="0 \\(SELL\\)"):
        store.signals.upsert(signal(action=3))
    with pytest.raises(ValueError, match="unknown signal field"):
        store.signals.upsert(signal(colour="red"))
    with pytest.raises(ValueError, match="missing"):
        store.signals.upsert({k: v for k, v in signal().items() if k != "confidence"})
    assert store.signals.count() == 0


def test_offset_instants_are_stored_as_utc(store: Store) -> None:
    bogota = timezone(timedelta(hours=-5))
    row = store.signals.upsert(signal(bar_time=datetime(2024, 3, 4, 8, 5, tzinfo=bogota)))
    assert row.bar_time == BAR and row.bar_time.utcoffset() == timedelta(0)


def _driver_error(store: Store) -> Exception:
    if store.dialect == "sqlite":
        return sqlite3.OperationalError("disk I/O error")
    return psycopg2.OperationalError("server closed the connection unexpectedly")


def test_a_write_that_committed_before_the_connection_dropped_lands_once(store: Store) -> None:
    """The first attempt commits and then 'loses' the connection: the retry must not duplicate."""
    state = {"faults": 0}

    @event.listens_for(store.engine, "do_execute")
    def commit_then_drop(cursor, statement, parameters, context):  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO TRADING_SIGNALS") and state["faults"] == 0:
            state["faults"] += 1
            cursor.execute(statement, parameters)
            cursor.connection.commit()
            raise _driver_error(store)
        return None

    try:
        row = store.signals.upsert(signal())
    finally:
        event.remove(store.engine, "do_execute", commit_then_drop)
    assert state["faults"] == 1
    assert store.signals.count() == 1 and row.model_id == "m-1"


def test_persistent_failure_surfaces_after_bounded_retries(db_url: str) -> None:
    store = Store(db_url, StoreTuning(write_retry_attempts=2, write_retry_base_delay_s=0.001))
    store.upgrade()
    calls = {"n": 0}

    @event.listens_for(store.engine, "do_execute")
    def always_drop(cursor, statement, parameters, context):  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO TRADING_SIGNALS"):
            calls["n"] += 1
            raise _driver_error(store)
        return None

    try:
        with pytest.raises(DatabaseUnavailable):
            store.signals.upsert(signal())
        assert calls["n"] == 3  # first try + 2 retries
    finally:
        event.remove(store.engine, "do_execute", always_drop)
        store.dispose()
