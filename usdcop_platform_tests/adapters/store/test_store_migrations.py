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
