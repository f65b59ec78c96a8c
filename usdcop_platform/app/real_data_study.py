"""Use case: an experiment on the real 2020-2024 files, stated honestly, beside simple rules.

The real bars and macro go through the file source, cleaning and the feature engine. For each cost
level the experiment (costs replaced, everything else as configured) is trained:

* on its own date ranges, once per seed, and scored on its test split (2024 for `baseline`);
* on expanding walk-forward folds (each with its own dataset: splits, embargo and train-only
  normalization), scored on each fold's out-of-sample half-year.

Beside the policy, on the same bars and costs: flat, buy-and-hold (long every bar), intraday-long
(long every bar, flat at each session end) and 1-hour momentum (sign of log_ret_1h, flat at each
session end). Nothing is tuned on any test period: the experiment's configuration is used as is.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.app.policy_study import position_metrics, split_arrays, train_and_backtest
from usdcop_platform.contracts.date_ranges import DateRanges
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.backtest import buy_and_hold_positions
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import clean_bars, clean_macro
from usdcop_platform.core.features import compute_features, non_finite_rows
from usdcop_platform.core.learnability import momentum_positions
from usdcop_platform.core.policy_runner import last_bar_of_session
from usdcop_platform.core.metrics import Annualization

DEFAULT_COSTS_BPS: tuple[float, ...] = (2.0, 5.0, 25.0, 75.0)

# Expanding walk-forward folds: train from the experiment's train start to `train_end`, validate on
# the quarter after, test on the half-year after that (all out of sample for the fold's model).
DEFAULT_FOLDS: tuple[dict[str, dict[str, str]], ...] = (
    {"train_end": {"end": "2021-09-30"}, "val": {"start": "2021-10-11", "end": "2021-12-30"}, "test": {"start": "2022-01-11", "end": "2022-06-30"}},
    {"train_end": {"end": "2022-03-31"}, "val": {"start": "2022-04-11", "end": "2022-06-30"}, "test": {"start": "2022-07-12", "end": "2022-12-29"}},
    {"train_end": {"end": "2022-09-30"}, "val": {"start": "2022-10-11", "end": "2022-12-29"}, "test": {"start": "2023-01-11", "end": "2023-06-30"}},
    {"train_end": {"end": "2023-03-31"}, "val": {"start": "2023-04-12", "end": "2023-06-30"}, "test": {"start": "2023-07-12", "end": "2023-12-29"}},
)

Progress = Callable[[str], None]


class RealDataStudyError(ValueError):
    """Missing files or a range the data does not cover."""


@dataclass(frozen=True)
class RealDataRequest:
    bars_file: Path
    macro_file: Path
    experiment: str = "baseline"
    costs_bps: tuple[float, ...] = DEFAULT_COSTS_BPS
    seeds: tuple[int, ...] = (0, 1, 2)
    fold_seeds: tuple[int, ...] = (0,)
    folds: tuple[dict[str, dict[str, str]], ...] = DEFAULT_FOLDS
    total_timesteps: int | None = None


def load_features(cfg: PlatformConfig, calendar: TradingCalendar, request: RealDataRequest) -> pl.DataFrame:
    """Real files -> file source -> cleaning -> features (rows carrying NaN dropped, as the assets do)."""
    from usdcop_platform.adapters.sources.file import read_bars_file, read_macro_file

    for path in (request.bars_file, request.macro_file):
        if not Path(path).is_file():
            raise RealDataStudyError(f"{path}: file not found")
    bars = clean_bars(read_bars_file(request.bars_file), calendar, cfg.quality.bars).bars
    macro = clean_macro(read_macro_file(request.macro_file), cfg.macro).frame
    features = compute_features(bars, macro, cfg.features, calendar, cfg.macro)
    bad = non_finite_rows(features, cfg.features)
    return features.join(bad.select("time"), on="time", how="anti") if bad.height else features


def with_overrides(exp: ExperimentConfig, *, cost: float, seeds: tuple[int, ...], ranges: DateRanges | None = None) -> ExperimentConfig:
    raw = exp.model_dump(mode="json")
    raw["environment"]["cost_bps"] = cost
    raw["backtest"]["cost_bps"] = cost
    raw["seeds"] = list(seeds)
    if ranges is not None:
        raw["date_ranges"] = ranges.model_dump(mode="json")
    return ExperimentConfig.model_validate(raw)


def fold_ranges(exp: ExperimentConfig, fold: dict[str, dict[str, str]]) -> DateRanges:
    return DateRanges.model_validate(
        {
            "train": {"start": exp.date_ranges.train.start.isoformat(), "end": fold["train_end"]["end"]},
            "val": fold["val"],
            "test": fold["test"],
        }
    )


def rule_benchmarks(dataset: ds.ExperimentDataset, cost: float, ann: Annualization) -> dict[str, dict[str, Any]]:
    close, sessions, frame = split_arrays(dataset, "test")
    n = close.size
    intraday = np.ones(n, dtype=np.int8)
    intraday[last_bar_of_session(sessions)] = 0
    rules = {
        "flat": np.zeros(n, dtype=np.int8),
        "buy_and_hold": buy_and_hold_positions(n),
        "intraday_long": intraday,
        "momentum_1h": momentum_positions(frame.get_column("log_ret_1h").to_numpy(), sessions),
    }
    return {name: position_metrics(close, p, sessions, cost, ann) for name, p in rules.items()}


def _median(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("sharpe", "total_return", "max_drawdown", "turnover", "exposure", "round_trips_per_20_sessions")
    return {k: float(np.median([r[k] for r in rows])) for k in keys}


def run_real_data_study(cfg: PlatformConfig, request: RealDataRequest, *, progress: Progress | None = None) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    calendar = TradingCalendar(cfg.instrument)
    ann = Annualization.from_calendar(calendar)
    base = cfg.experiment(request.experiment)
    say("reading, cleaning and computing features of the real files")
    features = load_features(cfg, calendar, request)
    min_rows: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="usdcop-realdata-") as tmp:
        for cost in request.costs_bps:
            exp = with_overrides(base, cost=cost, seeds=request.seeds)
            dataset = ds.build_dataset(features, exp, cfg.features, min_rows=min_rows)
            seeds = []
            for seed in request.seeds:
                say(f"{cost:g} bps: training seed {seed} on {exp.date_ranges.train.start}..{exp.date_ranges.train.end}")
                one = with_overrides(base, cost=cost, seeds=(seed,))
                seeds.append(train_and_backtest(cfg, dataset, one, ann, total_timesteps=request.total_timesteps, models_dir=Path(tmp)))
            folds = []
            for k, fold in enumerate(request.folds):
                ranges = fold_ranges(base, fold)
                fexp = with_overrides(base, cost=cost, seeds=request.fold_seeds, ranges=ranges)
                fdata = ds.build_dataset(features, fexp, cfg.features, min_rows=min_rows)
                say(f"{cost:g} bps: walk-forward fold {k + 1}/{len(request.folds)} (test {ranges.test.start}..{ranges.test.end})")
                runs = [
                    train_and_backtest(cfg, fdata, with_overrides(fexp, cost=cost, seeds=(s,), ranges=ranges), ann,
                                       total_timesteps=request.total_timesteps, models_dir=Path(tmp))
                    for s in request.fold_seeds
                ]
                folds.append({
                    "fold": k + 1, "test_start": ranges.test.start.isoformat(), "test_end": ranges.test.end.isoformat(),
                    "policy_median": _median(runs), "policy_seeds": runs, "benchmarks": rule_benchmarks(fdata, cost, ann),
                })
            out.append({
                "cost_bps": cost,
                "test": {
                    "start": exp.date_ranges.test.start.isoformat(), "end": exp.date_ranges.test.end.isoformat(),
                    "policy_median": _median(seeds), "policy_seeds": seeds,
                    "benchmarks": rule_benchmarks(dataset, cost, ann),
                },
                "walk_forward": {
                    "folds": folds,
                    "positive_folds": sum(1 for f in folds if f["policy_median"]["total_return"] > 0),
                    "mean_sharpe": float(np.mean([f["policy_median"]["sharpe"] for f in folds])) if folds else None,
                },
            })
    return {
        "experiment": request.experiment,
        "experiment_version": base.version,
        "bars_file": str(request.bars_file),
        "macro_file": str(request.macro_file),
        "seeds": list(request.seeds),
        "fold_seeds": list(request.fold_seeds),
        "total_timesteps": request.total_timesteps or base.algorithm.total_timesteps,
        "features_rows": features.height,
        "first_session": str(features.get_column("session").min()),
        "last_session": str(features.get_column("session").max()),
        "costs": out,
    }


def default_real_files(root: Path) -> tuple[Path, Path]:
    """The shared real exports beside the repository (../shared/data), as the tests read them."""
    data = root.parent / "shared" / "data"
    return data / "usdcop_m5_ohlcv_2020_2024.csv.gz", data / "macro_indicators_daily_to_2024.csv.gz"
