"""Quarantined rows have one home, the parquet lake (quarantine/<dataset>/<partition>), written by
the raw assets and listed by `usdcop quarantine list`; the unused SQL quarantine table goes.

Revision ID: 0003_drop_sql_quarantine
Revises: 0002_additional_backtests
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_drop_sql_quarantine"
down_revision: str | Sequence[str] | None = "0002_additional_backtests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (a migration never imports the live ORM).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.drop_index("ix_quarantine_dataset_partition", table_name="quarantine")
    op.drop_table("quarantine")


def downgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("partition", sa.String(64), nullable=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("field", sa.String(128), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("row", JSON, nullable=False),
        sa.Column("detected_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
    )
    op.create_index("ix_quarantine_dataset_partition", "quarantine", ["dataset", "partition"])
