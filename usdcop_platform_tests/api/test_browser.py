"""The sidecar's pages in headless Chromium (Debian's /usr/bin/chromium driven by playwright):
log in, see the charts rendered, approve, see the state change; then every page (login,
experiments, review pending / against a production model / override confirmation / approved,
an error page, the API docs) with a screenshot of each, and of each chart, in test-artifacts/.
Every request to another origin is blocked and recorded: the pages must work offline."""

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
# Axis titles of the review page's charts (pages.AXIS_TITLES), each with its unit.
UNITS = {"chart-equity": "(USD", "chart-drawdown": "(%)", "chart-pnl": "(USD", "chart-monthly": "(%)"}

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


class Guarded:
    """A page whose requests to other origins are aborted and recorded, as are console errors."""

    def __init__(self, context, base_url: str) -> None:  # noqa: ANN001 - playwright BrowserContext
        self.page = context.new_page()
        self.base = base_url
        self.foreign: list[str] = []
        self.console_errors: list[str] = []
        own = urlsplit(base_url).netloc

        def guard(route) -> None:  # noqa: ANN001 - playwright Route
            if urlsplit(route.request.url).netloc == own:
                route.continue_()
            else:
                self.foreign.append(route.request.url)
                route.abort()

        self.page.route("**/*", guard)
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def clean(self) -> None:
        """Only the statuses the walk provokes on purpose (a 404 page) may show as console errors."""
        errors = [e for e in self.console_errors if "404" not in e]
        assert self.foreign == [], f"the pages tried to reach other origins: {self.foreign}"
        assert errors == [], errors


def _box(locator) -> dict[str, float]:  # noqa: ANN001 - playwright Locator
    box = locator.bounding_box()
    assert box is not None
    return box


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def check_charts(g: Guarded, prefix: str) -> None:
    """Every chart: both axes titled with a unit, legend in its own strip above the plot and
    readable (no two legend labels overlap), the y title clear of the tick labels; one PNG each."""
    for testid in CHARTS:
        svg = g.page.get_by_test_id(testid).locator("svg")
        assert svg.count() == 1, testid
        x_title = svg.locator("text.axis-title.x-title")
        y_title = svg.locator("text.axis-title.y-title")
        assert x_title.count() == 1 and y_title.count() == 1, testid
        assert UNITS[testid] in y_title.text_content() or UNITS[testid] in x_title.text_content(), testid
        plot = _box(svg.locator("rect.plot-bg"))
        y_box = _box(y_title)
        for tick in svg.locator("g.y-axis text").all():
            label = tick.text_content() or ""
            assert not _overlap(y_box, _box(tick)), (testid, label)
            assert not re.fullmatch(r"-0(\.0*)?%?", label), (testid, label)  # no negative zero
        legend = svg.locator("g.legend")
        if legend.count():
            labels = [_box(t) for t in legend.locator("text").all()]
            assert _box(legend)["y"] + _box(legend)["height"] <= plot["y"] + 0.5, f"{testid}: legend on the data"
            assert not any(_overlap(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]), testid
        ARTIFACTS.mkdir(exist_ok=True)
        svg.screenshot(path=str(ARTIFACTS / f"{prefix}_{testid}.png"))


def login(g: Guarded, key: str, target: str) -> None:
    g.goto(target)
    assert "/login" in g.page.url
    g.page.fill("#api_key", key)
    g.page.click("form.decision button[type=submit]")
    g.page.wait_for_url(re.compile(rf".*{re.escape(target)}$"))


def test_walk_every_page_with_screenshots(browser_context, live_server, store, lake, calendar, keys) -> None:
    # a production model, a candidate evaluated against it, and a candidate the rules REJECT
    prod = seed_proposal(store, lake, calendar, recommendation="PROMOTE", n_sessions=20, seed=1, skill=0.4)
    store.approvals.decide(prod["proposal_id"], "APPROVE", reviewer="rita-reviewer", notes="first model")
    cand = seed_proposal(store, lake, calendar, n_sessions=120, skill=0.5, seed=2, production_model_id=prod["model_id"])
    weak = seed_proposal(store, lake, calendar, n_sessions=15, seed=3)
    assert weak["recommendation"] == "REJECT"
    g = Guarded(browser_context, live_server.url)

    g.goto("/login")
    assert g.page.locator("#api_key").count() == 1
    g.shot("page_login")
    login(g, keys.reviewer, "/experiments")
    assert g.page.get_by_test_id("pending-count").inner_text() == "2"
    assert prod["model_id"] in g.page.get_by_test_id("production-model").inner_text()
    g.shot("page_experiments")

    # the review page of a candidate against the production model: every metric filled, both references
    g.goto(f"/experiments/{cand['proposal_id']}/review")
    table = g.page.get_by_test_id("baseline-table")
    assert table.locator('th[data-reference="production"]').count() == 1
    assert table.locator('th[data-reference="buy_and_hold"]').count() == 1
    for metric in ("exposure", "turnover", "psr", "dsr", "final_equity"):
        cells = table.locator(f'tr[data-metric="{metric}"] td').all_inner_texts()
        assert "—" not in cells, (metric, cells)
    assert g.page.get_by_test_id("downsample-caption").inner_text().startswith("Downsampled for display to ")
    assert g.page.get_by_test_id("chart-equity").locator("g.legend text").all_text_contents() == [
        "candidate", "buy & hold", "production model", "initial capital (100,000 USD)"]
    check_charts(g, "review_vs_production")
    g.shot("page_review_vs_production")

    # a REJECT-rated proposal: approving asks for an explicit confirmation that restates the override
    g.goto(f"/experiments/{weak['proposal_id']}/review")
    reasons = g.page.get_by_test_id("reasons").inner_text()
    assert "FAIL " not in reasons and "criteria:" in reasons
    check_charts(g, "review_reject")
    g.shot("page_review_reject")
    g.page.fill("#approve-notes", "regime change; overriding from the browser test")
    g.page.get_by_test_id("approve-form").locator("button[type=submit]").click()
    dialog = g.page.get_by_role("alertdialog")
    dialog.wait_for()
    statement = g.page.get_by_test_id("override-statement").inner_text()
    assert statement.startswith("The rules said REJECT because these criteria failed: ")
    assert f"put model {weak['model_id']} in production, replacing {prod['model_id']}" in statement
    g.shot("page_override_confirmation")
    dialog.locator("button[type=submit]").click()  # unchecked: the browser keeps the form
    assert g.page.get_by_role("alertdialog").count() == 1
    assert store.proposals.get(weak["proposal_id"])["status"] == "PENDING_APPROVAL"
    g.page.get_by_test_id("override-checkbox").check()
    dialog.locator("button[type=submit]").click()
    g.page.wait_for_url(re.compile(r".*\?done=APPROVE$"))
    assert g.page.get_by_test_id("proposal-status").inner_text() == "APPROVED"
    assert g.page.get_by_test_id("model-stage").inner_text() == "production"
    g.shot("page_review_override_approved")

    g.goto("/experiments")
    assert "APPROVE" in g.page.get_by_test_id("recent-table").inner_text()
    g.shot("page_experiments_after")
    g.goto("/experiments/prop_missing/review")
    assert "prop_missing" in g.page.content()
    g.shot("page_error_404")
    g.goto("/docs")
    g.page.locator(".opblock-summary-path", has_text="/api/experiments/{proposal_id}/approve").first.wait_for()
    g.shot("page_api_docs")
    g.clean()
