"""API keys: plaintext shown once and never stored; salted hash; constant-time verify; revoke."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from usdcop_platform.adapters.store import ConflictError, NotFoundError, Store


def test_key_lifecycle(store: Store) -> None:
    plaintext, row = store.api_keys.create("ana", "reviewer")
    assert plaintext.startswith("usdcop_") and len(plaintext) >= len("usdcop_") + 43
    assert "key_hash" not in row and row.key_prefix == plaintext[:15] and row.role == "reviewer"

    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().one()
    assert plaintext not in str(dict(stored)) and plaintext[15:] not in stored["key_hash"]
    assert stored["key_hash"].startswith("sha256$")

    assert store.api_keys.verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert store.api_keys.verify("usdcop_" + "x" * 43) is None
    assert store.api_keys.verify("") is None and store.api_keys.verify(None) is None
    ok = store.api_keys.verify(plaintext)
    assert ok is not None and ok.name == "ana" and ok.last_used_at is not None

    other, _ = store.api_keys.create("bot", "viewer")
    assert other != plaintext and store.api_keys.verify(other).role == "viewer"
    with pytest.raises(ConflictError):
        store.api_keys.create("ana", "admin")
    with pytest.raises(ValueError, match="role"):
        store.api_keys.create("eve", "root")

    revoked = store.api_keys.revoke("ana")
    assert revoked.revoked_at is not None
    assert store.api_keys.verify(plaintext) is None
    assert [k.name for k in store.api_keys.list()] == ["ana", "bot"]
    assert [k.name for k in store.api_keys.list(include_revoked=False)] == ["bot"]
    with pytest.raises(NotFoundError):
        store.api_keys.revoke("nobody")


def test_same_key_material_hashes_differently_per_key() -> None:
    from usdcop_platform.adapters.store.api_keys import hash_key

    assert hash_key("usdcop_abc", "s1") != hash_key("usdcop_abc", "s2")


def test_key_creation_and_revocation_are_audited(store: Store) -> None:
    plaintext, row = store.api_keys.create("ana", "reviewer", actor="ada-admin")
    store.api_keys.revoke("ana", actor="ops")
    store.api_keys.revoke("ana", actor="ops")  # idempotent: one audit row
    created, = store.audit.list(action="KEY_CREATE")
    revoked, = store.audit.list(action="KEY_REVOKE")
    assert created["reviewer"] == "ada-admin" and revoked["reviewer"] == "ops"
    assert created["details"] == {"name": "ana", "role": "reviewer", "key_prefix": row.key_prefix}
    assert plaintext not in str(created) and revoked["details"]["name"] == "ana"
