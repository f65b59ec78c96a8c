"""REQUEST_MORE_TESTS closed: a backtest request completes (attached to its proposal, which goes
back to PENDING_APPROVAL, audited) or fails (FAILED with the error) — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import pytest

from usdcop_platform.adapters.store import NotFoundError, Record, Store

METRICS = {"sharpe": 1.4, "total_return": 0.031, "max_drawdown": 0.012, "trades": 57, "n_bars": 1200,
           "test_start": "2024-06-03", "test_end": "2024-06-28"}


def _request_more_tests(store: Store, make_proposal: Callable[..., Record], **kwargs) -> tuple[Record, Record]:
    p = make_proposal(expires_in=timedelta(minutes=5), **kwargs)
    d = store.approvals.decide(p.proposal_id, "REQUEST_MORE_TESTS", reviewer="bo", notes="check June",
                               backtest_start="2024-06-03", backtest_end=date(2024, 6, 28))
    return store.proposals.get(p.proposal_id), store.backtest_requests.get(d.backtest_request_id)


def test_completing_a_request_attaches_it_and_reopens_the_proposal(
    store: Store, make_proposal: Callable[..., Record]
) -> None:
    p, req = _request_more_tests(store, make_proposal)
    assert p.status == "MORE_TESTS_REQUESTED" and p.decided_by == "bo" and p.additional_backtests == []
    new_expiry = datetime.now(timezone.utc) + timedelta(days=14)

    out = store.backtest_requests.complete(
        req.id, metrics=METRICS, series_partition=f"{p.model_id}@2024-06-03_2024-06-28", dagster_run_id="run-1",
        expires_at=new_expiry,
    )
    assert out.reopened is True and out.request.status == "DONE" and out.request.dagster_run_id == "run-1"
    row = store.proposals.get(p.proposal_id)
    assert row.status == "PENDING_APPROVAL"
    assert (row.decided_by, row.decided_at, row.decision_notes) == (None, None, None)
    assert abs((row.expires_at - new_expiry).total_seconds()) < 1
    # The first vote is untouched; the extra period sits beside it.
    assert (row.metrics, row.criteria, row.recommendation) == (p.metrics, p.criteria, p.recommendation)
    (entry,) = row.additional_backtests
    assert (entry["request_id"], entry["start"], entry["end"], entry["requested_by"]) == (
        req.id, "2024-06-03", "2024-06-28", "bo")
    assert entry["metrics"] == METRICS and entry["series_partition"].endswith("@2024-06-03_2024-06-28")
    assert entry["dagster_run_id"] == "run-1" and entry["completed_at"]
    actions = [a.action for a in store.audit.list(proposal_id=p.proposal_id)]
    assert actions == ["MORE_TESTS_COMPLETED", "REQUEST_MORE_TESTS"]
    audit = store.audit.list(proposal_id=p.proposal_id, action="MORE_TESTS_COMPLETED")[0]
    assert audit.reviewer == "system" and audit.id == out.audit_id
    assert audit.details["backtest_request_id"] == req.id and audit.details["sharpe"] == 1.4

    # The reviewer decides again, now with the extra period in view.
    assert store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana").status == "APPROVED"


def test_completing_again_does_not_duplicate(store: Store, make_proposal: Callable[..., Record]) -> None:
    p, req = _request_more_tests(store, make_proposal)
    store.backtest_requests.complete(req.id, metrics=METRICS, series_partition="x@a_b", dagster_run_id="run-1")
    again = store.backtest_requests.complete(req.id, metrics={**METRICS, "sharpe": 1.5}, series_partition="x@a_b",
                                             dagster_run_id="run-2")
    assert again.reopened is False and again.audit_id is None
    row = store.proposals.get(p.proposal_id)
    assert len(row.additional_backtests) == 1 and row.additional_backtests[0]["metrics"]["sharpe"] == 1.5
    assert len(store.audit.list(proposal_id=p.proposal_id, action="MORE_TESTS_COMPLETED")) == 1

    # Once decided, the proposal's evidence is frozen: a late re-run changes nothing on it.
    store.approvals.decide(p.proposal_id, "REJECT", reviewer="ana", notes="June is weak")
    store.backtest_requests.complete(req.id, metrics={**METRICS, "sharpe": 9.0}, series_partition="x@a_b")
    row = store.proposals.get(p.proposal_id)
    assert row.status == "REJECTED" and row.additional_backtests[0]["metrics"]["sharpe"] == 1.5


def test_a_failed_request_keeps_the_proposal_waiting_and_can_be_retried(
    store: Store, make_proposal: Callable[..., Record]
) -> None:
    p, req = _request_more_tests(store, make_proposal)
    failed = store.backtest_requests.fail(req.id, "EvaluationError: no bars", dagster_run_id="run-1")
    assert (failed.status, failed.error, failed.dagster_run_id) == ("FAILED", "EvaluationError: no bars", "run-1")
    row = store.proposals.get(p.proposal_id)
    assert row.status == "MORE_TESTS_REQUESTED" and row.additional_backtests == []
    assert [a.action for a in store.audit.list(proposal_id=p.proposal_id)] == ["REQUEST_MORE_TESTS"]

    done = store.backtest_requests.complete(req.id, metrics=METRICS, series_partition="x@a_b", dagster_run_id="run-2")
    assert done.request.status == "DONE" and done.request.error is None and done.reopened
    # DONE is final: neither a failing re-run nor a late launch report moves it back.
    assert store.backtest_requests.fail(req.id, "boom").status == "DONE"
    assert store.backtest_requests.update_status(req.id, "LAUNCHED", dagster_run_id="run-3").status == "DONE"


def test_a_request_without_a_proposal_just_completes(store: Store, make_model: Callable[..., Record]) -> None:
    m = make_model()
    req = store.backtest_requests.create(m.model_id, "2024-06-03", "2024-06-28", requested_by="ops")
    out = store.backtest_requests.complete(req.id, metrics=METRICS, series_partition="x@a_b")
    assert out.request.status == "DONE" and out.proposal is None and out.audit_id is None
    with pytest.raises(NotFoundError):
        store.backtest_requests.complete(10_000, metrics=METRICS, series_partition="x@a_b")
    with pytest.raises(NotFoundError):
        store.backtest_requests.fail(10_000, "boom")


def test_first_vote_reruns_keep_the_additional_backtests(store: Store, make_proposal: Callable[..., Record]) -> None:
    p, req = _request_more_tests(store, make_proposal)
    store.backtest_requests.complete(req.id, metrics=METRICS, series_partition="x@a_b")
    rerun = store.proposals.upsert(
        model_id=p.model_id, experiment_name=p.experiment_name, experiment_version=p.experiment_version,
        recommendation="REVIEW", confidence=0.6, reasons=["re-run"],
    )
    assert rerun.proposal_id == p.proposal_id and rerun.recommendation == "REVIEW"
    assert [e["request_id"] for e in rerun.additional_backtests] == [req.id]
