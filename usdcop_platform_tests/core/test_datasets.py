"""Experiment datasets: splits, embargo, train-only normalization, lineage hashing, bad input."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import polars as pl
import pytest

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.normalization import NormStats
from usdcop_platform_tests.training_synth import synthetic_features

MIN_ROWS = {"train": 500, "val": 100, "test": 100}


@pytest.fixture(scope="module")
def smoke(platform_config):
    return platform_config.experiment("smoke")


@pytest.fixture(scope="module")
def contract(platform_config) -> FeatureContract:
    return platform_config.features


@pytest.fixture(scope="module")
def features(calendar, contract, smoke) -> pl.DataFrame:
    return synthetic_features(calendar, contract, smoke.date_ranges.train.start, smoke.date_ranges.test.end, seed=1)


@pytest.fixture(scope="module")
def built(features, smoke, contract) -> ds.ExperimentDataset:
    return ds.build_dataset(features, smoke, contract, min_rows=MIN_ROWS, source_partitions=["2024-01-16"])


def test_splits_follow_the_date_ranges_in_order(built, smoke) -> None:
    for name, rng in smoke.date_ranges.splits().items():
        sessions = built.splits[name].get_column("session")
        assert rng.start <= sessions.min() and sessions.max() <= rng.end
    assert ds.check_splits_ordered(built)[0]
    t = {s: built.splits[s].get_column("time") for s in ds.SPLITS}
    assert t["train"].max() < t["val"].min() and t["val"].max() < t["test"].min()


def test_embargo_is_at_least_the_longest_lookback(built, features, smoke, contract) -> None:
    embargo = ds.effective_embargo(smoke, contract)
    assert embargo >= contract.warmup_bars and embargo >= smoke.embargo_bars
    assert built.lineage["embargo_bars"] == embargo
    index = {t: i for i, t in enumerate(features.sort("time").get_column("time").to_list())}
    for a, b in (("train", "val"), ("val", "test")):
        gap = index[built.splits[b]["time"].min()] - index[built.splits[a]["time"].max()]
        assert gap > embargo
        # and it removes no more than needed: the embargo starts right after the previous split
        assert gap <= embargo + 1 or built.splits[b]["session"].min() == smoke.date_ranges.splits()[b].start


def test_norm_stats_are_fitted_on_train_only(built, contract) -> None:
    from usdcop_platform.core.features import feature_matrix

    expected = NormStats.fit(feature_matrix(built.splits["train"], contract), contract)
    assert built.norm_stats.hash == expected.hash
    everything = pl.concat([built.splits[s] for s in ds.SPLITS])
    assert built.norm_stats.hash != NormStats.fit(feature_matrix(everything, contract), contract).hash
    assert ds.check_norm_stats(built, contract)[0]


def test_lineage_records_hashes_ranges_and_sources(built, smoke, contract) -> None:
    lin = built.lineage
    assert lin["config_hash"] == smoke.config_hash
    assert lin["feature_order_hash"] == contract.feature_order_hash
    assert lin["norm_stats_hash"] == built.norm_stats.hash
    assert lin["source"] == {"dataset": ds.SOURCE_DATASET, "partitions": ["2024-01-16"], "n_partitions": 1,
                             "rows": lin["source"]["rows"]}
    for name in ds.SPLITS:
        split = lin["splits"][name]
        assert split["rows"] == built.splits[name].height
        assert split["hash"] == ds.split_hash(built.splits[name])
        assert split["configured_start"] == smoke.date_ranges.splits()[name].start.isoformat()


def test_dataset_hash_is_stable_and_content_sensitive(features, smoke, contract, built) -> None:
    again = ds.build_dataset(features.sample(fraction=1.0, shuffle=True, seed=3), smoke, contract, min_rows=MIN_ROWS)
    assert again.dataset_hash == built.dataset_hash  # row order of the input does not matter
    bumped = features.with_columns(pl.when(pl.int_range(pl.len()) == 10).then(pl.col("rsi_9") + 1e-9)
                                   .otherwise(pl.col("rsi_9")).alias("rsi_9"))
    assert ds.build_dataset(bumped, smoke, contract, min_rows=MIN_ROWS).dataset_hash != built.dataset_hash


def test_save_and_load_round_trip(tmp_path, built, smoke, contract) -> None:
    lake = ParquetLake(tmp_path / "lake")
    folder = ds.save_dataset(built, lake, smoke.name)
    assert folder == ds.dataset_dir(lake.root, smoke.name)
    assert {p.name for p in folder.iterdir()} == {"train.parquet", "val.parquet", "test.parquet",
                                                 ds.NORM_STATS_FILE, ds.LINEAGE_FILE}
    loaded = ds.load_dataset(lake, smoke.name, contract)
    assert loaded.dataset_hash == built.dataset_hash
    assert loaded.norm_stats == built.norm_stats
    md = loaded.market_data("test", contract)
    assert md.obs.dtype == np.float32 and md.obs.shape == (built.splits["test"].height, contract.n_features)
    assert np.abs(np.delete(md.obs, md.position_index, axis=1)).max() <= contract.normalization_clip


def test_load_refuses_another_feature_order_and_tampered_files(tmp_path, built, smoke, contract) -> None:
    lake = ParquetLake(tmp_path / "lake")
    ds.save_dataset(built, lake, smoke.name)
    names = list(contract.names)
    names[0], names[1] = names[1], names[0]
    other = contract.model_copy(update={"names": tuple(names)})
    with pytest.raises(ds.DatasetError, match="feature_order_hash"):
        ds.load_dataset(lake, smoke.name, other)
    test = lake.read(ds.dataset_name(smoke.name), "test")
    lake.write(ds.dataset_name(smoke.name), "test", test.with_columns(pl.col("close") * 1.01))
    with pytest.raises(ds.DatasetError, match="'test' does not match"):
        ds.load_dataset(lake, smoke.name, contract)
    with pytest.raises(ds.DatasetError, match="materialize"):
        ds.load_dataset(lake, "nope", contract)


def test_empty_split_is_an_error(features, smoke, contract) -> None:
    only_train = features.filter(pl.col("session") <= smoke.date_ranges.train.end)
    with pytest.raises(ds.DatasetError, match="split 'val'.*empty"):
        ds.build_dataset(only_train, smoke, contract, min_rows=MIN_ROWS)
    with pytest.raises(ds.DatasetError, match="materialize features"):
        ds.build_dataset(features.clear(), smoke, contract, min_rows=MIN_ROWS)


def test_embargo_that_swallows_a_split_is_an_error(features, smoke, contract) -> None:
    long_embargo = smoke.model_copy(update={"embargo_bars": 100_000})
    with pytest.raises(ds.DatasetError, match="after the 100000-bar embargo"):
        ds.build_dataset(features, long_embargo, contract, min_rows=MIN_ROWS)


def test_nan_or_inf_in_a_split_is_an_error(features, smoke, contract) -> None:
    day = smoke.date_ranges.test.end
    for bad in (float("nan"), float("inf")):
        broken = features.with_columns(
            pl.when(pl.col("session") == day).then(pl.lit(bad)).otherwise(pl.col("vix_z")).alias("vix_z")
        )
        with pytest.raises(ds.DatasetError, match=r"split 'test' holds NaN/inf.*vix_z"):
            ds.build_dataset(broken, smoke, contract, min_rows=MIN_ROWS)


def test_too_few_rows_is_an_error(features, smoke, contract) -> None:
    with pytest.raises(ds.DatasetError, match="split 'val' has .* fewer than the minimum 100000"):
        ds.build_dataset(features, smoke, contract, min_rows={**MIN_ROWS, "val": 100_000})


def test_feature_columns_must_follow_the_contract(features, smoke, contract) -> None:
    names = list(contract.names)
    swapped = features.select("time", "session", "open", "high", "low", "close", names[1], names[0], *names[2:])
    with pytest.raises(ds.DatasetError, match="do not match the contract"):
        ds.build_dataset(swapped, smoke, contract, min_rows=MIN_ROWS)
    with pytest.raises(ds.DatasetError, match="lacks column"):
        ds.build_dataset(features.drop("close"), smoke, contract, min_rows=MIN_ROWS)
    dup = pl.concat([features, features.head(1)])
    with pytest.raises(ds.DatasetError, match="duplicate"):
        ds.build_dataset(dup, smoke, contract, min_rows=MIN_ROWS)


def test_checks_report_failures(built, contract) -> None:
    reversed_splits = ds.ExperimentDataset(
        splits={"train": built.splits["test"], "val": built.splits["val"], "test": built.splits["train"]},
        norm_stats=built.norm_stats,
        lineage=built.lineage,
    )
    assert not ds.check_splits_ordered(reversed_splits)[0]
    assert not ds.check_norm_stats(reversed_splits, contract)[0]
    assert not ds.check_min_rows(built, {"train": 10**9})[0]
    nan = built.splits["val"].with_columns(pl.lit(float("nan")).alias("adx_14"))
    assert not ds.check_all_finite(ds.ExperimentDataset({**built.splits, "val": nan}, built.norm_stats, {}), contract)[0]


def test_source_sessions_span_train_start_to_test_end(calendar, smoke) -> None:
    span = calendar.sessions(date(2024, 1, 1), date(2024, 12, 31))
    got = ds.source_sessions(smoke, span)
    assert got[0] >= smoke.date_ranges.train.start and got[-1] <= smoke.date_ranges.test.end
    assert len(got) == len(calendar.sessions(smoke.date_ranges.train.start, smoke.date_ranges.test.end))


def test_lineage_json_is_plain_json(tmp_path, built, smoke) -> None:
    lake = ParquetLake(tmp_path / "lake")
    folder = ds.save_dataset(built, lake, smoke.name)
    assert json.loads((folder / ds.LINEAGE_FILE).read_text())["dataset_hash"] == built.dataset_hash
