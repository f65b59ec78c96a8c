"""What `usdcop run` considers current, read from the local instance's event log: bars present per
session, features newer than their bars and the macro, all in one range run each."""

from __future__ import annotations

from datetime import date

import dagster as dg


def test_stale_sessions_follow_the_event_log(isolated_settings) -> None:
    from usdcop_platform.commands.common import open_local_instance
    from usdcop_platform.commands.data import ingest
    from usdcop_platform import definitions
    from usdcop_platform.adapters.dagster_history import DagsterHistory
    from usdcop_platform.adapters.dagster_runs import DagsterAssetsLauncher
    from usdcop_platform.app.pipeline import features_run
    from usdcop_platform.contracts.assets import MODEL
    from usdcop_platform.core.calendar import default_calendar

    calendar = default_calendar()
    sessions = calendar.sessions(date(2024, 2, 1), date(2024, 3, 29))
    keys = [d.isoformat() for d in sessions]
    with open_local_instance(isolated_settings) as instance:
        history = DagsterHistory(instance, definitions.asset_def(MODEL).op.name)
        missing_bar_sessions, stale_feature_sessions = history.missing_bar_sessions, history.stale_feature_sessions
        launch = DagsterAssetsLauncher(definitions.asset_def, definitions.build_resources(isolated_settings), instance)
        assert missing_bar_sessions(keys) == keys
        ingest(source="synthetic", start=sessions[0], end=sessions[-1], seed=3, settings=isolated_settings,
               instance=instance)
        assert missing_bar_sessions(keys) == []
        assert stale_feature_sessions(keys) == keys  # bars newer than (absent) features

        out = features_run(launch, keys)
        assert out["sessions"] == len(keys) and out["published"] > 0
        runs = instance.get_runs()
        assert len([r for r in runs if r.tags.get("dagster/asset_partition_range_start") == keys[0]
                    and r.tags.get("usdcop/command") == "run"]) == 1  # one run for the whole range
        assert stale_feature_sessions(keys) == []

        # re-ingesting two sessions also re-materializes the macro series, which every session reads
        ingest(source="synthetic", start=sessions[-2], end=sessions[-1], seed=3, settings=isolated_settings,
               instance=instance)
        assert stale_feature_sessions(keys) == keys  # the macro was re-materialized: all stale
        features_run(launch, keys)
        assert stale_feature_sessions(keys) == []
        mats = instance.get_materialized_partitions(dg.AssetKey(["features", "m5_features"]))
        assert set(keys) <= mats
