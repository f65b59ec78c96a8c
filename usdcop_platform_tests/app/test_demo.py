"""app.demo: the live session it picks and a session without stored bars refused before any run
(the whole demo runs in e2e/test_demo.py)."""

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
