"""The trial ledger: record a training's seeds, read a family back (no Dagster import).

`record_training_trials` is called by models/ppo_policy once per training: one ledger row per seed
(the selected one names the registered model), each scored on the validation and test splits by
core.trials with the experiment's costs, its per-session returns written to the lake. The row's
trial id hashes the Dagster run id with the seed, so a retried step adds nothing and a retraining
(a new run) always adds its seeds: N counts every training.
"""

from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.adapters import trial_returns
from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core import trials as T
from usdcop_platform.core.datasets import ExperimentDataset
from usdcop_platform.core.metrics import Annualization

EPOCH = date(1970, 1, 1)
SPLITS = ("val", "test")


def _session_dates(ordinals: np.ndarray) -> list[date]:
    return [EPOCH + timedelta(days=int(d)) for d in ordinals]


def record_training_trials(
    *,
    store: Any,
    lake: Any,
    ann: Annualization,
    exp: ExperimentConfig,
    contract: FeatureContract,
    dataset: ExperimentDataset,
    result: Any,  # core.training.TrainingResult
    model_id: str,
    run_id: str,
    mlflow_run_id: str | None,
) -> list[Any]:
    """Score every seed of `result` on val and test, write their returns, append their ledger rows."""
    from usdcop_platform.core.training import greedy_action_table  # torch: only in the training run

    data = {s: dataset.market_data(s, contract) for s in SPLITS}
    rows = []
    for seed in result.seeds:
        scores: dict[str, T.TrialScore] = {}
        for split, md in data.items():
            positions = T.replay_positions(
                greedy_action_table(seed.model, md), md.session, flat_at_session_end=exp.environment.flat_at_session_end
            )
            scores[split] = T.score_positions(
                md.close, positions, md.session, cost_bps=exp.backtest.cost_bps,
                initial_capital=exp.backtest.initial_capital, annualization=ann, confidence=exp.success_criteria.p_min,
            )
        trial_id = content_hash({"kind": "training_seed", "family": exp.name, "run_id": run_id, "seed": seed.seed})
        frame = pl.concat(
            [
                pl.DataFrame(
                    {"session": _session_dates(sc.sessions), "split": [split] * sc.sessions.size,
                     "session_return": sc.session_returns},
                    schema={"session": pl.Date, "split": pl.Utf8, "session_return": pl.Float64},
                )
                for split, sc in scores.items()
            ]
        )
        trial_returns.save_trial_returns(lake, exp.name, trial_id, frame)
        selected = seed is result.selected
        rows.append(
            {
                "trial_id": trial_id,
                "family": exp.name,
                "experiment_version": exp.version,
                "kind": "training_seed",
                "seed": int(seed.seed),
                "selected": selected,
                "model_id": model_id if selected else None,
                "params_hash": seed.params_hash,
                "config_hash": exp.config_hash,
                "data_hash": dataset.dataset_hash,
                "val_sharpe": scores["val"].sharpe,
                "test_sharpe": scores["test"].sharpe,
                "test_bars": scores["test"].n_bars,
                "returns_partition": trial_id,
                "run_id": run_id,
                "mlflow_run_id": mlflow_run_id,
                "details": {"val_reward": seed.val_metrics.get("val_reward"), "timesteps": seed.timesteps},
            }
        )
    return store.trials.record(rows)


def family(store: Any, name: str) -> tuple[T.FamilyTrials, list[Any]]:
    """The family's ledger summary and rows."""
    rows = store.trials.family(name)
    return T.family_trials(name, rows), rows


def family_test_returns(lake: Any, name: str, rows: list[Any]) -> dict[str, pl.DataFrame]:
    """Per-session test returns of the family's trials that have them in the lake, by trial id."""
    parts = [r["returns_partition"] for r in rows if r.get("returns_partition")]
    return trial_returns.load_trial_returns(lake, name, parts, "test")
