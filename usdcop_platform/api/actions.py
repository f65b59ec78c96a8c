"""The state-changing actions of the sidecar, shared by the JSON API and the HTML forms.

Each action is one store transaction (store.approvals.decide: proposal status, stages, audit
row) followed by best-effort side effects that never undo it: the MLflow `champion` alias
after a promotion, the Dagster run of a requested backtest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from usdcop_platform.adapters.artifacts import verifier_for
from usdcop_platform.adapters.store import StoreError
from usdcop_platform.app.champion import sync_champion
from usdcop_platform.api.errors import ApiError
from usdcop_platform.api.launcher import launch_backtest
from usdcop_platform.api.views import find_proposal, override_statement
from usdcop_platform.settings import Settings

# Schedules a callable after the response (FastAPI BackgroundTasks.add_task) or runs it now.
Scheduler = Callable[..., Any]


def _store_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a store call; a plain ValueError (bad input the schema could not catch) becomes 422."""
    try:
        return fn(*args, **kwargs)
    except StoreError:
        raise
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


def needs_override_confirmation(proposal: Any, decision: str) -> bool:
    """APPROVE of a pending, unexpired proposal the rules rated REJECT (decided or expired ones get
    the store's 409 instead)."""
    expires = proposal.get("expires_at")
    expired = expires is not None and expires < datetime.now(timezone.utc)
    return (decision == "APPROVE" and proposal["recommendation"] == "REJECT"
            and proposal["status"] == "PENDING_APPROVAL" and not expired)


@dataclass(frozen=True)
class DecisionOutcome:
    record: Any
    production_model_id: str | None


def decide(
    store: Any,
    settings: Settings,
    ident: str,
    decision: str,
    reviewer: str,
    notes: str,
    promote_to_production: bool,
    schedule: Scheduler,
    override_confirmed: bool = False,
) -> DecisionOutcome:
    """APPROVE or REJECT a proposal as `reviewer` (the authenticated key's owner).

    Approving a proposal the rules rated REJECT is an override: it needs `override_confirmed`
    (the reviewer saw the rules' reasons and confirms) besides the notes the store requires.
    """
    proposal = find_proposal(store, ident)
    if needs_override_confirmation(proposal, decision) and not override_confirmed:
        production = store.models.production()
        statement = override_statement(
            proposal, promote_to_production, production["model_id"] if production is not None else None
        )
        raise ApiError(
            422,
            f"override_confirmed: {statement} Confirm the override with override_confirmed=true "
            "(and notes explaining it).",
        )
    rec = _store_call(
        store.approvals.decide,
        proposal["proposal_id"],
        decision,
        reviewer=reviewer,
        notes=notes,
        promote_to_production=promote_to_production,
        verify=verifier_for(settings),  # the model's files, as the live path will load them
    )
    if rec["promoted"]:
        schedule(sync_champion, settings, store)
    production = store.models.production()
    return DecisionOutcome(rec, production["model_id"] if production is not None else None)


@dataclass(frozen=True)
class BacktestOutcome:
    decision: Any
    request: Any
    launched: bool
    message: str


def request_more_tests(
    store: Any, settings: Settings, ident: str, start: date, end: date, reviewer: str, notes: str
) -> BacktestOutcome:
    """REQUEST_MORE_TESTS: audited decision + backtest request, then the Dagster launch if configured."""
    proposal = find_proposal(store, ident)
    rec = _store_call(
        store.approvals.decide,
        proposal["proposal_id"],
        "REQUEST_MORE_TESTS",
        reviewer=reviewer,
        notes=notes,
        backtest_start=start,
        backtest_end=end,
    )
    request = store.backtest_requests.get(rec["backtest_request_id"])
    result = launch_backtest(settings.dagster_webserver_url, request, proposal["experiment_name"])
    if result.launched:
        request = store.backtest_requests.update_status(request["id"], "LAUNCHED", dagster_run_id=result.run_id)
        message = f"backtest {start}..{end} launched as Dagster run {result.run_id}"
    elif result.error:
        request = store.backtest_requests.update_status(request["id"], "PENDING", error=result.error)
        message = f"backtest {start}..{end} recorded as PENDING; the Dagster launch failed: {result.error}"
    else:
        message = (
            f"backtest {start}..{end} recorded as PENDING (no Dagster webserver configured); "
            f"run it with `usdcop backtest --request-id {request['id']}`"
        )
    return BacktestOutcome(rec, request, result.launched, message)
