"""Engine construction and error translation for SQLite and PostgreSQL.

SQLite: WAL journal (readers never block the writer), a busy timeout, foreign keys on, and
transaction control taken over from the sqlite3 driver so that write transactions start with
BEGIN IMMEDIATE. Writers then queue for the write lock at BEGIN, instead of failing with
"database is locked" when a read transaction tries to upgrade to a write in the middle.
WAL checkpoints (copying the log back into the database file, with an fsync) run in a
background thread after commits instead of inside whichever commit crosses SQLite's
auto-checkpoint threshold: a live bar's commit never pays for one (it was the live cycle's p99).
A high auto-checkpoint threshold stays as a backstop should the thread fall behind.

PostgreSQL: a bounded pool with pre-ping (connections dropped by a restart are replaced
transparently) and a connect timeout, so a dead host fails fast with one clear line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

from usdcop_platform.adapters.store.errors import DatabaseBusy, DatabaseUnavailable, StoreError
from usdcop_platform.adapters.store.types import json_serializer

log = logging.getLogger(__name__)

# Execution option read by the SQLite `begin` hook: "IMMEDIATE" for write transactions.
SQLITE_BEGIN_OPTION = "usdcop_sqlite_begin"


@dataclass(frozen=True)
class StoreTuning:
    """Connection and retry settings of the store (infrastructure, not domain parameters)."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 30.0
    pool_recycle_s: int = 1800
    connect_timeout_s: int = 5
    sqlite_busy_timeout_ms: int = 30_000
    sqlite_background_checkpoint: bool = True
    sqlite_checkpoint_min_interval_s: float = 0.5  # coalesces the checkpoints of back-to-back commits
    sqlite_wal_autocheckpoint_pages: int = 10_000  # backstop (SQLite's default is 1,000 pages)
    # Transient-error retries of idempotent writes: delay = base * 2**attempt, capped.
    write_retry_attempts: int = 4
    write_retry_base_delay_s: float = 0.05
    write_retry_max_delay_s: float = 1.0


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe to print or log."""
    return make_url(url).render_as_string(hide_password=True)


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def create_store_engine(url: str | URL, tuning: StoreTuning, *, pre_ping: bool = True) -> Engine:
    """An engine configured for the dialect of `url` (see the module docstring).

    `pre_ping=False` saves a round trip per checkout, for callers that retry their whole
    transaction on DatabaseUnavailable: a connection dropped by a server restart then fails
    the first statement, SQLAlchemy invalidates the pool, and the retry gets a fresh one.
    """
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(u, tuning)
    kwargs: dict[str, Any] = dict(
        pool_size=tuning.pool_size,
        max_overflow=tuning.max_overflow,
        pool_timeout=tuning.pool_timeout_s,
        pool_recycle=tuning.pool_recycle_s,
        pool_pre_ping=pre_ping,
        json_serializer=json_serializer,
    )
    if backend == "postgresql" and u.get_driver_name() in ("psycopg2", "psycopg"):
        kwargs["connect_args"] = {"connect_timeout": tuning.connect_timeout_s}
    return sa.create_engine(u, **kwargs)


def _sqlite_engine(u: URL, tuning: StoreTuning) -> Engine:
    connect_args = {"timeout": tuning.sqlite_busy_timeout_ms / 1000, "check_same_thread": False}
    if _is_sqlite_memory(u):
        # One shared connection, or every pooled connection would see its own empty database.
        engine = sa.create_engine(
            u, connect_args=connect_args, poolclass=StaticPool, json_serializer=json_serializer
        )
    else:
        if u.database:
            # Create the state dir on first use; if that fails, connecting reports the clear error.
            with contextlib.suppress(OSError):
                Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            u,
            connect_args=connect_args,
            pool_size=tuning.pool_size,
            max_overflow=tuning.max_overflow,
            pool_timeout=tuning.pool_timeout_s,
            json_serializer=json_serializer,
        )
    busy_ms = int(tuning.sqlite_busy_timeout_ms)
    background = tuning.sqlite_background_checkpoint and not _is_sqlite_memory(u) and bool(u.database)
    autocheckpoint = int(tuning.sqlite_wal_autocheckpoint_pages) if background else 1000

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_connection.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        finally:
            cur.close()

    if background:
        checkpointer = WalCheckpointer(str(Path(u.database).expanduser()), tuning.sqlite_checkpoint_min_interval_s,
                                       busy_ms)
        event.listen(engine, "commit", lambda _conn: checkpointer.notify())
        event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
        _CHECKPOINTERS[engine] = checkpointer

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")

    return engine


def wal_checkpointer(engine: Engine) -> "WalCheckpointer | None":
    """The background checkpointer of a SQLite file engine (None for PostgreSQL/in-memory)."""
    return _CHECKPOINTERS.get(engine)


class WalCheckpointer:
    """`PRAGMA wal_checkpoint(PASSIVE)` on its own connection in a daemon thread, woken by commits
    and coalesced to at most one per `min_interval_s`. PASSIVE never waits for readers or
    writers; the sqlite3 driver releases the GIL while SQLite works, so the committing thread
    goes on. Started on the first commit, stopped when the engine is disposed."""

    def __init__(self, path: str, min_interval_s: float, busy_ms: int) -> None:
        self.path, self.min_interval_s, self.busy_ms = path, min_interval_s, busy_ms
        self.checkpoints = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
                    self._thread.start()
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            while not self._stopping.is_set():
                self._wake.wait()
                if self._stopping.is_set():
                    break
                # let the commit that woke us finish first; commits meanwhile share this checkpoint
                if self._stopping.wait(self.min_interval_s):
                    break
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the next commit tries again; the backstop still holds
                    log.debug("background WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()


_CHECKPOINTERS: "weakref.WeakKeyDictionary[Engine, WalCheckpointer]" = weakref.WeakKeyDictionary()


def write_engine(engine: Engine) -> Engine:
    """The same pool, with write transactions that take SQLite's write lock at BEGIN."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    return engine


_SQLITE_UNREACHABLE = ("unable to open database", "disk i/o error", "file is not a database")
_PG_REASON = re.compile(r"failed:\s*(?P<reason>[^\n]+)")


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    m = _PG_REASON.search(text)
    reason = m.group("reason") if m else (text.splitlines()[0] if text else type(orig).__name__)
    return reason.strip().rstrip(".")


def unavailable(url: str | URL, exc: BaseException) -> DatabaseUnavailable:
    """A one-line DatabaseUnavailable naming the (masked) URL, host, port and the driver's reason."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        where = f"SQLite file {u.database or ':memory:'}"
    else:
        where = f"host {u.host or 'localhost'}, port {u.port or 'default'}"
    return DatabaseUnavailable(f"database unavailable at {mask_url(u)} ({where}): {_reason(exc)}")


def is_connection_error(exc: BaseException) -> bool:
    """True when the error means the database cannot be reached (not a bad statement)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return False
    orig = getattr(exc, "orig", None)
    text = str(orig).lower()
    if orig is not None and type(orig).__module__.startswith("sqlite3"):
        return any(s in text for s in _SQLITE_UNREACHABLE)
    # psycopg2 sets a SQLSTATE whenever the server answered; none means it was never reached.
    return not getattr(orig, "pgcode", None)


def is_busy_error(exc: BaseException) -> bool:
    """SQLite gave up waiting for the write lock, or PostgreSQL aborted a deadlock/serialization."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) in ("40001", "40P01", "55P03"):
        return True
    text = str(orig).lower()
    return isinstance(exc, sa.exc.OperationalError) and ("database is locked" in text or "busy" in text)


def translate(url: str | URL, exc: BaseException) -> StoreError | None:
    """Map a SQLAlchemy error to the store's error types; None when it is not one we translate."""
    if is_busy_error(exc):
        return DatabaseBusy(f"the database is busy with a concurrent change, retry: {_reason(exc)}")
    if is_connection_error(exc):
        return unavailable(url, exc)
    return None
