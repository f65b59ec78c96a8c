"""The reviewer's side of REQUEST_MORE_TESTS: the requested periods, their results and the
status of pending requests in GET /api/experiments/{id} and on the review page."""

from __future__ import annotations

import re

import pytest

from usdcop_platform.app.backtest_requests import complete_request
from usdcop_platform_tests.api.conftest import seed_proposal
from usdcop_platform_tests.api.test_pages import _login

N_SESSIONS = 20
# What evaluation/backtest reports for a period (the fields complete_request reads).
REPORT = {
    "metrics": {"sharpe": 1.234, "total_return": 0.0456, "max_drawdown": 0.0123, "win_rate": 0.55, "trades": 42,
                "psr": 0.91},
    "benchmarks": {"buy_and_hold": {"sharpe": 0.2, "total_return": 0.01, "max_drawdown": 0.03, "trades": 1}},
    "n_bars": 1200,
    "test_start": "2023-01-03",
    "test_end": "2023-02-28",
    "out_of_sample": True,
    "backtest_hash": "f" * 64,
}


@pytest.fixture
def proposal(store, lake, calendar):
    return seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=N_SESSIONS, skill=0.4)


def _request(client, keys, pid: str, start: str, end: str) -> dict:
    r = client.post(f"/api/experiments/{pid}/backtest", headers=keys.h("reviewer"),
                    json={"start_date": start, "end_date": end, "notes": "more history please"})
    assert r.status_code == 202, r.text
    return r.json()


def test_detail_and_review_page_show_requested_periods(client, keys, store, calendar, proposal) -> None:
    pid = proposal["proposal_id"]
    first = _request(client, keys, pid, "2023-01-02", "2023-02-28")
    rid = first["request"]["id"]
    assert f"usdcop backtest --request-id {rid}" in first["message"]

    detail = client.get(f"/api/experiments/{pid}", headers=keys.h("viewer")).json()
    assert detail["status"] == "MORE_TESTS_REQUESTED" and detail["additional_backtests"] == []
    assert [(b["id"], b["status"]) for b in detail["backtest_requests"]] == [(rid, "PENDING")]

    # The evaluation run completes the request (the one completion path of defs/evaluation).
    out = complete_request(store, rid, {**REPORT, "lake_partition": f"{proposal['model_id']}@2023-01-02_2023-02-28"},
                           run_id="run-42", review_days=14)
    assert out["reopened"] is True

    detail = client.get(f"/api/experiments/{pid}", headers=keys.h("viewer")).json()
    assert detail["status"] == "PENDING_APPROVAL" and detail["decided_by"] is None
    (extra,) = detail["additional_backtests"]
    assert (extra["request_id"], extra["start"], extra["end"], extra["requested_by"]) == (
        rid, "2023-01-02", "2023-02-28", "rita-reviewer")
    assert extra["metrics"]["sharpe"] == 1.234 and extra["metrics"]["n_bars"] == 1200
    assert extra["metrics"]["benchmarks"]["buy_and_hold"] == {"sharpe": 0.2, "total_return": 0.01, "max_drawdown": 0.03}
    assert extra["dagster_run_id"] == "run-42" and extra["series_partition"].endswith("@2023-01-02_2023-02-28")
    assert [(b["id"], b["status"]) for b in detail["backtest_requests"]] == [(rid, "DONE")]
    assert [h["action"] for h in detail["history"]] == ["MORE_TESTS_COMPLETED", "REQUEST_MORE_TESTS"]
    # The series shown is still the one the first vote was made from.
    assert detail["series"]["total_points"] == N_SESSIONS * calendar.bars_per_session

    # Asked again: one period done, one pending; then that one fails.
    second = _request(client, keys, pid, "2022-07-01", "2022-12-30")["request"]["id"]
    store.backtest_requests.fail(second, "EvaluationError: no bars between 2022-07-01 and 2022-12-30")
    detail = client.get(f"/api/experiments/{pid}", headers=keys.h("viewer")).json()
    assert [e["request_id"] for e in detail["additional_backtests"]] == [rid]
    assert {b["id"]: b["status"] for b in detail["backtest_requests"]} == {rid: "DONE", second: "FAILED"}

    _login(client, keys.viewer)
    html = client.get(f"/experiments/{pid}/review").text
    table = html[html.index('data-testid="additional-backtests-table"'):]
    table = table[: table.index("</table>")]
    done_row = re.search(rf'<tr data-request-id="{rid}">(.*?)</tr>', table, re.S).group(1)
    assert "2023-01-02 → 2023-02-28" in done_row and ">DONE<" in done_row
    assert "1.234" in done_row and "4.56%" in done_row and "1.23%" in done_row and ">42<" in done_row
    failed_row = re.search(rf'<tr data-request-id="{second}">(.*?)</tr>', table, re.S).group(1)
    assert "2022-07-01 → 2022-12-30" in failed_row and ">FAILED<" in failed_row
    assert "no bars between 2022-07-01 and 2022-12-30" in table
    assert "It comes back here for a decision when the requested backtest is done." in html


def test_pending_request_shows_how_to_run_it(client, keys, proposal) -> None:
    rid = _request(client, keys, proposal["proposal_id"], "2023-01-02", "2023-02-28")["request"]["id"]
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{proposal['proposal_id']}/review").text
    assert 'data-testid="additional-backtests"' in html
    assert re.search(rf'<tr data-request-id="{rid}">.*?>PENDING<', html, re.S)
    assert f"run it with: usdcop backtest --request-id {rid}" in html


def test_no_requests_no_card(client, keys, proposal) -> None:
    _login(client, keys.viewer)
    html = client.get(f"/experiments/{proposal['proposal_id']}/review").text
    assert 'data-testid="additional-backtests"' not in html
    detail = client.get(f"/api/experiments/{proposal['proposal_id']}", headers=keys.h("viewer")).json()
    assert detail["additional_backtests"] == []
