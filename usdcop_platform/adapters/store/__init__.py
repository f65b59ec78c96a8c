"""SQL store of the platform's operational state (SQLAlchemy 2 + Alembic; SQLite or PostgreSQL).

    store = get_store(url)            # cached per process, migrated to head once
    store.models / proposals / approvals / audit / contracts / signals / risk / api_keys /
    backtest_requests / alerts / trials / journal
"""

from usdcop_platform.adapters.store.engine import StoreTuning, mask_url
from usdcop_platform.adapters.store.errors import (
    ConflictError,
    DatabaseBusy,
    DatabaseUnavailable,
    ExperimentContractConflict,
    ModelNotServable,
    NotFoundError,
    OverrideNoteRequired,
    StoreError,
)
from usdcop_platform.adapters.store.registry import ModelRecord
from usdcop_platform.adapters.store.store import Store, clear_store_cache, get_store
from usdcop_platform.adapters.store.types import Record

__all__ = [
    "ConflictError",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "ExperimentContractConflict",
    "ModelNotServable",
    "ModelRecord",
    "NotFoundError",
    "OverrideNoteRequired",
    "Record",
    "Store",
    "StoreError",
    "StoreTuning",
    "clear_store_cache",
    "get_store",
    "mask_url",
]
