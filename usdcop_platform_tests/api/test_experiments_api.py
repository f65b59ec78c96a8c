"""The approvals API against the real store (SQLite and PostgreSQL) and a real lake."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from usdcop_platform_tests.api.conftest import KEY_ACTIONS, seed_proposal


@pytest.fixture
def proposal(store, lake, calendar):
    return seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=80, skill=0.4)


def test_list_filters_by_status(client, keys, store, lake, calendar, proposal) -> None:
    other = seed_proposal(store, lake, calendar, seed=2, n_sessions=5, with_series=False)
    store.approvals.decide(other["proposal_id"], "REJECT", reviewer="someone", notes="no")
    r = client.get("/api/experiments", headers=keys.h("viewer"))
    assert r.status_code == 200 and r.json()["count"] == 2
    r = client.get("/api/experiments", params={"status": "PENDING_APPROVAL"}, headers=keys.h("viewer"))
    items = r.json()["items"]
    assert [i["proposal_id"] for i in items] == [proposal["proposal_id"]]
    assert items[0]["review_url"] == f"/experiments/{proposal['proposal_id']}/review"
    r = client.get("/api/experiments", params={"status": "REJECTED"}, headers=keys.h("viewer"))
    assert [i["proposal_id"] for i in r.json()["items"]] == [other["proposal_id"]]


def test_detail_has_evidence_series_and_trades(client, keys, proposal, lake) -> None:
    r = client.get(f"/api/experiments/{proposal['proposal_id']}", headers=keys.h("viewer"))
    assert r.status_code == 200
    d = r.json()
    assert d["metrics"]["sharpe"] == pytest.approx(proposal["metrics"]["sharpe"])
    assert {c["name"] for c in d["criteria_summary"]} >= {"min_sharpe", "max_drawdown", "min_win_rate", "min_trades"}
    assert d["lineage"]["dataset_hash"] == proposal["lineage"]["dataset_hash"]
    assert d["model"]["stage"] == "staging"
    series = d["series"]
    assert series["total_points"] == 80 * 60
    assert 0 < series["points"] <= 2000
    assert len(series["time"]) == len(series["equity"]) == len(series["drawdown"]) == series["points"]
    stored = lake.read(f"evaluation/backtests/{proposal['experiment_name']}", proposal["model_id"])
    assert min(series["drawdown"]) == pytest.approx(stored["drawdown"].min())
    assert series["equity"][-1] == pytest.approx(stored["equity"][-1])
    assert d["trades_total"] == proposal["metrics"]["trades"] == len(d["trades"])
    assert {"entry_time", "exit_time", "side", "net_pnl"} <= set(d["trades"][0])
    assert len(d["monthly_returns"]) >= 3

    small = client.get(
        f"/api/experiments/{proposal['proposal_id']}", params={"max_points": 100}, headers=keys.h("viewer")
    ).json()
    assert small["series"]["points"] <= 100 and len(small["trades"]) <= 100
    # the model id of a proposal also finds it (one proposal per model)
    by_model = client.get(f"/api/experiments/{proposal['model_id']}", headers=keys.h("viewer"))
    assert by_model.json()["proposal_id"] == proposal["proposal_id"]


def test_detail_without_series_still_answers(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=3, with_series=False)
    d = client.get(f"/api/experiments/{p['proposal_id']}", headers=keys.h("viewer")).json()
    assert d["series"]["points"] == 0 and d["trades"] == [] and d["monthly_returns"] == []


def test_approve_promotes_archives_and_audits(client, keys, store, lake, calendar, proposal) -> None:
    first = seed_proposal(store, lake, calendar, seed=5, n_sessions=5, with_series=False)
    r1 = client.post(
        f"/api/experiments/{first['proposal_id']}/approve", headers=keys.h("reviewer"),
        json={"decision": "APPROVE", "notes": "first", "override_confirmed": True},  # the rules said REJECT
    )
    assert r1.status_code == 200, r1.text
    r2 = client.post(
        f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("admin"),
        json={"decision": "APPROVE", "notes": "better sharpe"},
    )
    assert r2.status_code == 200, r2.text
    body = r2.json()
    assert body["status"] == "APPROVED" and body["promoted"] is True
    assert body["reviewer"] == "ada-admin"
    assert body["production_model_id"] == proposal["model_id"]
    assert body["previous_production_model_id"] == first["model_id"]

    old, new = store.models.get(first["model_id"]), store.models.get(proposal["model_id"])
    assert old["stage"] == "archived" and old["archived_at"] is not None
    assert new["stage"] == "production" and new["promoted_at"] is not None
    assert [m["model_id"] for m in store.models.list(stage="production")] == [proposal["model_id"]]

    audit = store.audit.list(proposal_id=proposal["proposal_id"])
    assert len(audit) == 1
    a = audit[0]
    assert (a["action"], a["model_id"], a["reviewer"], a["notes"]) == (
        "APPROVE", proposal["model_id"], "ada-admin", "better sharpe"
    )
    assert a["previous_production_model_id"] == first["model_id"]

    models = client.get("/api/models", headers=keys.h("viewer")).json()
    assert models["production_model_id"] == proposal["model_id"]
    assert models["registry_version"] == 2
    stages = {m["model_id"]: m["stage"] for m in models["items"]}
    assert stages[first["model_id"]] == "archived"
    assert client.get("/api/models", params={"stage": "archived"}, headers=keys.h("viewer")).json()["count"] == 1


def test_approve_without_promotion_keeps_production(client, keys, proposal, store) -> None:
    r = client.post(
        f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("reviewer"),
        json={"decision": "APPROVE", "promote_to_production": False},
    )
    assert r.status_code == 200 and r.json()["promoted"] is False
    assert store.models.production() is None
    assert store.proposals.get(proposal["proposal_id"])["status"] == "APPROVED"


def test_reject_is_audited_and_changes_no_stage(client, keys, proposal, store) -> None:
    r = client.post(
        f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("reviewer"),
        json={"decision": "REJECT", "notes": "drawdown too deep"},
    )
    assert r.status_code == 200 and r.json()["status"] == "REJECTED"
    assert store.models.get(proposal["model_id"])["stage"] == "staging"
    (a,) = store.audit.list(proposal_id=proposal["proposal_id"])
    assert (a["action"], a["reviewer"], a["notes"]) == ("REJECT", "rita-reviewer", "drawdown too deep")


def test_overriding_a_reject_recommendation_needs_a_note_and_an_explicit_confirmation(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, recommendation="REJECT", n_sessions=5, with_series=False)
    url = f"/api/experiments/{p['proposal_id']}/approve"
    for notes in ("", "   "):
        r = client.post(url, headers=keys.h("reviewer"),
                        json={"decision": "APPROVE", "notes": notes, "override_confirmed": True})
        assert r.status_code == 422
        assert "override" in r.json()["error"]["message"]
    # notes alone are not enough: the override is refused until it is confirmed, with the rules' reasons
    r = client.post(url, headers=keys.h("reviewer"), json={"decision": "APPROVE", "notes": "regime changed; accept"})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert message.startswith("override_confirmed: The rules said REJECT because")
    assert "min_test_bars" in message and f"put model {p['model_id']} in production" in message
    assert store.proposals.get(p["proposal_id"])["status"] == "PENDING_APPROVAL"
    assert store.audit.list(proposal_id=p["proposal_id"]) == []
    r = client.post(url, headers=keys.h("reviewer"),
                    json={"decision": "APPROVE", "notes": "regime changed; accept", "override_confirmed": True})
    assert r.status_code == 200 and r.json()["promoted"] is True


def test_override_confirmation_is_only_asked_for_a_reject_rating(client, keys, proposal) -> None:
    assert proposal["recommendation"] == "PROMOTE"
    r = client.post(f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("reviewer"),
                    json={"decision": "APPROVE"})
    assert r.status_code == 200, r.text


def test_approving_twice_or_after_expiry_is_409(client, keys, store, lake, calendar, proposal) -> None:
    url = f"/api/experiments/{proposal['proposal_id']}/approve"
    assert client.post(url, headers=keys.h("reviewer"), json={"decision": "APPROVE"}).status_code == 200
    again = client.post(url, headers=keys.h("admin"), json={"decision": "REJECT"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert "APPROVED" in again.json()["error"]["message"]

    expired = seed_proposal(
        store, lake, calendar, n_sessions=3, with_series=False,
        expires_at=datetime.now(timezone.utc) - timedelta(minutes=1),
    )
    r = client.post(f"/api/experiments/{expired['proposal_id']}/approve", headers=keys.h("reviewer"),
                    json={"decision": "APPROVE", "notes": "late"})
    assert r.status_code == 409 and "expired" in r.json()["error"]["message"]
    assert store.proposals.get(expired["proposal_id"])["status"] == "EXPIRED"
    assert store.models.production()["model_id"] == proposal["model_id"]


def test_request_more_tests_records_pending_backtest(client, keys, store, proposal) -> None:
    r = client.post(
        f"/api/experiments/{proposal['proposal_id']}/backtest", headers=keys.h("reviewer"),
        json={"start_date": "2023-01-02", "end_date": "2023-06-30", "notes": "check 2023H1"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["launched"] is False and body["proposal_status"] == "MORE_TESTS_REQUESTED"
    req = body["request"]
    assert (req["status"], req["start_date"], req["end_date"], req["requested_by"]) == (
        "PENDING", "2023-01-02", "2023-06-30", "rita-reviewer"
    )
    assert [b["id"] for b in store.backtest_requests.list(status="PENDING")] == [req["id"]]
    (a,) = store.audit.list(proposal_id=proposal["proposal_id"])
    assert a["action"] == "REQUEST_MORE_TESTS" and a["details"]["backtest_request_id"] == req["id"]
    detail = client.get(f"/api/experiments/{proposal['proposal_id']}", headers=keys.h("viewer")).json()
    assert [b["id"] for b in detail["backtest_requests"]] == [req["id"]]
    assert [h["action"] for h in detail["history"]] == ["REQUEST_MORE_TESTS"]


def test_audit_endpoint_lists_decisions_newest_first(client, keys, store, lake, calendar) -> None:
    a = seed_proposal(store, lake, calendar, seed=1, n_sessions=3, with_series=False)
    b = seed_proposal(store, lake, calendar, seed=2, n_sessions=3, with_series=False)
    client.post(f"/api/experiments/{a['proposal_id']}/approve", headers=keys.h("reviewer"), json={"decision": "REJECT"})
    client.post(f"/api/experiments/{b['proposal_id']}/approve", headers=keys.h("reviewer"), json={"decision": "REJECT"})
    items = client.get("/api/audit", headers=keys.h("viewer")).json()["items"]
    assert [i["proposal_id"] for i in items if i["action"] not in KEY_ACTIONS] == [b["proposal_id"], a["proposal_id"]]
    only_a = client.get("/api/audit", params={"proposal_id": a["proposal_id"]}, headers=keys.h("viewer")).json()
    assert only_a["count"] == 1


def test_rollback_restores_previous_production(client, keys, store, lake, calendar) -> None:
    a = seed_proposal(store, lake, calendar, seed=1, n_sessions=3, with_series=False)
    b = seed_proposal(store, lake, calendar, seed=2, n_sessions=3, with_series=False)
    for p in (a, b):
        client.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                    json={"decision": "APPROVE", "notes": "x", "override_confirmed": True})
    denied = client.post("/api/models/rollback", headers=keys.h("reviewer"), json={"notes": "bad live pnl", "expected_registry_version": 0})
    assert denied.status_code == 403
    r = client.post("/api/models/rollback", headers=keys.h("admin"), json={"notes": "bad live pnl", "expected_registry_version": store.registry_version()})
    assert r.status_code == 200, r.text
    assert r.json()["model_id"] == a["model_id"] and r.json()["previous_production_model_id"] == b["model_id"]
    assert store.models.production()["model_id"] == a["model_id"]
    assert store.audit.list(limit=1)[0]["action"] == "ROLLBACK"


def test_health_reports_database(client, store) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"]["status"] == "ok"
    assert body["database"]["dialect"] == store.dialect
    assert body["database"]["revision"] == store.revision()


def test_health_is_503_when_the_database_is_down(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from usdcop_platform.api.app import create_app
    from usdcop_platform_tests.api.conftest import make_settings

    dead = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    with TestClient(create_app(make_settings(tmp_path, dead))) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert r.json()["database"]["status"] == "unavailable"
        assert "database unavailable" in r.json()["database"]["detail"]
        api = c.get("/api/experiments", headers={"X-API-Key": "usdcop_x"})
        assert api.status_code == 503 and api.json()["error"]["code"] == "service_unavailable"
        for body in (r.text, api.text):  # the database's user, host, port and name stay in the server log
            assert "127.0.0.1" not in body and "nobody" not in body and "/none" not in body
