"""Small helpers shared by the repositories: records from ORM rows, dialect-aware inserts, retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from usdcop_platform.adapters.store.errors import DatabaseBusy, DatabaseUnavailable
from usdcop_platform.adapters.store.types import Record

T = TypeVar("T")


def to_record(obj: Any, exclude: Iterable[str] = ()) -> Record:
    """A detached, read-only copy of an ORM row's column values."""
    skip = set(exclude)
    mapper = sa.inspect(obj).mapper
    return Record({a.key: getattr(obj, a.key) for a in mapper.column_attrs if a.key not in skip})


def dialect_insert(session: Session, table: Any) -> Any:
    """INSERT construct with ON CONFLICT support for the session's dialect."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts are implemented for sqlite and postgresql, not {name!r}")


def retry_transient(fn: Callable[[], T], attempts: int, base_delay_s: float, max_delay_s: float) -> T:
    """Run `fn`, retrying on a dropped connection or a busy database with exponential backoff.

    Only for idempotent writes: if a failed attempt had in fact committed, the retry is a no-op.
    """
    for attempt in range(attempts + 1):
        try:
            return fn()
        except (DatabaseUnavailable, DatabaseBusy):
            if attempt == attempts:
                raise
            time.sleep(min(max_delay_s, base_delay_s * 2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def reject_unknown(kind: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {kind} field(s): {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
