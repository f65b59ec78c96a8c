"""Experiment datasets: train/val/test splits with an embargo, train-only normalization, lineage.

Given the feature rows of the sessions spanning an experiment (time order, one row per bar,
columns time, session, open, high, low, close and the contract's features), a row belongs to the
split whose configured date range contains its session. Row positions i count bars of the
continuous series, and the embargo E (bars) removes the first rows of val and test so that

    i_first(val)  - i_last(train) > E        and        i_first(test) - i_last(val) > E,

with E = max(experiment.embargo_bars, contract.warmup_bars): at least the longest lookback of
any feature, so no val/test observation is computed from bars that train labels (returns) used.
Normalization statistics are fitted on the train split only (core.normalization).

Hashes (contracts.base is the one hashing home):
    split hash    sha256 over the split's column names and raw column bytes (time as int64 us,
                  everything else as float64), in dataset column order
    dataset_hash  content_hash of {split hashes, feature_order_hash, embargo, norm_stats_hash}

On disk (written by the training Dagster asset through the lake): lake dataset
`datasets/<experiment>` with partitions train/val/test, and next to them norm_stats.json and
lineage.json. `load_dataset` reads the three back and verifies them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from usdcop_platform.contracts.base import content_hash, sha256_hex
from usdcop_platform.contracts.features import feature_order_hash
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core.env import MarketData
from usdcop_platform.core.features import feature_matrix
from usdcop_platform.core.normalization import NormStats

SPLITS: tuple[str, ...] = ("train", "val", "test")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
KEY_COLUMNS: tuple[str, ...] = ("time", "session")
SOURCE_DATASET = "features/m5_features"
DATASETS_PREFIX = "datasets"
NORM_STATS_FILE = "norm_stats.json"
LINEAGE_FILE = "lineage.json"


class DatasetError(ValueError):
    """The dataset cannot be built or used as it is; the message names the split and the reason."""


class LakeLike(Protocol):
    """What this module needs from adapters.lake.ParquetLake (core does not import adapters)."""

    root: Path

    def write(self, dataset: str, partition: str, df: pl.DataFrame) -> Path: ...

    def read(self, dataset: str, partition: str) -> pl.DataFrame | None: ...


# ---- names and places ----------------------------------------------------------------------------
def dataset_name(experiment: str) -> str:
    """Lake dataset of an experiment's splits."""
    return f"{DATASETS_PREFIX}/{experiment}"


def dataset_dir(data_dir: Path | str, experiment: str) -> Path:
    """Folder holding the split partitions, norm_stats.json and lineage.json."""
    return Path(data_dir) / DATASETS_PREFIX / experiment


def dataset_columns(contract: FeatureContract) -> list[str]:
    return [*KEY_COLUMNS, *PRICE_COLUMNS, *contract.names]


def effective_embargo(exp: ExperimentConfig, contract: FeatureContract) -> int:
    """Embargo in bars: the experiment's, raised to the contract's longest lookback (warm-up)."""
    return max(exp.embargo_bars, contract.warmup_bars)


def source_sessions(exp: ExperimentConfig, sessions: Iterable[date]) -> list[date]:
    """The sessions an experiment reads: every session from train start to test end (the gaps
    between ranges included, so embargo distances count the real bars between splits)."""
    lo, hi = exp.date_ranges.train.start, exp.date_ranges.test.end
    return [d for d in sessions if lo <= d <= hi]


# ---- hashing -------------------------------------------------------------------------------------
def split_hash(df: pl.DataFrame) -> str:
    """sha256 of a split's column names and raw bytes (see the module docstring)."""
    parts: list[bytes] = [",".join(df.columns).encode()]
    for name in df.columns:
        col = df.get_column(name)
        if col.dtype == pl.Datetime or isinstance(col.dtype, pl.Datetime):
            arr = col.dt.epoch("us").to_numpy().astype("<i8")
        elif col.dtype == pl.Date:
            arr = col.cast(pl.Int32).to_numpy().astype("<i4")
        else:
            arr = col.cast(pl.Float64).to_numpy().astype("<f8")
        parts.append(arr.tobytes())
    return sha256_hex(b"|".join(parts))


def dataset_hash(
    split_hashes: Mapping[str, str], feature_order_hash: str, embargo_bars: int, norm_stats_hash: str
) -> str:
    return content_hash(
        {
            "splits": dict(split_hashes),
            "feature_order_hash": feature_order_hash,
            "embargo_bars": embargo_bars,
            "norm_stats_hash": norm_stats_hash,
        }
    )


# ---- building ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentDataset:
    """The three splits (raw features), the train-fitted normalization and the lineage record."""

    splits: dict[str, pl.DataFrame]
    norm_stats: NormStats
    lineage: dict[str, Any]

    @property
    def dataset_hash(self) -> str:
        return str(self.lineage["dataset_hash"])

    def normalized(self, split: str, contract: FeatureContract) -> np.ndarray:
        """(n, d) float32 observations of a split: market features normalized and clipped."""
        return self.norm_stats.apply(feature_matrix(self.splits[split], contract))

    def market_data(self, split: str, contract: FeatureContract) -> MarketData:
        """Arrays for the environment / backtest over one split."""
        df = self.splits[split]
        return MarketData(
            obs=self.normalized(split, contract),
            close=df.get_column("close").cast(pl.Float64).to_numpy(),
            session=df.get_column("session").cast(pl.Date).cast(pl.Int32).to_numpy().astype(np.int64),
            position_index=contract.names.index("position"),
        )


def _as_session_date(df: pl.DataFrame) -> pl.DataFrame:
    dtype = df.schema["session"]
    if dtype == pl.Date:
        return df
    if dtype == pl.Utf8 or dtype == pl.String:
        return df.with_columns(pl.col("session").str.to_date())
    if isinstance(dtype, pl.Datetime):
        return df.with_columns(pl.col("session").dt.date())
    raise DatasetError(f"column 'session' has type {dtype}; expected a date or YYYY-MM-DD string")


def check_columns(features: pl.DataFrame, contract: FeatureContract) -> None:
    """The feature frame must carry the contract's features in the contract's order."""
    missing = [c for c in (*KEY_COLUMNS, *PRICE_COLUMNS) if c not in features.columns]
    if missing:
        raise DatasetError(f"feature frame lacks column(s) {missing}")
    present = [c for c in features.columns if c not in (*KEY_COLUMNS, *PRICE_COLUMNS, "volume")]
    got = [c for c in present if c in contract.names]
    if got != list(contract.names):
        raise DatasetError(
            f"feature columns {got} do not match the contract {contract.version} "
            f"(feature_order_hash {feature_order_hash(got)[:12]}… vs {contract.feature_order_hash[:12]}…)"
        )


def check_finite(name: str, df: pl.DataFrame, contract: FeatureContract) -> None:
    """NaN or inf never reaches a model: a split carrying one is refused, naming the columns."""
    cols = [*PRICE_COLUMNS, *contract.names]
    bad = {
        c: int(n)
        for c, n in zip(
            cols,
            df.select([(~pl.col(c).cast(pl.Float64).is_finite() | pl.col(c).is_null()).sum() for c in cols]).row(0),
        )
        if n
    }
    if bad:
        raise DatasetError(f"split {name!r} holds NaN/inf/null values: {bad}")


def build_dataset(
    features: pl.DataFrame,
    exp: ExperimentConfig,
    contract: FeatureContract,
    *,
    min_rows: Mapping[str, int],
    source_partitions: Iterable[str] = (),
) -> ExperimentDataset:
    """Splits, embargo, train-only normalization and lineage; raises DatasetError on bad input."""
    if features.height == 0:
        raise DatasetError(
            f"no feature rows for experiment {exp.name!r} between {exp.date_ranges.train.start} and "
            f"{exp.date_ranges.test.end}: materialize features/m5_features for those sessions first"
        )
    check_columns(features, contract)
    df = _as_session_date(features).select(dataset_columns(contract)).sort("time")
    if df.get_column("time").is_duplicated().any():
        raise DatasetError("feature frame holds duplicate bar times")
    df = df.with_row_index("_row")
    embargo = effective_embargo(exp, contract)

    splits: dict[str, pl.DataFrame] = {}
    last_row: int | None = None
    for name in SPLITS:
        rng = exp.date_ranges.splits()[name]
        part = df.filter(pl.col("session").is_between(rng.start, rng.end))
        if last_row is not None:
            part = part.filter(pl.col("_row") > last_row + embargo)
        if part.height == 0:
            raise DatasetError(
                f"split {name!r} ({rng.start}..{rng.end}) is empty"
                + (f" after the {embargo}-bar embargo" if last_row is not None else "")
            )
        need = int(min_rows.get(name, 1))
        if part.height < need:
            raise DatasetError(f"split {name!r} has {part.height} rows, fewer than the minimum {need}")
        last_row = int(part.get_column("_row").max())
        splits[name] = part.drop("_row")
        check_finite(name, splits[name], contract)

    norm = NormStats.fit(feature_matrix(splits["train"], contract), contract)
    hashes = {name: split_hash(s) for name, s in splits.items()}
    partitions = sorted(set(source_partitions))
    lineage: dict[str, Any] = {
        "experiment": exp.name,
        "experiment_version": exp.version,
        "config_hash": exp.config_hash,
        "reward_config_hash": exp.reward_config_hash,
        "feature_contract_version": contract.version,
        "feature_order_hash": contract.feature_order_hash,
        "feature_names": list(contract.names),
        "norm_stats_hash": norm.hash,
        "embargo_bars": embargo,
        "dataset_hash": dataset_hash(hashes, contract.feature_order_hash, embargo, norm.hash),
        "splits": {
            name: {
                "configured_start": exp.date_ranges.splits()[name].start.isoformat(),
                "configured_end": exp.date_ranges.splits()[name].end.isoformat(),
                "first_session": s.get_column("session").min().isoformat(),
                "last_session": s.get_column("session").max().isoformat(),
                "first_time": s.get_column("time").min().isoformat(),
                "last_time": s.get_column("time").max().isoformat(),
                "rows": s.height,
                "sessions": s.get_column("session").n_unique(),
                "hash": hashes[name],
            }
            for name, s in splits.items()
        },
        "source": {
            "dataset": SOURCE_DATASET,
            "partitions": partitions,
            "n_partitions": len(partitions),
            "rows": features.height,
        },
    }
    return ExperimentDataset(splits=splits, norm_stats=norm, lineage=lineage)


# ---- checks (also run by the asset on what it wrote) ---------------------------------------------
def check_splits_ordered(ds: ExperimentDataset) -> tuple[bool, str]:
    """Train < val < test in time, with no shared bar (disjoint)."""
    times = [ds.splits[s].get_column("time") for s in SPLITS]
    for (a, ta), (b, tb) in zip(zip(SPLITS, times), list(zip(SPLITS, times))[1:]):
        if not ta.max() < tb.min():
            return False, f"{a} ends at {ta.max()} but {b} starts at {tb.min()}"
    return True, "train < val < test, disjoint"


def check_norm_stats(ds: ExperimentDataset, contract: FeatureContract) -> tuple[bool, str]:
    """The stored statistics equal those recomputed from the train split."""
    refit = NormStats.fit(feature_matrix(ds.splits["train"], contract), contract)
    if refit.hash != ds.norm_stats.hash:
        return False, f"stored norm stats {ds.norm_stats.hash[:12]}… != recomputed {refit.hash[:12]}…"
    return True, f"norm stats recomputed from train match ({refit.hash[:12]}…)"


def check_all_finite(ds: ExperimentDataset, contract: FeatureContract) -> tuple[bool, str]:
    try:
        for name in SPLITS:
            check_finite(name, ds.splits[name], contract)
    except DatasetError as exc:
        return False, str(exc)
    return True, "no NaN/inf in any split"


def check_min_rows(ds: ExperimentDataset, min_rows: Mapping[str, int]) -> tuple[bool, str]:
    short = {s: ds.splits[s].height for s in SPLITS if ds.splits[s].height < int(min_rows.get(s, 1))}
    if short:
        return False, f"splits below their minimum rows: {short} (minimums {dict(min_rows)})"
    return True, ", ".join(f"{s}={ds.splits[s].height}" for s in SPLITS)


# ---- persistence ---------------------------------------------------------------------------------
def save_dataset(ds: ExperimentDataset, lake: LakeLike, experiment: str) -> Path:
    """Write splits to the lake, then norm_stats.json and lineage.json next to them."""
    name = dataset_name(experiment)
    for split, frame in ds.splits.items():
        lake.write(name, split, frame)
    folder = dataset_dir(lake.root, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    ds.norm_stats.to_json(folder / NORM_STATS_FILE)
    (folder / LINEAGE_FILE).write_text(json.dumps(ds.lineage, indent=2, sort_keys=True), encoding="utf-8")
    return folder


def load_dataset(
    lake: LakeLike, experiment: str, contract: FeatureContract, *, verify: bool = True
) -> ExperimentDataset:
    """Read an experiment's dataset back; with `verify`, refuse one built for another feature
    contract or whose files no longer match their recorded hashes."""
    folder = dataset_dir(lake.root, experiment)
    lineage_path = folder / LINEAGE_FILE
    if not lineage_path.exists():
        raise DatasetError(f"no dataset for experiment {experiment!r} ({lineage_path} missing): materialize it first")
    lineage = json.loads(lineage_path.read_text(encoding="utf-8"))
    splits: dict[str, pl.DataFrame] = {}
    for split in SPLITS:
        frame = lake.read(dataset_name(experiment), split)
        if frame is None:
            raise DatasetError(f"dataset {experiment!r} lacks its {split!r} split")
        splits[split] = frame
    ds = ExperimentDataset(splits=splits, norm_stats=NormStats.from_json(folder / NORM_STATS_FILE), lineage=lineage)
    if verify:
        verify_dataset(ds, contract)
    return ds


def verify_dataset(ds: ExperimentDataset, contract: FeatureContract) -> None:
    """Feature order, norm-stats hash and split hashes must match the lineage record."""
    lin = ds.lineage
    if lin.get("feature_order_hash") != contract.feature_order_hash:
        raise DatasetError(
            f"dataset feature_order_hash {str(lin.get('feature_order_hash'))[:12]}… differs from the "
            f"contract's {contract.feature_order_hash[:12]}… ({contract.version}): rebuild the dataset"
        )
    ds.norm_stats.check_contract(contract)
    if ds.norm_stats.hash != lin.get("norm_stats_hash"):
        raise DatasetError("norm_stats.json does not match the norm_stats_hash recorded in lineage.json")
    for split in SPLITS:
        if split_hash(ds.splits[split]) != lin["splits"][split]["hash"]:
            raise DatasetError(f"split {split!r} does not match the hash recorded in lineage.json")
        check_finite(split, ds.splits[split], contract)
