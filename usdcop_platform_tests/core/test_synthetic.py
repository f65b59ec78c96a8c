"""core.synthetic: deterministic, range-independent, and calibrated on the real export."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from usdcop_platform.core.cleaning import clean_bars, clean_macro
from usdcop_platform.core.synthetic import (
    BACKFILL_LABEL,
    BarCalibration,
    calibration_stats,
    synthetic_bars,
    synthetic_macro,
)

START, END = date(2020, 1, 1), date(2024, 12, 31)


def test_same_seed_same_bars_other_seed_other_bars(calendar):
    a = synthetic_bars(calendar, date(2024, 1, 1), date(2024, 2, 1), seed=5)
    b = synthetic_bars(calendar, date(2024, 1, 1), date(2024, 2, 1), seed=5)
    c = synthetic_bars(calendar, date(2024, 1, 1), date(2024, 2, 1), seed=6)
    assert a.equals(b)
    assert not a["close"].equals(c["close"])


def test_a_session_does_not_depend_on_the_requested_range(calendar):
    day = date(2023, 5, 2)
    alone = synthetic_bars(calendar, day, day, seed=11)
    within = synthetic_bars(calendar, date(2023, 1, 1), date(2024, 6, 30), seed=11)
    assert alone.height > 0
    assert alone.equals(within.filter(pl.col("time").dt.date() == day))


def test_quirks_off_gives_clean_complete_sessions(calendar, platform_config):
    raw = synthetic_bars(calendar, date(2024, 1, 1), date(2024, 3, 31), seed=3, quirks=False)
    sessions = calendar.sessions(date(2024, 1, 1), date(2024, 3, 31))
    r = clean_bars(raw, calendar, platform_config.quality.bars, expected_sessions=sessions)
    assert r.report.raw_rows == r.report.bars_published == 60 * len(sessions)
    assert r.report.incomplete_sessions == 0 and r.report.timezone_repaired == 0


def test_quirks_reproduce_the_export_faults(calendar, platform_config):
    raw = synthetic_bars(calendar, START, END, seed=42)
    assert (raw["source"] == BACKFILL_LABEL).sum() > 0
    r = clean_bars(raw, calendar, platform_config.quality.bars, expected_sessions=calendar.sessions(START, END))
    rep = r.report
    assert rep.timezone_repaired > 500 and rep.duplicates_dropped > 100
    assert rep.holiday_bars_dropped > 2_000 and rep.incomplete_sessions > 100
    assert rep.sessions_missing >= 1
    assert (r.sessions["max_stale_run"] >= platform_config.quality.bars.stale_run_bars).sum() > 20


def test_calibration_matches_the_real_export(real_bars_path, calendar, platform_config):
    """The same statistics measured on the real file and on synthetic data from two seeds."""
    from usdcop_platform.adapters.sources.file import read_bars_file

    q = platform_config.quality.bars
    real = calibration_stats(clean_bars(read_bars_file(real_bars_path), calendar, q).bars, calendar)
    cal = BarCalibration()
    # the calibration's stated facts are the real data's
    assert real["bar_vol"] == pytest.approx(0.00103, rel=0.02)
    assert real["overnight_vol"] == pytest.approx(cal.overnight_vol, rel=0.02)
    assert real["close_only_share"] == pytest.approx(cal.close_only_share, abs=0.02)
    assert real["incomplete_share"] == pytest.approx(cal.incomplete_session_share, abs=0.015)
    for seed in (42, 7):
        syn = calibration_stats(clean_bars(synthetic_bars(calendar, START, END, seed), calendar, q).bars, calendar)
        assert 3_800 <= syn["median_close"] <= 4_400
        assert syn["bar_vol"] == pytest.approx(real["bar_vol"], rel=0.15)
        assert syn["robust_bar_vol"] == pytest.approx(real["robust_bar_vol"], rel=0.15)
        assert syn["overnight_vol"] == pytest.approx(real["overnight_vol"], rel=0.15)
        assert syn["incomplete_share"] == pytest.approx(real["incomplete_share"], abs=0.03)
        assert syn["close_only_share"] == pytest.approx(real["close_only_share"], abs=0.03)
        # volatility clustering: persistent rank autocorrelation of session volatility, like the data
        assert syn["vol_cluster_ac1"] > 0.4 and real["vol_cluster_ac1"] > 0.4
        assert syn["vol_cluster_ac20"] > 0.1 and real["vol_cluster_ac20"] > 0.1


def test_synthetic_bars_stay_inside_the_price_band(calendar, platform_config):
    lo, hi = platform_config.quality.bars.price_band
    for seed in range(5):
        raw = synthetic_bars(calendar, START, END, seed)
        assert lo < raw["low"].min() and raw["high"].max() < hi


def test_synthetic_macro_covers_every_ssot_variable_unflagged(platform_config):
    ssot = platform_config.macro
    wide = synthetic_macro(ssot, date(2019, 1, 1), date(2019, 1, 1), END, seed=9)
    assert set(wide.columns) == {"date", *(v.column for v in ssot.variables.values())}
    assert wide["date"].dt.weekday().max() <= 5  # weekdays only
    missing = wide.select(pl.all().exclude("date").null_count()).row(0)
    assert all(0.05 * wide.height < m < 0.13 * wide.height for m in missing)  # ~8.7% missing weekdays
    r = clean_macro(wide, ssot)
    assert r.report.flagged == 0 and r.report.variables_missing == []


def test_synthetic_macro_is_range_independent(platform_config):
    ssot = platform_config.macro
    anchor = date(2019, 1, 1)
    short = synthetic_macro(ssot, anchor, date(2020, 1, 1), date(2020, 3, 1), seed=4)
    long = synthetic_macro(ssot, anchor, date(2020, 1, 1), date(2024, 3, 1), seed=4)
    assert short.equals(long.filter(pl.col("date") <= date(2020, 3, 1)))


def test_zero_edge_leaves_the_bars_unchanged(calendar):
    from usdcop_platform.core.synthetic import PlantedEdge

    a = synthetic_bars(calendar, date(2021, 1, 4), date(2021, 3, 31), 5)
    b = synthetic_bars(calendar, date(2021, 1, 4), date(2021, 3, 31), 5, edge=PlantedEdge(0.0, 6.0))
    assert a.equals(b)


def test_planted_drift_is_added_to_the_log_returns_with_its_strength_and_persistence(calendar):
    import numpy as np

    from usdcop_platform.core.synthetic import BarCalibration, PlantedEdge, planted_drift

    edge = PlantedEdge(0.3, 12.0)
    end = date(2021, 12, 31)
    plain = synthetic_bars(calendar, START, end, 5, quirks=False)
    edged = synthetic_bars(calendar, START, end, 5, quirks=False, edge=edge)
    drift = planted_drift(calendar, end, 5, edge)
    assert drift.height == plain.height  # one value per grid bar
    mu = drift["drift"].to_numpy()
    assert np.std(mu) == pytest.approx(0.3 * BarCalibration().bar_vol, rel=0.1)
    assert np.corrcoef(mu[1:], mu[:-1])[0, 1] == pytest.approx(edge.persistence, abs=0.01)
    # within a session, the edged log return minus the plain one is exactly the drift
    lp, le = np.log(plain["close"].to_numpy()), np.log(edged["close"].to_numpy())
    same_session = np.diff(plain["time"].dt.date().to_numpy()) == np.timedelta64(0, "D")
    np.testing.assert_allclose((np.diff(le) - np.diff(lp))[same_session], mu[1:][same_session], atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"strength": -0.1}, {"strength": float("nan")}, {"half_life_bars": 0.0}])
def test_a_bad_planted_edge_is_refused(kwargs):
    from usdcop_platform.core.synthetic import PlantedEdge

    with pytest.raises(ValueError, match="planted edge"):
        PlantedEdge(**kwargs)
