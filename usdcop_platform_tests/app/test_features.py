"""app.features.build_features without Dagster: a range's sessions written or not by their own checks,
a session without bars named as such, and no macro series refused before anything is read."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.app.features import FEATURES_DATASET, FeatureBuildError, build_features
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform_tests.core.features_support import real_bars, real_macro

FIRST, LAST = date(2023, 11, 1), date(2024, 1, 12)
MISSING = date(2024, 1, 11)  # a session whose bars are not in the lake


def test_no_macro_series_is_refused_naming_the_asset(tmp_path, platform_config, calendar) -> None:
    with pytest.raises(FeatureBuildError, match="raw/macro_daily"):
        build_features(ParquetLake(tmp_path), platform_config, calendar, [date(2024, 1, 10)])


def test_a_range_publishes_each_session_by_its_own_bars(tmp_path, platform_config, calendar, real_bars_path,
                                                        real_macro_path) -> None:
    lake = ParquetLake(tmp_path)
    bars = real_bars(str(real_bars_path)).with_columns(_d=calendar.session_expr())
    for (d,), frame in bars.filter(pl.col("_d").is_between(FIRST, LAST) & (pl.col("_d") != MISSING)).group_by("_d"):
        lake.write(BARS_DATASET, d.isoformat(), frame.drop("_d").sort("time"))
    lake.write(MACRO_DATASET, MACRO_PARTITION, real_macro(str(real_macro_path)))

    sessions = [date(2024, 1, 10), MISSING, date(2024, 1, 12)]
    out = build_features(lake, platform_config, calendar, sessions)

    assert (out.published, out.refused) == (2, 1)
    assert all(out.outcome.passed[c] for c in ("no_nan_after_warmup", "feature_order_hash", "indicator_ranges"))
    missing = out.per_session[MISSING.isoformat()]
    assert missing["published"] is False and missing["reason"] == "no published bars for this session"
    assert not lake.exists(FEATURES_DATASET, MISSING.isoformat())
    ok = out.per_session["2024-01-12"]
    assert ok["published"] and ok["rows"] == lake.read(FEATURES_DATASET, "2024-01-12").height > 0
    assert out.history_bars_read > 0


def test_each_range_check_fails_the_sessions_it_finds(tmp_path, platform_config, calendar, real_bars_path,
                                                      real_macro_path) -> None:
    """evaluate_range on a published range, tampered: an RSI above 100, a value the full-history
    computation does not give, a gap in the warm-up window, columns out of contract order."""
    from usdcop_platform.app.features import evaluate_range

    lake = ParquetLake(tmp_path)
    bars = real_bars(str(real_bars_path)).with_columns(_d=calendar.session_expr())
    for (d,), frame in bars.filter(pl.col("_d").is_between(FIRST, LAST)).group_by("_d"):
        lake.write(BARS_DATASET, d.isoformat(), frame.drop("_d").sort("time"))
    lake.write(MACRO_DATASET, MACRO_PARTITION, real_macro(str(real_macro_path)))
    sessions = [date(2024, 1, 10), date(2024, 1, 11)]
    build_features(lake, platform_config, calendar, sessions)
    df = pl.concat([lake.read(FEATURES_DATASET, d.isoformat()) for d in sessions], how="vertical")
    contract = platform_config.features
    window = lake.read(BARS_DATASET, "2024-01-10")
    clean = evaluate_range(df, df, contract, window, calendar)
    assert all(clean.passed.values()) and clean.failed_by_session == {}

    rsi = next(n for n in contract.names if "rsi" in n)
    first_bar = df["time"][0]
    bad = df.with_columns(pl.when(pl.col("time") == first_bar).then(150.0).otherwise(pl.col(rsi)).alias(rsi))
    gappy = window.filter(pl.col("time") != window["time"][5])
    out = evaluate_range(bad, df, contract, gappy, calendar)
    jan10 = date(2024, 1, 10)
    assert out.failed_by_session[jan10] == ["indicator_ranges", "matches_full_history", "warmup_window_gaps"]
    assert date(2024, 1, 11) not in out.failed_by_session
    assert out.check_metadata["indicator_ranges"][f"{rsi}_out_of_range"] == 1
    assert out.check_metadata["matches_full_history"]["sessions_failing"] == "2024-01-10"
    assert out.check_metadata["warmup_window_gaps"]["missing_bars"] == 1
    assert out.passed == {"no_nan_after_warmup": True, "feature_order_hash": True, "indicator_ranges": False,
                          "matches_full_history": False, "warmup_window_gaps": False}
    shuffled = df.select(list(reversed(df.columns)))
    assert sorted(evaluate_range(shuffled, None, contract, window, calendar).failed_by_session) == sessions
