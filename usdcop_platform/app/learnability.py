"""Use case: the learnability benchmark (planted edge vs oracle), through the experiment's own pipeline.

For each synthetic market (core.learnability.DEFAULT_MARKETS) the platform's synthetic source makes
bars with a planted drift (core.synthetic.PlantedEdge) and macro series; they are cleaned, turned into
features and split into a dataset exactly as the Dagster assets do. For each cost level the
experiment (default `baseline`, costs replaced) is trained once per seed with core.training,
packaged to ONNX behind the parity gate, reloaded with onnxruntime and run bar by bar over the test
split by core.policy_runner, then backtested by core.backtest: the code paths a real model takes.
The oracle, the simple feature rule and the latent optimum are scored by the same backtest.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.app.policy_study import position_metrics, split_arrays, train_and_backtest
from usdcop_platform.contracts.date_ranges import DateRanges
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core import datasets as ds
from usdcop_platform.core import learnability as lb
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import clean_bars, clean_macro
from usdcop_platform.core.features import compute_features, non_finite_rows
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.core.synthetic import planted_drift, synthetic_bars, synthetic_macro

# Train on two years, validate on a quarter, test on the year after. The synthetic series start at
# the calendar anchor (2020-01-01); the macro z-scores need 126 sessions before the first row.
DEFAULT_RANGES = DateRanges.model_validate(
    {
        "train": {"start": "2020-09-01", "end": "2022-08-31"},
        "val": {"start": "2022-09-15", "end": "2022-12-23"},
        "test": {"start": "2023-01-10", "end": "2023-12-29"},
    }
)

Progress = Callable[[str], None]


class LearnabilityError(ValueError):
    """A benchmark request that cannot be run (named market, cost or range)."""


@dataclass(frozen=True)
class LearnabilityRequest:
    experiment: str = "baseline"
    markets: tuple[lb.MarketSpec, ...] = lb.DEFAULT_MARKETS
    costs_bps: tuple[float, ...] = lb.DEFAULT_COSTS_BPS
    seeds: tuple[int, ...] = (0, 1, 2)
    total_timesteps: int | None = None  # None: the experiment's own budget
    market_seed: int = 7
    date_ranges: DateRanges = DEFAULT_RANGES
    quirks: bool = True  # the export's gaps, stale runs and backfill rows, as the real data has

    def __post_init__(self) -> None:
        if not self.markets or not self.costs_bps or not self.seeds:
            raise LearnabilityError("at least one market, one cost and one seed are needed")
        bad = [c for c in self.costs_bps if not (np.isfinite(c) and c >= 0)]
        if bad:
            raise LearnabilityError(f"costs must be finite and >= 0 bps; got {bad}")


@dataclass
class MarketData:
    """One market's dataset and the latent drift aligned with each split's bars."""

    spec: lb.MarketSpec
    dataset: ds.ExperimentDataset
    drift: dict[str, np.ndarray] = field(default_factory=dict)


def case_experiment(exp: ExperimentConfig, request: LearnabilityRequest, cost_bps: float, seed: int) -> ExperimentConfig:
    """The experiment as configured, on the benchmark's date ranges, at one cost, with one seed."""
    raw = exp.model_dump(mode="json")
    raw["date_ranges"] = request.date_ranges.model_dump(mode="json")
    raw["environment"]["cost_bps"] = cost_bps
    raw["backtest"]["cost_bps"] = cost_bps
    raw["seeds"] = [seed]
    return ExperimentConfig.model_validate(raw)


def build_market(
    cfg: PlatformConfig, calendar: TradingCalendar, spec: lb.MarketSpec, request: LearnabilityRequest
) -> MarketData:
    """Synthetic bars with the planted edge + macro -> cleaning -> features -> dataset (+ drift)."""
    exp = case_experiment(cfg.experiment(request.experiment), request, 0.0, request.seeds[0])
    anchor = cfg.instrument.calendar_start
    end = request.date_ranges.test.end
    sessions = calendar.sessions(request.date_ranges.train.start, end)
    if len(sessions) < exp.environment.episode_sessions:
        raise LearnabilityError(
            f"market {spec.name!r} has {len(sessions)} sessions, fewer than one episode "
            f"({exp.environment.episode_sessions} sessions)"
        )
    raw = synthetic_bars(calendar, anchor, end, request.market_seed, quirks=request.quirks, edge=spec.edge)
    bars = clean_bars(raw, calendar, cfg.quality.bars).bars
    macro = clean_macro(synthetic_macro(cfg.macro, anchor, anchor, end, request.market_seed), cfg.macro).frame
    features = compute_features(bars, macro, cfg.features, calendar, cfg.macro)
    bad = non_finite_rows(features, cfg.features)
    if bad.height:
        features = features.join(bad.select("time"), on="time", how="anti")
    dataset = ds.build_dataset(features, exp, cfg.features, min_rows={})
    drift = planted_drift(calendar, end, request.market_seed, spec.edge)
    aligned = {}
    for split, frame in dataset.splits.items():
        joined = frame.select("time").join(drift, on="time", how="left")
        aligned[split] = joined.get_column("drift").fill_null(0.0).to_numpy()
    return MarketData(spec, dataset, aligned)


def reference_rules(
    dataset: ds.ExperimentDataset, cost: float, ann: Annualization, drift: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, Any]]:
    """Oracle (fitted on train), simple feature rule and, given the latent drift, the latent optimum
    (fitted on train), all scored on the test split."""
    tr_close, tr_sessions, tr_frame = split_arrays(dataset, "train")
    te_close, te_sessions, te_frame = split_arrays(dataset, "test")

    def score(positions: np.ndarray) -> float:
        return position_metrics(tr_close, positions, tr_sessions, cost, ann)["sharpe"]

    signals = {f: tr_frame.get_column(f).to_numpy() for f in lb.ORACLE_FEATURES}
    oracle, fit = lb.fit_rule(signals, tr_sessions, score)
    test_signal = te_frame.get_column(oracle.feature).to_numpy() if oracle.feature else None
    out: dict[str, dict[str, Any]] = {
        "oracle": {
            "rule": oracle.describe(),
            "train_sharpe": fit,
            **position_metrics(te_close, oracle.positions(test_signal, te_sessions), te_sessions, cost, ann),
        }
    }
    momentum = lb.momentum_positions(te_frame.get_column(lb.MOMENTUM_FEATURE).to_numpy(), te_sessions)
    out["momentum_1h"] = {"rule": "sign of log_ret_1h", **position_metrics(te_close, momentum, te_sessions, cost, ann)}
    if drift is not None:
        latent, latent_fit = lb.fit_rule({"drift": drift["train"]}, tr_sessions, score)
        positions = latent.positions(drift["test"] if latent.feature else None, te_sessions)
        out["latent_optimum"] = {"rule": latent.describe(), "train_sharpe": latent_fit,
                                 **position_metrics(te_close, positions, te_sessions, cost, ann)}
    return out


def run_learnability(
    cfg: PlatformConfig, request: LearnabilityRequest, *, progress: Progress | None = None,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """Every (market, cost) case: reference rules, the policy per seed, medians and the verdict."""
    say = progress or (lambda _msg: None)
    calendar = TradingCalendar(cfg.instrument)
    ann = Annualization.from_calendar(calendar)
    base = cfg.experiment(request.experiment)
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="usdcop-learnability-") as tmp:
        out_dir = models_dir or Path(tmp)
        for spec in request.markets:
            say(f"market {spec.name}: building bars, features and dataset")
            market = build_market(cfg, calendar, spec, request)
            for cost in request.costs_bps:
                refs = reference_rules(market.dataset, cost, ann, market.drift if spec.has_edge else None)
                seeds: list[dict[str, Any]] = []
                for seed in request.seeds:
                    say(f"market {spec.name}, {cost:g} bps: training seed {seed}")
                    exp = case_experiment(base, request, cost, seed)
                    seeds.append(train_and_backtest(cfg, market.dataset, exp, ann, total_timesteps=request.total_timesteps, models_dir=out_dir))
                cases.append(_case(spec, cost, refs, seeds))
    return {
        "experiment": request.experiment,
        "date_ranges": request.date_ranges.model_dump(mode="json"),
        "seeds": list(request.seeds),
        "total_timesteps": request.total_timesteps or base.algorithm.total_timesteps,
        "cases": cases,
        "all_targets_met": all(c["verdict"]["passed"] is not False for c in cases),
    }


def _case(spec: lb.MarketSpec, cost: float, refs: dict[str, dict[str, Any]], seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    oracle_sharpe = float(refs["oracle"]["sharpe"])
    verdict = lb.judge(
        spec, oracle_sharpe,
        [s["sharpe"] for s in seeds], [s["total_return"] for s in seeds], [s["round_trips_per_20_sessions"] for s in seeds],
    )
    keys = ("sharpe", "total_return", "max_drawdown", "turnover", "exposure", "round_trips_per_20_sessions")
    return {
        "market": spec.name,
        "edge_strength": spec.edge.strength,
        "edge_half_life_bars": spec.edge.half_life_bars,
        "cost_bps": cost,
        "references": refs,
        "policy_median": {k: float(np.median([s[k] for s in seeds])) for k in keys},
        "policy_seeds": list(seeds),
        "share_of_oracle": (float(np.median([s["sharpe"] for s in seeds])) / oracle_sharpe) if oracle_sharpe > 0 else None,
        "verdict": verdict.as_dict(),
    }


def experiment_edge_report(cfg: PlatformConfig, lake: ds.LakeLike, experiment: str) -> dict[str, Any]:
    """The reference rules on an experiment's stored dataset at its backtest cost: what the demo
    prints beside the trained model, so a newcomer can tell what a model could have learned."""
    exp = cfg.experiment(experiment)
    dataset = ds.load_dataset(lake, experiment, cfg.features)
    ann = Annualization.from_calendar(TradingCalendar(cfg.instrument))
    return {"cost_bps": exp.backtest.cost_bps, **reference_rules(dataset, exp.backtest.cost_bps, ann)}
