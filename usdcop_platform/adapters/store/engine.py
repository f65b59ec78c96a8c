"""Engine construction and error translation for SQLite and PostgreSQL.

SQLite: WAL journal (readers never block the writer), a busy timeout, foreign keys on, and
transaction control taken over from the sqlite3 driver so that write transactions start with
BEGIN IMMEDIATE. Writers then queue for the write lock at BEGIN, instead of failing with
"database is locked" when a read transaction tries to upgrade to a write in the middle.

PostgreSQL: a bounded pool with pre-ping (connections dropped by a restart are replaced
transparently) and a connect timeout, so a dead host fails fast with one clear line.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

from usdcop_platform.adapters.store.errors import DatabaseBusy, DatabaseUnavailable, StoreError
from usdcop_platform.adapters.store.types import json_serializer

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


def create_store_engine(url: str | URL, tuning: StoreTuning) -> Engine:
    """An engine configured for the dialect of `url` (see the module docstring)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(u, tuning)
    kwargs: dict[str, Any] = dict(
        pool_size=tuning.pool_size,
        max_overflow=tuning.max_overflow,
        pool_timeout=tuning.pool_timeout_s,
        pool_recycle=tuning.pool_recycle_s,
        pool_pre_ping=True,
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

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_connection.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")

    return engine


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
