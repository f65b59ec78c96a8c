"""No leakage: changing any macro value dated on or after session D, or any bar after t, leaves
the features of bar t in session D unchanged (and a value dated D−1 does reach D: the test can fail)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usdcop_platform.core.features import compute_features, feature_matrix
from usdcop_platform_tests.core.features_support import config, real_bars, real_macro, small_contract, synthetic_bars, synthetic_macro

MACRO_NAMES = ["dxy_z", "dxy_change_1d", "vix_z", "embi_z", "brent_change_1d", "rate_spread", "usdmxn_change_1d"]


def _upto(df: pl.DataFrame, t) -> np.ndarray:
    return feature_matrix(df.filter(pl.col("time") <= t), config().features)


def _perturb_macro(macro: pl.DataFrame, since: date, how: str, rng: np.random.Generator) -> pl.DataFrame:
    late = pl.col("date") >= since
    if how == "scale":
        return macro.with_columns(pl.when(late).then(pl.col("value") * rng.uniform(0.5, 2.0)).otherwise(pl.col("value")).alias("value"))
    if how == "noise":
        noise = pl.Series(rng.normal(0, 50, macro.height))
        return macro.with_columns(pl.when(late).then(pl.col("value") + noise).otherwise(pl.col("value")).alias("value"))
    if how == "delete":
        return macro.filter(~late)
    return macro.with_columns(pl.when(late).then(True).otherwise(pl.col("flagged")).alias("flagged"))  # flag


def _perturb_bars(bars: pl.DataFrame, t, rng: np.random.Generator) -> pl.DataFrame:
    after = pl.col("time") > t
    f = pl.Series(np.exp(rng.normal(0, 0.01, bars.height)))
    return bars.with_columns(pl.when(after).then(pl.col(c) * f).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close"))


@pytest.fixture(scope="module")
def real(real_bars_path, real_macro_path, calendar, platform_config):
    bars, macro = real_bars(str(real_bars_path)), real_macro(str(real_macro_path))
    bars = bars.filter(pl.col("time").dt.year() >= 2023)  # a year of history is enough here
    base = compute_features(bars, macro, platform_config.features, calendar, platform_config.macro)
    return bars, macro, base


@pytest.mark.parametrize("how", ["scale", "noise", "delete", "flag"])
def test_real_macro_on_or_after_d_does_not_reach_d(real, calendar, platform_config, how) -> None:
    bars, macro, base = real
    rng = np.random.default_rng(0)
    for d in (date(2023, 3, 15), date(2023, 9, 4), date(2024, 1, 9), date(2024, 7, 22)):
        changed = compute_features(bars, _perturb_macro(macro, d, how, rng), platform_config.features, calendar, platform_config.macro)
        last_of_d = base.filter(pl.col("session") == d)["time"].max()
        np.testing.assert_array_equal(_upto(changed, last_of_d), _upto(base, last_of_d))


def test_real_macro_dated_the_day_before_does_reach_d(real, calendar, platform_config) -> None:
    bars, macro, base = real
    # the first 2024 session whose previous weekday carries an unflagged value of every variable
    full_days = (
        macro.filter(~pl.col("flagged") & (pl.col("date") >= date(2024, 1, 2)))
        .group_by("date").agg(pl.col("variable").n_unique().alias("n")).filter(pl.col("n") == 7)["date"]
    )
    d = next(s for s in sorted(base["session"].unique()) if s >= date(2024, 1, 2) and s - timedelta(days=1) in set(full_days))
    prev = d - timedelta(days=1)
    changed_macro = macro.with_columns(
        pl.when(pl.col("date") == prev).then(pl.col("value") * 1.05).otherwise(pl.col("value")).alias("value")
    )
    changed = compute_features(bars, changed_macro, platform_config.features, calendar, platform_config.macro)
    a = changed.filter(pl.col("session") == d).select(MACRO_NAMES).to_numpy()
    b = base.filter(pl.col("session") == d).select(MACRO_NAMES).to_numpy()
    assert (a != b).all()  # every macro feature of every bar of D moved


def test_real_bars_after_t_do_not_reach_t(real, calendar, platform_config) -> None:
    bars, macro, base = real
    rng = np.random.default_rng(1)
    for t in base["time"].gather([0, 1000, 7000, base.height - 2]).to_list():
        changed = compute_features(_perturb_bars(bars, t, rng), macro, platform_config.features, calendar, platform_config.macro)
        np.testing.assert_array_equal(_upto(changed, t), _upto(base, t))
        assert (feature_matrix(changed.filter(pl.col("time") > t), platform_config.features)[:, :6]
                != feature_matrix(base.filter(pl.col("time") > t), platform_config.features)[:, :6]).any()



@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    session_i=st.integers(0, 9),
    bar_i=st.integers(0, 59),
    how=st.sampled_from(["scale", "noise", "delete", "flag"]),
)
def test_no_leakage_on_random_series(calendar, seed, session_i, bar_i, how) -> None:
    cfg = config()
    contract = small_contract(120)
    rng = np.random.default_rng(seed)
    bars = synthetic_bars(calendar, date(2024, 4, 1), 14, seed=seed)
    macro = synthetic_macro(date(2023, 1, 2), date(2024, 6, 28), seed=seed)
    base = compute_features(bars, macro, contract, calendar, cfg.macro)
    sessions = base["session"].unique().sort().to_list()
    d = sessions[session_i % len(sessions)]
    rows_d = base.filter(pl.col("session") == d)
    t = rows_d["time"][min(bar_i, rows_d.height - 1)]
    changed = compute_features(
        _perturb_bars(bars, t, rng), _perturb_macro(macro, d, how, rng), contract, calendar, cfg.macro
    )
    cut = pl.col("time") <= t
    np.testing.assert_array_equal(
        feature_matrix(changed.filter(cut), contract), feature_matrix(base.filter(cut), contract)
    )
