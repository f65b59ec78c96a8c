"""Fixtures of the store tests: a migrated Store on SQLite and on the real PostgreSQL, and builders."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from usdcop_platform.adapters.store import Record, Store, StoreTuning

_ids = itertools.count(1)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url, StoreTuning(write_retry_base_delay_s=0.001, write_retry_max_delay_s=0.01))
    s.upgrade()
    yield s
    s.dispose()


@pytest.fixture
def make_model(store: Store) -> Callable[..., Record]:
    def _make(model_id: str | None = None, **overrides: Any) -> Record:
        mid = model_id or f"baseline-v1-{next(_ids):04d}"
        fields: dict[str, Any] = dict(
            model_id=mid,
            experiment_name="baseline",
            experiment_version="1.0.0",
            model_hash=f"{abs(hash(mid)):064x}"[-64:],
            onnx_hash="b" * 64,
            norm_stats_hash="c" * 64,
            feature_order_hash="d" * 64,
            metrics={"sharpe": 1.1},
        )
        fields.update(overrides)
        return store.models.register(**fields)

    return _make


@pytest.fixture
def make_proposal(store: Store, make_model: Callable[..., Record]) -> Callable[..., Record]:
    def _make(recommendation: str = "PROMOTE", expires_in: timedelta | None = timedelta(days=7),
              **model_overrides: Any) -> Record:
        model = make_model(**model_overrides)
        return store.proposals.upsert(
            model_id=model.model_id,
            experiment_name=model.experiment_name,
            experiment_version=model.experiment_version,
            recommendation=recommendation,
            confidence={"PROMOTE": 0.85, "REVIEW": 0.60, "REJECT": 0.90}[recommendation],
            reasons=["sharpe 1.10 >= 0.50"],
            criteria={"min_sharpe": {"value": 1.1, "threshold": 0.5, "status": "PASS"}},
            metrics={"sharpe": 1.1, "max_drawdown": 0.08},
            expires_at=None if expires_in is None else datetime.now(timezone.utc) + expires_in,
        )

    return _make
