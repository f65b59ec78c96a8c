"""The application tables as typed SQLAlchemy 2 ORM models.

This module is the ORM view; the schema itself is created by the Alembic migrations in
migrations/versions/ (a test compares the two, so they cannot drift apart). Closed vocabularies
are CHECK constraints so the database refuses a bad value whoever writes it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from usdcop_platform.adapters.store.types import JSONType, UTCDateTime, utcnow

STAGES = ("staging", "production", "archived")
RECOMMENDATIONS = ("PROMOTE", "REVIEW", "REJECT")
PROPOSAL_STATUSES = ("PENDING_APPROVAL", "APPROVED", "REJECTED", "MORE_TESTS_REQUESTED", "EXPIRED")
SIGNAL_ROLES = ("production", "shadow")
RISK_STATUSES = ("APPROVED", "REJECTED")
API_KEY_ROLES = ("viewer", "reviewer", "admin")
BACKTEST_REQUEST_STATUSES = ("PENDING", "LAUNCHED", "DONE", "FAILED")
TRIAL_KINDS = ("training_seed", "search_trial")
# Actions (0 SELL, 1 HOLD, 2 BUY) are the one encoding used everywhere.
ACTIONS = (0, 1, 2)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Autoincrementing 64-bit ids; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PRODUCTION_ONLY = "stage = 'production'"


def _in(column: str, values: tuple[Any, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        str: sa.String(),
    }


class ModelRegistry(Base):
    __tablename__ = "model_registry"
    __table_args__ = (
        sa.CheckConstraint(_in("stage", STAGES), name="stage"),
        # At most one production model, enforced by the database on SQLite and PostgreSQL alike.
        sa.Index(
            "uq_model_registry_single_production",
            "stage",
            unique=True,
            sqlite_where=sa.text(PRODUCTION_ONLY),
            postgresql_where=sa.text(PRODUCTION_ONLY),
        ),
        sa.Index("ix_model_registry_experiment", "experiment_name", "experiment_version"),
    )

    model_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    experiment_name: Mapped[str] = mapped_column(sa.String(128))
    experiment_version: Mapped[str] = mapped_column(sa.String(64))
    stage: Mapped[str] = mapped_column(sa.String(16), default="staging", server_default="staging")
    servable: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    model_hash: Mapped[str] = mapped_column(sa.String(64))
    onnx_hash: Mapped[str | None] = mapped_column(sa.String(64))
    norm_stats_hash: Mapped[str | None] = mapped_column(sa.String(64))
    feature_order_hash: Mapped[str | None] = mapped_column(sa.String(64))
    dataset_hash: Mapped[str | None] = mapped_column(sa.String(64))
    config_hash: Mapped[str | None] = mapped_column(sa.String(64))
    reward_config_hash: Mapped[str | None] = mapped_column(sa.String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    mlflow_model_version: Mapped[str | None] = mapped_column(sa.String(32))
    artifact_dir: Mapped[str | None] = mapped_column(sa.Text)
    model_path: Mapped[str | None] = mapped_column(sa.Text)
    onnx_path: Mapped[str | None] = mapped_column(sa.Text)
    norm_stats_path: Mapped[str | None] = mapped_column(sa.Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    promoted_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]


class RegistryVersion(Base):
    """A single row whose counter is bumped on every stage change (the live path polls it)."""

    __tablename__ = "registry_version"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class PromotionProposal(Base):
    __tablename__ = "promotion_proposals"
    __table_args__ = (
        sa.CheckConstraint(_in("recommendation", RECOMMENDATIONS), name="recommendation"),
        sa.CheckConstraint(_in("status", PROPOSAL_STATUSES), name="status"),
        sa.Index("ix_promotion_proposals_status", "status"),
    )

    proposal_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # One proposal per model id: re-running the evaluation never duplicates it.
    model_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("model_registry.model_id"), unique=True
    )
    experiment_name: Mapped[str] = mapped_column(sa.String(128))
    experiment_version: Mapped[str] = mapped_column(sa.String(64))
    recommendation: Mapped[str] = mapped_column(sa.String(16))
    confidence: Mapped[float] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(
        sa.String(32), default="PENDING_APPROVAL", server_default="PENDING_APPROVAL"
    )
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    criteria: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    baseline_comparison: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    statistical_statement: Mapped[str | None] = mapped_column(sa.Text)
    backtest_hash: Mapped[str | None] = mapped_column(sa.String(64))
    test_start: Mapped[date | None] = mapped_column(sa.Date)
    test_end: Mapped[date | None] = mapped_column(sa.Date)
    series_path: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    expires_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(sa.String(128))
    decision_notes: Mapped[str | None] = mapped_column(sa.Text)
    # Backtests of further periods a reviewer asked for (REQUEST_MORE_TESTS), attached as they
    # complete, oldest first: [{request_id, start, end, series_partition, metrics, ...}]
    # (BacktestRequestRepository.complete). The first vote above never reads them.
    additional_backtests: Mapped[list[Any]] = mapped_column(default=list, server_default=sa.text("'[]'"))


class ApprovalAuditLog(Base):
    """Append-only: database triggers refuse UPDATE and DELETE (see the initial migration)."""

    __tablename__ = "approval_audit_log"
    __table_args__ = (
        sa.Index("ix_approval_audit_log_model_id", "model_id"),
        sa.Index("ix_approval_audit_log_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(sa.String(32))
    model_id: Mapped[str | None] = mapped_column(sa.String(128))
    proposal_id: Mapped[str | None] = mapped_column(sa.String(64))
    reviewer: Mapped[str] = mapped_column(sa.String(128))
    notes: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    previous_production_model_id: Mapped[str | None] = mapped_column(sa.String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class ExperimentContractRow(Base):
    __tablename__ = "experiment_contracts"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    version: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    config_hash: Mapped[str] = mapped_column(sa.String(64))
    reward_config_hash: Mapped[str] = mapped_column(sa.String(64))
    feature_order_hash: Mapped[str] = mapped_column(sa.String(64))
    content: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class TradingSignal(Base):
    __tablename__ = "trading_signals"
    __table_args__ = (
        # One signal per bar per model: the write is an idempotent upsert on this key.
        sa.UniqueConstraint("bar_time", "model_id", name="uq_trading_signals_bar_time_model_id"),
        sa.CheckConstraint(_in("role", SIGNAL_ROLES), name="role"),
        sa.CheckConstraint(_in("action", ACTIONS), name="action"),
        sa.CheckConstraint(_in("risk_status", RISK_STATUSES), name="risk_status"),
        sa.Index("ix_trading_signals_session_date", "session_date"),
        sa.Index("ix_trading_signals_model_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bar_time: Mapped[datetime]
    session_date: Mapped[date] = mapped_column(sa.Date)
    model_id: Mapped[str] = mapped_column(sa.String(128))
    role: Mapped[str] = mapped_column(sa.String(16))
    model_hash: Mapped[str | None] = mapped_column(sa.String(64))
    action: Mapped[int] = mapped_column(sa.SmallInteger)
    prob_sell: Mapped[float] = mapped_column(sa.Float)
    prob_hold: Mapped[float] = mapped_column(sa.Float)
    prob_buy: Mapped[float] = mapped_column(sa.Float)
    confidence: Mapped[float] = mapped_column(sa.Float)
    raw_action: Mapped[int] = mapped_column(sa.SmallInteger)
    risk_status: Mapped[str] = mapped_column(sa.String(16))
    failing_check: Mapped[str | None] = mapped_column(sa.String(64))
    position_recommendation: Mapped[float] = mapped_column(sa.Float, default=0.0, server_default="0")
    feature_hash: Mapped[str | None] = mapped_column(sa.String(64))
    feature_order_hash: Mapped[str | None] = mapped_column(sa.String(64))
    norm_stats_hash: Mapped[str | None] = mapped_column(sa.String(64))
    features: Mapped[list[Any]] = mapped_column(default=list)
    latency_ms: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class RiskState(Base):
    __tablename__ = "risk_state"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    trading_date: Mapped[date | None] = mapped_column(sa.Date)
    equity: Mapped[float | None] = mapped_column(sa.Float)
    peak_equity: Mapped[float | None] = mapped_column(sa.Float)
    daily_pnl_pct: Mapped[float] = mapped_column(sa.Float, default=0.0, server_default="0")
    drawdown_pct: Mapped[float] = mapped_column(sa.Float, default=0.0, server_default="0")
    trades_today: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    consecutive_losses: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    breaker_active: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    breaker_reason: Mapped[str | None] = mapped_column(sa.Text)
    cooldown_until: Mapped[datetime | None]
    # Risk-manager state without a column of its own (e.g. the open position) round-trips here.
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class LiveJournalRow(Base):
    """One live bar's journal (app/live_cycle.py writes it in the bar's transaction): the risk
    state before the bar, the ensemble that served it, the feature inputs and the decision —
    what `usdcop replay` needs. Append-only (database triggers refuse UPDATE and DELETE); one
    row per live state and bar, so a retried bar writes it once (the first write wins)."""

    __tablename__ = "live_journal"
    __table_args__ = (
        sa.UniqueConstraint("risk_key", "bar_time", name="uq_live_journal_risk_key_bar_time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    risk_key: Mapped[str] = mapped_column(sa.String(64))
    bar_time: Mapped[datetime]
    journal: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        sa.CheckConstraint(_in("role", API_KEY_ROLES), name="role"),
        sa.Index("ix_api_keys_key_prefix", "key_prefix"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    key_prefix: Mapped[str] = mapped_column(sa.String(32))
    key_hash: Mapped[str] = mapped_column(sa.String(160))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class BacktestRequest(Base):
    __tablename__ = "backtest_requests"
    __table_args__ = (
        sa.CheckConstraint(_in("status", BACKTEST_REQUEST_STATUSES), name="status"),
        sa.Index("ix_backtest_requests_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    proposal_id: Mapped[str | None] = mapped_column(
        sa.String(64), sa.ForeignKey("promotion_proposals.proposal_id")
    )
    model_id: Mapped[str] = mapped_column(sa.String(128), sa.ForeignKey("model_registry.model_id"))
    start_date: Mapped[date] = mapped_column(sa.Date)
    end_date: Mapped[date] = mapped_column(sa.Date)
    status: Mapped[str] = mapped_column(sa.String(16), default="PENDING", server_default="PENDING")
    dagster_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    requested_by: Mapped[str] = mapped_column(sa.String(128))
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (sa.Index("ix_alerts_delivered", "delivered"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(64))
    severity: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    delivered: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(sa.Text)


class TrialLedgerRow(Base):
    """One trial of an experiment family (its name across versions): every training seed, every
    search trial, every retraining. Append-only (database triggers refuse UPDATE and DELETE); the
    deflated Sharpe ratio counts these rows (N) and takes the variance of their Sharpes (V).
    `trial_id` makes a retried write idempotent; the per-session returns live in the lake."""

    __tablename__ = "trial_ledger"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", TRIAL_KINDS), name="kind"),
        sa.Index("ix_trial_ledger_family", "family"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trial_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    family: Mapped[str] = mapped_column(sa.String(128))
    experiment_version: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(32))
    seed: Mapped[int | None] = mapped_column(sa.Integer)
    selected: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    model_id: Mapped[str | None] = mapped_column(sa.String(128))
    params_hash: Mapped[str | None] = mapped_column(sa.String(64))
    config_hash: Mapped[str] = mapped_column(sa.String(64))
    data_hash: Mapped[str] = mapped_column(sa.String(64))
    val_sharpe: Mapped[float | None] = mapped_column(sa.Float)
    test_sharpe: Mapped[float | None] = mapped_column(sa.Float)
    test_bars: Mapped[int | None] = mapped_column(sa.Integer)
    returns_partition: Mapped[str | None] = mapped_column(sa.String(128))
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
