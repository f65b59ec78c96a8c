"""Trial ledger: one append-only row per trial of an experiment family (every training seed, every
search trial, every retraining), the N and V of the deflated Sharpe ratio and the trials of PBO.

Revision ID: 0004_trial_ledger
Revises: 0003_drop_sql_quarantine
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_trial_ledger"
down_revision: str | Sequence[str] | None = "0003_drop_sql_quarantine"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (a migration never imports the live ORM).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

SQLITE_APPEND_ONLY = """
CREATE TRIGGER trg_trial_ledger_no_{op_lower}
BEFORE {op} ON trial_ledger
BEGIN
    SELECT RAISE(ABORT, 'trial_ledger is append-only: {op} is not allowed');
END
"""

PG_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION trial_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trial_ledger is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "trial_ledger",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("family", sa.String(128), nullable=False),
        sa.Column("experiment_version", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("selected", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=True),
        sa.Column("params_hash", sa.String(64), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("data_hash", sa.String(64), nullable=False),
        sa.Column("val_sharpe", sa.Float(), nullable=True),
        sa.Column("test_sharpe", sa.Float(), nullable=True),
        sa.Column("test_bars", sa.Integer(), nullable=True),
        sa.Column("returns_partition", sa.String(128), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('training_seed', 'search_trial')", name=op.f("ck_trial_ledger_kind")),
        sa.PrimaryKeyConstraint("id", name="pk_trial_ledger"),
        sa.UniqueConstraint("trial_id", name="uq_trial_ledger_trial_id"),
    )
    op.create_index("ix_trial_ledger_family", "trial_ledger", ["family"])
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for stmt in ("UPDATE", "DELETE"):
            op.execute(SQLITE_APPEND_ONLY.format(op=stmt, op_lower=stmt.lower()))
    elif dialect == "postgresql":
        op.execute(PG_APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER trg_trial_ledger_no_update_delete BEFORE UPDATE OR DELETE "
            "ON trial_ledger FOR EACH ROW EXECUTE FUNCTION trial_ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER trg_trial_ledger_no_truncate BEFORE TRUNCATE "
            "ON trial_ledger FOR EACH STATEMENT EXECUTE FUNCTION trial_ledger_append_only()"
        )
    else:  # pragma: no cover - only the two supported dialects
        raise NotImplementedError(f"append-only triggers are not defined for dialect {dialect!r}")


def downgrade() -> None:
    op.drop_index("ix_trial_ledger_family", table_name="trial_ledger")
    op.drop_table("trial_ledger")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS trial_ledger_append_only()")
