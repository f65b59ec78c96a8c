"""The demo's own decisions (`usdcop demo`): the order of its steps, which session goes through
the live job, how that session's stored bars are sent (one catch-up run), whether a proposal is
approved (pending) or its earlier decision stands (a re-run), and what the approval says about the
first vote. The steps themselves are `usdcop run` (app/pipeline.py), the approvals API, the live
job and replay, passed in by the CLI (DemoSteps); the CLI prints what `on_step` tells it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.app.live_bars import bar_rows
from usdcop_platform.app.live_runs import LIVE_JOB_NAME, live_run_config, live_run_tags
from usdcop_platform.contracts.assets import RAW_BARS, key_string
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.core.calendar import TradingCalendar


class DemoError(RuntimeError):
    """A demo step could not run (no bars for the live session, the live run failed): one line."""


class JobRunLike(Protocol):
    run_id: str
    success: bool


class LaunchJob(Protocol):
    """Execute a job of the graph by name (adapters.dagster_runs.DagsterJobLauncher)."""

    def __call__(self, job_name: str, *, run_config: dict[str, Any], partition_key: str,
                 tags: dict[str, str]) -> JobRunLike: ...


def live_session(exp: ExperimentConfig, calendar: TradingCalendar) -> date:
    """The session the demo sends through the live job: the test split's last session."""
    end = exp.date_ranges.test.end
    return end if calendar.is_session(end) else calendar.previous_session(end)


def run_live_session(session: date, *, lake: ParquetLake, launch: LaunchJob) -> int:
    """Send every stored bar of `session` through the live job in ONE run, in time order, as the
    sensor's catch-up run does (the last bar, carrying the earlier ones): one Dagster run instead of
    one per bar (~60 run starts of ~0.3 s each), the same cycle per bar, the same signals. Returns
    how many bars."""
    bars = bar_rows(lake.read(key_string(RAW_BARS), session.isoformat()))
    if not bars:
        raise DemoError(f"no stored bars for session {session}")
    run = launch(LIVE_JOB_NAME, run_config=live_run_config(bars[-1], tuple(bars[:-1])),
                 partition_key=session.isoformat(), tags={**live_run_tags(bars[-1]), "usdcop/command": "demo"})
    if not run.success:
        raise DemoError(f"live run for the bars of {session} failed (dagster run {run.run_id})")
    return len(bars)


def is_override(proposal: dict[str, Any]) -> bool:
    """The demo approves whatever the rules said; approving a REJECT overrides the first vote."""
    return proposal.get("recommendation") == "REJECT"


def approval_notes(proposal: dict[str, Any]) -> str:
    if is_override(proposal):
        return ("demo override of the first vote: the rules recommended REJECT; approved only to exercise "
                "the live path on the demo's synthetic market")
    return f"demo approval (first vote {proposal.get('recommendation')})"


@dataclass(frozen=True)
class DemoSteps:
    """The demo's steps, as the CLI runs them."""

    run_pipeline: Callable[[], dict[str, Any]]  # `usdcop run` on the synthetic source: its result
    approve: Callable[[str, str, bool], dict[str, Any]]  # proposal id, notes, override -> the decision
    send_live_session: Callable[[date], int]  # a session's stored bars through the live job: how many
    replay: Callable[[date], Any]  # a session replayed from its journal (.matched)


@dataclass(frozen=True)
class DemoOutcome:
    run: dict[str, Any]  # usdcop run's result
    decision: dict[str, Any]  # the second vote: the approvals API's answer, or the earlier status
    production_model_id: str
    live_session: date
    bars: int
    signals: list[Any]  # the trained model's signal rows of the live session
    replay_matched: bool
    seconds: float

    @property
    def proposal(self) -> dict[str, Any]:
        return self.run["proposal"]

    def summary(self) -> dict[str, Any]:
        return {"run": self.run, "trained": self.run["trained"], "proposal": self.proposal,
                "decision": self.decision, "override": is_override(self.proposal),
                "live_session": self.live_session.isoformat(), "signals": len(self.signals),
                "replay_matched": self.replay_matched, "seconds": round(self.seconds, 1)}


def run_demo(exp: ExperimentConfig, calendar: TradingCalendar, store: Any, steps: DemoSteps, *,
             on_step: Callable[[str, dict[str, Any]], None] = lambda _step, _info: None) -> DemoOutcome:
    """usdcop run, the second vote, one session through the live job, its replay. `on_step` hears
    "pipeline" (usdcop run's result), then "approved" (the API's decision) or "decided before" (a
    re-run: the proposal's earlier decision), with the production model's id."""
    t0 = time.perf_counter()
    out = steps.run_pipeline()
    on_step("pipeline", out)
    trained, proposal = out["trained"], out["proposal"]
    if proposal["status"] == "PENDING_APPROVAL":
        decision = steps.approve(proposal["proposal_id"], approval_notes(proposal), is_override(proposal))
        production_id = trained["model_id"]
        on_step("approved", {"proposal": proposal, "decision": decision, "model_id": production_id})
    else:  # a re-run: the same config, data and seed minted the same model, already decided
        decision = {"status": proposal["status"]}
        production = store.models.production()
        if production is None:
            raise DemoError(f"proposal {proposal['proposal_id']} is {proposal['status']} and there is no "
                            "production model for the live step")
        production_id = production["model_id"]
        on_step("decided before", {"proposal": proposal, "decision": decision, "model_id": production_id})
    day = live_session(exp, calendar)
    bars = steps.send_live_session(day)
    report = steps.replay(day)
    signals = store.signals.list(session_date=day, model_id=trained["model_id"])
    return DemoOutcome(out, decision, production_id, day, bars, signals, bool(report.matched),
                       time.perf_counter() - t0)
