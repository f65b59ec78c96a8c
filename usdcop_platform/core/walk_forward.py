"""Expanding-window walk-forward: retrain on a growing window, score on the next unseen block.

Given the sessions of an experiment (train start .. test end, in order) and
`backtest.walk_forward` (folds K, test_sessions L, min_train_sessions M), with an embargo of
E = ceil(effective embargo bars / bars per session) sessions:

    the K test blocks tile the last K * L sessions, block k = sessions [c_k, c_k + L)
    fold k   train  = sessions [0, c_k - L - 2E)           (expanding: it grows with k)
             val    = sessions [c_k - L - E, c_k - E)       (early stopping and seed selection)
             test   = block k                               (never trained on by fold k)

Each fold fits its own normalization on its train window only (core.normalization), trains the
experiment's seeds (core.training, median-validation seed), replays the selected seed's greedy
policy over its test block and backtests it with the experiment's costs (core.trials, core.backtest),
each fold from a fresh account. The aggregate's `positive_share` (folds with Sharpe > 0) is the
stability criterion of the first vote. Folds that do not fit the sessions raise WalkForwardError
naming the numbers; nothing is silently shortened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import numpy as np
import polars as pl

from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core.backtest import FOLD_KEYS, backtest
from usdcop_platform.core.datasets import check_finite
from usdcop_platform.core.env import MarketData
from usdcop_platform.core.features import feature_matrix
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.core.normalization import NormStats
from usdcop_platform.core.trials import replay_positions


class WalkForwardError(ValueError):
    """The folds do not fit the experiment's sessions; the message gives the numbers."""


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[date, date]
    val: tuple[date, date]
    test: tuple[date, date]
    train_sessions: int


def plan_folds(
    sessions: list[date], exp: ExperimentConfig, embargo_bars: int, bars_per_session: int
) -> list[Fold]:
    """The K expanding folds over `sessions` (see the module docstring)."""
    wf = exp.backtest.walk_forward
    k, length, min_train = wf.folds, wf.test_sessions, wf.min_train_sessions
    if k < 1:
        return []
    embargo = math.ceil(embargo_bars / bars_per_session)
    n = len(sessions)
    first_cut = n - k * length
    first_train = first_cut - length - 2 * embargo
    if first_train < min_train:
        raise WalkForwardError(
            f"walk-forward folds do not fit experiment {exp.name!r}: {k} folds x {length} test sessions, a "
            f"{length}-session validation block and a {embargo}-session embargo on each side need "
            f"{k * length + length + 2 * embargo + min_train} sessions with min_train_sessions {min_train}; "
            f"{exp.date_ranges.train.start}..{exp.date_ranges.test.end} holds {n}. Use fewer or shorter folds"
        )
    folds = []
    for i in range(k):
        cut = first_cut + i * length
        t_end = cut - length - 2 * embargo
        v0, v1 = cut - length - embargo, cut - embargo
        folds.append(
            Fold(i, (sessions[0], sessions[t_end - 1]), (sessions[v0], sessions[v1 - 1]),
                 (sessions[cut], sessions[cut + length - 1]), t_end)
        )
    return folds


def _rows(frame: pl.DataFrame, span: tuple[date, date]) -> pl.DataFrame:
    return frame.filter(pl.col("session").is_between(span[0], span[1]))


def _market(df: pl.DataFrame, norm: NormStats, contract: FeatureContract) -> MarketData:
    return MarketData(
        obs=norm.apply(feature_matrix(df, contract)),
        close=df.get_column("close").cast(pl.Float64).to_numpy(),
        session=df.get_column("session").cast(pl.Date).cast(pl.Int32).to_numpy().astype(np.int64),
        position_index=contract.names.index("position"),
    )


class FoldRunner(Protocol):
    """Runs fn(shared, item) for every item, yielding (item index, result or exception): the
    in-process loop below, or app.execution's Ray executor (folds as Ray tasks with one CPU each)."""

    def run(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...


class _InProcess:
    def run(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            yield i, fn(shared, item)


@dataclass(frozen=True)
class FoldInputs:
    """What every fold shares (sent once to Ray's object store)."""

    frame: pl.DataFrame
    exp: ExperimentConfig
    contract: FeatureContract
    ann: Annualization
    total_timesteps: int | None


def score_fold(shared: FoldInputs, fold: Fold) -> dict[str, Any]:
    """Train one fold on its own window (its own train-only normalization) and score it on its test block."""
    from usdcop_platform.core.training import TrainingData, greedy_action_table, train_experiment

    frame, exp, contract = shared.frame, shared.exp, shared.contract
    train_df, val_df, test_df = (_rows(frame, fold.train), _rows(frame, fold.val), _rows(frame, fold.test))
    for name, part in (("train", train_df), ("val", val_df), ("test", test_df)):
        if part.height < 2:
            raise WalkForwardError(f"walk-forward fold {fold.index}: its {name} block holds {part.height} bar(s)")
        check_finite(f"walk-forward fold {fold.index} {name}", part, contract)
    norm = NormStats.fit(feature_matrix(train_df, contract), contract)  # this fold's train window only
    data = TrainingData(
        train=_market(train_df, norm, contract), val=_market(val_df, norm, contract),
        obs_bound=contract.normalization_clip,
    )
    result = train_experiment(exp, data, total_timesteps=shared.total_timesteps)
    test = _market(test_df, norm, contract)
    positions = replay_positions(
        greedy_action_table(result.selected.model, test), test.session,
        flat_at_session_end=exp.environment.flat_at_session_end,
    )
    r = backtest(
        test.close, positions, test.session, cost_bps=exp.backtest.cost_bps,
        initial_capital=exp.backtest.initial_capital, annualization=shared.ann, confidence=exp.success_criteria.p_min,
    )
    return {
        "fold": fold.index,
        "train_start": fold.train[0].isoformat(), "train_end": fold.train[1].isoformat(),
        "val_start": fold.val[0].isoformat(), "val_end": fold.val[1].isoformat(),
        "test_start": fold.test[0].isoformat(), "test_end": fold.test[1].isoformat(),
        "train_sessions": fold.train_sessions,
        "norm_stats_hash": norm.hash,
        "selected_seed": result.selected.seed,
        "params_hash": result.selected.params_hash,
        "train_seconds": round(sum(s.seconds for s in result.seeds), 3),  # PPO learning of every seed
        **{key: r.metrics[key] for key in FOLD_KEYS},
    }


def run_walk_forward(
    frame: pl.DataFrame,
    folds: list[Fold],
    exp: ExperimentConfig,
    contract: FeatureContract,
    ann: Annualization,
    *,
    total_timesteps: int | None = None,
    runner: FoldRunner | None = None,
) -> dict[str, Any]:
    """Train and score every fold on `frame` (feature rows: time, session, prices, the contract's
    features, in time order), in this process or through `runner` (e.g. Ray tasks). Returns
    {"folds": [...], "aggregate": {...}} like core.backtest's test-split folds, plus each fold's
    dates, norm-stats hash and selected model's params_hash; folds in fold order."""
    shared = FoldInputs(frame, exp, contract, ann, total_timesteps)
    out: list[dict[str, Any] | None] = [None] * len(folds)
    for i, result in (runner or _InProcess()).run(score_fold, shared, folds):
        if isinstance(result, BaseException):
            raise result
        out[i] = result
    done = [f for f in out if f is not None]
    return {"folds": done, "aggregate": aggregate(done), "kind": "expanding"}


def aggregate(folds: list[dict[str, Any]]) -> dict[str, Any]:
    sharpes = np.array([f["sharpe"] for f in folds], dtype=np.float64)
    return {
        "folds": len(folds),
        "sharpe_mean": float(sharpes.mean()),
        "sharpe_median": float(np.median(sharpes)),
        "sharpe_min": float(sharpes.min()),
        "sharpe_std": float(sharpes.std(ddof=1)) if len(folds) > 1 else 0.0,
        "positive_share": float((sharpes > 0).mean()),
        "total_return_mean": float(np.mean([f["total_return"] for f in folds])),
        "max_drawdown_worst": float(max(f["max_drawdown"] for f in folds)),
    }
