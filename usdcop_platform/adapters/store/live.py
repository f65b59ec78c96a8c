"""The live path's per-bar transaction, in as few round trips as the database allows.

A bar is ONE transaction (see app/live_cycle.py for what it means):

    open    SELECT the live risk row FOR UPDATE joined with the registry version   1 statement
    write   the journal row (append-only live_journal, insert), the live state     1 statement on
            (risk_state, upsert) and the signal rows (insert)                      PostgreSQL (a
            data-modifying CTE); on SQLite one per table (no writes in CTEs there; in-process)
    commit

On `Store.transaction()` (Core, no ORM session, no pre-ping) a bar costs BEGIN + 2 statements +
COMMIT on PostgreSQL: the round trips, not the work, dominated its latency (it was 8). Every
statement is a construct SQLAlchemy caches (bind parameters only, rows as SELECT ... UNION ALL
rather than a multi-row VALUES, which it would recompile per bar at ~5 ms), so each is compiled
once per shape and only values travel; on PostgreSQL the compiled text runs on the transaction's
DBAPI cursor (DriverStatement), and the read can carry work done while the server answers it
(read_state_while). On SQLite, RETURNING makes SQLAlchemy's
"insertmanyvalues" send each list of rows as one statement. Rows go through the store's own
validation and column mapping (signals.normalize_signal, the risk repository's column split and
its inverse), so the live path writes and reads exactly what the repositories would.
"""

from __future__ import annotations

import functools
import select
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from usdcop_platform.adapters.store.risk import COLUMNS as RISK_COLUMNS
from usdcop_platform.adapters.store.risk import _columns as risk_columns
from usdcop_platform.adapters.store.risk import state_record
from usdcop_platform.adapters.store.signals import normalize_signal
from usdcop_platform.adapters.store.tables import LiveJournalRow, RegistryVersion, TradingSignal
from usdcop_platform.adapters.store.tables import RiskState as RiskRow
from usdcop_platform.adapters.store.types import Record, UTCDateTime, as_utc, json_serializer, utcnow

_RISK = RiskRow.__table__
_JOURNAL = LiveJournalRow.__table__
_JOURNAL_COLUMNS = ("risk_key", "bar_time", "journal", "created_at")
_SIGNALS = TradingSignal.__table__
_VERSION = RegistryVersion.__table__


@dataclass(frozen=True)
class OpenedBar:
    """What the bar transaction read under its row lock."""

    state: Record  # the stored live risk state (what store.risk.load returns)
    registry_version: int  # the registry's stage-change counter (model hot reload)


def open_bar(conn: sa.Connection, risk_key: str, initial_state: Mapping[str, Any]) -> OpenedBar:
    """Row-lock the live risk state and read it with the registry version (one statement).

    The very first bar finds no row: it inserts `initial_state` (ON CONFLICT DO NOTHING, so a
    concurrent first writer wins cleanly) and reads again, so even then the bar holds a real
    lock (FOR UPDATE on no row locks nothing). SQLite has no row locks: the transaction took
    the database's write lock at BEGIN IMMEDIATE.
    """
    return opened(conn, read_state(conn, risk_key), risk_key, initial_state)


def read_state(conn: sa.Connection, risk_key: str) -> Rows:
    """open_bar's statement alone, its rows as the driver returned them (live_sql.opened makes
    the OpenedBar of them)."""
    return _send(conn, _statements(conn.dialect.name).open, {"key": risk_key})


def read_state_while(conn: sa.Connection, risk_key: str, *work: Callable[[], None]) -> Rows:
    """read_state, with `work` done while the server answers. On psycopg2 a wait callback
    (psycopg2's hook for waiting on the socket, set only for this read) runs it once a command
    has left: when psycopg2 opens the transaction first (its own BEGIN round trip), the first
    piece of work during BEGIN and the rest during the read, else all during the read; then it
    waits as the driver would. One thread: nothing to wake, no GIL to hand over. Elsewhere
    (SQLite: in-process, nothing to wait for) the work runs after the read. An error of the work
    is raised once the read is done, so the connection stays usable."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg2":
        rows = read_state(conn, risk_key)
        for piece in work:
            piece()
        return rows
    import psycopg2.extensions as pe

    dbapi = conn.connection.dbapi_connection
    begins = dbapi.status == pe.STATUS_READY  # no transaction open yet: psycopg2 sends BEGIN first
    plan = [list(work[:1]), list(work[1:])] if begins and len(work) > 1 else [list(work)]
    other = pe.get_wait_callback()
    waiter = _WorkWhileWaiting(dbapi, plan, other=other)
    pe.set_wait_callback(waiter)
    try:
        rows = read_state(conn, risk_key)
    finally:
        pe.set_wait_callback(other)
    waiter.finish()
    return rows


class _WorkWhileWaiting:
    """A psycopg2 wait callback (called once per command the driver sends while it is set): for
    `connection`'s next command it flushes the command, runs the next batch of `plan`, then waits
    for the answer; every other wait is psycopg2.extras.wait_select's (or the callback it replaced)."""

    def __init__(self, connection: Any, plan: list[list[Callable[[], None]]], *, other: Any) -> None:
        from psycopg2.extras import wait_select

        self.connection, self.plan = connection, plan
        self.wait: Callable[[Any], None] = other or wait_select  # every other wait
        self.error: BaseException | None = None

    def __call__(self, conn: Any) -> None:
        import psycopg2.extensions as pe

        if conn is not self.connection or not self.plan:
            return self.wait(conn)
        batch: list[Callable[[], None]] | None = self.plan.pop(0)
        while True:
            state = conn.poll()
            if state == pe.POLL_OK:
                break
            if state == pe.POLL_READ:
                if batch is not None:  # the command is out: the server is working on it
                    self._run(batch)
                    batch = None
                    continue
                select.select([conn.fileno()], [], [])
            elif state == pe.POLL_WRITE:
                select.select([], [conn.fileno()], [])
            else:
                raise pe.OperationalError(f"bad state from poll: {state}")
        if batch is not None:  # answered before it could run
            self._run(batch)
        return None

    def _run(self, batch: list[Callable[[], None]]) -> None:
        for piece in batch:
            if self.error is not None:
                return
            try:
                piece()
            except BaseException as exc:  # noqa: BLE001 - raised by finish(), after the read
                self.error = exc

    def finish(self) -> None:
        """Run what no wait ran (the read needed fewer commands); raise what the work raised."""
        while self.plan:
            self._run(self.plan.pop(0))
        if self.error is not None:
            raise self.error


def opened(conn: sa.Connection, rows: Rows, risk_key: str, initial_state: Mapping[str, Any]) -> OpenedBar:
    """open_bar from read_state's rows (inserting the initial state when there is none)."""
    records = rows.records()
    if not records:
        conn.execute(_statements(conn.dialect.name).insert_initial, [_risk_row(risk_key, initial_state, utcnow())])
        records = read_state(conn, risk_key).records()
    row = records[0]
    return OpenedBar(state_record(row), int(row["registry_version"]))


def write_bar(conn: sa.Connection, risk_key: str, bar_time: datetime, journal: Mapping[str, Any],
              signals: Sequence[Mapping[str, Any]], state: Mapping[str, Any],
              stored_last_bar: datetime | str | None) -> list[Record]:
    """The bar's rows inside the caller's transaction; returns the stored signal rows.

    Idempotent: the journal (unique per risk_key and bar_time) and the signals (unique per
    bar_time and model_id) are INSERT ... ON CONFLICT DO NOTHING, so a re-run keeps the first
    write; the state is an upsert. The live state only moves forward: when the stored state
    (`stored_last_bar`, read under the lock) is already at or past this bar, only the journal
    and signals are written, so a late write of an older bar never rewinds it.
    """
    if not signals:
        raise ValueError("signals: a bar writes at least one signal row (one per ensemble member)")
    rows = [normalize_signal(sig) for sig in signals]
    now = utcnow()
    # the journal becomes JSON text through the engine's json_serializer (non-finite floats -> null)
    entry = {"risk_key": risk_key, "bar_time": as_utc(bar_time, "bar_time"), "journal": dict(journal), "created_at": now}
    new_last = state.get("last_bar")
    moves = stored_last_bar is None or new_last is None or _instant(stored_last_bar) < _instant(new_last)
    risk = _risk_row(risk_key, state, now) if moves else None
    columns = sorted({c for r in rows for c in r})
    signal_params = [{c: r.get(c) for c in columns} for r in rows]
    if conn.dialect.name == "postgresql":
        state_columns = tuple(sorted(risk)) if risk is not None else ()
        shape = (state_columns, len(rows), tuple(columns))
        values = [entry[c] for c in _JOURNAL_COLUMNS]
        values += [risk[c] for c in state_columns] if risk is not None else []
        values += [r[c] for r in signal_params for c in columns]
        inserted = _send(conn, _pg_write(*shape), dict(zip(_pg_write_names(*shape), values))).records()
    else:
        st = _statements(conn.dialect.name)
        conn.execute(st.insert_journal, entry)
        if risk is not None:
            conn.execute(st.upsert_risk, risk)
        inserted = conn.execute(st.insert_signals, signal_params).mappings().all()
    if len(inserted) == len(rows):
        return [Record(dict(r)) for r in sorted(inserted, key=lambda r: r["id"])]
    # some rows existed already (a re-run): return what is stored, the first write wins
    return [Record(dict(r)) for r in conn.execute(sa.select(_SIGNALS).where(
        _SIGNALS.c.bar_time.in_({r["bar_time"] for r in rows}),
        _SIGNALS.c.model_id.in_([r["model_id"] for r in rows])).order_by(_SIGNALS.c.id)).mappings().all()]


def stored_signals(conn: sa.Connection, bar_time: datetime) -> list[Record]:
    """The signal rows already stored for `bar_time`, in write order."""
    return [Record(dict(r)) for r in conn.execute(
        sa.select(_SIGNALS).where(_SIGNALS.c.bar_time == bar_time).order_by(_SIGNALS.c.id)).mappings().all()]


def _risk_row(key: str, state: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {"key": key, **risk_columns(state), "updated_at": now}


def _instant(value: datetime | str) -> datetime:
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


# ---- statements, built once per dialect ------------------------------------------------------------

def _send(conn: sa.Connection, stmt: Any, params: Mapping[str, Any]) -> Rows:
    """One statement of the bar. On PostgreSQL through the driver (DriverStatement); on SQLite
    (in-process, where the SQL is cheap either way) through SQLAlchemy."""
    if conn.dialect.name != "postgresql":
        return Rows.of(conn.execute(stmt, params))
    return _driver_statement(stmt, conn.dialect).send(conn, params)


@dataclass(frozen=True)
class Rows:
    """A statement's rows as the driver returned them (column names, tuples)."""

    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    @classmethod
    def of(cls, result: sa.CursorResult[Any]) -> Rows:
        return cls(tuple(result.keys()), [tuple(r) for r in result.all()])

    def records(self) -> list[dict[str, Any]]:
        """Dicts, instants in UTC (as adapters/store/types.UTCDateTime reads them)."""
        return [{k: v.astimezone(timezone.utc) if isinstance(v, datetime) else v for k, v in zip(self.names, row)}
                for row in self.rows]


@dataclass(frozen=True)
class DriverStatement:
    """A statement compiled once for the driver and run on the transaction's DBAPI cursor: per
    bar, no compile-cache key (SQLAlchemy walks the whole statement to find it: 80 bind
    parameters for the write), no bind or result processors, no execution context. What those do
    for this store's columns is done here: JSON columns sent as the engine's JSON text, instants as
    aware UTC (timestamptz), read back in UTC (Rows.records); a driver error becomes SQLAlchemy's
    (the connection invalidated when the server is gone), which the store translates as for any
    statement. SQLAlchemy still owns the transaction and the pool."""

    sql: str
    json_params: frozenset[str]
    instant_params: frozenset[str]
    literals: Mapping[str, Any]  # the statement's own values (e.g. the registry row's id)

    def send(self, conn: sa.Connection, params: Mapping[str, Any]) -> Rows:
        bound = {**self.literals, **params}
        for k in self.json_params.intersection(params):  # a few of the parameters: no pass over all of them
            bound[k] = json_serializer(bound[k])
        for k in self.instant_params.intersection(params):
            if bound[k] is not None:
                bound[k] = as_utc(bound[k], k)
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None, "the bar's transaction has a connection"
        cursor = dbapi.cursor()
        try:
            cursor.execute(self.sql, bound)
            names = tuple(d[0] for d in cursor.description) if cursor.description else ()
            return Rows(names, cursor.fetchall() if names else [])
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _driver_error(conn, exc, self.sql, cursor) from exc
        finally:
            cursor.close()


def _driver_error(conn: sa.Connection, exc: Exception, statement: str, cursor: Any) -> sa.exc.DBAPIError:
    """The driver's error as SQLAlchemy raises it from its own statements, the connection
    invalidated when the error says the server is gone (so the pool never hands it out again)."""
    dialect = conn.dialect
    gone = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor))
    if gone:
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
                                      connection_invalidated=gone, dialect=dialect)


@functools.lru_cache(maxsize=64)
def _driver_statement(stmt: Any, dialect: Dialect) -> DriverStatement:
    compiled = stmt.compile(dialect=dialect)
    names = compiled.bind_names  # bind parameter -> its name in the SQL
    return DriverStatement(
        compiled.string,
        frozenset(n for b, n in names.items() if isinstance(b.type, sa.JSON)),
        frozenset(n for b, n in names.items() if isinstance(b.type, UTCDateTime)),
        {n: b.effective_value for b, n in names.items() if not b.required})


@dataclass(frozen=True)
class _Statements:
    open: Any
    insert_initial: Any
    insert_journal: Any
    upsert_risk: Any
    insert_signals: Any


@functools.lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    open_ = (sa.select(_RISK, _VERSION.c.version.label("registry_version"))
             .select_from(_RISK.join(_VERSION, _VERSION.c.id == 1))
             .where(_RISK.c.key == sa.bindparam("key"))
             .with_for_update(of=_RISK))
    insert_initial = insert(_RISK).on_conflict_do_nothing(index_elements=["key"])
    insert_journal = insert(_JOURNAL).on_conflict_do_nothing(index_elements=["risk_key", "bar_time"])
    upsert = insert(_RISK)
    upsert_risk = upsert.on_conflict_do_update(
        index_elements=["key"], set_={c: upsert.excluded[c] for c in (*RISK_COLUMNS, "extra", "updated_at")})
    # RETURNING makes SQLAlchemy send the rows as one multi-VALUES statement, not one per row
    insert_signals = (insert(_SIGNALS).on_conflict_do_nothing(index_elements=["bar_time", "model_id"])
                      .returning(*_SIGNALS.c))
    return _Statements(open_, insert_initial, insert_journal, upsert_risk, insert_signals)


def _rows_select(table: sa.Table, columns: tuple[str, ...], n: int, tag: str) -> Any:
    """SELECT CAST(:c_<tag>0 AS type), ... UNION ALL ... : `n` rows of bind parameters. Unlike a
    multi-row VALUES, SQLAlchemy caches this construct, so it is compiled once per shape."""
    rows = [sa.select(*[sa.cast(sa.bindparam(_bind_name(c, tag, i), type_=table.c[c].type), table.c[c].type).label(c)
                       for c in columns])
            for i in range(n)]
    return rows[0] if n == 1 else sa.union_all(*rows)


def _bind_name(column: str, tag: str, row: int) -> str:
    """The bind parameter of `column` in row `row` of a _rows_select tagged `tag`."""
    return f"{column}_{tag}{row}"


@functools.lru_cache(maxsize=32)
def _pg_write_names(state_columns: tuple[str, ...], n_signals: int, signal_columns: tuple[str, ...]) -> tuple[str, ...]:
    """_pg_write's bind parameter names, in the order write_bar lists the values."""
    return (*(_bind_name(c, "j", 0) for c in _JOURNAL_COLUMNS), *(_bind_name(c, "s", 0) for c in state_columns),
            *(_bind_name(c, "g", i) for i in range(n_signals) for c in signal_columns))


@functools.lru_cache(maxsize=32)
def _pg_write(state_columns: tuple[str, ...], n_signals: int, signal_columns: tuple[str, ...]) -> Any:
    """PostgreSQL: every write of a bar in ONE statement (one round trip), a data-modifying CTE:

        WITH journal_insert AS (INSERT INTO live_journal ... ON CONFLICT (risk_key, bar_time) DO NOTHING
                                RETURNING id),
             risk_upsert AS (INSERT INTO risk_state ... ON CONFLICT (key) DO UPDATE ... RETURNING key)
        INSERT INTO trading_signals ... ON CONFLICT (bar_time, model_id) DO NOTHING RETURNING *

    PostgreSQL runs a CTE's INSERT to completion whether or not the main statement reads it.
    No `state_columns`: the state does not move (a late bar), no risk_upsert. Bind parameters
    are named by _bind_name: `{column}_j0` (journal), `{column}_s0` (risk row) and `{column}_g{i}` (signals)."""
    journal = (postgresql.insert(_JOURNAL)
               .from_select(_JOURNAL_COLUMNS, _rows_select(_JOURNAL, _JOURNAL_COLUMNS, 1, "j"), include_defaults=False)
               .on_conflict_do_nothing(index_elements=["risk_key", "bar_time"])
               .returning(_JOURNAL.c.id).cte("journal_insert"))
    stmt = (postgresql.insert(_SIGNALS)
            .from_select(signal_columns, _rows_select(_SIGNALS, signal_columns, n_signals, "g"), include_defaults=False)
            .on_conflict_do_nothing(index_elements=["bar_time", "model_id"])
            .returning(*_SIGNALS.c).add_cte(journal))
    if not state_columns:
        return stmt
    upsert = postgresql.insert(_RISK).from_select(state_columns, _rows_select(_RISK, state_columns, 1, "s"),
                                                  include_defaults=False)
    updated = [c for c in state_columns if c != "key"]
    risk_cte = upsert.on_conflict_do_update(index_elements=["key"], set_={c: upsert.excluded[c] for c in updated}
                                            ).returning(_RISK.c.key).cte("risk_upsert")
    return stmt.add_cte(risk_cte)
