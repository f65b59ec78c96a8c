"""`usdcop features`: clean + compute from files, one row per bar with W bars of history."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from usdcop_platform.cli import app
from usdcop_platform.core.features import BAR_COLUMNS, compute_features
from usdcop_platform_tests.core.features_support import real_bars, real_macro, synthetic_bars

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["features", *args])


def test_real_files_range(tmp_path, real_bars_path, real_macro_path, platform_config, calendar) -> None:
    out = tmp_path / "f.parquet"
    res = _run("--bars", str(real_bars_path), "--macro", str(real_macro_path), "--out", str(out),
               "--start", "2024-01-09", "--end", "2024-01-31")
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(out)
    assert df.columns == [*BAR_COLUMNS, *platform_config.features.names]
    assert df["session"].min() == date(2024, 1, 9) and df["session"].max() == date(2024, 1, 31)
    assert (df["position"] == 0.0).all() and df["time_norm"].is_between(0, 1).all()
    expected = compute_features(
        real_bars(str(real_bars_path)), real_macro(str(real_macro_path)), platform_config.features, calendar,
        platform_config.macro,
    ).filter(pl.col("session").is_between(date(2024, 1, 9), date(2024, 1, 31)))
    assert df.equals(expected)
    assert "rows" in res.output and str(df.height) in res.output


def test_rows_with_nan_are_not_written(tmp_path, real_bars_path, real_macro_path) -> None:
    out = tmp_path / "f.parquet"
    res = _run("--bars", str(real_bars_path), "--macro", str(real_macro_path), "--out", str(out), "--end", "2020-09-30")
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(out)
    assert np.isfinite(df.select(pl.exclude("time", "session")).to_numpy()).all()
    assert df["session"].min() >= date(2020, 6, 1)  # DXY/VIX z-scores need 126 observations from Jan 2020
    assert "not written" in res.output and "dxy_z" in res.output


@pytest.mark.parametrize(
    "change, extra, message",
    [
        ({}, ["--start", "2024-02-01", "--end", "2024-01-01"], "after --end"),
        ({"out": "f.csv"}, [], "must be a .parquet"),
        ({"bars": "nope.csv"}, [], "file not found"),
        ({"bars": "empty.csv"}, [], "empty"),
        ({"macro": "nope.csv"}, [], "file not found"),
    ],
)
def test_bad_arguments(tmp_path, real_bars_path, real_macro_path, change, extra, message) -> None:
    (tmp_path / "empty.csv").write_text("")
    paths = {"bars": str(real_bars_path), "macro": str(real_macro_path), "out": str(tmp_path / "f.parquet")}
    paths.update({k: str(tmp_path / v) for k, v in change.items()})
    res = _run("--bars", paths["bars"], "--macro", paths["macro"], "--out", paths["out"], *extra)
    assert res.exit_code == 1
    assert message in res.output
    assert not (tmp_path / "f.parquet").exists() and not (tmp_path / "f.csv").exists()


def test_fewer_bars_than_w(tmp_path, real_macro_path, calendar, platform_config) -> None:
    bars = synthetic_bars(calendar, date(2024, 3, 1), 3, seed=1)
    path = tmp_path / "bars.csv"
    bars.with_columns(pl.col("time").dt.strftime("%Y-%m-%d %H:%M:%S+00:00")).write_csv(path)
    res = _run("--bars", str(path), "--macro", str(real_macro_path), "--out", str(tmp_path / "f.parquet"))
    assert res.exit_code == 1
    assert f"W={platform_config.features.warmup_bars}" in res.output


def test_quarantined_rows_are_reported_and_written(tmp_path, real_bars_path, real_macro_path) -> None:
    raw = pl.read_csv(real_bars_path)
    tcol = raw.columns[0]
    raw = raw.filter(pl.col(tcol).str.starts_with("2024-01"))
    bad_i = raw.height - 30
    raw = raw.with_row_index("_i").with_columns(  # one bar with high below low: quarantined by a row rule
        pl.when(pl.col("_i") == bad_i).then(pl.col("low") - 5.0).otherwise(pl.col("high")).alias("high")
    ).drop("_i")
    bars = tmp_path / "bars.csv"
    raw.write_csv(bars)
    out = tmp_path / "f.parquet"
    res = _run("--bars", str(bars), "--macro", str(real_macro_path), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "1 bar(s) quarantined" in res.output and "f.quarantine.parquet" in res.output
    q = pl.read_parquet(tmp_path / "f.quarantine.parquet")
    assert q.filter(pl.col("dataset") == "raw/usdcop_m5_ohlcv").height == 1
