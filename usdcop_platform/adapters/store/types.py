"""Column types and value conventions shared by every table.

- Instants are timezone-aware UTC in Python on both SQLite (which stores no offset) and
  PostgreSQL (timestamptz). A naive datetime is refused: it is how Bogota wall-clock times end
  up mislabelled as UTC.
- JSON columns are JSONB on PostgreSQL and JSON text on SQLite. Non-finite floats have no JSON
  form (PostgreSQL rejects NaN in JSONB), so they are stored as null.
- Repositories return `Record`s: read-only dicts with attribute access, detached from any session.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime, what: str = "timestamp") -> datetime:
    """Convert an aware datetime to UTC; refuse naive ones (their zone is a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} is naive; pass a timezone-aware instant (UTC)")
    return value.astimezone(timezone.utc)


def as_date(value: date | str | None, what: str = "date") -> date | None:
    """Accept a date or an ISO 'YYYY-MM-DD' string (API payloads); datetimes lose their time part."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO date (YYYY-MM-DD)") from None


class UTCDateTime(sa.TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that always round-trips as an aware UTC datetime."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        # SQLite stores text without an offset: store the UTC wall time, re-attached on read.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _json_key(key: Any) -> str:
    """A dict key as JSON writes it (so the walk below and json.dumps agree)."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    return str(key)


def jsonable(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars/arrays to Python, dates to ISO, non-finite floats to None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return _json_default(value)


def _json_default(value: Any) -> Any:
    """jsonable() of a value json.dumps cannot write natively."""
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, PurePath):
        return value.as_posix()
    if hasattr(value, "model_dump"):  # pydantic models
        return jsonable(value.model_dump(mode="json"))
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    raise TypeError(f"value of type {type(value).__name__} cannot be stored in a JSON column")


# orjson calls _json_default for what the standard encoder would not write natively either:
# datetimes (their isoformat, as jsonable writes them), dataclasses (refused, as json refuses them).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_serializer(value: Any) -> str:
    """The engine's JSON serializer (both dialects): json.dumps(jsonable(value)).

    The common case goes through orjson (the live bar's journal and features: ~10x the standard
    encoder), which writes non-finite floats as null and calls back only for non-native values
    (numpy, dates, Decimal, paths); what it refuses (keys that are not strings, integers beyond
    64 bits) goes through the standard encoder, and a non-finite float among its values through
    the full walk. All give the same JSON value (a property test holds them together); the text
    differs in float spelling (orjson's 1e-05 is 0.00001) and when two keys of one dict become
    the same string (True and "true"), where every reader keeps the last one, as the walk does."""
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError: non-string keys, big integers, unknown types
        pass
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)
    except ValueError:
        return json.dumps(jsonable(value), allow_nan=False, separators=(",", ":"))


class Record(dict[str, Any]):
    """A read-only row: `row["model_id"]` and `row.model_id` both work; `dict(row)` gives a plain copy."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("store records are read-only; use dict(record) for a mutable copy")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _readonly  # type: ignore[assignment]
    update = pop = popitem = clear = setdefault = __ior__ = _readonly  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Record, (dict(self),))

    def __copy__(self) -> "Record":
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> "Record":
        import copy

        return Record(copy.deepcopy(dict(self), memo))
