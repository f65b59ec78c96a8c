"""Proposals carry the backtests of further periods a reviewer requested (REQUEST_MORE_TESTS).

Revision ID: 0002_additional_backtests
Revises: 0001_initial
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_additional_backtests"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the JSON type at this revision (a migration never imports the live ORM).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # NOT NULL with a server default, so existing proposals start with an empty list.
    op.add_column(
        "promotion_proposals",
        sa.Column("additional_backtests", JSON, server_default=sa.text("'[]'"), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("promotion_proposals") as batch:
        batch.drop_column("additional_backtests")
