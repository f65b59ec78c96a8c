"""Integrity under concurrency (real HTTP server, SQLite and PostgreSQL) and the append-only audit log."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from usdcop_platform.adapters.store import StoreError
from usdcop_platform_tests.api.conftest import decisions, seed_proposal

N_CONCURRENT = 50


def _post_all(url: str, key: str, paths: list[str], body: dict) -> list[httpx.Response]:
    def post(path: str) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as c:
            return c.post(path, headers={"X-API-Key": key}, json=body)

    with ThreadPoolExecutor(max_workers=N_CONCURRENT) as pool:
        return list(pool.map(post, paths))


@pytest.mark.slow
def test_50_concurrent_approvals_leave_exactly_one_production_model(live_server, store, lake, calendar, keys) -> None:
    proposals = [
        seed_proposal(store, lake, calendar, seed=i, n_sessions=1, with_series=False, recommendation="PROMOTE")
        for i in range(N_CONCURRENT)
    ]
    responses = _post_all(
        live_server.url, keys.reviewer,
        [f"/api/experiments/{p['proposal_id']}/approve" for p in proposals],
        {"decision": "APPROVE", "notes": "concurrent"},
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 409}, [r.text for r in responses if r.status_code not in (200, 409)]

    production = store.models.list(stage="production")
    assert len(production) == 1
    approved = [r.json() for r in responses if r.status_code == 200]
    audit = sorted(store.audit.list(limit=1000, action="APPROVE"), key=lambda a: a["id"])
    # every decision that answered 200 is in the log, and (serialized by the registry lock) all 50 did
    assert len(audit) == len(approved) == N_CONCURRENT
    assert {a["proposal_id"] for a in audit} == {p["proposal_id"] for p in proposals}
    assert {a["reviewer"] for a in audit} == {"rita-reviewer"}
    # the log is one unbroken chain: each promotion archived the one before it
    assert audit[0]["previous_production_model_id"] is None
    for before, after in zip(audit, audit[1:]):
        assert after["previous_production_model_id"] == before["model_id"]
    assert production[0]["model_id"] == audit[-1]["model_id"]
    assert len(store.models.list(stage="archived")) == N_CONCURRENT - 1
    assert store.registry_version() == N_CONCURRENT


@pytest.mark.slow
def test_50_concurrent_approvals_of_one_proposal_succeed_once(live_server, store, lake, calendar, keys) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=1, with_series=False, recommendation="PROMOTE")
    responses = _post_all(
        live_server.url, keys.reviewer, [f"/api/experiments/{p['proposal_id']}/approve"] * N_CONCURRENT,
        {"decision": "APPROVE", "notes": "race"},
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * (N_CONCURRENT - 1)
    assert all(r.json()["error"]["code"] == "conflict" for r in responses if r.status_code == 409)
    assert len(store.audit.list(proposal_id=p["proposal_id"])) == 1
    assert store.models.production()["model_id"] == p["model_id"]


def test_audit_log_cannot_be_changed_through_the_api(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=1, with_series=False)
    client.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("admin"),
                json={"decision": "REJECT", "notes": "original"})
    (row,) = decisions(store)
    for method in ("put", "patch", "delete", "post"):
        r = client.request(method, "/api/audit", headers=keys.h("admin"), json={"notes": "rewritten"})
        assert r.status_code == 405, (method, r.text)
        r = client.request(method, f"/api/audit/{row['id']}", headers=keys.h("admin"), json={"notes": "rewritten"})
        assert r.status_code in (404, 405), (method, r.text)
    assert decisions(store) == [row]


def test_audit_log_cannot_be_changed_through_the_repository(store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=1, with_series=False)
    store.approvals.decide(p["proposal_id"], "REJECT", reviewer="rita", notes="original")
    (row,) = store.audit.list()
    assert not any(hasattr(store.audit, name) for name in ("update", "delete", "remove", "edit", "set"))
    with pytest.raises(TypeError):
        row["notes"] = "rewritten"  # records are read-only
    for stmt in ("UPDATE approval_audit_log SET notes = 'rewritten'", "DELETE FROM approval_audit_log"):
        with pytest.raises((sa.exc.DatabaseError, StoreError)):
            with store.session() as s:
                s.execute(sa.text(stmt))
    assert store.audit.list() == [row]
