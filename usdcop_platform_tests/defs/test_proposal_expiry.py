"""Proposal expiry is scheduled: the schedule's tick runs `proposal_expiry_job`, which expires the
overdue pending proposals (one EXPIRE audit row each) and leaves the others alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from usdcop_platform.adapters.store import clear_store_cache
from usdcop_platform.defs.monitoring.expiry import (
    EXPIRY_REVIEWER,
    expire_due_proposals,
    proposal_expiry_job,
    proposal_expiry_schedule,
)
from usdcop_platform_tests.defs.monitoring_support import EXPERIMENT, make_world, register_model


@pytest.fixture
def world(tmp_path, db_url):
    w = make_world(tmp_path, db_url)
    yield w
    clear_store_cache()


def _proposal(world, model_id: str, expires_in: timedelta) -> str:
    register_model(world, model_id)
    return world.store.proposals.upsert(
        model_id=model_id, experiment_name=EXPERIMENT, experiment_version=world.cfg.experiment(EXPERIMENT).version,
        recommendation="PROMOTE", confidence=0.85, metrics={"sharpe": 1.0},
        expires_at=datetime.now(timezone.utc) + expires_in)["proposal_id"]


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(timezone.utc)) as ctx:
        (req,) = proposal_expiry_schedule.evaluate_tick(ctx).run_requests
    return defs.resolve_job_def(proposal_expiry_schedule.job_name).execute_in_process(
        run_config=req.run_config, instance=instance)


def test_the_schedule_expires_overdue_proposals_and_audits_each(world) -> None:
    overdue = _proposal(world, "m-overdue", timedelta(hours=-1))
    current = _proposal(world, "m-current", timedelta(days=3))
    defs = dg.Definitions(jobs=[proposal_expiry_job], schedules=[proposal_expiry_schedule],
                          resources=world.resources())
    with dg.instance_for_test() as instance:
        result = _tick(defs, instance)
        assert result.success and result.output_for_node(expire_due_proposals.name) == [overdue]
        (mat,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        assert mat.event_specific_data.metadata["expired"].value == 1
        assert world.store.proposals.get(overdue)["status"] == "EXPIRED"
        assert world.store.proposals.get(current)["status"] == "PENDING_APPROVAL"
        (audit,) = world.store.audit.list(action="EXPIRE")
        assert audit["proposal_id"] == overdue and audit["model_id"] == "m-overdue"
        assert audit["reviewer"] == EXPIRY_REVIEWER and audit["notes"] == "expired without a decision"
        again = _tick(defs, instance)  # the next hour: nothing left to expire, nothing audited twice
        assert again.output_for_node(expire_due_proposals.name) == []
        assert len(world.store.audit.list(action="EXPIRE")) == 1


def test_the_schedule_is_in_the_definitions() -> None:
    from usdcop_platform.definitions import defs

    assert defs.resolve_schedule_def("proposal_expiry_schedule").job_name == proposal_expiry_job.name
    assert proposal_expiry_schedule.cron_schedule == "7 * * * *"
    assert proposal_expiry_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
