"""Human approval: one transaction, exactly one production model under any concurrency, audited."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from usdcop_platform.adapters.store import (
    ConflictError,
    ModelNotServable,
    NotFoundError,
    OverrideNoteRequired,
    Record,
    Store,
)


def test_approve_promotes_archives_previous_and_audits(store: Store, make_proposal: Callable[..., Record]) -> None:
    first, second = make_proposal(), make_proposal()
    r1 = store.approvals.decide(first.proposal_id, "APPROVE", reviewer="ana", notes="looks good")
    assert r1.promoted and r1.previous_production_model_id is None and r1.status == "APPROVED"
    v1 = store.registry_version()

    r2 = store.approvals.decide(second.proposal_id, "APPROVE", reviewer="bo", notes="better sharpe")
    assert r2.previous_production_model_id == first.model_id
    assert store.registry_version() == v1 + 1 == r2.registry_version
    assert store.models.production().model_id == second.model_id
    old = store.models.get(first.model_id)
    assert old.stage == "archived" and old.archived_at is not None and old.promoted_at is not None
    prop = store.proposals.get(second.proposal_id)
    assert prop.status == "APPROVED" and prop.decided_by == "bo" and prop.decision_notes == "better sharpe"

    audit = store.audit.list(limit=10)
    assert [a.action for a in audit[:2]] == ["APPROVE", "APPROVE"]
    assert audit[0].id == r2.audit_id
    assert (audit[0].model_id, audit[0].proposal_id, audit[0].reviewer, audit[0].notes) == (
        second.model_id, second.proposal_id, "bo", "better sharpe")
    assert audit[0].previous_production_model_id == first.model_id


def test_approving_twice_is_a_conflict(store: Store, make_proposal: Callable[..., Record]) -> None:
    p = make_proposal()
    store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana")
    with pytest.raises(ConflictError, match="APPROVED, not PENDING_APPROVAL"):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer="bo")
    with pytest.raises(ConflictError):
        store.approvals.decide(p.proposal_id, "REJECT", reviewer="bo")
    assert len(store.audit.list(proposal_id=p.proposal_id)) == 1


def test_approving_a_reject_recommendation_needs_an_override_note(
    store: Store, make_proposal: Callable[..., Record]
) -> None:
    p = make_proposal(recommendation="REJECT")
    with pytest.raises(OverrideNoteRequired):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana", notes="   ")
    assert store.proposals.get(p.proposal_id).status == "PENDING_APPROVAL"
    assert store.models.production() is None and store.audit.list() == []
    r = store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana", notes="regime change; accepted risk")
    assert r.promoted


def test_expired_proposal_is_marked_and_conflicts(store: Store, make_proposal: Callable[..., Record]) -> None:
    p = make_proposal(expires_in=timedelta(seconds=-1))
    with pytest.raises(ConflictError, match="expired"):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana")
    assert store.proposals.get(p.proposal_id).status == "EXPIRED"  # committed despite the error
    assert store.models.production() is None
    assert store.audit.list(proposal_id=p.proposal_id)[0].action == "EXPIRE"
    with pytest.raises(ConflictError, match="EXPIRED"):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana")


def test_expire_due_sweeps_pending_proposals(store: Store, make_proposal: Callable[..., Record]) -> None:
    stale, fresh = make_proposal(expires_in=timedelta(seconds=-5)), make_proposal()
    assert store.proposals.expire_due() == [stale.proposal_id]
    assert store.proposals.get(fresh.proposal_id).status == "PENDING_APPROVAL"
    assert [p.proposal_id for p in store.proposals.list(status="EXPIRED")] == [stale.proposal_id]


def test_reject_and_request_more_tests(store: Store, make_proposal: Callable[..., Record]) -> None:
    rejected, retest = make_proposal(), make_proposal()
    r = store.approvals.decide(rejected.proposal_id, "REJECT", reviewer="ana", notes="drawdown too deep")
    assert r.status == "REJECTED" and not r.promoted
    assert store.models.get(rejected.model_id).stage == "staging"

    with pytest.raises(ValueError, match="backtest period"):
        store.approvals.decide(retest.proposal_id, "REQUEST_MORE_TESTS", reviewer="bo")
    r = store.approvals.decide(retest.proposal_id, "REQUEST_MORE_TESTS", reviewer="bo", notes="test 2023",
                               backtest_start="2023-01-02", backtest_end=date(2023, 12, 29))
    assert r.status == "MORE_TESTS_REQUESTED"
    req = store.backtest_requests.get(r.backtest_request_id)
    assert (req.model_id, req.proposal_id, req.status, req.requested_by) == (
        retest.model_id, retest.proposal_id, "PENDING", "bo")
    assert (req.start_date, req.end_date) == (date(2023, 1, 2), date(2023, 12, 29))
    audit = store.audit.list(proposal_id=retest.proposal_id)[0]
    assert audit.action == "REQUEST_MORE_TESTS" and audit.details["backtest_start"] == "2023-01-02"
    assert store.models.production() is None and store.registry_version() == 0


def test_bad_inputs(store: Store, make_proposal: Callable[..., Record]) -> None:
    p = make_proposal()
    with pytest.raises(ValueError, match="decision must be"):
        store.approvals.decide(p.proposal_id, "MAYBE", reviewer="ana")
    with pytest.raises(ValueError, match="reviewer"):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer=" ")
    with pytest.raises(NotFoundError):
        store.approvals.decide("prop_missing", "APPROVE", reviewer="ana")


def test_unservable_model_cannot_be_approved_into_production(
    store: Store, make_proposal: Callable[..., Record]
) -> None:
    p = make_proposal(servable=False)
    with pytest.raises(ModelNotServable):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana")
    assert store.proposals.get(p.proposal_id).status == "PENDING_APPROVAL"  # rolled back as a whole


def test_approve_without_promotion(store: Store, make_proposal: Callable[..., Record]) -> None:
    p = make_proposal()
    r = store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana", promote_to_production=False)
    assert r.status == "APPROVED" and not r.promoted
    assert store.models.production() is None and store.registry_version() == 0


def test_rollback_restores_the_previous_model(store: Store, make_proposal: Callable[..., Record]) -> None:
    with pytest.raises(NotFoundError, match="no previous production model"):
        store.approvals.rollback(reviewer="ana", notes="nothing to roll back")
    a, b = make_proposal(), make_proposal()
    store.approvals.decide(a.proposal_id, "APPROVE", reviewer="ana")
    with pytest.raises(NotFoundError):
        store.approvals.rollback(reviewer="ana")  # one production model, nothing archived yet
    store.approvals.decide(b.proposal_id, "APPROVE", reviewer="ana")
    version = store.registry_version()

    r = store.approvals.rollback(reviewer="monitor", notes="drift alarm", automatic=True)
    assert (r.model_id, r.previous_production_model_id, r.action) == (a.model_id, b.model_id, "AUTO_ROLLBACK")
    assert store.models.production().model_id == a.model_id
    assert store.models.get(b.model_id).stage == "archived"
    assert store.registry_version() == version + 1
    last = store.audit.list(limit=1)[0]
    assert (last.action, last.model_id, last.previous_production_model_id, last.reviewer) == (
        "AUTO_ROLLBACK", a.model_id, b.model_id, "monitor")
    assert store.approvals.rollback(reviewer="ana").action == "ROLLBACK"
    assert store.models.production().model_id == b.model_id


def test_proposal_upsert_is_idempotent_per_model(store: Store, make_proposal: Callable[..., Record]) -> None:
    p = make_proposal()
    again = store.proposals.upsert(
        model_id=p.model_id, experiment_name="baseline", experiment_version="1.0.0", recommendation="REVIEW",
        confidence=0.6, reasons=["re-run"], test_start="2024-01-02", test_end="2024-12-30",
        series_path="/lake/backtest/x.parquet",
    )
    assert again.proposal_id == p.proposal_id and again.recommendation == "REVIEW"
    assert again.test_start == date(2024, 1, 2)
    assert len(store.proposals.list()) == 1
    assert store.proposals.by_model(p.model_id).proposal_id == p.proposal_id
    store.approvals.decide(p.proposal_id, "REJECT", reviewer="ana")
    frozen = store.proposals.upsert(model_id=p.model_id, experiment_name="baseline", experiment_version="1.0.0",
                                    recommendation="PROMOTE", confidence=0.85)
    assert (frozen.status, frozen.recommendation) == ("REJECTED", "REVIEW")  # decided: never rewritten
    with pytest.raises(NotFoundError):
        store.proposals.upsert(model_id="ghost", experiment_name="x", experiment_version="1",
                               recommendation="PROMOTE", confidence=0.85)


def test_fifty_concurrent_approvals_leave_exactly_one_production_model(
    store: Store, make_proposal: Callable[..., Record]
) -> None:
    n = 50
    proposals = [make_proposal() for _ in range(n)]
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def approve(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = store.approvals.decide(proposals[i].proposal_id, "APPROVE", reviewer=f"r{i}")
        except ConflictError as exc:
            outcomes[i] = exc
        except BaseException as exc:  # anything else fails the test below
            outcomes[i] = exc

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    unexpected = [o for o in outcomes if not isinstance(o, (Record, ConflictError))]
    assert not unexpected, unexpected
    successes = [o for o in outcomes if isinstance(o, Record)]
    assert successes
    with store.engine.connect() as conn:
        production = conn.execute(sa.text("SELECT model_id FROM model_registry WHERE stage = 'production'")).all()
    assert len(production) == 1
    approvals = store.audit.list(limit=1000, action="APPROVE")
    assert sorted(a.proposal_id for a in approvals) == sorted(s.proposal_id for s in successes)
    # The promotions form one chain: each success archived the production model before it.
    assert store.registry_version() == len(successes)
    last = max(successes, key=lambda s: s.registry_version)
    assert production[0][0] == last.model_id
    assert sum(1 for s in successes if s.previous_production_model_id is None) == 1


def test_a_lost_race_on_the_unique_index_is_a_conflict_and_rolls_back(
    store: Store, make_proposal: Callable[..., Record], make_model: Callable[..., Record],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Simulate a concurrent writer whose production row this transaction did not see: the partial
    unique index fires, the whole decision rolls back, and the caller gets ConflictError (409)."""
    from usdcop_platform.adapters.store import registry

    other = make_model()
    store.models.set_stage(other.model_id, "production")
    p = make_proposal()
    version = store.registry_version()
    monkeypatch.setattr(registry, "current_production", lambda session, for_update=False: None)
    with pytest.raises(ConflictError, match="concurrent change"):
        store.approvals.decide(p.proposal_id, "APPROVE", reviewer="ana")
    monkeypatch.undo()
    assert store.proposals.get(p.proposal_id).status == "PENDING_APPROVAL"
    assert store.models.production().model_id == other.model_id
    assert store.registry_version() == version
    assert store.audit.list(proposal_id=p.proposal_id) == []
