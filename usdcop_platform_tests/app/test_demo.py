"""app.demo: the live session it picks, a session without stored bars refused before any run, and
the order of its steps with the second vote's two cases (a pending proposal approved, overriding a
REJECT with notes that say so; a re-run keeping the earlier decision, or stopping when no model
is in production). The steps here are plain functions recording their calls; the whole demo with
the real steps runs in e2e/test_demo.py."""

from __future__ import annotations

from datetime import date

import pytest


def test_the_live_session_is_the_test_splits_last_session(platform_config, calendar) -> None:
    from usdcop_platform.app.demo import live_session

    exp = platform_config.experiment("demo")
    day = live_session(exp, calendar)
    assert calendar.is_session(day) and day <= exp.date_ranges.test.end
    assert not calendar.sessions(day, exp.date_ranges.test.end)[1:]  # no later session in the split


def test_a_session_without_bars_launches_no_run(isolated_settings) -> None:
    from usdcop_platform.adapters.dagster_instance import open_instance
    from usdcop_platform.adapters.dagster_runs import DagsterJobLauncher
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.app.demo import DemoError, run_live_session
    from usdcop_platform.definitions import build_resources, defs

    with open_instance(isolated_settings.resolved_dagster_home) as instance:
        launch = DagsterJobLauncher(defs.resolve_job_def, build_resources(isolated_settings), instance)
        with pytest.raises(DemoError, match="no stored bars for session 2024-03-01"):
            run_live_session(date(2024, 3, 1), lake=ParquetLake(isolated_settings.data_dir), launch=launch)
        assert instance.get_runs() == []


def _steps(proposal: dict, calls: list, bars: int = 3, matched: bool = True):
    from types import SimpleNamespace

    from usdcop_platform.app.demo import DemoSteps

    return DemoSteps(
        run_pipeline=lambda: {"trained": {"model_id": "m-new"}, "proposal": proposal},
        approve=lambda pid, notes, override: calls.append(("approve", pid, notes, override))
        or {"status": "APPROVED", "reviewer": "demo-reviewer", "registry_version": 7},
        send_live_session=lambda day: calls.append(("live", day)) or bars,
        replay=lambda day: calls.append(("replay", day)) or SimpleNamespace(matched=matched))


@pytest.mark.parametrize("recommendation,override", [("PROMOTE", False), ("REJECT", True)])
def test_a_pending_proposal_is_approved_then_its_session_goes_live(sqlite_url, platform_config, calendar,
                                                                   recommendation, override) -> None:
    from usdcop_platform.adapters.store import Store
    from usdcop_platform.app.demo import live_session, run_demo

    store = Store(sqlite_url)
    store.upgrade()
    calls: list = []
    heard: list = []
    proposal = {"proposal_id": "prop_1", "status": "PENDING_APPROVAL", "recommendation": recommendation}
    exp = platform_config.experiment("demo")
    out = run_demo(exp, calendar, store, _steps(proposal, calls), on_step=lambda step, info: heard.append(step))
    day = live_session(exp, calendar)
    assert [c[0] for c in calls] == ["approve", "live", "replay"] and calls[0][3] is override
    assert ("override" in calls[0][2]) is override  # the notes say when the first vote is overridden
    assert heard == ["pipeline", "approved"] and out.production_model_id == "m-new"
    assert out.summary()["decision"]["registry_version"] == 7 and out.summary()["override"] is override
    assert out.live_session == day and out.bars == 3 and out.replay_matched and out.signals == []


def test_a_decided_proposal_without_a_production_model_stops_before_the_live_step(sqlite_url, platform_config,
                                                                                  calendar) -> None:
    from usdcop_platform.adapters.store import Store
    from usdcop_platform.app.demo import DemoError, run_demo

    store = Store(sqlite_url)
    store.upgrade()
    calls: list = []
    proposal = {"proposal_id": "prop_1", "status": "REJECTED", "recommendation": "REJECT"}
    with pytest.raises(DemoError, match="prop_1 is REJECTED and there is no production model"):
        run_demo(platform_config.experiment("demo"), calendar, store, _steps(proposal, calls))
    assert calls == []  # nothing approved, nothing sent live


def test_a_rerun_keeps_the_earlier_decision_and_serves_the_production_model(sqlite_url, platform_config,
                                                                             calendar) -> None:
    from usdcop_platform.adapters.store import Store
    from usdcop_platform.app.demo import run_demo

    store = Store(sqlite_url)
    store.upgrade()
    store.models.register(model_id="m-old", experiment_name="demo", experiment_version="1.0.0", model_hash="a" * 64,
                          onnx_hash="b" * 64, norm_stats_hash="c" * 64, feature_order_hash="d" * 64, metrics={})
    store.models.set_stage("m-old", "production", reviewer="someone", notes="earlier run")
    calls: list = []
    heard: list = []
    proposal = {"proposal_id": "prop_1", "status": "APPROVED", "recommendation": "PROMOTE"}
    out = run_demo(platform_config.experiment("demo"), calendar, store, _steps(proposal, calls),
                   on_step=lambda step, info: heard.append((step, info.get("model_id"))))
    assert [c[0] for c in calls] == ["live", "replay"]  # not approved twice
    assert heard == [("pipeline", None), ("decided before", "m-old")]
    assert out.decision == {"status": "APPROVED"} and out.production_model_id == "m-old"
