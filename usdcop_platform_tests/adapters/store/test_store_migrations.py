"""Migrations, ORM/migration agreement, the committed PostgreSQL DDL, and connection errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from usdcop_platform.adapters.store import DatabaseUnavailable, Store, get_store
from usdcop_platform.adapters.store.migrate import VERSION_TABLE, head_revision, postgres_ddl
from usdcop_platform.adapters.store.store import clear_store_cache
from usdcop_platform.adapters.store.tables import Base

SCHEMA_SQL = Path(__file__).resolve().parents[3] / "sql" / "postgres_schema.sql"


def test_upgrade_reaches_head_and_is_idempotent(db_url: str) -> None:
    store = Store(db_url)
    try:
        assert store.revision() is None
        assert store.upgrade() == head_revision()
        assert store.revision() == head_revision()
        assert store.upgrade() == head_revision()  # second run: nothing to do, no error
        tables = set(sa.inspect(store.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert VERSION_TABLE in tables and "alembic_version" not in tables  # Dagster owns that name
        assert store.registry_version() == 0
    finally:
        store.dispose()


def test_orm_models_match_the_migrations(store: Store) -> None:
    """The ORM view and the migrated schema cannot drift apart (types, nullability, indexes, FKs)."""
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # SQLite reflects '' defaults as a text clause; PostgreSQL compares them exactly.
                "compare_server_default": store.dialect == "postgresql",
                "include_object": lambda obj, name, kind, *_: not (kind == "table" and name == VERSION_TABLE),
            },
        )
        assert compare_metadata(ctx, Base.metadata) == []


def test_committed_postgres_ddl_matches_the_migrations() -> None:
    expected = postgres_ddl()
    assert SCHEMA_SQL.exists(), "sql/postgres_schema.sql is missing: run `usdcop db ddl --out sql/postgres_schema.sql`"
    assert SCHEMA_SQL.read_text(encoding="utf-8") == expected, (
        "sql/postgres_schema.sql drifted from the migrations: run `usdcop db ddl --out sql/postgres_schema.sql`"
    )
    assert "CREATE UNIQUE INDEX uq_model_registry_single_production ON model_registry (stage) " \
           "WHERE stage = 'production'" in expected
    assert "BEFORE UPDATE OR DELETE ON approval_audit_log" in expected


def test_closed_port_gives_one_clear_line() -> None:
    store = Store("postgresql+psycopg2://usdcop:s3cret@127.0.0.1:1/usdcop")
    with pytest.raises(DatabaseUnavailable) as info:
        store.upgrade()
    message = str(info.value)
    assert "\n" not in message
    assert "host 127.0.0.1, port 1" in message
    assert "refused" in message.lower()
    assert "s3cret" not in message and "***" in message
    store.dispose()


def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    store = Store(f"sqlite:///{(blocker / 'sub' / 'db.sqlite').as_posix()}")
    with pytest.raises(DatabaseUnavailable, match="unable to open database file"):
        store.upgrade()
    store.dispose()


def test_get_store_is_cached_and_migrated(sqlite_url: str) -> None:
    clear_store_cache()
    try:
        first = get_store(sqlite_url)
        assert get_store(sqlite_url) is first
        assert first.revision() == head_revision()
    finally:
        clear_store_cache()


def test_get_store_does_not_cache_a_failure() -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:1/none"
    with pytest.raises(DatabaseUnavailable):
        get_store(url)
    with pytest.raises(DatabaseUnavailable):
        get_store(url)


def test_live_journal_migration_moves_the_journal_rows_out_of_risk_state(db_url: str) -> None:
    """0005 moves `<risk_key>@<ISO>` rows of risk_state into live_journal, their columns and `extra`
    merged back into the document the live cycle wrote; other rows stay; downgrade moves them back."""
    from datetime import date, datetime, timezone

    from alembic import command

    from usdcop_platform.adapters.store import migrate

    store = Store(db_url)
    try:
        with store.engine.connect() as conn, migrate._ALEMBIC_LOCK:
            command.upgrade(migrate.alembic_config(connection=conn), "0004_trial_ledger")
            conn.commit()
        t0 = datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc)
        t1 = datetime(2024, 3, 5, 13, 5, 0, 250000, tzinfo=timezone.utc)
        before = {"live": {"trades_today": 2, "last_bar": t1.isoformat()},
                  f"live@{t0.isoformat()}": {
                      "trading_date": date(2024, 3, 5), "equity": 1.01, "breaker_active": True,
                      "breaker_reason": "drawdown", "cooldown_until": datetime(2024, 3, 5, 14, tzinfo=timezone.utc),
                      "position": 1, "last_bar": None, "bar": {"time": t0.isoformat(), "close": 3950.5},
                      "decision": {"status": "APPROVED", "failed_check": None}, "members": [{"w": 0.5}]},
                  f"live@{t1.isoformat()}": {"cooldown_until": t1, "feature_inputs": {"session_bar_indices": [0]}},
                  "k@not-a-time": {"trades_today": 5}}
        for key, state in before.items():
            store.risk.save(key, state)
        loaded = {k: dict(store.risk.load(k)) for k in before}
        assert store.upgrade() == head_revision()

        def as_written(record: dict) -> dict:  # what the live cycle wrote: JSON values, no row bookkeeping
            from usdcop_platform.adapters.store.types import jsonable

            return jsonable({k: v for k, v in record.items() if k not in ("key", "updated_at")})

        assert store.journal.bars("live") == [t0, t1]
        for t in (t0, t1):
            key = f"live@{t.isoformat()}"
            assert dict(store.journal.load("live", t)) == as_written(loaded[key])
            assert store.risk.load(key) is None
        assert store.journal.load("live", t0)["cooldown_until"] == "2024-03-05T14:00:00+00:00"
        assert store.journal.load("live", t1)["cooldown_until"] == t1.isoformat()
        assert dict(store.risk.load("live")) == loaded["live"], "the live state stays"
        assert dict(store.risk.load("k@not-a-time")) == loaded["k@not-a-time"], "unrecognized rows stay"
        with store.engine.connect() as conn:
            created = conn.execute(sa.text("SELECT created_at FROM live_journal ORDER BY bar_time")).scalars().all()
        assert len(created) == 2, "each row's write time is kept"

        with store.engine.connect() as conn, migrate._ALEMBIC_LOCK:
            command.downgrade(migrate.alembic_config(connection=conn), "0004_trial_ledger")
            conn.commit()
        for t in (t0, t1):
            back = store.risk.load(f"live@{t.isoformat()}")
            assert back is not None and as_written(dict(back)) == as_written(loaded[f"live@{t.isoformat()}"])
        assert "live_journal" not in sa.inspect(store.engine).get_table_names()
    finally:
        store.dispose()
