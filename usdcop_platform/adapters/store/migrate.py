"""Alembic, run from code: upgrade to head, read revisions, render the PostgreSQL DDL for sql/."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

# Alembic's `context`/`op` proxies are process-global: one migration command at a time per process.
_ALEMBIC_LOCK = threading.RLock()
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Own version table: Dagster's PostgreSQL storage uses Alembic's default `alembic_version`,
# and both may live in one database.
VERSION_TABLE = "usdcop_alembic_version"
# Key of the PostgreSQL advisory lock held while migrating (any constant 64-bit integer).
MIGRATION_LOCK_KEY = 7_310_420_250_001
DDL_HEADER = (
    "-- PostgreSQL DDL of the usdcop_platform application tables.\n"
    "-- GENERATED from the Alembic migrations in usdcop_platform/adapters/store/migrations/\n"
    "-- by `usdcop db ddl --out sql/postgres_schema.sql`. Do not edit: a test fails when it drifts.\n\n"
)


def alembic_config(url: str | None = None, connection: sa.Connection | None = None,
                   output: io.StringIO | None = None) -> Config:
    """An Alembic Config built in code (script_location = the package's migrations dir)."""
    cfg = Config(output_buffer=output, stdout=io.StringIO())
    cfg.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no Alembic migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade_to_head(connection: sa.Connection) -> None:
    """Run every pending migration on `connection` (in one transaction)."""
    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(connection=connection), "head")


def postgres_ddl() -> str:
    """The PostgreSQL DDL of all migrations, rendered offline (no server needed)."""
    buf = io.StringIO()
    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(url="postgresql://", output=buf), "head", sql=True)
    body = "\n".join(line.rstrip() for line in buf.getvalue().strip().splitlines())
    return DDL_HEADER + body + "\n"
