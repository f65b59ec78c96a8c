"""`features/m5_features` materialized in memory over real sessions: checks, lookback across a
weekend and a holiday, refusal to publish NaN rows, the warm-up gap warning."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.core.features import compute_features, max_abs_difference
from usdcop_platform.app.features import BLOCKING_CHECKS, CHECK_GAPS, FEATURES_DATASET
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform.defs.features.assets import FEATURES_KEY, LOOKBACK_SESSIONS, m5_features
from usdcop_platform.defs.market_data.assets import RAW_BARS_KEY
from usdcop_platform.defs.partitions import session_partitions
from usdcop_platform.defs.resources import PlatformResource, build_resources
from usdcop_platform_tests.core.features_support import real_bars, real_macro

LAKE_START = date(2023, 10, 2)
LAKE_END = date(2024, 1, 31)
HOLIDAY_SESSION = "2024-01-09"  # Tuesday: the lookback crosses the weekend and Monday Jan 8 (Reyes Magos)


@pytest.fixture(scope="module")
def real(real_bars_path, real_macro_path):
    return real_bars(str(real_bars_path)), real_macro(str(real_macro_path))


@pytest.fixture(scope="module")
def full_features(real, platform_config, calendar) -> pl.DataFrame:
    bars, macro = real
    return compute_features(bars, macro, platform_config.features, calendar, platform_config.macro)


def _local_date() -> pl.Expr:
    return pl.col("time").dt.convert_time_zone("America/Bogota").dt.date()


def _make_lake(root: Path, bars: pl.DataFrame, macro: pl.DataFrame) -> ParquetLake:
    lake = ParquetLake(root)
    part = bars.filter(_local_date().is_between(LAKE_START, LAKE_END)).with_columns(_d=_local_date())
    for (d,), frame in part.group_by("_d"):
        lake.write(BARS_DATASET, d.isoformat(), frame.drop("_d").sort("time"))
    lake.write(MACRO_DATASET, MACRO_PARTITION, macro)
    return lake


def _resources(tmp_path: Path, platform_config) -> dict:
    return {
        "platform": PlatformResource(
            data_dir=str(tmp_path / "lake"),
            models_dir=str(tmp_path / "models"),
            config_dir=str(platform_config.config_dir),
            database_url=f"sqlite:///{tmp_path / 'x.db'}",
            state_dir=str(tmp_path / "state"),
        )
    }


def _materialize(tmp_path: Path, platform_config, key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize_to_memory(
        [m5_features], resources=_resources(tmp_path, platform_config), partition_key=key, raise_on_error=False
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_definitions_load() -> None:
    from usdcop_platform.defs.features.definitions import defs

    dg.Definitions.validate_loadable(dg.Definitions.merge(defs, dg.Definitions(resources=build_resources())))
    spec = next(iter(m5_features.specs))
    assert spec.key == FEATURES_KEY and spec.partitions_def == session_partitions
    mapping = m5_features.get_partition_mapping(RAW_BARS_KEY)
    assert isinstance(mapping, dg.TimeWindowPartitionMapping) and mapping.start_offset == -LOOKBACK_SESSIONS
    assert {c.name for c in m5_features.check_specs} == {*BLOCKING_CHECKS, CHECK_GAPS}


@pytest.mark.parametrize("key", [HOLIDAY_SESSION, "2024-01-02", "2023-12-14"])
def test_partition_equals_full_history(tmp_path, real, full_features, platform_config, key) -> None:
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro)
    result = _materialize(tmp_path, platform_config, key)
    assert result.success
    checks = _checks(result)
    assert all(checks[name].passed for name in BLOCKING_CHECKS), {n: c.metadata for n, c in checks.items()}
    written = lake.read(FEATURES_DATASET, key)
    expected = full_features.filter(pl.col("session") == date.fromisoformat(key))
    assert written is not None and written.height == expected.height > 0
    assert written.columns == expected.columns
    # equal to the computation over the whole 2020-2024 history, not just the lake's slice
    assert max_abs_difference(written, expected, list(platform_config.features.names)) <= 1e-9
    meta = result.asset_materializations_for_node("features__m5_features")[0].metadata
    assert meta["published"].value is True and meta["rows"].value == expected.height
    assert meta["run_history_bars_read"].value >= platform_config.features.warmup_bars


def test_lookback_crosses_weekend_and_holiday(calendar) -> None:
    mapping = m5_features.get_partition_mapping(RAW_BARS_KEY)
    subset = session_partitions.empty_subset().with_partition_keys([HOLIDAY_SESSION])
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        subset, session_partitions, session_partitions
    ).partitions_subset.get_partition_keys()
    keys = sorted(upstream)
    assert len(keys) == LOOKBACK_SESSIONS + 1 and keys[-1] == HOLIDAY_SESSION
    assert "2024-01-08" not in keys and "2024-01-06" not in keys and "2024-01-05" in keys
    assert all(calendar.is_session(date.fromisoformat(k)) for k in keys)


def test_start_of_data_publishes_only_rows_with_w_bars(tmp_path, real, platform_config) -> None:
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro)
    first = lake.partitions(BARS_DATASET)[0]
    result = _materialize(tmp_path, platform_config, first)
    assert result.success
    written = lake.read(FEATURES_DATASET, first)
    assert written is not None and written.height == 0  # no bar of the first session has W earlier bars
    assert all(_checks(result)[n].passed for n in BLOCKING_CHECKS)


def test_macro_missing_beyond_ffill_limit_fails_and_writes_nothing(tmp_path, real, platform_config) -> None:
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro.filter(pl.col("date") < date(2023, 12, 20)))
    result = _materialize(tmp_path, platform_config, HOLIDAY_SESSION)
    checks = _checks(result)
    assert not checks["no_nan_after_warmup"].passed
    assert "dxy_z" in checks["no_nan_after_warmup"].metadata["features_with_nan"].value
    assert not lake.exists(FEATURES_DATASET, HOLIDAY_SESSION)  # no row with NaN published
    meta = result.asset_materializations_for_node("features__m5_features")[0].metadata
    assert meta["published"].value is False


def test_gap_in_warmup_window_warns_but_publishes(tmp_path, real, full_features, platform_config) -> None:
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro)
    victim = "2024-01-03"
    frame = lake.read(BARS_DATASET, victim)
    lake.write(BARS_DATASET, victim, frame.filter(pl.int_range(pl.len()).is_between(10, 29).not_()))
    result = _materialize(tmp_path, platform_config, HOLIDAY_SESSION)
    assert result.success
    checks = _checks(result)
    gap = checks[CHECK_GAPS]
    assert not gap.passed and gap.severity == dg.AssetCheckSeverity.WARN
    assert gap.metadata["missing_bars"].value >= 20 and victim in gap.metadata["sessions_with_gaps"].value
    assert all(checks[n].passed for n in BLOCKING_CHECKS)
    written = lake.read(FEATURES_DATASET, HOLIDAY_SESSION)
    assert written is not None and np.isfinite(written.select(platform_config.features.names).to_numpy()).all()


def test_missing_macro_dataset_fails_clearly(tmp_path, real, platform_config) -> None:
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro)
    lake.delete(MACRO_DATASET, MACRO_PARTITION)
    result = _materialize(tmp_path, platform_config, HOLIDAY_SESSION)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "raw/macro_daily" in str(failure)


def test_missing_sessions_make_the_asset_read_further_back(tmp_path, real, platform_config) -> None:
    """With 15 of the 20 lookback sessions absent, W bars are found further back; the partition
    still equals the full-history computation over the same lake, and the gap check warns."""
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro)
    earlier = [p for p in lake.partitions(BARS_DATASET) if p < HOLIDAY_SESSION][-LOOKBACK_SESSIONS:]
    for key in earlier[:15]:
        lake.delete(BARS_DATASET, key)
    result = _materialize(tmp_path, platform_config, HOLIDAY_SESSION)
    assert result.success
    checks = _checks(result)
    assert all(checks[n].passed for n in BLOCKING_CHECKS), {n: c.metadata for n, c in checks.items()}
    assert checks[CHECK_GAPS].metadata["missing_sessions"].value >= 1
    meta = result.asset_materializations_for_node("features__m5_features")[0].metadata
    assert meta["run_history_bars_read"].value >= platform_config.features.warmup_bars
    assert lake.read(FEATURES_DATASET, HOLIDAY_SESSION).height == 60


# ---- range runs (one run for many session partitions) ------------------------------------------------


def _materialize_range(tmp_path: Path, platform_config, first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize_to_memory(
        [m5_features], resources=_resources(tmp_path, platform_config), raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def _per_partition(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {m.partition: {k: v.value for k, v in m.metadata.items()}
            for m in result.asset_materializations_for_node("features__m5_features")}


def test_single_run_backfill_policy() -> None:
    assert m5_features.backfill_policy is not None and m5_features.backfill_policy.max_partitions_per_run is None


def test_range_run_equals_full_history_with_per_session_metadata(tmp_path, real, full_features, platform_config) -> None:
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro)
    first, last = "2023-12-01", "2024-01-31"
    result = _materialize_range(tmp_path, platform_config, first, last)
    assert result.success
    checks = _checks(result)
    assert all(checks[n].passed for n in BLOCKING_CHECKS), {n: c.metadata for n, c in checks.items()}
    # the range does not start at the lake's first partition: the full history is compared once, separately
    assert "once per range" in checks["matches_full_history"].metadata["compared"].value
    per = _per_partition(result)
    keys = [k for k in session_partitions.get_partition_keys() if first <= k <= last]
    assert sorted(per) == keys  # one materialization per session of the range
    names = list(platform_config.features.names)
    for key in keys:
        written = lake.read(FEATURES_DATASET, key)
        expected = full_features.filter(pl.col("session") == date.fromisoformat(key))
        assert written is not None and written.height == expected.height == per[key]["dagster/row_count"]
        assert max_abs_difference(written, expected, names) <= 1e-9
        assert per[key]["published"] is True and per[key]["first_bar"] == str(written["time"][0])
    assert per[keys[0]]["run_sessions"] == len(keys)


def test_range_run_names_failing_and_empty_sessions(tmp_path, real, platform_config) -> None:
    """Macro ends 2023-12-20: sessions past the forward-fill limit carry NaN and are refused by name;
    a session whose bars were removed is materialized with 0 rows and not published."""
    bars, macro = real
    lake = _make_lake(tmp_path / "lake", bars, macro.filter(pl.col("date") < date(2023, 12, 20)))
    empty = "2023-12-06"
    lake.delete(BARS_DATASET, empty)
    result = _materialize_range(tmp_path, platform_config, "2023-12-01", "2024-01-31")
    nan = _checks(result)["no_nan_after_warmup"]
    assert not nan.passed and "2024-01-09" in nan.metadata["sessions_failing"].value
    assert "2023-12-04" not in nan.metadata["sessions_failing"].value
    per = _per_partition(result)
    assert per["2024-01-09"]["published"] is False and per["2024-01-09"]["dagster/row_count"] == 0
    assert "no_nan_after_warmup" in per["2024-01-09"]["failed_checks"]
    assert not lake.exists(FEATURES_DATASET, "2024-01-09")
    assert per["2023-12-04"]["published"] is True and lake.exists(FEATURES_DATASET, "2023-12-04")
    assert per[empty]["published"] is False and per[empty]["dagster/row_count"] == 0
    assert per[empty]["session_bars"] == 0 and not lake.exists(FEATURES_DATASET, empty)
