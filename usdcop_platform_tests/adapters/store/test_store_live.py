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

from usdcop_platform.adapters.store import Store, StoreTuning
from usdcop_platform.adapters.store.errors import DatabaseUnavailable
from usdcop_platform.adapters.store import live as live_sql
from usdcop_platform.adapters.store.engine import wal_checkpointer
from usdcop_platform.bench.live import COMMIT, DriverTap
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


def test_a_bar_costs_one_read_and_one_write_on_postgres(store):
    """Counted where the statements leave: at the driver on PostgreSQL (the bar's statements run
    on the DBAPI cursor), through SQLAlchemy's events on SQLite."""
    _write(store, T0)  # the first bar also stores the initial state
    sent: list[tuple[int, str, Any]] = []
    driver = DriverTap(store.url, lambda *one: sent.append(one)) if store.dialect == "postgresql" else None
    if driver is not None:
        driver.install()
        store.dispose()  # the next connections are opened through the capture
    try:
        with store.transaction() as conn:
            mine = id(conn.connection.dbapi_connection)  # the bar's connection (the test reads beside it)
            if driver is None:
                event.listen(conn, "before_cursor_execute", lambda *a: sent.append((mine, a[2], a[3])))
            sent.clear()  # what connecting sent is not the bar's
            opened = live_sql.open_bar(conn, "live", INITIAL)
            assert _words(sent, mine) == ["SELECT"], "the locked state and the registry version come in one statement"
            assert opened.registry_version == store.registry_version()
            assert opened.state["last_bar"] == T0.isoformat()
            t1 = T0 + timedelta(minutes=5)
            rows = live_sql.write_bar(conn, "live", t1, _journal(dict(opened.state), t1),
                                      [_signal(t1, m) for m in ("a", "b", "c")], _state(t1),
                                      opened.state.get("last_bar"))
            if store.dialect == "postgresql":  # journal, state and signals in one statement: one round trip
                assert _words(sent, mine) == ["SELECT", "WITH"]
            else:  # one statement per table (in-process): journal, state, the 3 signals in one insert
                assert _words(sent, mine) == ["SELECT", "INSERT", "INSERT", "INSERT"]
        if driver is not None:
            assert _words(sent, mine) == ["SELECT", "WITH", COMMIT], "then the commit: 3 round trips in all"
    finally:
        if driver is not None:
            driver.remove()
    assert [r["model_id"] for r in rows] == ["a", "b", "c"]
    assert store.risk.load("live")["last_bar"] == t1.isoformat()


def _words(sent: list[tuple[int, str, Any]], connection: int) -> list[str]:
    return [s if s is COMMIT else s.split()[0].upper() for c, s, _ in sent if c == connection]


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


def test_work_runs_while_the_locked_read_is_on_the_server(store):
    """read_state_while: on PostgreSQL each piece of work runs while a command of the read is
    out (psycopg2 says the connection is executing), the first during psycopg2's own BEGIN when
    no transaction was open; the wait callback is put back; SQLite runs the work after the read."""
    _write(store, T0)
    seen: list[tuple[str, bool]] = []
    with store.transaction() as conn:
        dbapi = conn.connection.dbapi_connection

        def piece(name: str):
            return lambda: seen.append((name, _on_the_server(dbapi) if store.dialect == "postgresql" else False))

        rows = live_sql.read_state_while(conn, "live", piece("screen"), piece("infer"))
        opened = live_sql.opened(conn, rows, "live", INITIAL)
    assert opened.state["last_bar"] == T0.isoformat()
    if store.dialect == "postgresql":
        import psycopg2.extensions as pe

        assert seen == [("screen", True), ("infer", True)] and pe.get_wait_callback() is None
    else:
        assert seen == [("screen", False), ("infer", False)]


def test_an_error_of_the_work_is_raised_after_the_read_and_the_connection_stays_usable(store):
    _write(store, T0)

    def broken() -> None:
        raise RuntimeError("the screen failed")

    with pytest.raises(RuntimeError, match="the screen failed"):
        with store.transaction() as conn:
            live_sql.read_state_while(conn, "live", broken)
    with store.transaction() as conn:  # the pool's connection answers the next bar
        t1 = T0 + timedelta(minutes=5)
        opened = live_sql.open_bar(conn, "live", INITIAL)
        live_sql.write_bar(conn, "live", t1, _journal(dict(opened.state), t1), [_signal(t1, "m1")], _state(t1),
                           opened.state.get("last_bar"))
    assert store.risk.load("live")["last_bar"] == t1.isoformat()


def _on_the_server(dbapi: Any) -> bool:
    """libpq's view: a command of this connection is in progress (sent, its answer not yet read)."""
    import psycopg2.extensions as pe

    return dbapi.info.transaction_status == pe.TRANSACTION_STATUS_ACTIVE


def _dbapi_of(store: Store) -> Any:
    with store.transaction() as conn:
        return conn.connection.dbapi_connection


def _connection_of(store: Store) -> sa.Connection:
    with store.transaction() as conn:
        return conn


def test_a_thread_keeps_its_connection_between_bars(store):
    """No pool checkout per bar: the same DBAPI connection answers consecutive transactions of a
    thread; another thread gets its own; dispose() closes them."""
    first = _dbapi_of(store)
    assert _dbapi_of(store) is first and _connection_of(store) is _connection_of(store)
    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(_dbapi_of(store)))
    t.start()
    t.join()
    assert other[0] is not first
    store.dispose()
    assert _dbapi_of(store) is not first


def test_a_failed_transaction_gives_its_connection_back(store):
    """Whatever failed (here the server ends the session), the next bar opens a fresh connection
    and writes; a transaction that raised never leaves its connection to the next one."""
    _write(store, T0)
    kept, first = _connection_of(store), _dbapi_of(store)
    if store.dialect == "postgresql":
        with pytest.raises(DatabaseUnavailable):
            with store.transaction() as conn:
                live_sql.open_bar(conn, "live", INITIAL)
                with store.engine.connect() as admin:  # another session ends this one, as a restart would
                    admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first.info.backend_pid})
                live_sql.read_state(conn, "live")
    else:
        with pytest.raises(RuntimeError):
            with store.transaction():
                raise RuntimeError("the bar failed")
    assert _connection_of(store) is not kept
    if store.dialect == "postgresql":  # the pool dropped the dead one (SQLite's pool hands the same file handle back)
        assert _dbapi_of(store) is not first
    t1 = T0 + timedelta(minutes=5)
    _write(store, t1)
    assert store.risk.load("live")["last_bar"] == t1.isoformat()


def test_the_kept_connection_is_handed_back_after_the_recycle_age(db_url):
    store = Store(db_url, StoreTuning(pool_recycle_s=0))
    store.upgrade()
    try:
        first = _dbapi_of(store)
        time.sleep(0.01)
        assert _dbapi_of(store) is not first or store.dialect == "sqlite"  # SQLite's pool does not recycle
    finally:
        store.dispose()


def test_a_transaction_inside_another_on_one_thread_is_refused(store):
    from usdcop_platform.adapters.store.errors import StoreError

    with store.transaction() as conn:
        with pytest.raises(StoreError, match="not re-entrant"):
            with store.transaction():
                pass
        live_sql.open_bar(conn, "live", INITIAL)  # the outer transaction goes on
    _write(store, T0)
