"""API keys: created once (plaintext shown once), stored as a salted SHA-256, verified in constant time.

The keys carry 256 random bits (`secrets.token_urlsafe(32)`), so a fast salted hash is the
right tool (as for GitHub tokens): a slow password KDF only matters for guessable secrets.
`key_prefix` ("usdcop_" + the first 8 random characters) narrows the lookup and lets people
recognise a key in listings without revealing it.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from usdcop_platform.adapters.store._sql import to_record
from usdcop_platform.adapters.store.audit import write_audit
from usdcop_platform.adapters.store.errors import ConflictError, NotFoundError
from usdcop_platform.adapters.store.tables import API_KEY_ROLES, ApiKey
from usdcop_platform.adapters.store.types import Record, as_utc, utcnow
from usdcop_platform.contracts.base import sha256_hex

if TYPE_CHECKING:
    from usdcop_platform.adapters.store.store import Store

KEY_SCHEME = "usdcop_"
KEY_RANDOM_BYTES = 32
PREFIX_RANDOM_CHARS = 8
HASH_ALGORITHM = "sha256"
SALT_BYTES = 16
KEY_CREATE, KEY_REVOKE = "KEY_CREATE", "KEY_REVOKE"  # audit actions
# last_used_at is refreshed at most this often per key (a write per authenticated request is waste).
LAST_USED_RESOLUTION = timedelta(seconds=60)


def key_prefix(plaintext: str) -> str:
    return plaintext[: len(KEY_SCHEME) + PREFIX_RANDOM_CHARS]


def hash_key(plaintext: str, salt: str) -> str:
    """`sha256$<salt>$<sha256(salt + key)>`: what is stored instead of the key."""
    return f"{HASH_ALGORITHM}${salt}${sha256_hex(salt + plaintext)}"


def _matches(plaintext: str, stored: str) -> bool:
    try:
        algorithm, salt, _digest = stored.split("$", 2)
    except ValueError:
        return False
    if algorithm != HASH_ALGORITHM:
        return False
    return hmac.compare_digest(hash_key(plaintext, salt).encode(), stored.encode())


class ApiKeyRepository:
    """`store.api_keys`. Rows never include key_hash."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def create(self, name: str, role: str, *, actor: str = "system") -> tuple[str, Record]:
        """Create a key; returns (plaintext, row). The plaintext is not stored and cannot be shown again.
        A KEY_CREATE audit row (by `actor`) is written in the same transaction."""
        if role not in API_KEY_ROLES:
            raise ValueError(f"role must be one of {', '.join(API_KEY_ROLES)}, not {role!r}")
        if not name or not name.strip():
            raise ValueError("an API key needs a name")
        plaintext = KEY_SCHEME + secrets.token_urlsafe(KEY_RANDOM_BYTES)
        row = ApiKey(
            name=name.strip(),
            role=role,
            key_prefix=key_prefix(plaintext),
            key_hash=hash_key(plaintext, secrets.token_hex(SALT_BYTES)),
            created_at=utcnow(),
        )
        try:
            with self._store.write_session() as s:
                s.add(row)
                s.flush()
                record = to_record(row, exclude=("key_hash",))
                write_audit(s, action=KEY_CREATE, reviewer=actor, notes=f"API key {row.name!r} created",
                            details={"name": row.name, "role": role, "key_prefix": row.key_prefix})
        except sa.exc.IntegrityError:
            raise ConflictError(
                f"an API key named {name!r} already exists (names stay reserved after revocation); pick another name"
            ) from None
        return plaintext, record

    def verify(self, plaintext: str | None) -> Record | None:
        """The active key matching `plaintext`, or None.

        The lookup is a read: a wrong key never opens a write transaction (guessing must not
        queue behind, or block, real writers). A match refreshes last_used_at when it is older
        than LAST_USED_RESOLUTION, in a short write of its own."""
        if not plaintext or not plaintext.startswith(KEY_SCHEME):
            return None
        with self._store.read_session() as s:
            candidates = s.execute(
                sa.select(ApiKey).where(ApiKey.key_prefix == key_prefix(plaintext), ApiKey.revoked_at.is_(None))
            ).scalars().all()
            match = next((row for row in candidates if _matches(plaintext, row.key_hash)), None)
            if match is None:
                return None
            record = to_record(match, exclude=("key_hash",))
        now = utcnow()
        last = record.get("last_used_at")
        if last is None or now - as_utc(last) >= LAST_USED_RESOLUTION:
            with self._store.write_session() as s:
                s.execute(sa.update(ApiKey).where(ApiKey.id == record["id"]).values(last_used_at=now))
            record = Record({**record, "last_used_at": now})
        return record

    def revoke(self, name: str, *, actor: str = "system") -> Record:
        """Revoke a key (idempotent); the first revocation writes a KEY_REVOKE audit row by `actor`."""
        with self._store.write_session() as s:
            row = s.execute(sa.select(ApiKey).where(ApiKey.name == name)).scalar_one_or_none()
            if row is None:
                raise NotFoundError(f"no API key named {name!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                s.flush()
                write_audit(s, action=KEY_REVOKE, reviewer=actor, notes=f"API key {row.name!r} revoked",
                            details={"name": row.name, "role": row.role, "key_prefix": row.key_prefix})
            return to_record(row, exclude=("key_hash",))

    def list(self, include_revoked: bool = True) -> list[Record]:
        stmt = sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        with self._store.read_session() as s:
            return [to_record(r, exclude=("key_hash",)) for r in s.execute(stmt).scalars()]
