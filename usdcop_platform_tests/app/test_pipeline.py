"""app.pipeline: the span it ingests and the requests it refuses before launching any run (the
stages themselves run end to end in e2e/test_run_cli.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest


def _deps(settings, instance):
    from usdcop_platform import definitions
    from usdcop_platform.adapters.dagster_history import DagsterHistory
    from usdcop_platform.adapters.dagster_runs import DagsterAssetsLauncher, DagsterRunLauncher
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.app.pipeline import PipelineDeps
    from usdcop_platform.contracts.assets import MODEL
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar

    cfg = load_platform_config(settings.config_dir)
    resources = definitions.build_resources(settings)
    return PipelineDeps(
        config=cfg, config_dir=str(settings.config_dir), partitions=instance,
        launch=DagsterAssetsLauncher(definitions.asset_def, resources, instance),
        ingest_launch=DagsterRunLauncher(definitions.asset_def, resources, instance),
        history=DagsterHistory(instance, definitions.asset_def(MODEL).op.name), lake=ParquetLake(settings.data_dir),
        store=get_store(settings.resolved_database_url), today=datetime.now(TradingCalendar(cfg.instrument).tz).date())


def test_the_span_starts_a_warm_up_before_the_train_split_and_ends_with_the_test_split(platform_config) -> None:
    from usdcop_platform.app.pipeline import experiment_span
    from usdcop_platform.core.calendar import TradingCalendar

    exp = platform_config.experiment("smoke")
    calendar = TradingCalendar(platform_config.instrument)
    start, end = experiment_span(platform_config, "smoke")
    assert end == exp.date_ranges.test.end
    warmup = calendar.sessions(start, exp.date_ranges.train.start)[:-1]
    assert calendar.is_session(start)
    assert len(warmup) * calendar.bars_per_session >= platform_config.features.warmup_bars


@pytest.mark.parametrize(
    ("request_kw", "error", "message"),
    [
        ({"experiment": "nope"}, "ConfigError", "nope"),
        ({"experiment": "smoke", "source": "file"}, "RunFailed", "--source file needs --bars PATH"),
        ({"experiment": "smoke", "source": "file", "bars": Path("/no/such/bars.csv")}, "RunFailed",
         "/no/such/bars.csv: file not found"),
    ],
)
def test_a_bad_request_is_refused_before_any_run(isolated_settings, request_kw, error, message) -> None:
    from usdcop_platform.adapters.dagster_instance import open_instance
    from usdcop_platform.app.pipeline import PipelineRequest, run_pipeline

    with open_instance(isolated_settings.resolved_dagster_home) as instance:
        with pytest.raises(Exception, match=message) as raised:
            run_pipeline(PipelineRequest(**request_kw), _deps(isolated_settings, instance))
        assert type(raised.value).__name__ == error
        assert instance.get_runs() == []
