"""The review page in headless Chromium (Debian's /usr/bin/chromium driven by playwright):
log in, see the charts rendered, approve, see the state change. Screenshots go to
test-artifacts/. Every request to another origin is blocked and recorded: the page must
work offline."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from usdcop_platform_tests.api.conftest import seed_proposal

CHROMIUM = Path(os.environ.get("USDCOP_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
CHARTS = ("chart-equity", "chart-drawdown", "chart-pnl", "chart-monthly")

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """One database is enough here: the store itself is tested on both elsewhere."""
    return sqlite_url


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[object]:
    if not CHROMIUM.exists():
        msg = f"{CHROMIUM} is missing: run scripts/system-deps.sh (apt-get install chromium)"
        if os.environ.get("USDCOP_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh user-data dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def test_review_page_renders_charts_and_approves(browser_context, live_server, store, lake, calendar, keys) -> None:
    # skill 0.5: significant at p_min 0.95 (0.3 only earns REVIEW: PSR 0.78 over 7,200 bars)
    proposal = seed_proposal(store, lake, calendar, n_sessions=120, skill=0.5)
    assert proposal["recommendation"] == "PROMOTE"  # a candidate worth promoting, by the real rules
    pid = proposal["proposal_id"]
    page = browser_context.new_page()
    foreign: list[str] = []
    console_errors: list[str] = []
    own = urlsplit(live_server.url).netloc

    def guard(route) -> None:  # noqa: ANN001 - playwright Route
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    # the review page asks for a key first, then comes back to the review page
    page.goto(f"{live_server.url}/experiments/{pid}/review")
    assert "/login" in page.url
    page.fill("#api_key", keys.reviewer)
    page.click("form.decision button[type=submit]")
    page.wait_for_url(re.compile(rf".*/experiments/{pid}/review$"))
    assert page.get_by_test_id("proposal-status").inner_text() == "PENDING_APPROVAL"

    for testid in CHARTS:
        svg = page.get_by_test_id(testid).locator("svg")
        assert svg.count() == 1, testid
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, (testid, box)
        marks = svg.locator("path.series, path.area, rect.bar").count()
        assert marks > 0, f"{testid} has no marks"
    equity_path = page.get_by_test_id("chart-equity").locator("path.series").get_attribute("d")
    assert equity_path.count("L") > 500  # the series, not a placeholder
    assert page.get_by_test_id("chart-pnl").locator("rect.bar").count() > 3
    lineage = page.get_by_test_id("lineage").inner_text()
    assert proposal["lineage"]["dataset_hash"] in lineage and proposal["lineage"]["backtest_hash"] in lineage

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review_page_pending.png"), full_page=True)

    page.fill("#approve-notes", "Sharpe and drawdown within limits; approving from the browser test")
    page.get_by_test_id("approve-form").locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r".*\?done=APPROVE$"))
    assert page.get_by_test_id("proposal-status").inner_text() == "APPROVED"
    assert page.get_by_test_id("model-stage").inner_text() == "production"
    assert page.get_by_test_id("flash").inner_text() == "Approved."
    assert "rita-reviewer" in page.get_by_test_id("history-table").inner_text()
    page.screenshot(path=str(ARTIFACTS / "review_page_approved.png"), full_page=True)

    page.goto(f"{live_server.url}/experiments")
    assert page.get_by_test_id("pending-count").inner_text() == "0"
    assert proposal["model_id"] in page.get_by_test_id("production-model").inner_text()
    assert "APPROVE" in page.get_by_test_id("recent-table").inner_text()

    assert store.models.production()["model_id"] == proposal["model_id"]
    assert store.audit.list()[0]["reviewer"] == "rita-reviewer"
    assert foreign == [], f"the pages tried to reach other origins: {foreign}"
    assert console_errors == [], console_errors
