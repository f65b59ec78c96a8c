"""Bad input: unknown ids, malformed JSON, wrong types, bad enums, hostile strings."""

from __future__ import annotations

import pytest

from usdcop_platform_tests.api.conftest import KEY_ACTIONS, decisions, seed_proposal

SQL_INJECTIONS = [
    "'; DROP TABLE approval_audit_log; --",
    "x' OR '1'='1",
    "Robert'); DELETE FROM model_registry WHERE ('1'='1",
    "\" ; UPDATE promotion_proposals SET status='APPROVED' --",
    "<script>alert('xss')</script>",
    "ünïcødé ✓ 🙂 \\x00 -- /* */ ; \\'",
]


@pytest.fixture
def proposal(store, lake, calendar):
    return seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=2, with_series=False)


def _assert_error_shape(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message", "fields"}
    assert body["error"]["status"] == status and body["error"]["message"]
    return body["error"]


def test_unknown_ids_are_404(client, keys) -> None:
    for path in ("/api/experiments/prop_doesnotexist", "/api/experiments/%27%3B%20DROP%20TABLE%20x%3B--"):
        err = _assert_error_shape(client.get(path, headers=keys.h("viewer")), 404)
        assert err["code"] == "not_found"
    err = _assert_error_shape(
        client.post("/api/experiments/prop_nope/approve", headers=keys.h("reviewer"), json={"decision": "APPROVE"}),
        404,
    )
    assert "prop_nope" in err["message"]
    _assert_error_shape(
        client.post("/api/experiments/prop_nope/backtest", headers=keys.h("reviewer"),
                    json={"start_date": "2024-01-01", "end_date": "2024-01-31"}),
        404,
    )
    _assert_error_shape(client.get("/api/no-such-route", headers=keys.h("viewer")), 404)


def test_malformed_json_is_422_naming_the_body(client, keys, proposal) -> None:
    r = client.post(
        f"/api/experiments/{proposal['proposal_id']}/approve",
        headers={**keys.h("reviewer"), "Content-Type": "application/json"},
        content=b'{"decision": "APPROVE", "notes": ',
    )
    err = _assert_error_shape(r, 422)
    assert err["fields"][0]["field"] == "body" and err["fields"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"decision": "MAYBE"}, "decision"),
        ({"decision": "approve"}, "decision"),
        ({"decision": "REQUEST_MORE_TESTS"}, "decision"),
        ({"decision": 1}, "decision"),
        ({}, "decision"),
        ({"decision": "APPROVE", "notes": 42}, "notes"),
        ({"decision": "APPROVE", "notes": ["a"]}, "notes"),
        ({"decision": "APPROVE", "promote_to_production": "yes"}, "promote_to_production"),
        ({"decision": "APPROVE", "promote_to_production": 1}, "promote_to_production"),
        ({"decision": "APPROVE", "notes": "x" * 10_001}, "notes"),
        ({"decision": "APPROVE", "reviewer": "someone-else"}, "reviewer"),
        ({"decision": "REJECT", "notes": "nul\x00byte"}, "notes"),
    ],
)
def test_wrong_types_and_enums_are_422_naming_the_field(client, keys, proposal, store, payload, field) -> None:
    r = client.post(f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("reviewer"), json=payload)
    err = _assert_error_shape(r, 422)
    assert err["code"] == "validation_error"
    assert [f["field"] for f in err["fields"]] == [field]
    assert err["fields"][0]["location"].startswith("body")
    assert field in err["message"]
    assert store.proposals.get(proposal["proposal_id"])["status"] == "PENDING_APPROVAL"


def test_a_json_array_body_is_422(client, keys, proposal) -> None:
    r = client.post(f"/api/experiments/{proposal['proposal_id']}/approve", headers=keys.h("reviewer"), json=["APPROVE"])
    _assert_error_shape(r, 422)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"start_date": "2024-02-30", "end_date": "2024-03-01"}, "start_date"),
        ({"start_date": "yesterday", "end_date": "2024-03-01"}, "start_date"),
        ({"start_date": "2024-03-01", "end_date": "2024-01-01"}, "end_date"),
        ({"start_date": "2024-01-01"}, "end_date"),
        ({"start_date": "2024-01-01", "end_date": "2024-02-01", "notes": False}, "notes"),
    ],
)
def test_bad_backtest_periods_are_422(client, keys, proposal, store, payload, field) -> None:
    r = client.post(f"/api/experiments/{proposal['proposal_id']}/backtest", headers=keys.h("reviewer"), json=payload)
    err = _assert_error_shape(r, 422)
    assert field in [f["field"] for f in err["fields"]]
    assert store.backtest_requests.list() == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/experiments", {"status": "DONE"}, "status"),
        ("/api/experiments", {"limit": "ten"}, "limit"),
        ("/api/experiments", {"limit": 0}, "limit"),
        ("/api/experiments/x", {"max_points": 5}, "max_points"),
        ("/api/models", {"stage": "prod"}, "stage"),
        ("/api/audit", {"limit": 10**9}, "limit"),
    ],
)
def test_bad_query_parameters_are_422(client, keys, path, params, field) -> None:
    err = _assert_error_shape(client.get(path, params=params, headers=keys.h("viewer")), 422)
    assert [f["field"] for f in err["fields"]] == [field]


def test_sql_injection_shaped_notes_are_stored_verbatim(client, keys, store, lake, calendar) -> None:
    for i, notes in enumerate(SQL_INJECTIONS):
        p = seed_proposal(store, lake, calendar, seed=i, n_sessions=2, with_series=False)
        r = client.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                        json={"decision": "REJECT", "notes": notes})
        assert r.status_code == 200, r.text
        assert store.proposals.get(p["proposal_id"])["decision_notes"] == notes
        assert store.audit.list(proposal_id=p["proposal_id"])[0]["notes"] == notes
    # the tables the strings named are intact and nothing else changed
    assert len(decisions(store)) == len(SQL_INJECTIONS)
    assert len(store.models.list()) == len(SQL_INJECTIONS)
    assert {p["status"] for p in store.proposals.list()} == {"REJECTED"}
    listed = client.get("/api/audit", headers=keys.h("viewer")).json()["items"]
    assert sorted(a["notes"] for a in listed if a["action"] not in KEY_ACTIONS) == sorted(SQL_INJECTIONS)


def test_hostile_notes_render_escaped_on_the_review_page(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=2, with_series=False)
    client.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                json={"decision": "REJECT", "notes": "<script>alert('xss')</script>"})
    client.cookies.set("usdcop_key", keys.viewer)
    html = client.get(f"/experiments/{p['proposal_id']}/review").text
    assert "<script>alert" not in html and "&lt;script&gt;alert(" in html


def test_unsupported_methods_are_405_in_the_error_shape(client, keys) -> None:
    err = _assert_error_shape(client.put("/api/experiments", headers=keys.h("admin"), json={}), 405)
    assert err["code"] == "method_not_allowed"
