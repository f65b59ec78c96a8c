"""/api/experiments: promotion proposals, their evidence, and the second vote."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query

from usdcop_platform.api import actions
from usdcop_platform.api.deps import get_lake, get_settings, get_store, require_role, write_role
from usdcop_platform.api.routers.common import READ_ERRORS, WRITE_ERRORS, errors, market_tz, summary
from usdcop_platform.api.schemas import (
    ID_PATTERN,
    MAX_POINTS_LIMIT,
    AdditionalBacktestOut,
    ApproveRequest,
    AuditOut,
    BacktestLaunchOut,
    BacktestRequestBody,
    BacktestRequestOut,
    CriterionOut,
    DagsterRunOut,
    DecisionOut,
    ExperimentDetailOut,
    ExperimentList,
    ModelOut,
    MonthlyReturn,
    ProposalStatus,
    SeriesOut,
)
from usdcop_platform.api.series import DEFAULT_MAX_POINTS
from usdcop_platform.api.views import experiment_detail

router = APIRouter(prefix="/api/experiments", tags=["experiments"])

ProposalId = Annotated[
    str,
    Path(min_length=1, max_length=128, pattern=ID_PATTERN, description="Proposal id (or the model id of its proposal)"),
]
# Most proposals a list call returns.
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 200


@router.get("", response_model=ExperimentList, responses=READ_ERRORS, summary="List promotion proposals")
def list_experiments(
    status: ProposalStatus | None = Query(None, description="Only proposals in this status"),
    limit: int = Query(DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT),
    _: Any = Depends(require_role("viewer")),
    store: Any = Depends(get_store),
) -> ExperimentList:
    rows = store.proposals.list(status.value if status else None, limit=limit)
    return ExperimentList(count=len(rows), items=[summary(r) for r in rows])


@router.get(
    "/{proposal_id}",
    response_model=ExperimentDetailOut,
    responses={**READ_ERRORS, **errors(404)},
    summary="One proposal: metrics, criteria, lineage, equity and drawdown series, trades, additional backtests",
)
def get_experiment(
    proposal_id: ProposalId,
    max_points: int = Query(DEFAULT_MAX_POINTS, ge=10, le=MAX_POINTS_LIMIT, description="Cap on series points and trades"),
    _: Any = Depends(require_role("viewer")),
    store: Any = Depends(get_store),
    lake: Any = Depends(get_lake),
    settings: Any = Depends(get_settings),
) -> ExperimentDetailOut:
    d = experiment_detail(store, lake, settings, proposal_id, market_tz(settings), max_points)
    p = dict(d.proposal)
    return ExperimentDetailOut(
        **summary(d.proposal).model_dump(),
        reasons=list(p.get("reasons") or []),
        criteria=dict(p.get("criteria") or {}),
        criteria_summary=[
            CriterionOut(name=c["name"], status=c["status"], value=c.get("value"), threshold=c.get("threshold"))
            for c in d.criteria
        ],
        baseline_comparison=dict(p.get("baseline_comparison") or {}),
        lineage=dict(p.get("lineage") or {}),
        statistical_statement=p.get("statistical_statement"),
        backtest_hash=p.get("backtest_hash"),
        series_path=p.get("series_path"),
        model=ModelOut.model_validate(dict(d.model)) if d.model is not None else None,
        series=SeriesOut(
            time=d.series.time,
            equity=d.series.equity,
            drawdown=d.series.drawdown,
            buy_hold_equity=d.series.overlays.get("buy_hold_equity"),
            baseline_equity=d.series.overlays.get("baseline_equity"),
            points=d.series.points,
            total_points=d.series.total_points,
        ),
        trades=d.trades,
        trades_total=d.trades_total,
        monthly_returns=[MonthlyReturn(month=m, ret=r) for m, r in d.monthly],
        mlflow_run_id=d.mlflow_run_id,
        mlflow_url=d.mlflow_url,
        dagster_runs=[DagsterRunOut(**r) for r in d.dagster_runs],
        history=[AuditOut.model_validate(dict(a)) for a in d.history],
        backtest_requests=[BacktestRequestOut.model_validate(dict(b)) for b in d.backtest_requests],
        additional_backtests=[AdditionalBacktestOut.model_validate(e) for e in p.get("additional_backtests") or []],
    )


@router.post(
    "/{proposal_id}/approve",
    response_model=DecisionOut,
    responses=WRITE_ERRORS,
    summary="Second vote: APPROVE (promote) or REJECT a pending proposal",
)
def approve(
    proposal_id: ProposalId,
    body: ApproveRequest,
    background: BackgroundTasks,
    principal: Any = Depends(write_role("reviewer")),
    store: Any = Depends(get_store),
    settings: Any = Depends(get_settings),
) -> DecisionOut:
    """One transaction: proposal → APPROVED/REJECTED; on APPROVE with promotion the model becomes
    production and the previous production model is archived; an audit row records the caller.
    Approving a proposal the rules rated REJECT is an override: it needs notes and
    `override_confirmed: true`, else 422 with the rules' reasons."""
    outcome = actions.decide(
        store,
        settings,
        proposal_id,
        body.decision.value,
        reviewer=principal["name"],
        notes=body.notes,
        promote_to_production=body.promote_to_production,
        schedule=background.add_task,
        override_confirmed=body.override_confirmed,
    )
    r = outcome.record
    return DecisionOut(
        proposal_id=r["proposal_id"],
        model_id=r["model_id"],
        decision=r["decision"],
        status=r["status"],
        reviewer=r["decided_by"],
        promoted=r["promoted"],
        production_model_id=outcome.production_model_id,
        previous_production_model_id=r["previous_production_model_id"],
        registry_version=r["registry_version"],
        audit_id=r["audit_id"],
        decided_at=r["decided_at"],
    )


@router.post(
    "/{proposal_id}/backtest",
    response_model=BacktestLaunchOut,
    status_code=202,
    responses=WRITE_ERRORS,
    summary="REQUEST_MORE_TESTS: backtest the proposal's model over a new period",
)
def request_backtest(
    proposal_id: ProposalId,
    body: BacktestRequestBody,
    principal: Any = Depends(write_role("reviewer")),
    store: Any = Depends(get_store),
    settings: Any = Depends(get_settings),
) -> BacktestLaunchOut:
    """Audited like APPROVE/REJECT (the proposal becomes MORE_TESTS_REQUESTED). With
    USDCOP_DAGSTER_URL set the backtest is launched as a Dagster run; otherwise it stays PENDING."""
    outcome = actions.request_more_tests(
        store, settings, proposal_id, body.start_date, body.end_date, principal["name"], body.notes
    )
    return BacktestLaunchOut(
        request=BacktestRequestOut.model_validate(dict(outcome.request)),
        audit_id=outcome.decision["audit_id"],
        proposal_status=outcome.decision["status"],
        launched=outcome.launched,
        message=outcome.message,
    )
