"""Server-rendered pages through the HTTP layer: login, lists, review page, forms, offline assets."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from usdcop_platform.api.pages import csrf_token
from usdcop_platform_tests.api.conftest import seed_proposal

EXTERNAL_URL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)


@pytest.fixture
def proposal(store, lake, calendar):
    return seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=45, skill=0.4)


def _login(client, key: str) -> None:
    r = client.post("/login", data={"api_key": key, "next": "/experiments"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/experiments"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def _form(client, pid: str, **fields):
    data = {"csrf": csrf_token(client.cookies.get("usdcop_key")), **fields}
    return client.post(f"/experiments/{pid}/decision", data=data, follow_redirects=False)


def test_pages_redirect_to_login_without_a_session(client, proposal) -> None:
    for path in ("/experiments", f"/experiments/{proposal['proposal_id']}/review"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    r = client.get("/", follow_redirects=False)
    assert r.headers["location"] == "/experiments"


def test_login_rejects_bad_keys_and_open_redirects(client, keys) -> None:
    r = client.post("/login", data={"api_key": "usdcop_wrong", "next": "/experiments"}, follow_redirects=False)
    assert r.status_code == 401 and "Invalid or revoked API key" in r.text
    r = client.post("/login", data={"api_key": keys.viewer, "next": "https://evil.test/x"}, follow_redirects=False)
    assert r.headers["location"] == "/experiments"
    r = client.post("/login", data={"api_key": keys.viewer, "next": "//evil.test"}, follow_redirects=False)
    assert r.headers["location"] == "/experiments"


def test_experiments_page_lists_pending_with_count_and_recent_decisions(client, keys, store, lake, calendar, proposal) -> None:
    decided = seed_proposal(store, lake, calendar, seed=9, n_sessions=2, with_series=False)
    store.approvals.decide(decided["proposal_id"], "REJECT", reviewer="rita-reviewer", notes="too few trades")
    _login(client, keys.viewer)
    r = client.get("/experiments")
    assert r.status_code == 200
    html = r.text
    assert re.search(r'data-testid="pending-count">1<', html)
    assert proposal["proposal_id"] in html and f"/experiments/{proposal['proposal_id']}/review" in html
    assert "too few trades" in html and "rita-reviewer" in html
    assert "vera-viewer (viewer)" in html


def test_review_page_shows_evidence_and_charts(client, keys, proposal) -> None:
    _login(client, keys.reviewer)
    r = client.get(f"/experiments/{proposal['proposal_id']}/review")
    assert r.status_code == 200
    html = r.text
    for testid in ("chart-equity", "chart-drawdown", "chart-pnl", "chart-monthly"):
        block = re.search(rf'data-testid="{testid}">(<svg.*?</svg>)</div>', html, re.S)
        assert block, testid
        root = ET.fromstring(block.group(1))
        drawn = [e for e in root.iter() if e.tag.endswith(("path", "rect")) and "plot-bg" not in (e.get("class") or "")]
        assert drawn, f"{testid} draws nothing"
    for name in ("min_sharpe", "max_drawdown", "min_win_rate", "min_trades"):
        assert name in html
    assert proposal["lineage"]["dataset_hash"] in html and proposal["lineage"]["backtest_hash"] in html
    assert proposal["recommendation"] in html
    assert 'data-testid="approve-form"' in html and 'data-testid="more-tests-form"' in html
    assert 'name="csrf"' in html


def test_pages_load_nothing_from_other_origins(client, keys, proposal) -> None:
    _login(client, keys.viewer)
    for path in ("/experiments", f"/experiments/{proposal['proposal_id']}/review", "/login", "/docs"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert not EXTERNAL_URL.search(r.text), path
        assert "default-src 'self'" in r.headers["content-security-policy"]
    docs = client.get("/docs").text
    for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", docs) + ["/static/review.css"]:
        assert client.get(asset).status_code == 200, asset


def test_approve_form_changes_state(client, keys, store, proposal) -> None:
    _login(client, keys.reviewer)
    r = _form(client, proposal["proposal_id"], decision="APPROVE", notes="looks good", promote_to_production="true")
    assert r.status_code == 303 and r.headers["location"].endswith("/review?done=APPROVE")
    page = client.get(r.headers["location"]).text
    assert re.search(r'data-testid="proposal-status">APPROVED<', page)
    assert re.search(r'data-testid="model-stage">production<', page)
    assert "Approved." in page and 'data-testid="approve-form"' not in page
    assert store.models.production()["model_id"] == proposal["model_id"]
    assert store.audit.list()[0]["reviewer"] == "rita-reviewer"


def test_reject_and_more_tests_forms(client, keys, store, lake, calendar, proposal) -> None:
    _login(client, keys.reviewer)
    other = seed_proposal(store, lake, calendar, seed=4, n_sessions=2, with_series=False)
    r = _form(client, other["proposal_id"], decision="REJECT", notes="no")
    assert r.status_code == 303 and store.proposals.get(other["proposal_id"])["status"] == "REJECTED"
    bad = _form(client, proposal["proposal_id"], decision="REQUEST_MORE_TESTS", start_date="2024-05-01", end_date="2024-01-01")
    assert bad.status_code == 422 and "before start_date" in bad.text
    r = _form(client, proposal["proposal_id"], decision="REQUEST_MORE_TESTS", start_date="2023-01-02",
              end_date="2023-12-29", notes="another year")
    assert r.status_code == 303
    (req,) = store.backtest_requests.list()
    assert (str(req["start_date"]), str(req["end_date"]), req["status"]) == ("2023-01-02", "2023-12-29", "PENDING")
    assert "2023-01-02 → 2023-12-29" in client.get(r.headers["location"]).text


def test_form_errors_are_shown_on_the_page(client, keys, store, lake, calendar) -> None:
    _login(client, keys.reviewer)
    p = seed_proposal(store, lake, calendar, n_sessions=2, with_series=False, recommendation="REJECT")
    r = _form(client, p["proposal_id"], decision="APPROVE", notes="", promote_to_production="true")
    assert r.status_code == 422 and "override" in r.text and 'data-testid="error"' in r.text
    r = _form(client, p["proposal_id"], decision="REJECT", notes="fine, reject")
    assert r.status_code == 303
    again = _form(client, p["proposal_id"], decision="REJECT")
    assert again.status_code == 409 and "REJECTED" in again.text


def test_forms_need_csrf_and_the_reviewer_role(client, keys, store, proposal) -> None:
    _login(client, keys.reviewer)
    r = client.post(f"/experiments/{proposal['proposal_id']}/decision",
                    data={"decision": "APPROVE", "csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    client.cookies.clear()
    _login(client, keys.viewer)
    page = client.get(f"/experiments/{proposal['proposal_id']}/review").text
    assert 'data-testid="approve-form"' not in page and "can read but not decide" in page
    r = _form(client, proposal["proposal_id"], decision="APPROVE", notes="x")
    assert r.status_code == 403
    assert store.proposals.get(proposal["proposal_id"])["status"] == "PENDING_APPROVAL"


def test_unknown_proposal_page_is_a_404_page(client, keys) -> None:
    _login(client, keys.viewer)
    r = client.get("/experiments/prop_missing/review", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "prop_missing" in r.text


def test_logout_clears_the_session(client, keys) -> None:
    _login(client, keys.viewer)
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and 'usdcop_key=""' in r.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/experiments", follow_redirects=False).status_code == 303


def test_security_headers_on_pages_and_json(client, keys, proposal) -> None:
    _login(client, keys.reviewer)
    page = client.get(f"/experiments/{proposal['proposal_id']}/review")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    health = client.get("/health")
    assert health.headers["X-Content-Type-Options"] == "nosniff"
    assert health.headers["Referrer-Policy"] == "same-origin"
    assert "Content-Security-Policy" not in health.headers  # JSON needs no CSP
