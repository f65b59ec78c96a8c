"""Batch feature engine: the frame contract, definitions, macro alignment and bad input."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from usdcop_platform.contracts.base import sha256_hex
from usdcop_platform.contracts.errors import ConfigError
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.contracts.platform import load_platform_config
from usdcop_platform.core.features import (
    BAR_COLUMNS,
    FeatureError,
    InsufficientHistoryError,
    compute_features,
    feature_matrix,
    history_gaps,
    macro_session_features,
    max_abs_difference,
    non_finite_rows,
)
from usdcop_platform_tests.core.features_support import small_contract, synthetic_bars, synthetic_macro

START = date(2024, 1, 2)


@pytest.fixture(scope="module")
def bars(calendar) -> pl.DataFrame:
    return synthetic_bars(calendar, START, 30, seed=1)


@pytest.fixture(scope="module")
def macro() -> pl.DataFrame:
    return synthetic_macro(date(2022, 6, 1), date(2024, 3, 1), seed=2)


@pytest.fixture(scope="module")
def contract():
    return small_contract(120)


@pytest.fixture(scope="module")
def feats(bars, macro, contract, calendar, platform_config) -> pl.DataFrame:
    return compute_features(bars, macro, contract, calendar, platform_config.macro)


def test_frame_layout_and_warmup_drop(feats, bars, contract) -> None:
    assert feats.columns == [*BAR_COLUMNS, *contract.names]
    assert feats.height == bars.height - contract.warmup_bars
    assert feats["time"][0] == bars["time"][contract.warmup_bars]
    assert feats.schema["time"] == pl.Datetime("us", "UTC")
    assert feats.schema["session"] == pl.Date
    assert all(feats.schema[n] == pl.Float64 for n in contract.names)
    assert not non_finite_rows(feats, contract).height


def test_contract_hash_is_sha256_of_names(platform_config) -> None:
    c = platform_config.features
    assert c.n_features == 15 and c.feature_order_hash == sha256_hex(",".join(c.names))
    assert c.market_features == c.names[:13]


def test_log_returns_and_state_features(feats, bars, contract, calendar) -> None:
    closes = bars["close"].to_numpy()
    w = contract.warmup_bars
    for name, k in (("log_ret_5m", 1), ("log_ret_1h", 12), ("log_ret_4h", 48)):
        expected = np.log(closes[w:] / closes[w - k : len(closes) - k])
        np.testing.assert_allclose(feats[name].to_numpy(), expected, rtol=0, atol=1e-12)
    assert (feats["position"] == 0.0).all()
    expected_tn = [calendar.bar_index(t) / (calendar.bars_per_session - 1) for t in feats["time"].to_list()]
    np.testing.assert_array_equal(feats["time_norm"].to_numpy(), expected_tn)
    first_bars = feats.filter(pl.col("time").dt.convert_time_zone("America/Bogota").dt.hour() == 8)
    assert first_bars.filter(pl.col("time").dt.minute() == 0)["time_norm"].to_list() == [0.0] * first_bars.filter(
        pl.col("time").dt.minute() == 0
    ).height
    assert feats["time_norm"].max() == 1.0


def test_position_is_filled_and_validated(bars, macro, contract, calendar, platform_config) -> None:
    df = compute_features(bars, macro, contract, calendar, platform_config.macro, position=-1.0)
    assert (df["position"] == -1.0).all()
    with pytest.raises(FeatureError, match="position"):
        compute_features(bars, macro, contract, calendar, platform_config.macro, position=0.5)


def test_feature_matrix_in_contract_order(feats, contract) -> None:
    x = feature_matrix(feats, contract)
    assert x.shape == (feats.height, 15) and x.dtype == np.float64
    np.testing.assert_array_equal(x[:, 3], feats["rsi_9"].to_numpy())
    with pytest.raises(FeatureError, match="missing"):
        feature_matrix(feats.drop("vix_z"), contract)


def test_fewer_bars_than_w_is_a_clear_error(bars, macro, contract, calendar, platform_config) -> None:
    with pytest.raises(InsufficientHistoryError, match=rf"W={contract.warmup_bars}"):
        compute_features(bars.head(contract.warmup_bars), macro, contract, calendar, platform_config.macro)


def test_unknown_feature_in_contract_is_an_error(tmp_path, calendar, bars, macro, platform_config) -> None:
    with pytest.raises(ValidationError, match="unknown feature"):
        FeatureContract(version="v9", warmup_bars=100, names=("log_ret_5m", "moon_phase", "position", "time_norm"))
    # in the YAML: the loader names the file and key
    cfg_dir = tmp_path / "config"
    import shutil

    shutil.copytree(platform_config.config_dir, cfg_dir)
    text = (cfg_dir / "features.yaml").read_text().replace("  - rate_spread\n", "  - rate_spread\n  - moon_phase\n")
    (cfg_dir / "features.yaml").write_text(text)
    with pytest.raises(ConfigError, match="features.yaml.*names"):
        load_platform_config(cfg_dir)
    # and a contract built around validation still cannot reach the engine
    rogue = FeatureContract.model_construct(
        version="v9", warmup_bars=100, names=("log_ret_5m", "moon_phase"), state_features=(),
        macro_zscore_window=252, macro_zscore_min_periods=126, normalization_clip=5.0,
    )
    with pytest.raises(FeatureError, match="unknown feature"):
        compute_features(bars, macro, rogue, calendar, platform_config.macro)


def test_warmup_shorter_than_lookback_is_refused(bars, macro, calendar, platform_config) -> None:
    with pytest.raises(FeatureError, match="longest lookback"):
        compute_features(bars, macro, small_contract(30), calendar, platform_config.macro)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.with_columns(pl.col("time").dt.replace_time_zone(None)), "tz-aware"),
        (lambda b: b.reverse(), "sorted"),
        (lambda b: pl.concat([b.head(200), b.slice(199)]), "unique"),
        (lambda b: b.with_columns(pl.when(pl.int_range(pl.len()) == 150).then(-1.0).otherwise(pl.col("close")).alias("close")), "non-positive"),
        (lambda b: b.with_columns(pl.when(pl.int_range(pl.len()) == 150).then(None).otherwise(pl.col("close")).alias("close")), "non-finite"),
        (lambda b: b.with_columns(pl.when(pl.int_range(pl.len()) == 150).then(pl.col("time") + timedelta(minutes=2)).otherwise(pl.col("time")).alias("time")), "off the session grid"),
        (lambda b: b.drop("high"), "missing column"),
        (lambda b: b.with_columns(high=pl.col("low") - 1.0), "high < low"),
    ],
)
def test_bad_bars_are_refused(bars, macro, contract, calendar, platform_config, mutate, message) -> None:
    with pytest.raises(FeatureError, match=message):
        compute_features(mutate(bars), macro, contract, calendar, platform_config.macro)


def test_bars_on_a_holiday_are_refused(contract, calendar, macro, platform_config) -> None:
    holiday = date(2024, 1, 8)  # Reyes Magos (Ley Emiliani Monday)
    assert not calendar.is_session(holiday)
    t = calendar.session_open_utc(date(2024, 1, 5)) + timedelta(days=3)
    extra = pl.DataFrame(
        {"time": [t], "open": [4000.0], "high": [4000.0], "low": [4000.0], "close": [4000.0], "volume": [0.0]},
        schema={"time": pl.Datetime("us", "UTC"), "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                "close": pl.Float64, "volume": pl.Float64},
    )
    bars = pl.concat([synthetic_bars(calendar, date(2023, 12, 1), 20, seed=3), extra]).sort("time")
    with pytest.raises(FeatureError, match="non-session"):
        compute_features(bars, macro, contract, calendar, platform_config.macro)


def test_gap_inside_the_warmup_window_keeps_features_defined(calendar, macro, contract, platform_config) -> None:
    bars = synthetic_bars(calendar, START, 30, seed=5, drop_share=0.1)
    df = compute_features(bars, macro, contract, calendar, platform_config.macro)
    assert df.height == bars.height - contract.warmup_bars
    assert not non_finite_rows(df, contract).height
    gaps = history_gaps(bars["time"], calendar)
    assert gaps["missing_bars"] == 30 * 60 - bars.height + _edge_missing(bars, calendar)


def _edge_missing(bars: pl.DataFrame, calendar) -> int:
    """Bars dropped before the first or after the last bar are outside the history window."""
    first = calendar.bar_index(bars["time"][0])
    last = calendar.bar_index(bars["time"][-1])
    return -(first + (calendar.bars_per_session - 1 - last))


def test_history_gaps_counts_missing_sessions(calendar) -> None:
    bars = synthetic_bars(calendar, START, 5, seed=1)
    second = calendar.next_session(START)
    local = pl.col("time").dt.convert_time_zone("America/Bogota").dt.date()
    g = history_gaps(bars.filter(local != second)["time"], calendar)
    assert g == {"missing_bars": 60, "missing_sessions": 1, "sessions_with_gaps": [second.isoformat()]}
    assert history_gaps(None, calendar)["missing_bars"] == 0


# ---- macro -----------------------------------------------------------------------------------


def _one_var(values: dict[date, float], var: str = "dxy", flagged: set[date] | None = None) -> pl.DataFrame:
    flagged = flagged or set()
    return pl.DataFrame(
        {
            "date": list(values),
            "variable": [var] * len(values),
            "value": list(values.values()),
            "flagged": [d in flagged for d in values],
        },
        schema={"date": pl.Date, "variable": pl.Utf8, "value": pl.Float64, "flagged": pl.Boolean},
    )


def _weekdays(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1) if (start + timedelta(days=i)).weekday() < 5]


def test_macro_value_dated_d_never_reaches_session_d(calendar, platform_config) -> None:
    days = _weekdays(date(2024, 1, 1), date(2024, 3, 1))
    values = {d: 100.0 + i for i, d in enumerate(days)}
    contract = platform_config.features
    sessions = calendar.sessions(date(2024, 2, 1), date(2024, 2, 29))
    table = macro_session_features(_one_var(values), sessions, contract, calendar, platform_config.macro)
    for d, change in zip(table["session"].to_list(), table["dxy_change_1d"].to_list()):
        # the change attached to session d is the one observed on the last weekday before d
        prev = max(x for x in days if x < d)
        before = max(x for x in days if x < prev)
        assert change == pytest.approx(values[prev] / values[before] - 1.0, abs=1e-15)


def test_macro_forward_fill_limit_and_flags(calendar, platform_config) -> None:
    contract = platform_config.features
    days = _weekdays(date(2024, 1, 1), date(2024, 2, 9))
    values = {d: 100.0 + i for i, d in enumerate(days)}
    # a flagged bad print is treated as missing: the previous value is carried instead
    flag_day = date(2024, 1, 17)
    values_flagged = {**values, flag_day: 500.0}
    t = macro_session_features(_one_var(values_flagged, flagged={flag_day}), [date(2024, 1, 18)], contract, calendar,
                               platform_config.macro)
    assert t["dxy_change_1d"][0] == 0.0  # Jan 17 = Jan 16 carried forward
    # beyond the forward-fill limit (5 business days) the value is missing
    last = days[-1]
    sessions = calendar.sessions(last + timedelta(days=1), last + timedelta(days=14))
    t = macro_session_features(_one_var(values), sessions, contract, calendar, platform_config.macro)
    by_session = dict(zip(t["session"].to_list(), t["dxy_change_1d"].to_list()))
    limit = platform_config.macro.variables["dxy"].max_ffill_business_days
    for d, v in by_session.items():
        business_days_stale = len(_weekdays(last + timedelta(days=1), d - timedelta(days=1)))
        assert (v is None) == (business_days_stale > limit), (d, v)


def test_missing_variable_leaves_nan_rows(calendar, bars, contract, platform_config) -> None:
    macro = synthetic_macro(date(2022, 6, 1), date(2024, 3, 1), seed=2).filter(pl.col("variable") != "vix")
    df = compute_features(bars, macro, contract, calendar, platform_config.macro)
    bad = non_finite_rows(df, contract)
    assert bad.height == df.height
    assert set(bad["features"].explode().unique()) == {"vix_z"}
    assert df["vix_z"].is_nan().all()


def test_macro_zscore_definition(calendar, platform_config) -> None:
    contract = platform_config.features
    rng = np.random.default_rng(0)
    days = _weekdays(date(2022, 1, 3), date(2024, 1, 31))
    series = 100 + np.cumsum(rng.normal(0, 1, len(days)))
    values = dict(zip(days, series))
    session = date(2024, 1, 24)
    t = macro_session_features(_one_var(values), [session], contract, calendar, platform_config.macro)
    i = days.index(date(2024, 1, 23))
    window = series[i - contract.macro_zscore_window + 1 : i + 1]
    expected = (series[i] - window.mean()) / window.std(ddof=1)
    assert t["dxy_z"][0] == pytest.approx(expected, rel=1e-9)
    # fewer than min periods observed -> missing
    early = macro_session_features(_one_var(values), [date(2022, 3, 1)], contract, calendar, platform_config.macro)
    assert early["dxy_z"][0] is None


def test_macro_needed_but_absent_is_an_error(bars, contract, calendar, platform_config) -> None:
    with pytest.raises(FeatureError, match="no macro frame"):
        compute_features(bars, None, contract, calendar, platform_config.macro)


def test_duplicate_macro_values_are_refused(calendar, platform_config) -> None:
    df = _one_var({date(2024, 1, 2): 1.0})
    with pytest.raises(FeatureError, match="duplicate"):
        macro_session_features(pl.concat([df, df]), [date(2024, 1, 3)], platform_config.features, calendar,
                               platform_config.macro)


def test_max_abs_difference(feats, contract) -> None:
    names = list(contract.names)
    assert max_abs_difference(feats, feats, names) == 0.0
    shifted = feats.with_columns(pl.col("rsi_9") + 1e-6)
    assert max_abs_difference(feats, shifted, names) == pytest.approx(1e-6)
    nan = feats.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(np.nan).otherwise(pl.col("dxy_z")).alias("dxy_z"))
    assert max_abs_difference(feats, nan, names) == np.inf
    assert max_abs_difference(feats, feats.head(5), names) == np.inf


def test_utc_instants_in_other_zones_are_accepted(bars, macro, contract, calendar, platform_config) -> None:
    bogota = bars.with_columns(pl.col("time").dt.convert_time_zone("America/Bogota"))
    a = compute_features(bars, macro, contract, calendar, platform_config.macro)
    b = compute_features(bogota, macro, contract, calendar, platform_config.macro)
    assert a.equals(b)
    assert a.schema["time"] == pl.Datetime("us", "UTC")
