"""Pydantic models of every request and response of the approvals API (the OpenAPI contract).

Request bodies refuse unknown fields (so a `reviewer` in the body is a 422, never used) and use
strict scalar types where lax coercion would hide a client bug ("yes" is not a boolean).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationInfo, field_validator

# Longest free-text note accepted (characters): generous for a justification, bounded for storage.
MAX_NOTES_CHARS = 10_000
# Upper bound of the `max_points` query parameter (points per returned series).
MAX_POINTS_LIMIT = 20_000
# Identifiers in paths and queries: printable, no control characters (PostgreSQL refuses NUL).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class Decision(str, Enum):
    APPROVE = "APPROVE"
    REJECT = "REJECT"


class ProposalStatus(str, Enum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    MORE_TESTS_REQUESTED = "MORE_TESTS_REQUESTED"
    EXPIRED = "EXPIRED"


class Stage(str, Enum):
    staging = "staging"
    production = "production"
    archived = "archived"


class KeyRole(str, Enum):
    viewer = "viewer"
    reviewer = "reviewer"
    admin = "admin"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # PostgreSQL text cannot hold NUL; refusing it here makes both databases answer alike.
        if isinstance(v, str) and "\x00" in v:
            raise ValueError("must not contain NUL (\\x00) characters")
        return v


class ApproveRequest(_Request):
    """The second vote. The reviewer is the API key's owner, never a body field."""

    decision: Decision = Field(description="APPROVE or REJECT (use /backtest for REQUEST_MORE_TESTS)")
    notes: StrictStr = Field(
        default="",
        max_length=MAX_NOTES_CHARS,
        description="Required (non-blank) when approving a proposal the rules recommended REJECT",
    )
    promote_to_production: StrictBool = Field(
        default=True, description="APPROVE only: make the model production (archiving the current one)"
    )
    override_confirmed: StrictBool = Field(
        default=False,
        description="Required (true) when approving a proposal the rules recommended REJECT: the caller confirms "
        "overriding the first vote. Without it such an approval is refused with 422 and the rules' reasons.",
    )


class BacktestRequestBody(_Request):
    """REQUEST_MORE_TESTS: backtest the proposal's model over a new period."""

    start_date: date
    end_date: date
    notes: StrictStr = Field(default="", max_length=MAX_NOTES_CHARS)

    @field_validator("end_date")
    @classmethod
    def _ordered(cls, v: date, info: ValidationInfo) -> date:
        start = info.data.get("start_date")
        if start is not None and v < start:
            raise ValueError(f"end_date {v} is before start_date {start}")
        return v


class RollbackRequest(_Request):
    notes: StrictStr = Field(min_length=1, max_length=MAX_NOTES_CHARS, description="Why the rollback is needed")
    expected_registry_version: StrictInt = Field(
        ge=0,
        description="The registry version the caller saw (GET /api/models `registry_version`): if the "
        "registry moved since, the rollback is refused with 409 and nothing changes",
    )
    expected_production_model_id: StrictStr | None = Field(
        None, max_length=128, description="Optionally also the production model the caller saw (409 if it changed)"
    )


class KeyCreateRequest(_Request):
    name: StrictStr = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]*$")
    role: KeyRole


# ---- responses -----------------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ProposalSummary(_Out):
    proposal_id: str
    model_id: str
    experiment_name: str
    experiment_version: str
    recommendation: str
    confidence: float
    status: str
    metrics: dict[str, Any] = {}
    test_start: date | None = None
    test_end: date | None = None
    created_at: datetime
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_notes: str | None = None
    review_url: str


class ExperimentList(BaseModel):
    count: int
    items: list[ProposalSummary]


class ModelOut(_Out):
    model_id: str
    experiment_name: str
    experiment_version: str
    stage: str
    servable: bool
    model_hash: str
    onnx_hash: str | None = None
    norm_stats_hash: str | None = None
    feature_order_hash: str | None = None
    dataset_hash: str | None = None
    config_hash: str | None = None
    mlflow_run_id: str | None = None
    mlflow_model_version: str | None = None
    metrics: dict[str, Any] = {}
    created_at: datetime
    promoted_at: datetime | None = None
    archived_at: datetime | None = None


class ModelList(BaseModel):
    count: int
    production_model_id: str | None
    registry_version: int
    items: list[ModelOut]


class SeriesOut(BaseModel):
    """Equity and drawdown at the same (downsampled) bars; `total_points` bars exist in all."""

    time: list[datetime | None]
    equity: list[float | None]
    drawdown: list[float | None]
    buy_hold_equity: list[float | None] | None = Field(None, description="Buy-and-hold equity on the same bars")
    baseline_equity: list[float | None] | None = Field(
        None, description="Equity of the production model on the same bars (null without one)"
    )
    points: int
    total_points: int


class MonthlyReturn(BaseModel):
    month: str
    ret: float = Field(description="Simple return of the month (fraction)")


class CriterionOut(BaseModel):
    name: str
    status: str
    value: float | int | None = None
    threshold: float | int | None = None


class AuditOut(_Out):
    id: int
    action: str
    model_id: str | None = None
    proposal_id: str | None = None
    reviewer: str
    notes: str
    previous_production_model_id: str | None = None
    details: dict[str, Any] = {}
    created_at: datetime


class AuditList(BaseModel):
    count: int
    items: list[AuditOut]


class BacktestRequestOut(_Out):
    id: int
    proposal_id: str | None = None
    model_id: str
    start_date: date
    end_date: date
    status: str
    dagster_run_id: str | None = None
    requested_by: str
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class AdditionalBacktestOut(BaseModel):
    """A further period a reviewer requested (REQUEST_MORE_TESTS), attached when its backtest completed."""

    request_id: int
    start: date
    end: date
    requested_by: str
    requested_at: datetime | None = None
    completed_at: datetime
    dagster_run_id: str | None = None
    series_partition: str = Field(description="Lake partition of its series, trades and report")
    metrics: dict[str, Any] = Field(
        default={}, description="Candidate metrics over the period, bars, sessions covered, benchmarks' headline"
    )


class DagsterRunOut(_Out):
    what: str = Field(description="training or evaluation")
    run_id: str
    url: str = Field(description="The run's page in the Dagster UI (USDCOP_DAGSTER_UI_URL)")


class ExperimentDetailOut(ProposalSummary):
    reasons: list[str] = []
    criteria: dict[str, Any] = {}
    criteria_summary: list[CriterionOut] = []
    baseline_comparison: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    statistical_statement: str | None = None
    backtest_hash: str | None = None
    series_path: str | None = None
    model: ModelOut | None = None
    series: SeriesOut
    trades: list[dict[str, Any]]
    trades_total: int
    monthly_returns: list[MonthlyReturn]
    mlflow_run_id: str | None = None
    mlflow_url: str | None = Field(default=None, description="The run's page in the MLflow UI (USDCOP_MLFLOW_UI_URL)")
    dagster_runs: list[DagsterRunOut] = Field(
        default=[], description="The Dagster runs behind the proposal the store records (training; evaluation when recorded)"
    )
    history: list[AuditOut] = []
    backtest_requests: list[BacktestRequestOut] = []
    additional_backtests: list[AdditionalBacktestOut] = Field(
        default=[], description="Backtests of further periods reviewers requested, oldest first"
    )


class DecisionOut(BaseModel):
    proposal_id: str
    model_id: str
    decision: str
    status: str
    reviewer: str
    promoted: bool
    production_model_id: str | None
    previous_production_model_id: str | None = None
    registry_version: int | None = None
    audit_id: int
    decided_at: datetime


class BacktestLaunchOut(BaseModel):
    request: BacktestRequestOut
    audit_id: int
    proposal_status: str
    launched: bool = Field(description="True when a Dagster run was submitted")
    message: str


class RollbackOut(BaseModel):
    action: str
    model_id: str
    previous_production_model_id: str | None = None
    registry_version: int
    audit_id: int
    rolled_back_at: datetime


class KeyOut(_Out):
    name: str
    role: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class KeyCreated(BaseModel):
    key: KeyOut
    api_key: str = Field(description="The plaintext key. Shown once; only its hash is stored.")


class DatabaseHealth(BaseModel):
    status: str
    dialect: str | None = None
    revision: str | None = None
    registry_version: int | None = None
    detail: str | None = None


class Health(BaseModel):
    status: str
    database: DatabaseHealth
    production_model_id: str | None = None
    pending_approvals: int | None = None
