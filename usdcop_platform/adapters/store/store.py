"""`Store`: one engine, the migrations, the session scopes and every repository of the SQL store."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from usdcop_platform.adapters.store import migrate
from usdcop_platform.adapters.store.api_keys import ApiKeyRepository
from usdcop_platform.adapters.store.approvals import ApprovalService
from usdcop_platform.adapters.store.audit import AuditRepository
from usdcop_platform.adapters.store.contracts import ContractRepository
from usdcop_platform.adapters.store.engine import (
    StoreTuning,
    create_store_engine,
    mask_url,
    translate,
    unavailable,
    write_engine,
)
from usdcop_platform.adapters.store.errors import StoreError
from usdcop_platform.adapters.store.journal import JournalRepository
from usdcop_platform.adapters.store.operations import AlertRepository, BacktestRequestRepository
from usdcop_platform.adapters.store.proposals import ProposalRepository
from usdcop_platform.adapters.store.registry import ModelRepository
from usdcop_platform.adapters.store.risk import RiskStateRepository
from usdcop_platform.adapters.store.signals import SignalRepository
from usdcop_platform.adapters.store.tables import RegistryVersion
from usdcop_platform.adapters.store.trials import TrialRepository


@dataclass
class _Held:
    conn: sa.Connection
    since: float  # time.monotonic() when checked out


class Store:
    """The application's SQL store (SQLite file by default, PostgreSQL when DATABASE_URL is set).

    Repositories return read-only `Record`s (dicts with attribute access), never ORM objects.
    """

    def __init__(self, url: str | sa.URL, tuning: StoreTuning | None = None) -> None:
        self.url = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        self.tuning = tuning or StoreTuning()
        try:
            self.engine = create_store_engine(self.url, self.tuning)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise StoreError(f"invalid database URL {self.masked_url}: {exc}") from None
        self._write_engine = write_engine(self.engine)
        self._hot_engine: sa.Engine | None = None
        self._hot_lock = threading.Lock()
        self._held = threading.local()  # the thread's transaction() Connection (_Held)
        self._held_all: set[sa.Connection] = set()  # every thread's, closed by dispose()
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

        self.models = ModelRepository(self)
        self.proposals = ProposalRepository(self)
        self.approvals = ApprovalService(self)
        self.audit = AuditRepository(self)
        self.contracts = ContractRepository(self)
        self.signals = SignalRepository(self)
        self.risk = RiskStateRepository(self)
        self.api_keys = ApiKeyRepository(self)
        self.backtest_requests = BacktestRequestRepository(self)
        self.alerts = AlertRepository(self)
        self.trials = TrialRepository(self)
        self.journal = JournalRepository(self)

    # -- identity --------------------------------------------------------------------------------
    @property
    def masked_url(self) -> str:
        try:
            return mask_url(self.url)
        except sa.exc.ArgumentError:
            return "<unparseable URL>"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({self.masked_url!r})"

    # -- sessions ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _scope(self, factory: sessionmaker[Session]) -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException as exc:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                session.rollback()
            translated = translate(self.url, exc) if isinstance(exc, sa.exc.SQLAlchemyError) else None
            if translated is not None:
                raise translated from exc
            raise
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                session.close()

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """A write-capable Session: commit on success, rollback on error (SQLite: BEGIN IMMEDIATE)."""
        return self._scope(self._write_sessions)

    def write_session(self) -> contextlib.AbstractContextManager[Session]:
        return self._scope(self._write_sessions)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A Core write transaction for a hot path (the live bar): no ORM session, and on
        PostgreSQL no pre-ping round trip. Commit on success, rollback on error, errors
        translated like the sessions'. For callers that retry the WHOLE transaction on
        DatabaseUnavailable/DatabaseBusy: a connection dropped by a server restart fails the
        first statement and the retry gets a fresh one.

        The calling thread keeps its Connection between transactions (no pool checkout, return
        and Connection object per bar); a transaction that fails gives it back to the pool (which
        discards it when the error said the server is gone), and it is handed back after
        pool_recycle_s, so the pool's recycling still applies. Not re-entrant on one thread."""
        held: _Held | None = getattr(self._held, "value", None)
        if held is not None and held.conn.in_transaction():
            raise StoreError("Store.transaction() is already open on this thread (it is not re-entrant)")
        conn: sa.Connection | None = None
        try:
            conn = self._held_connection()
            with conn.begin():
                yield conn
        except BaseException as exc:
            if conn is not None:
                self._release_held(conn)
            translated = translate(self.url, exc) if isinstance(exc, sa.exc.SQLAlchemyError) else None
            if translated is not None:
                raise translated from exc
            raise

    def _held_connection(self) -> sa.Connection:
        held: _Held | None = getattr(self._held, "value", None)
        if held is not None and (held.conn.closed or held.conn.invalidated
                                 or time.monotonic() - held.since > self.tuning.pool_recycle_s):
            self._release_held(held.conn)
            held = None
        if held is None:
            conn = self._hot().connect()
            held = self._held.value = _Held(conn, time.monotonic())
            with self._hot_lock:
                self._held_all.add(conn)
        return held.conn

    def _release_held(self, conn: sa.Connection) -> None:
        held: _Held | None = getattr(self._held, "value", None)
        if held is not None and held.conn is conn:
            self._held.value = None
        with self._hot_lock:
            self._held_all.discard(conn)
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            conn.close()

    def _hot(self) -> sa.Engine:
        if self.engine.dialect.name == "sqlite":
            return self._write_engine  # no pre-ping to skip; BEGIN IMMEDIATE
        if self._hot_engine is None:
            with self._hot_lock:
                if self._hot_engine is None:
                    self._hot_engine = create_store_engine(self.url, self.tuning, pre_ping=False)
        return self._hot_engine

    def read_session(self) -> contextlib.AbstractContextManager[Session]:
        """A Session for reads (SQLite: a deferred transaction that never blocks writers)."""
        return self._scope(self._read_sessions)

    # -- schema ------------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise DatabaseUnavailable (one clear line) unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.SQLAlchemyError as exc:
            raise unavailable(self.url, exc) from None

    def upgrade(self) -> str:
        """Run the Alembic migrations to head; returns the head revision."""
        self.ping()
        try:
            with self._write_engine.connect() as conn:
                migrate.upgrade_to_head(conn)
                conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            translated = translate(self.url, exc)
            if translated is not None:
                raise translated from exc
            raise
        return migrate.head_revision()

    def revision(self) -> str | None:
        """The migration revision the database is at (None before the first upgrade)."""
        try:
            with self.engine.connect() as conn:
                return migrate.current_revision(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise translate(self.url, exc) or exc from None

    def registry_version(self) -> int:
        """Counter bumped by every stage change; the live path polls it to hot-reload models."""
        with self.read_session() as s:
            return int(s.execute(sa.select(RegistryVersion.version).where(RegistryVersion.id == 1)).scalar_one())

    def dispose(self) -> None:
        with self._hot_lock:
            held, self._held_all = list(self._held_all), set()
        for conn in held:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()
        self._held = threading.local()
        self.engine.dispose()
        if self._hot_engine is not None:
            self._hot_engine.dispose()


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def get_store(url: str | None = None) -> Store:
    """The process-wide Store for `url` (default: Settings().resolved_database_url), migrated once."""
    if url is None:
        from usdcop_platform.settings import get_settings

        url = get_settings().resolved_database_url
    with _STORES_LOCK:
        store = _STORES.get(url)
        if store is None:
            store = Store(url)
            try:
                store.upgrade()
            except BaseException:
                store.dispose()
                raise
            _STORES[url] = store
        return store


def clear_store_cache() -> None:
    """Dispose and forget the cached stores (tests, or after changing DATABASE_URL)."""
    with _STORES_LOCK:
        for store in _STORES.values():
            store.dispose()
        _STORES.clear()
