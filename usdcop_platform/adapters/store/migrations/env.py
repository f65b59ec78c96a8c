"""Alembic environment, driven from code (store.migrate builds the Config; no alembic.ini).

Online: runs on the connection passed in `config.attributes["connection"]`, all migrations in
one transaction (SQLite DDL is transactional because the store emits BEGIN itself). On
PostgreSQL a transaction-scoped advisory lock serializes processes that migrate at once.
Offline (`--sql`): renders the DDL for the dialect of `sqlalchemy.url` (used for sql/).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from usdcop_platform.adapters.store.migrate import MIGRATION_LOCK_KEY, VERSION_TABLE
from usdcop_platform.adapters.store.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through usdcop_platform.adapters.store.migrate (it passes a connection)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
