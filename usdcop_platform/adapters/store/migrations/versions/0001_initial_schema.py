"""Initial schema: model registry, proposals, append-only audit log, contracts, signals, risk,
API keys, backtest requests, quarantine, alerts.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision (a migration never imports the live ORM).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.func.now()


def _in(column: str, values: Sequence[object]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


SQLITE_APPEND_ONLY = """
CREATE TRIGGER trg_approval_audit_log_no_{op_lower}
BEFORE {op} ON approval_audit_log
BEGIN
    SELECT RAISE(ABORT, 'approval_audit_log is append-only: {op} is not allowed');
END
"""

PG_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION approval_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval_audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "model_registry",
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("experiment_name", sa.String(128), nullable=False),
        sa.Column("experiment_version", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), server_default="staging", nullable=False),
        sa.Column("servable", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("model_hash", sa.String(64), nullable=False),
        sa.Column("onnx_hash", sa.String(64), nullable=True),
        sa.Column("norm_stats_hash", sa.String(64), nullable=True),
        sa.Column("feature_order_hash", sa.String(64), nullable=True),
        sa.Column("dataset_hash", sa.String(64), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("reward_config_hash", sa.String(64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("mlflow_model_version", sa.String(32), nullable=True),
        sa.Column("artifact_dir", sa.Text(), nullable=True),
        sa.Column("model_path", sa.Text(), nullable=True),
        sa.Column("onnx_path", sa.Text(), nullable=True),
        sa.Column("norm_stats_path", sa.Text(), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("lineage", JSON, nullable=False),
        sa.Column("parity", JSON, nullable=False),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.Column("promoted_at", TS, nullable=True),
        sa.Column("archived_at", TS, nullable=True),
        sa.CheckConstraint(_in("stage", ("staging", "production", "archived")), name=op.f("ck_model_registry_stage")),
        sa.PrimaryKeyConstraint("model_id", name="pk_model_registry"),
    )
    op.create_index("ix_model_registry_experiment", "model_registry", ["experiment_name", "experiment_version"])
    # At most one production model: a partial unique index, enforced by the database itself.
    op.create_index(
        "uq_model_registry_single_production",
        "model_registry",
        ["stage"],
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    )

    registry_version = op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", TS, server_default=NOW, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_registry_version_single_row")),
        sa.PrimaryKeyConstraint("id", name="pk_registry_version"),
    )
    op.bulk_insert(registry_version, [{"id": 1, "version": 0}])

    op.create_table(
        "promotion_proposals",
        sa.Column("proposal_id", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("experiment_name", sa.String(128), nullable=False),
        sa.Column("experiment_version", sa.String(64), nullable=False),
        sa.Column("recommendation", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("status", sa.String(32), server_default="PENDING_APPROVAL", nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("criteria", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("baseline_comparison", JSON, nullable=False),
        sa.Column("lineage", JSON, nullable=False),
        sa.Column("statistical_statement", sa.Text(), nullable=True),
        sa.Column("backtest_hash", sa.String(64), nullable=True),
        sa.Column("test_start", sa.Date(), nullable=True),
        sa.Column("test_end", sa.Date(), nullable=True),
        sa.Column("series_path", sa.Text(), nullable=True),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decision_notes", sa.Text(), nullable=True),
        sa.CheckConstraint(
            _in("recommendation", ("PROMOTE", "REVIEW", "REJECT")), name=op.f("ck_promotion_proposals_recommendation")
        ),
        sa.CheckConstraint(
            _in("status", ("PENDING_APPROVAL", "APPROVED", "REJECTED", "MORE_TESTS_REQUESTED", "EXPIRED")),
            name=op.f("ck_promotion_proposals_status"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["model_registry.model_id"], name="fk_promotion_proposals_model_id_model_registry"
        ),
        sa.PrimaryKeyConstraint("proposal_id", name="pk_promotion_proposals"),
        sa.UniqueConstraint("model_id", name="uq_promotion_proposals_model_id"),
    )
    op.create_index("ix_promotion_proposals_status", "promotion_proposals", ["status"])

    op.create_table(
        "approval_audit_log",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=True),
        sa.Column("proposal_id", sa.String(64), nullable=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("previous_production_model_id", sa.String(128), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_audit_log"),
    )
    op.create_index("ix_approval_audit_log_model_id", "approval_audit_log", ["model_id"])
    op.create_index("ix_approval_audit_log_created_at", "approval_audit_log", ["created_at"])
    _append_only_triggers()

    op.create_table(
        "experiment_contracts",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("reward_config_hash", sa.String(64), nullable=False),
        sa.Column("feature_order_hash", sa.String(64), nullable=False),
        sa.Column("content", JSON, nullable=False),
        sa.Column("recorded_at", TS, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_experiment_contracts"),
    )

    op.create_table(
        "trading_signals",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("bar_time", TS, nullable=False),
        sa.Column("session_date", sa.Date(), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("model_hash", sa.String(64), nullable=True),
        sa.Column("action", sa.SmallInteger(), nullable=False),
        sa.Column("prob_sell", sa.Float(), nullable=False),
        sa.Column("prob_hold", sa.Float(), nullable=False),
        sa.Column("prob_buy", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("raw_action", sa.SmallInteger(), nullable=False),
        sa.Column("risk_status", sa.String(16), nullable=False),
        sa.Column("failing_check", sa.String(64), nullable=True),
        sa.Column("position_recommendation", sa.Float(), server_default="0", nullable=False),
        sa.Column("feature_hash", sa.String(64), nullable=True),
        sa.Column("feature_order_hash", sa.String(64), nullable=True),
        sa.Column("norm_stats_hash", sa.String(64), nullable=True),
        sa.Column("features", JSON, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.CheckConstraint(_in("role", ("production", "shadow")), name=op.f("ck_trading_signals_role")),
        sa.CheckConstraint(_in("action", (0, 1, 2)), name=op.f("ck_trading_signals_action")),
        sa.CheckConstraint(_in("risk_status", ("APPROVED", "REJECTED")), name=op.f("ck_trading_signals_risk_status")),
        sa.PrimaryKeyConstraint("id", name="pk_trading_signals"),
        sa.UniqueConstraint("bar_time", "model_id", name="uq_trading_signals_bar_time_model_id"),
    )
    op.create_index("ix_trading_signals_session_date", "trading_signals", ["session_date"])
    op.create_index("ix_trading_signals_model_id", "trading_signals", ["model_id"])

    op.create_table(
        "risk_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=True),
        sa.Column("equity", sa.Float(), nullable=True),
        sa.Column("peak_equity", sa.Float(), nullable=True),
        sa.Column("daily_pnl_pct", sa.Float(), server_default="0", nullable=False),
        sa.Column("drawdown_pct", sa.Float(), server_default="0", nullable=False),
        sa.Column("trades_today", sa.Integer(), server_default="0", nullable=False),
        sa.Column("consecutive_losses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("breaker_active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("breaker_reason", sa.Text(), nullable=True),
        sa.Column("cooldown_until", TS, nullable=True),
        sa.Column("extra", JSON, nullable=False),
        sa.Column("updated_at", TS, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_risk_state"),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(160), nullable=False),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.CheckConstraint(_in("role", ("viewer", "reviewer", "admin")), name=op.f("ck_api_keys_role")),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
    )
    op.create_index("ix_api_keys_key_prefix", "api_keys", ["key_prefix"])

    op.create_table(
        "backtest_requests",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("proposal_id", sa.String(64), nullable=True),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), server_default="PENDING", nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.Column("updated_at", TS, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            _in("status", ("PENDING", "LAUNCHED", "DONE", "FAILED")), name=op.f("ck_backtest_requests_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["model_registry.model_id"], name="fk_backtest_requests_model_id_model_registry"
        ),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["promotion_proposals.proposal_id"],
            name="fk_backtest_requests_proposal_id_promotion_proposals",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_backtest_requests"),
    )
    op.create_index("ix_backtest_requests_status", "backtest_requests", ["status"])

    op.create_table(
        "quarantine",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("partition", sa.String(64), nullable=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("field", sa.String(128), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("row", JSON, nullable=False),
        sa.Column("detected_at", TS, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
    )
    op.create_index("ix_quarantine_dataset_partition", "quarantine", ["dataset", "partition"])

    op.create_table(
        "alerts",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("created_at", TS, server_default=NOW, nullable=False),
        sa.Column("delivered", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_delivered", "alerts", ["delivered"])


def _append_only_triggers() -> None:
    """Refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) of the audit log in the database."""
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for stmt in ("UPDATE", "DELETE"):
            op.execute(SQLITE_APPEND_ONLY.format(op=stmt, op_lower=stmt.lower()))
    elif dialect == "postgresql":
        op.execute(PG_APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER trg_approval_audit_log_no_update_delete BEFORE UPDATE OR DELETE "
            "ON approval_audit_log FOR EACH ROW EXECUTE FUNCTION approval_audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER trg_approval_audit_log_no_truncate BEFORE TRUNCATE "
            "ON approval_audit_log FOR EACH STATEMENT EXECUTE FUNCTION approval_audit_log_append_only()"
        )
    else:  # pragma: no cover - only the two supported dialects
        raise NotImplementedError(f"append-only triggers are not defined for dialect {dialect!r}")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    for table in (
        "alerts",
        "quarantine",
        "backtest_requests",
        "api_keys",
        "risk_state",
        "trading_signals",
        "experiment_contracts",
        "approval_audit_log",
        "promotion_proposals",
        "registry_version",
        "model_registry",
    ):
        op.drop_table(table)
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS approval_audit_log_append_only()")
