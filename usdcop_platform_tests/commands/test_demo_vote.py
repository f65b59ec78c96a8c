"""The demo says when its approval overrides the first vote, and approves through the real API."""

from __future__ import annotations

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store import clear_store_cache, get_store
from usdcop_platform.app.demo import approval_notes, is_override
from usdcop_platform.commands.demo import approve_through_api, first_vote_line, second_vote_line
from usdcop_platform_tests.api.conftest import make_settings, seed_proposal

REJECTED = {"recommendation": "REJECT", "confidence": 0.9, "reasons": ["FAIL sharpe -0.41 < 0.5"]}
PROMOTED = {"recommendation": "PROMOTE", "confidence": 0.85, "reasons": ["all criteria pass"]}


def test_an_approved_reject_is_called_a_human_override() -> None:
    assert is_override(REJECTED) and not is_override(PROMOTED)
    assert first_vote_line(REJECTED) == "first vote (promotion rules): REJECT, confidence 0.9: FAIL sharpe -0.41 < 0.5"
    line = second_vote_line(REJECTED, "APPROVED", "demo-reviewer")
    assert "HUMAN OVERRIDE" in line and "APPROVED by demo-reviewer" in line and "said REJECT" in line
    assert "override" in approval_notes(REJECTED)


def test_an_approved_promote_is_no_override() -> None:
    line = second_vote_line(PROMOTED, "APPROVED", "demo-reviewer")
    assert "OVERRIDE" not in line and line == "second vote: APPROVED by demo-reviewer (the first vote was PROMOTE)"
    assert "override" not in approval_notes(PROMOTED)
    # a re-run of the demo finds the proposal already approved: still said to be an override
    assert "HUMAN OVERRIDE" in second_vote_line(REJECTED, "APPROVED", None)


def test_the_demo_approves_a_rejected_proposal_through_the_api(tmp_path, calendar) -> None:
    """The demo's approval request is one the API accepts for a REJECT-rated proposal (it must carry
    whatever the API requires to override a REJECT), and the audit row says it was an override."""
    settings = make_settings(tmp_path, f"sqlite:///{(tmp_path / 'demo.db').as_posix()}")
    clear_store_cache()
    store = get_store(settings.resolved_database_url)
    store.upgrade()
    proposal = seed_proposal(store, ParquetLake(settings.data_dir), calendar, recommendation="REJECT")
    try:
        decision = approve_through_api(proposal["proposal_id"], settings, approval_notes(proposal),
                                       override=is_override(proposal))
        assert decision["status"] == "APPROVED" and decision["promoted"]
        assert store.models.production()["model_id"] == proposal["model_id"]
        (audit,) = store.audit.list(action="APPROVE")
        assert audit["reviewer"] == "demo-reviewer" and "override" in audit["notes"]
    finally:
        clear_store_cache()
