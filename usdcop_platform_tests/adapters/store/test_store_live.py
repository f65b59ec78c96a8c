"""The live path's bar transaction (adapters/store/live.py) on SQLite and PostgreSQL: how many
statements a bar costs, the row lock even on the very first bar, idempotent writes, a state that
never rewinds, the append-only journal written once per bar; and the SQLite WAL checkpoints kept
off the committing thread."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from usdcop_platform.adapters.store import Store
from usdcop_platform.adapters.store import live as live_sql
from usdcop_platform.adapters.store.engine import wal_checkpointer
from usdcop_platform.core.risk import RiskState

T0 = datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc)
INITIAL = RiskState().to_dict()


def _signal(bar_time: datetime, model_id: str, action: int = 1) -> dict[str, Any]:
    return {"bar_time": bar_time, "session_date": date(2024, 3, 5), "model_id": model_id, "role": "production",
            "action": action, "prob_sell": 0.2, "prob_hold": 0.5, "prob_buy": 0.3, "confidence": 0.5,
            "raw_action": action, "risk_status": "APPROVED", "features": [0.1] * 15, "latency_ms": 1.0}


def _state(bar_time: datetime, **kw: Any) -> dict[str, Any]:
    return RiskState(last_bar=bar_time, trading_date=date(2024, 3, 5), **kw).to_dict()


def _journal(before: dict[str, Any], bar_time: datetime) -> dict[str, Any]:
    """Like the live cycle's: the state coming into the bar plus what replay needs."""
    return {**before, "bar": {"time": bar_time.isoformat()}, "feature_inputs": {"session_bars": []}}


def _write(store: Store, bar_time: datetime, models: tuple[str, ...] = ("m1", "m2", "m3"), **state: Any) -> list[Any]:
    with store.transaction() as conn:
        opened = live_sql.open_bar(conn, "live", INITIAL)
        return live_sql.write_bar(conn, "live", bar_time, _journal(dict(opened.state), bar_time),
                                  [_signal(bar_time, m) for m in models], _state(bar_time, **state),
                                  opened.state.get("last_bar"))


def _count_statements(conn: Any) -> list[str]:
    seen: list[str] = []
    event.listen(conn, "before_cursor_execute", lambda *a: seen.append(a[2].split()[0].upper()))
    return seen


def test_a_bar_costs_one_read_and_one_write_on_postgres(store):
    _write(store, T0)  # the first bar also stores the initial state
    with store.transaction() as conn:
        seen = _count_statements(conn)
        opened = live_sql.open_bar(conn, "live", INITIAL)
        assert seen == ["SELECT"], "the locked state and the registry version come in one statement"
        assert opened.registry_version == store.registry_version()
        assert opened.state["last_bar"] == T0.isoformat()
        t1 = T0 + timedelta(minutes=5)
        rows = live_sql.write_bar(conn, "live", t1, _journal(dict(opened.state), t1),
                                  [_signal(t1, m) for m in ("a", "b", "c")], _state(t1),
                                  opened.state.get("last_bar"))
        if store.dialect == "postgresql":  # journal, state and signals in one statement: one round trip
            assert seen == ["SELECT", "WITH"]
        else:  # one statement per table (in-process): journal, state, the 3 signals in one insert
            assert seen == ["SELECT", "INSERT", "INSERT", "INSERT"]
    assert [r["model_id"] for r in rows] == ["a", "b", "c"]
    assert store.risk.load("live")["last_bar"] == t1.isoformat()


def test_the_first_bar_stores_the_initial_state_and_holds_its_lock(store):
    with store.transaction() as conn:
        opened = live_sql.open_bar(conn, "live", INITIAL)
        assert RiskState.from_dict(opened.state) == RiskState(updated_at=RiskState.from_dict(opened.state).updated_at)
    # a second writer that starts while the first holds the (new) row waits for it, then sees its state
    started = threading.Event()
    seen: dict[str, Any] = {}

    def first() -> None:
        with store.transaction() as conn:
            opened = live_sql.open_bar(conn, "k", INITIAL)
            started.set()
            time.sleep(0.4)
            live_sql.write_bar(conn, "k", T0, _journal(dict(opened.state), T0), [_signal(T0, "m")],
                               _state(T0, trades_today=3), opened.state.get("last_bar"))

    def second() -> None:
        started.wait(5)
        with store.transaction() as conn:
            seen.update(live_sql.open_bar(conn, "k", INITIAL).state)

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start(), b.start()
    a.join(10), b.join(10)
    assert seen["trades_today"] == 3 and seen["last_bar"] == T0.isoformat(), "the second writer ran under the lock"


def test_writes_are_idempotent_and_the_state_never_rewinds(store):
    first = _write(store, T0, trades_today=1)
    again = _write(store, T0, trades_today=99)  # a re-run of the same bar
    assert [r["id"] for r in again] == [r["id"] for r in first], "the first write wins, nothing duplicated"
    assert store.signals.count(date(2024, 3, 5)) == 3
    t1 = T0 + timedelta(minutes=5)
    _write(store, t1, trades_today=2)
    late = T0 - timedelta(minutes=5)
    _write(store, late, ("late",), trades_today=7)  # an older bar committed late
    live = store.risk.load("live")
    assert live["last_bar"] == t1.isoformat() and live["trades_today"] == 2
    assert store.journal.load("live", late) is not None, "its journal and signal are still written"
    assert store.journal.bars("live") == [late, T0, t1]
    assert store.signals.count(date(2024, 3, 5)) == 7


def test_the_journal_is_written_once_per_bar_under_retry(store):
    """A retried bar (a run re-run after a lost ack) keeps the first journal; the live state holds
    the live state only: no journal row in risk_state."""
    _write(store, T0, trades_today=1)
    first = store.journal.load("live", T0)
    with store.transaction() as conn:  # the same bar again, with a different document
        opened = live_sql.open_bar(conn, "live", INITIAL)
        live_sql.write_bar(conn, "live", T0, {"note": "second attempt"}, [_signal(T0, "m1")],
                           _state(T0, trades_today=99), opened.state.get("last_bar"))
    assert store.journal.load("live", T0) == first and "note" not in first
    assert first["bar"] == {"time": T0.isoformat()} and first["last_bar"] is None
    assert store.journal.bars("live") == [T0]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM live_journal")).scalar() == 1
        assert conn.execute(sa.text("SELECT key FROM risk_state")).scalars().all() == ["live"]
    assert store.journal.load("live", T0 + timedelta(minutes=5)) is None
    assert store.journal.load("other", T0) is None


def test_journal_rows_cannot_be_updated_or_deleted(store):
    _write(store, T0)
    for stmt in ("UPDATE live_journal SET risk_key = 'other'", "DELETE FROM live_journal"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text(stmt))
    if store.dialect == "postgresql":
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE live_journal"))
    assert store.journal.bars("live") == [T0]


def test_a_bar_without_signals_is_refused(store):
    with pytest.raises(ValueError, match="signals"):
        with store.transaction() as conn:
            opened = live_sql.open_bar(conn, "live", INITIAL)
            live_sql.write_bar(conn, "live", T0, {}, [], _state(T0), opened.state.get("last_bar"))


def test_bad_signal_names_the_field_and_writes_nothing(store):
    bad = _signal(T0, "m") | {"prob_buy": float("nan")}
    with pytest.raises(ValueError, match="prob_buy"):
        with store.transaction() as conn:
            opened = live_sql.open_bar(conn, "live", INITIAL)
            live_sql.write_bar(conn, "live", T0, {}, [bad], _state(T0), opened.state.get("last_bar"))
    assert store.risk.load("live") is None and store.signals.count() == 0 and store.journal.bars("live") == []


def test_sqlite_checkpoints_run_in_the_background(tmp_path):
    from usdcop_platform.adapters.store import StoreTuning

    store = Store(f"sqlite:///{(tmp_path / 'wal.db').as_posix()}", StoreTuning(sqlite_checkpoint_min_interval_s=0.05))
    store.upgrade()
    try:
        ckpt = wal_checkpointer(store.engine)
        assert ckpt is not None
        with store.engine.connect() as conn:
            # the committing connections leave checkpoints to the thread (a high backstop remains)
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == store.tuning.sqlite_wal_autocheckpoint_pages
        for i in range(5):
            _write(store, T0 + timedelta(minutes=5 * i))
        deadline = time.monotonic() + 5
        while ckpt.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ckpt.checkpoints >= 1 and ckpt.running
    finally:
        store.dispose()
    assert not ckpt.running, "disposing the store stops its checkpointer"


def test_postgres_and_memory_sqlite_have_no_checkpointer(tmp_path):
    memory = Store("sqlite://")
    assert wal_checkpointer(memory.engine) is None
    memory.dispose()


@pytest.mark.parametrize("zone", ["UTC", "America/Bogota"])
def test_a_bar_reads_and_returns_what_the_repositories_read(store, zone):
    """The bar's statements go to PostgreSQL through the driver (DriverStatement: no SQLAlchemy
    type processing per bar): what they return must be what SQLAlchemy's path reads, value and
    type, instants in UTC whatever the session's time zone."""
    extra = {"cooldown_until": T0 + timedelta(minutes=30), "breaker_reason": "x", "custom": {"a": [1, 2.5]}}
    _write(store, T0, trades_today=1, **{k: v for k, v in extra.items() if k != "custom"})
    store.risk.save("live", {**store.risk.load("live"), "custom": extra["custom"]})
    before = store.risk.load("live")
    t1 = T0 + timedelta(minutes=5)
    with store.transaction() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL TIME ZONE '{zone}'")
        opened = live_sql.open_bar(conn, "live", INITIAL)
        rows = live_sql.write_bar(conn, "live", t1, _journal(dict(opened.state), t1),
                                  [_signal(t1, m) for m in ("a", "b")], _state(t1, trades_today=2),
                                  opened.state.get("last_bar"))
    assert dict(opened.state) == dict(before) and before["cooldown_until"] == extra["cooldown_until"]
    assert opened.state["custom"] == extra["custom"] and opened.state["updated_at"].tzinfo == timezone.utc
    with store.transaction() as conn:
        stored = live_sql.stored_signals(conn, t1)
    assert [dict(r) for r in rows] == [dict(r) for r in stored]
    for r in rows:
        assert r["bar_time"] == t1 and r["bar_time"].utcoffset() == timedelta(0) and r["created_at"].tzinfo
        assert r["features"] == [0.1] * 15 and r["session_date"] == date(2024, 3, 5)
    journal = store.journal.load("live", t1)
    assert journal["bar"] == {"time": t1.isoformat()} and journal["trades_today"] == 1
