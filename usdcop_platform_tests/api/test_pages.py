"""Server-rendered pages through the HTTP layer: login, lists, review page, forms, offline assets."""

from __future__ import annotations

import html as htmllib
import re
import xml.etree.ElementTree as ET

import polars as pl
import pytest

from usdcop_platform.api.pages import csrf_token
from usdcop_platform_tests.api.conftest import seed_proposal

# A resource the browser would load from another origin (a plain <a> link to the MLflow or Dagster UI
# is followed only when clicked, so anchors are not loads).
EXTERNAL_URL = re.compile(r"""<(?!a\s)[a-z]+\s[^>]*(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)


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


def test_pages_load_nothing_from_other_origins(client, keys, store, lake, calendar) -> None:
    proposal = seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=10, mlflow_run_id="a" * 32)
    _login(client, keys.viewer)
    assert EXTERNAL_URL.search('<link rel="stylesheet" href="https://cdn.example/x.css">')
    assert EXTERNAL_URL.search('<img alt="" src="//cdn.example/x.png">')
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


def _statistics(html: str) -> dict[str, tuple[str, str]]:
    block = re.search(r'data-testid="statistics-table">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r'<tr><td>(.*?)</td><td class="num">(.*?)</td><td class="muted">(.*?)</td></tr>', block, re.S)
    return {htmllib.unescape(label): (htmllib.unescape(value), htmllib.unescape(source)) for label, value, source in rows}


def test_review_page_counts_trials_from_the_ledger_not_from_the_proposal(client, keys, store, proposal) -> None:
    """Audit finding 5: the page said "deflated for 1 trial" after a second model of the same
    experiment was trained. It now shows the ledger's N (and the DSR re-deflated with it)."""
    ledger = [{"trial_id": f"t{i}", "family": proposal["experiment_name"], "experiment_version": "1",
               "kind": "training_seed", "seed": i, "config_hash": "c" * 64, "data_hash": "d" * 64,
               "test_sharpe": s} for i, s in enumerate((0.4, 1.1))]
    store.trials.record(ledger)
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{proposal['proposal_id']}/review").text
    stats = _statistics(html)
    assert stats["N (trials in the family)"][0] == "1"
    value, source = stats["N now (trial ledger)"]
    assert value == "2" and "trial ledger: 2 rows of family 'baseline' (2 training seeds; version 1)" in source
    assert "DSR now" in stats and "re-deflated with N = 2" in stats["DSR now"][1]
    stale = htmllib.unescape(re.search(r'data-testid="trials-stale">(.*?)</p>', html).group(1))
    assert "now holds N = 2 trials" in stale and "deflated for 1" in stale
    for label in ("V (variance of the trials' annual Sharpes)", "PSR(0)", "DSR", "MinTRL(0.95)", "PBO", "SPA p-value"):
        assert label in stats, label
    assert 'data-criterion="dsr"' in html and 'data-criterion="min_track_record"' in html


def test_review_page_shows_pbo_and_spa_with_sentences(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, recommendation="REVIEW", n_sessions=45, skill=0.4)
    over = {"pbo": {"pbo": 0.12, "n_trials": 5, "n_periods": 40, "partitions": 8, "combinations": 70},
            "spa": {"pvalue": 0.03, "pvalues": {"buy_and_hold": 0.03, "flat": 0.01}, "block_size": 5, "reps": 1000,
                    "n_periods": 45, "bootstrap": "stationary"}}
    store.proposals.upsert(**{k: p[k] for k in ("model_id", "experiment_name", "experiment_version", "recommendation",
                                                 "confidence", "reasons", "criteria")},
                           metrics={**p["metrics"], "overfitting": over,
                                    "n_trials_source": "trial ledger: 5 rows", "trial_sharpe_variance_annual": 0.2,
                                    "trial_variance_source": "cross-trial"})
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{p['proposal_id']}/review").text
    stats = _statistics(html)
    assert stats["PBO"][0] == "0.12" and "CSCV over the family's trial test returns" in stats["PBO"][1]
    assert stats["SPA p-value"][0] == "0.030" and "stationary bootstrap" in stats["SPA p-value"][1]
    assert stats["V (variance of the trials' annual Sharpes)"] == ("0.2000", "cross-trial")
    assert "PBO = 0.12" in html and "Hansen&#39;s SPA test (45 sessions" in html


def test_review_page_lists_diagnostics_as_such(client, keys, store, lake, proposal) -> None:
    from usdcop_platform.adapters import backtests as bt

    report = {"model_id": proposal["model_id"], "out_of_sample": False, "role": "in_sample_diagnostic",
              "in_sample_reason": "the period starts 2023-07-10, on or before the model's training end 2023-12-29",
              "test_start": "2023-07-10", "test_end": "2023-08-31", "n_bars": 2400,
              "metrics": {"sharpe": 3.3, "trades": 80}}
    bt.save_backtest(lake, proposal["experiment_name"], proposal["model_id"], series=pl.DataFrame(),
                     trades=pl.DataFrame(), report=report,
                     partition=bt.backtest_partition(proposal["model_id"], "2023-07-10", "2023-08-31"))
    oos = {**report, "out_of_sample": True, "role": "oos_diagnostic", "in_sample_reason": None,
           "test_start": "2025-01-02", "test_end": "2025-02-28",
           "coverage": {"requested_sessions": 40, "covered_sessions": 30, "coverage": 0.75, "missing_sessions": []}}
    bt.save_backtest(lake, proposal["experiment_name"], proposal["model_id"], series=pl.DataFrame(),
                     trades=pl.DataFrame(), report=oos,
                     partition=bt.backtest_partition(proposal["model_id"], "2025-01-02", "2025-02-28"))
    _login(client, keys.viewer)
    html = htmllib.unescape(client.get(f"/experiments/{proposal['proposal_id']}/review").text)
    block = re.search(r'data-testid="diagnostics-table">(.*?)</table>', html, re.S).group(1)
    assert "2023-07-10 → 2023-08-31" in block and "IN-SAMPLE" in block and "3.300" in block
    assert "on or before the model's training end 2023-12-29" in block
    assert "2025-01-02 → 2025-02-28" in block and "OUT-OF-SAMPLE" in block
    assert "only the test split and the walk-forward folds vote; coverage 75.0% (30 of 40 sessions" in block


def _cells(html: str, metric: str) -> dict[str, tuple[str, str]]:
    """{reference: (value text, Δ class)} of one row of the metrics table."""
    row = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', html, re.S).group(1)
    pairs = re.findall(r'<td class="num">([^<]*)</td><td class="num ([a-z]*)" data-reference="([a-z_]+)">', row)
    return {ref: (value, cls) for value, cls, ref in pairs}


def test_review_page_compares_with_the_production_model_and_buy_and_hold(client, keys, store, lake, calendar) -> None:
    prod = seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=10, seed=1, with_series=False)
    store.approvals.decide(prod["proposal_id"], "APPROVE", reviewer="rita-reviewer", notes="first model")
    cand = seed_proposal(store, lake, calendar, n_sessions=45, skill=0.4, seed=2, production_model_id=prod["model_id"])
    store.trials.record([{"trial_id": f"t{i}", "family": prod["experiment_name"], "experiment_version": "1",
                          "kind": "training_seed", "seed": i, "config_hash": "c" * 64, "data_hash": "d" * 64,
                          "test_sharpe": s} for i, s in enumerate((0.4, 1.1, 2.0))])
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{cand['proposal_id']}/review").text
    # the production model's DSR is deflated for its family's 3 trials, as the candidate's is (not = its PSR)
    assert _cells(html, "dsr")["production"][0] != _cells(html, "psr")["production"][0]
    assert "its DSR deflated for its own family&#39;s trials" in html
    table = re.search(r'data-testid="baseline-table">(.*?)</table>', html, re.S).group(1)
    assert 'data-reference="production">Production model<' in table and f'<code>{prod["model_id"]}</code>' in html
    assert 'data-reference="buy_and_hold">Buy &amp; hold<' in table
    for metric in ("exposure", "turnover", "psr", "dsr", "final_equity", "sharpe", "avg_trade"):
        cells = _cells(html, metric)
        assert set(cells) == {"production", "buy_and_hold"}, metric
        assert all(value not in ("—", "") for value, _ in cells.values()), (metric, cells)
    # buy-and-hold closes one trade: no colour for per-trade statistics against it
    for metric in ("avg_trade", "win_rate", "profit_factor"):
        assert _cells(html, metric)["buy_and_hold"][1] == "", metric
    assert _cells(html, "trades")["production"][1] == ""  # how it trades, not how well
    assert _cells(html, "sharpe")["production"][1] in ("pos", "neg")


def test_review_page_reasons_add_to_the_criteria_table_instead_of_repeating_it(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=5, with_series=False)
    assert p["recommendation"] == "REJECT" and any(r.startswith("FAIL ") for r in p["reasons"])
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{p['proposal_id']}/review").text
    reasons = htmllib.unescape(re.search(r'data-testid="reasons">(.*?)</div>', html, re.S).group(1))
    assert "FAIL " not in reasons
    failed = [name for name, c in p["criteria"].items() if c["status"] == "FAIL"]
    assert f"Failed {len(failed)} of {len(p['criteria'])} criteria" in reasons
    assert "test split too short" in reasons  # a reason that says more than the table is kept
    for name in failed:
        assert f'<tr data-criterion="{name}" class="failed">' in html, name


def test_approving_a_reject_rating_from_the_page_takes_an_explicit_confirmation(client, keys, store, lake, calendar) -> None:
    p = seed_proposal(store, lake, calendar, n_sessions=5, with_series=False)
    assert p["recommendation"] == "REJECT"
    _login(client, keys.reviewer)
    page = client.get(f"/experiments/{p['proposal_id']}/review").text
    assert "Approve (override REJECT)…" in page
    r = _form(client, p["proposal_id"], decision="APPROVE", notes="regime changed", promote_to_production="true")
    assert r.status_code == 200 and 'data-testid="override-confirmation"' in r.text
    statement = htmllib.unescape(re.search(r'data-testid="override-statement">(.*?)</p>', r.text, re.S).group(1))
    assert statement.startswith("The rules said REJECT because these criteria failed: ")
    assert "test split too short" in statement and f"put model {p['model_id']} in production" in statement
    assert store.proposals.get(p["proposal_id"])["status"] == "PENDING_APPROVAL"  # nothing decided yet
    # the confirmation form without its checkbox asks again; with it, the approval goes through
    r = _form(client, p["proposal_id"], decision="APPROVE", notes="regime changed", promote_to_production="true")
    assert r.status_code == 200 and store.proposals.get(p["proposal_id"])["status"] == "PENDING_APPROVAL"
    r = _form(client, p["proposal_id"], decision="APPROVE", notes="regime changed", promote_to_production="true",
              override_confirmed="yes")
    assert r.status_code == 303 and store.models.production()["model_id"] == p["model_id"]
    assert store.audit.list(proposal_id=p["proposal_id"])[0]["notes"] == "regime changed"


def test_review_page_links_the_mlflow_and_dagster_runs(client, keys, store, lake, calendar, settings) -> None:
    run = "f" * 32
    p = seed_proposal(store, lake, calendar, n_sessions=5, with_series=False, mlflow_run_id=run)
    store.trials.record([{"trial_id": "t-link", "family": p["experiment_name"], "experiment_version": "1",
                          "kind": "training_seed", "seed": 0, "config_hash": "c" * 64, "data_hash": "d" * 64,
                          "model_id": p["model_id"], "selected": True, "run_id": "dagster-run-1234"}])
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{p['proposal_id']}/review").text
    mlflow = re.search(r'<a href="([^"]+)" data-testid="mlflow-link"', html).group(1)
    assert mlflow.startswith(f"{settings.resolved_mlflow_ui_url}/#/runs/{run}")  # + the UI's view query
    dagster = re.search(r'<a href="([^"]+)" data-testid="dagster-link-training"', html).group(1)
    assert dagster == f"{settings.resolved_dagster_ui_url}/runs/dagster-run-1234"
    detail = client.get(f"/api/experiments/{p['proposal_id']}", headers=keys.h("viewer")).json()
    assert detail["mlflow_url"] == mlflow
    assert detail["dagster_runs"] == [{"what": "training", "run_id": "dagster-run-1234", "url": dagster}]


def test_production_metrics_of_older_proposals_are_recomputed_from_the_series(client, keys, store, lake, calendar, settings) -> None:
    """A proposal that kept only the headline deltas gets the production model's full metrics from its
    positions in the backtest series, by core.backtest: the same numbers the evaluation stored."""
    prod = seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=10, seed=1, with_series=False)
    store.approvals.decide(prod["proposal_id"], "APPROVE", reviewer="rita-reviewer", notes="first model")
    cand = seed_proposal(store, lake, calendar, n_sessions=30, skill=0.4, seed=2, production_model_id=prod["model_id"])
    _login(client, keys.viewer)
    stored = client.get(f"/experiments/{cand['proposal_id']}/review").text
    metrics = dict(cand["metrics"])
    metrics["benchmarks"] = {**metrics["benchmarks"], "baseline": None}  # as an older proposal kept them
    store.proposals.upsert(**{k: cand[k] for k in ("model_id", "experiment_name", "experiment_version",
                                                    "recommendation", "confidence", "reasons", "criteria",
                                                    "baseline_comparison", "lineage")}, metrics=metrics)
    recomputed = client.get(f"/experiments/{cand['proposal_id']}/review").text
    assert "recomputed from its positions in the backtest series" in recomputed
    for metric in ("exposure", "turnover", "psr", "final_equity", "sharpe", "max_drawdown", "avg_trade"):
        assert _cells(recomputed, metric)["production"] == _cells(stored, metric)["production"], metric
