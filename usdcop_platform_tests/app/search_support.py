"""Shared setup of the search tests: the smoke experiment shrunk, synthetic arrays, a recorder."""

from __future__ import annotations

from pathlib import Path

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store import get_store
from usdcop_platform.adapters.tracking import MlflowTracking
from usdcop_platform.app import search as app_search
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.core import search as S
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.core.training import TrainingData
from usdcop_platform_tests.training_synth import fresh_mlflow_uri, synthetic_market

ANN = Annualization(bars_per_year=60 * 250, sessions_per_year=250)
BUDGET = 1024


def small_experiment(exp: ExperimentConfig, *, eval_every: int = 256, budget: int = BUDGET) -> ExperimentConfig:
    """Smoke with 2 envs x 128 steps, one epoch, an evaluation every `eval_every` steps (several
    reports for the pruner), and the smoke search space with a `budget`-step trial."""
    raw = exp.model_dump(mode="json")
    raw["algorithm"]["hyperparameters"].update({"n_steps": 128, "batch_size": 128, "n_epochs": 1})
    raw["algorithm"].update({"n_envs": 2, "total_timesteps": budget})
    raw["algorithm"]["early_stopping"] = {"eval_every_timesteps": eval_every, "patience": 100}
    raw["search"]["timesteps"] = budget
    return ExperimentConfig.model_validate(raw)


def inputs(exp: ExperimentConfig, database_url: str, *, seed: int = 3) -> app_search.SearchInputs:
    data = TrainingData(train=synthetic_market(12, seed), val=synthetic_market(6, seed + 1), obs_bound=5.0)
    return app_search.SearchInputs(
        exp=exp, data=data, scoring={"val": data.val, "test": synthetic_market(6, seed + 2)}, ann=ANN,
        database_url=database_url, study_name=S.study_name(exp),
    )


def recorder(root: Path, exp: ExperimentConfig, database_url: str) -> app_search.TrialRecorder:
    store = get_store(database_url)
    mlflow = MlflowTracking(tracking_uri=fresh_mlflow_uri(root / "state"), artifact_root=str(root / "state" / "art"))
    return app_search.TrialRecorder(store=store, lake=ParquetLake(root / "lake"), mlflow=mlflow, exp=exp, data_hash="d" * 64)
