"""Promotion and rollback verify the model's files as the live path loads them, in the same
transaction, and rollback takes an optimistic precondition (issue 19)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from usdcop_platform.adapters.artifacts import ArtifactVerifier
from usdcop_platform.adapters.store.errors import ModelNotServable, RegistryChanged
from usdcop_platform.contracts.base import file_hash
from usdcop_platform.contracts.platform import get_config
from usdcop_platform_tests.api.conftest import seed_proposal


def _flip_bytes(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _approve(client, keys, p) -> object:
    return client.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                       json={"decision": "APPROVE", "notes": "ok"})


def _two_promoted(client, keys, store, lake, calendar):
    a = seed_proposal(store, lake, calendar, seed=1, n_sessions=3, with_series=False, recommendation="PROMOTE")
    b = seed_proposal(store, lake, calendar, seed=2, n_sessions=3, with_series=False, recommendation="PROMOTE")
    for p in (a, b):
        assert _approve(client, keys, p).status_code == 200
    return a, b


def test_approving_a_corrupted_model_is_refused(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=3, with_series=False, recommendation="PROMOTE")
    _flip_bytes(Path(store.models.get(p["model_id"])["onnx_path"]))
    r = _approve(client, keys, p)
    assert r.status_code == 409, r.text
    msg = r.json()["error"]["message"]
    assert "refused" in msg and "sha256" in msg and "corrupted or replaced" in msg
    assert store.models.production() is None
    assert store.proposals.get(p["proposal_id"])["status"] == "PENDING_APPROVAL"  # nothing was written
    assert store.audit.list(action="APPROVE") == []


def test_a_file_matching_its_hash_but_unloadable_is_refused(store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=3, with_series=False, recommendation="PROMOTE")
    rec = store.models.get(p["model_id"])
    path = Path(rec["onnx_path"])
    path.write_bytes(b"not an onnx model" * 10)
    fixed = {**rec, "onnx_hash": file_hash(path)}  # a registry that agrees with the bad file
    verify = ArtifactVerifier(get_config().features, None)
    with pytest.raises(ModelNotServable, match="could not load"):
        verify(fixed)


def test_rollback_to_a_corrupted_model_is_refused(client, keys, store, lake, calendar) -> None:
    a, b = _two_promoted(client, keys, store, lake, calendar)
    _flip_bytes(Path(store.models.get(a["model_id"])["onnx_path"]))
    version = store.registry_version()
    r = client.post("/api/models/rollback", headers=keys.h("admin"),
                    json={"notes": "bad live pnl", "expected_registry_version": version})
    assert r.status_code == 409, r.text
    assert "refused" in r.json()["error"]["message"]
    assert store.models.production()["model_id"] == b["model_id"] and store.registry_version() == version
    assert store.audit.list(action="ROLLBACK") == []


def test_rollback_with_a_stale_version_is_409(client, keys, store, lake, calendar) -> None:
    a, b = _two_promoted(client, keys, store, lake, calendar)
    stale = store.registry_version() - 1
    r = client.post("/api/models/rollback", headers=keys.h("admin"),
                    json={"notes": "bad live pnl", "expected_registry_version": stale})
    assert r.status_code == 409 and "not the expected" in r.json()["error"]["message"]
    assert store.models.production()["model_id"] == b["model_id"]
    r = client.post("/api/models/rollback", headers=keys.h("admin"),
                    json={"notes": "bad live pnl", "expected_registry_version": stale + 1,
                          "expected_production_model_id": a["model_id"]})
    assert r.status_code == 409 and f"production is {b['model_id']}" in r.json()["error"]["message"]
    r = client.post("/api/models/rollback", headers=keys.h("admin"), json={"notes": "no precondition"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "expected_registry_version"


def test_concurrent_rollbacks_from_one_view_flip_production_once(client, keys, store, lake, calendar) -> None:
    a, b = _two_promoted(client, keys, store, lake, calendar)
    seen = store.registry_version()
    verify = ArtifactVerifier(get_config().features, None)

    def rollback(i: int) -> str:
        try:
            store.approvals.rollback(f"admin{i}", "race", expected_version=seen, verify=verify)
            return "ok"
        except RegistryChanged:
            return "409"

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(rollback, range(30)))
    assert results.count("ok") == 1 and results.count("409") == 29
    assert store.models.production()["model_id"] == a["model_id"]
    assert store.registry_version() == seen + 1 and len(store.audit.list(action="ROLLBACK")) == 1
