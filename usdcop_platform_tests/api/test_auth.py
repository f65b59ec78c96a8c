"""Authentication, roles, reviewer identity, CORS and the write rate limit."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from usdcop_platform.api.app import create_app
from usdcop_platform.api.ratelimit import TokenBucketLimiter
from usdcop_platform_tests.api.conftest import decisions, make_settings, seed_proposal

ALLOWED_ORIGIN = "https://approvals.example.test"


@pytest.fixture
def proposal(store, lake, calendar):
    return seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=3, with_series=False)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/experiments"),
        ("get", "/api/experiments/x"),
        ("post", "/api/experiments/x/approve"),
        ("post", "/api/experiments/x/backtest"),
        ("get", "/api/models"),
        ("get", "/api/audit"),
        ("get", "/api/keys"),
    ],
)
def test_every_api_route_needs_a_key(client, method, path) -> None:
    r = client.request(method, path)
    assert r.status_code == 401
    r = client.request(method, path, json={"decision": "APPROVE", "start_date": "2024-01-01", "end_date": "2024-02-01"})
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "unauthorized" and "X-API-Key" in err["message"]
    assert r.headers["WWW-Authenticate"] == "X-API-Key"


def test_invalid_and_revoked_keys_are_401(client, keys, store) -> None:
    for bad in ("nonsense", "usdcop_" + "A" * 43, keys.viewer + "x"):
        r = client.get("/api/experiments", headers={"X-API-Key": bad})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid or revoked API key"
    store.api_keys.revoke("vera-viewer")
    assert client.get("/api/experiments", headers=keys.h("viewer")).status_code == 401


def test_viewer_reads_but_cannot_decide(client, keys, proposal, store) -> None:
    assert client.get("/api/experiments", headers=keys.h("viewer")).status_code == 200
    r = client.post(
        f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("viewer"), json={"decision": "APPROVE"}
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden" and "'reviewer'" in r.json()["error"]["message"]
    r = client.post(
        f"/api/experiments/{proposal['proposal_id']}/backtest", headers=keys.h("viewer"),
        json={"start_date": "2024-01-01", "end_date": "2024-02-01"},
    )
    assert r.status_code == 403
    assert store.proposals.get(proposal["proposal_id"])["status"] == "PENDING_APPROVAL"
    assert decisions(store) == []


def test_reviewer_cannot_manage_keys_admin_can(client, keys, store) -> None:
    assert client.get("/api/keys", headers=keys.h("reviewer")).status_code == 403
    r = client.post("/api/keys", headers=keys.h("admin"), json={"name": "ci-bot", "role": "viewer"})
    assert r.status_code == 201
    new_key = r.json()["api_key"]
    assert r.json()["key"]["role"] == "viewer" and "key_hash" not in r.json()["key"]
    assert client.get("/api/experiments", headers={"X-API-Key": new_key}).status_code == 200
    names = [k["name"] for k in client.get("/api/keys", headers=keys.h("admin")).json()]
    assert "ci-bot" in names
    assert client.post("/api/keys", headers=keys.h("admin"), json={"name": "ci-bot", "role": "viewer"}).status_code == 409
    assert client.delete("/api/keys/ci-bot", headers=keys.h("admin")).status_code == 200
    assert client.get("/api/experiments", headers={"X-API-Key": new_key}).status_code == 401
    assert client.delete("/api/keys/ada-admin", headers=keys.h("admin")).status_code == 409
    assert client.delete("/api/keys/nobody", headers=keys.h("admin")).status_code == 404


def test_reviewer_is_the_key_owner_never_the_body(client, keys, proposal, store) -> None:
    url = f"/api/experiments/{proposal['proposal_id']}/approve"
    forged = client.post(url, headers=keys.h("reviewer"), json={"decision": "APPROVE", "reviewer": "ceo"})
    assert forged.status_code == 422
    assert forged.json()["error"]["fields"][0]["field"] == "reviewer"
    r = client.post(url, headers=keys.h("reviewer"), json={"decision": "APPROVE", "notes": "ok"})
    assert r.status_code == 200 and r.json()["reviewer"] == "rita-reviewer"
    assert store.proposals.get(proposal["proposal_id"])["decided_by"] == "rita-reviewer"
    assert store.audit.list()[0]["reviewer"] == "rita-reviewer"


def test_cors_allows_only_configured_origins(tmp_path, db_url, store, keys) -> None:
    settings = make_settings(tmp_path, db_url, USDCOP_CORS_ORIGINS=f"{ALLOWED_ORIGIN}, http://localhost:3000")
    assert settings.cors_origin_list() == [ALLOWED_ORIGIN, "http://localhost:3000"]
    with TestClient(create_app(settings, store)) as c:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key,Content-Type"}
        ok = c.options("/api/experiments/x/approve", headers={"Origin": ALLOWED_ORIGIN, **pre})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        bad = c.options("/api/experiments/x/approve", headers={"Origin": "https://evil.test", **pre})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        simple = c.get("/api/experiments", headers={"Origin": "https://evil.test", **keys.h("viewer")})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
        simple = c.get("/api/experiments", headers={"Origin": ALLOWED_ORIGIN, **keys.h("viewer")})
        assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_write_endpoints_are_rate_limited_per_key(tmp_path, db_url, store, keys, lake, calendar) -> None:
    settings = make_settings(tmp_path, db_url, USDCOP_WRITE_RATE_LIMIT=3)
    proposals = [seed_proposal(store, lake, calendar, seed=i, n_sessions=2, with_series=False) for i in range(5)]
    with TestClient(create_app(settings, store)) as c:
        codes = [
            c.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                   json={"decision": "REJECT"}).status_code
            for p in proposals[:4]
        ]
        assert codes == [200, 200, 200, 429]
        limited = c.post(f"/api/experiments/{proposals[3]['proposal_id']}/approve", headers=keys.h("reviewer"),
                         json={"decision": "REJECT"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        # reads are not limited; another key has its own bucket
        assert all(c.get("/api/experiments", headers=keys.h("reviewer")).status_code == 200 for _ in range(5))
        r = c.post(f"/api/experiments/{proposals[4]['proposal_id']}/approve", headers=keys.h("admin"),
                   json={"decision": "REJECT"})
        assert r.status_code == 200
    assert store.proposals.get(proposals[3]["proposal_id"])["status"] == "PENDING_APPROVAL"


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(60, clock=lambda: now[0])  # 60/min = 1 token per second
    assert all(limiter.take("k").allowed for _ in range(60))
    denied = limiter.take("k")
    assert not denied.allowed and denied.retry_after_s == 1
    now[0] += 1.0
    assert limiter.take("k").allowed and not limiter.take("k").allowed
    now[0] += 3600
    assert sum(limiter.take("k").allowed for _ in range(100)) == 60  # never more than the burst
    with pytest.raises(ValueError):
        TokenBucketLimiter(0)


def test_api_key_admin_actions_are_audited(client, keys, store) -> None:
    r = client.post("/api/keys", headers=keys.h("admin"), json={"name": "bot-1", "role": "viewer"})
    assert r.status_code == 201
    assert client.delete("/api/keys/bot-1", headers=keys.h("admin")).status_code == 200
    actions = {(a["action"], a["reviewer"], a["details"]["name"]) for a in store.audit.list(limit=20)}
    assert ("KEY_CREATE", "ada-admin", "bot-1") in actions and ("KEY_REVOKE", "ada-admin", "bot-1") in actions
