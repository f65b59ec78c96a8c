"""Fixtures of the API tests: a real store (SQLite and PostgreSQL), a temp lake, keys, and
proposals made the way the evaluation step makes them (core.backtest + core.promotion)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store import Store
from usdcop_platform.api.app import create_app
from usdcop_platform.bench.live_server import LiveServer
from usdcop_platform.contracts.base import content_hash, sha256_hex
from usdcop_platform.contracts.evaluation import PromotionPolicy
from usdcop_platform.contracts.experiment import SuccessCriteria
from usdcop_platform.core.backtest import evaluate
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.core.promotion import decide
from usdcop_platform.settings import Settings
from usdcop_platform_tests.model_artifacts import write_model_artifacts

# Synthetic market of the fixtures: USD/COP-like level and 5-minute volatility.
START_PRICE = 4000.0
BAR_VOL = 0.0006
FIRST_SESSION = date(2024, 1, 2)
CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 100


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    env = {
        "USDCOP_DATA_DIR": str(tmp_path / "lake"),
        "USDCOP_MODELS_DIR": str(tmp_path / "models"),
        "USDCOP_STATE_DIR": str(tmp_path / "state"),
        "DATABASE_URL": db_url,
        "USDCOP_WRITE_RATE_LIMIT": 10_000,
    }
    env.update(overrides)
    return Settings(**env)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upgrade()
    yield s
    s.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def lake(settings: Settings) -> ParquetLake:
    return ParquetLake(settings.data_dir)


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as c:
        yield c


@dataclass(frozen=True)
class Keys:
    viewer: str
    reviewer: str
    admin: str

    def h(self, role: str) -> dict[str, str]:
        return {"X-API-Key": getattr(self, role)}


@pytest.fixture
def keys(store: Store) -> Keys:
    return Keys(
        viewer=store.api_keys.create("vera-viewer", "viewer")[0],
        reviewer=store.api_keys.create("rita-reviewer", "reviewer")[0],
        admin=store.api_keys.create("ada-admin", "admin")[0],
    )


KEY_ACTIONS = ("KEY_CREATE", "KEY_REVOKE")  # the `keys` fixture's own audit rows


def decisions(store: Store) -> list[Any]:
    """Audit rows other than API key creation/revocation, newest first."""
    return [a for a in store.audit.list(limit=1000) if a["action"] not in KEY_ACTIONS]


def _positions(close: np.ndarray, rng: np.random.Generator, skill: float) -> np.ndarray:
    """Positions held for random stretches (a few bars to a session), like a trained policy.

    With probability `skill` a stretch takes the side of the price move over it (look-ahead,
    only to make a strategy worth promoting); otherwise a random side or flat.
    """
    n = close.size
    out = np.empty(n, dtype=np.int8)
    i = 0
    while i < n:
        j = min(n, i + int(rng.integers(3, 40)))
        if rng.random() < skill:
            out[i:j] = 1 if close[j - 1] >= close[i] else -1
        else:
            out[i:j] = rng.choice([-1, 0, 1], p=[0.35, 0.3, 0.35])
        i = j
    return out


def seed_proposal(
    store: Store,
    lake: ParquetLake,
    calendar: Any,
    *,
    experiment: str = "baseline",
    recommendation: str | None = None,
    n_sessions: int = 60,
    seed: int = 0,
    expires_at: datetime | None = None,
    with_series: bool = True,
    skill: float = 0.0,
    mlflow_run_id: str | None = None,
    mlflow_model_version: str | None = None,
    production_model_id: str | None = None,
) -> Any:
    """Register a model and its proposal; write its backtest series and trades to the lake.

    With `production_model_id`, the candidate is evaluated against that model as the evaluation
    step does (its positions backtested on the same bars: metrics.benchmarks.baseline)."""
    rng = np.random.default_rng(seed)
    sessions = calendar.sessions(FIRST_SESSION, FIRST_SESSION + timedelta(days=n_sessions * 2))[:n_sessions]
    times = calendar.session_grid_array(sessions)
    n = times.size
    close = START_PRICE * np.exp(np.cumsum(rng.normal(0.0, BAR_VOL, n)))
    session_ids = np.repeat(np.array(sessions, dtype="datetime64[D]"), calendar.bars_per_session)
    positions = _positions(close, rng, skill)
    baseline_positions = None if production_model_id is None else _positions(close, rng, skill / 2)
    evaluation = evaluate(
        close, positions, session_ids, times=times, cost_bps=5.0, initial_capital=100_000.0,
        baseline_positions=baseline_positions,
        annualization=Annualization.from_calendar(calendar), confidence=CONFIDENCE, cost_sweep_bps=(2.0, 75.0),
        bootstrap_block_bars=calendar.bars_per_session, bootstrap_samples=BOOTSTRAP_SAMPLES, bootstrap_seed=seed,
    )
    result, summary = evaluation.candidate, evaluation.summary()
    rules = decide(
        result.metrics, n_bars=n, criteria=SuccessCriteria(), min_test_bars=1000, policy=PromotionPolicy(),
        statement="synthetic test backtest", baseline_metrics=summary["benchmarks"]["baseline"],
        baseline_model_id=production_model_id,
    )
    model_id = f"{experiment}-{uuid.uuid4().hex[:12]}"
    dataset_hash = sha256_hex(f"dataset-{seed}")
    # models/ next to the lake, as make_settings lays them out: promotion verifies these files
    artifacts = write_model_artifacts(lake.root.parent / "models", experiment, model_id, sha256_hex(model_id), seed)
    model = store.models.register(
        model_id=model_id,
        experiment_name=experiment,
        experiment_version="1",
        model_hash=sha256_hex(model_id),
        dataset_hash=dataset_hash,
        config_hash=sha256_hex(f"config-{experiment}"),
        mlflow_run_id=mlflow_run_id,
        mlflow_model_version=mlflow_model_version,
        **artifacts,
    )
    backtest_hash = content_hash({"series": result.fingerprint(), "model_hash": model["model_hash"]})
    lineage = {
        "config_hash": model["config_hash"],
        "dataset_hash": dataset_hash,
        "feature_order_hash": model["feature_order_hash"],
        "norm_stats_hash": model["norm_stats_hash"],
        "model_hash": model["model_hash"],
        "mlflow_run_id": mlflow_run_id,
        "backtest_hash": backtest_hash,
        "test_start": sessions[0].isoformat(),
        "test_end": sessions[-1].isoformat(),
    }
    series_path = None
    if with_series:  # exactly as the evaluation/backtest asset stores them
        paths = bt_store.save_backtest(
            lake, experiment, model_id, series=evaluation.series_frame(), trades=result.trades_frame(),
            report={**summary, "backtest_hash": backtest_hash, "lineage": lineage},
        )
        series_path = paths["series"]
    metrics = {**result.metrics, "benchmarks": summary["benchmarks"], "cost_sweep": summary["cost_sweep"],
               "bootstrap": summary["bootstrap"]}
    return store.proposals.upsert(
        model_id=model_id,
        experiment_name=experiment,
        experiment_version="1",
        recommendation=recommendation or rules.recommendation,
        confidence=rules.confidence,
        reasons=rules.reasons,
        criteria=rules.criteria_dict(),
        metrics=metrics,
        baseline_comparison=rules.baseline_comparison,
        lineage=lineage,
        statistical_statement=rules.statistical_statement,
        backtest_hash=backtest_hash,
        test_start=sessions[0],
        test_end=sessions[-1],
        series_path=series_path,
        expires_at=expires_at or (datetime.now(timezone.utc) + timedelta(days=14)),
    )


@pytest.fixture
def live_server(settings: Settings, store: Store) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings, store)) as server:
        yield server
