"""app/monitoring.py called directly, without Dagster: the use cases take their adapters and the
instant they evaluate at, write their history and return what the assets show."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from usdcop_platform.adapters.webhook import AlertDispatcher
from usdcop_platform.app import monitoring as mon
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.app.lifecycle import ROLLBACK_PROPOSED
from usdcop_platform.core.actions import SELL
from usdcop_platform_tests.defs.monitoring_support import (
    World,
    add_signals,
    at,
    make_world,
    register_model,
    sessions_from,
    write_bars,
)

FIRST = date(2024, 3, 4)


def _inputs(world: World) -> mon.MonitoringInputs:
    return mon.MonitoringInputs(store=world.store, lake=world.lake, calendar=world.calendar, config=world.cfg,
                                models_root=Path(world.platform.models_dir))


def _dispatcher(world: World):
    return lambda: AlertDispatcher.create(world.store, None, world.cfg.mlops.monitoring.alerts)


def _no_dispatcher():
    raise AssertionError("no alert is due: the dispatcher must not be built")


def test_drift_without_production_is_skipped_with_a_history_row(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    now = at(world, FIRST, 11)
    out = mon.check_drift(_inputs(world), now, _no_dispatcher)
    assert isinstance(out, mon.Skipped) and "no production model" in out.reason
    (row,) = h.read_recent(world.lake, h.DRIFT_DATASET, sessions=1).to_dicts()
    assert row["status"] == "SKIPPED" and row["reason"] == out.reason and row["checked_at"] == now


def test_drift_reference_missing_is_an_error_naming_the_dataset(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    register_model(world, "m-prod", production=True)
    with pytest.raises(mon.MonitoringError, match="reference missing: lake dataset datasets/smoke"):
        mon.check_drift(_inputs(world), at(world, FIRST, 11), _no_dispatcher)


def test_realized_performance_files_one_rollback_proposal(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    sessions = sessions_from(world, FIRST, 6)
    register_model(world, "m-old", production=True)
    register_model(world, "m-prod", production=True, sharpe=2.0)  # archives m-old (the rollback target)
    rng = np.random.default_rng(0)
    for d in sessions:  # up-trending bars; production always SELLs
        write_bars(world, d, list(4000.0 * np.exp(np.cumsum(rng.normal(1e-4, 2e-4, 60)))))
        add_signals(world, d, "m-prod", "production", [SELL] * 12, every=5)
    now = at(world, sessions[-1], 13, 30)

    out = mon.check_realized_performance(_inputs(world), now, _dispatcher(world))
    assert isinstance(out, mon.PerformanceResult)
    assert out.production_model_id == "m-prod" and out.verdict is not None and out.verdict.status == "ROLLBACK"
    assert out.action == "rollback_proposed" and out.action_error is None
    assert len(out.traded) == 6 and out.n_signals == 6 * 12
    (proposal,) = world.store.audit.list(action=ROLLBACK_PROPOSED)
    assert proposal["details"]["target_model_id"] == "m-old"
    assert world.store.models.production()["model_id"] == "m-prod"

    again = mon.check_realized_performance(_inputs(world), now, _dispatcher(world))
    assert isinstance(again, mon.PerformanceResult) and again.action == "already_proposed"
    hist = h.read_recent(world.lake, h.PERFORMANCE_HISTORY_DATASET, sessions=1)
    assert hist["action"].to_list() == ["already_proposed"]  # the same instant: its row replaced


def test_no_signals_and_no_shadow_models_write_nothing(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    now = at(world, FIRST, 13)
    out = mon.check_realized_performance(_inputs(world), now, _no_dispatcher)
    assert isinstance(out, mon.Skipped) and out.reason.startswith("no live signals since")
    rows, comparisons = mon.shadow_ab(_inputs(world), now)
    assert rows == [] and comparisons == []
    assert world.lake.partitions(h.AB_REPORT_DATASET) == []
    shadow = mon.run_shadow_signals(_inputs(world), now)
    assert isinstance(shadow, mon.Skipped) and "no challenger" in shadow.reason
