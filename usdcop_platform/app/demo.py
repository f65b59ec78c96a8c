"""The demo's own decisions (`usdcop demo`): which session goes through the live job, how that
session's stored bars are sent (one catch-up run), and what its approval says about the first vote.
The rest of the demo is `usdcop run` (app/pipeline.py) and the approvals API."""

from __future__ import annotations

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
