"""Server-rendered approval pages: /experiments and /experiments/{id}/review.

Everything the browser loads comes from this app (/static); charts are inline SVG rendered
here, so the pages work offline and without JavaScript. Pages authenticate with the same API
keys as the JSON API: the login form verifies the key and stores it in an HttpOnly,
SameSite=Strict cookie. Form posts also carry a CSRF token derived from the cookie
(HMAC-SHA256(cookie, "csrf")), which another site can neither read nor compute.
"""

from __future__ import annotations

import hmac
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from usdcop_platform.adapters.store import StoreError
from usdcop_platform.api import actions, charts
from usdcop_platform.api.comparison import MIN_TRADES_TO_COMPARE
from usdcop_platform.api.deps import SESSION_COOKIE, app_state, enforce_rate_limit, has_role, verify_key
from usdcop_platform.api.errors import ApiError, store_error_status
from usdcop_platform.api.routers.common import market_tz, review_path
from usdcop_platform.contracts.base import hmac_sha256_hex
from usdcop_platform.api.views import (
    ADDITIONAL_METRICS,
    METRIC_DISPLAY,
    ExperimentDetail,
    experiment_detail,
    find_proposal,
    override_statement,
)

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
# How many recent audit rows the experiments page lists.
RECENT_DECISIONS = 20
DECIDABLE_STATUS = "PENDING_APPROVAL"
OVERLAY_NAMES = {"buy_hold_equity": "buy & hold", "baseline_equity": "production model"}
FORM_DECISIONS = ("APPROVE", "REJECT", "REQUEST_MORE_TESTS")

router = APIRouter(include_in_schema=False)


def make_templates(tz: ZoneInfo) -> Jinja2Templates:
    """Jinja2 environment (autoescaping on) with display filters in the market time zone."""
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

    def when(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, datetime):
            return value.astimezone(tz).strftime("%Y-%m-%d %H:%M") + f" {tz.key.split('/')[-1]}"
        return str(value)

    def pct(value: Any, digits: int = 2) -> str:
        if not isinstance(value, (int, float)):
            return "—"
        return charts.fmt_pct(float(value), digits)

    def num(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "—"
        return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"

    templates.env.filters.update(when=when, pct=pct, num=num)
    return templates


def _templates(request: Request) -> Jinja2Templates:
    return app_state(request).templates


def csrf_token(cookie_value: str) -> str:
    return hmac_sha256_hex(cookie_value, b"csrf")


def _principal(request: Request) -> Any | None:
    return verify_key(request, request.cookies.get(SESSION_COOKIE))


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only same-site paths (no //host or scheme): no open redirect through the login form."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/experiments"
    return target


def render_error_page(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """HTML rendering of an error for browsers (see errors.install_error_handlers)."""
    principal = None
    try:
        principal = _principal(request)
    except (StoreError, ApiError):  # database down, or the client is throttled
        pass
    return _templates(request).TemplateResponse(
        request, "error.html", {"status": status, "message": message, "principal": principal},
        status_code=status, headers=headers,
    )


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/experiments", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/experiments") -> Response:
    return _templates(request).TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": None, "principal": None}
    )


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, api_key: str = Form(""), next: str = Form("/experiments")) -> Response:
    row = verify_key(request, api_key.strip())
    if row is None:
        return _templates(request).TemplateResponse(
            request, "login.html",
            {"next": _safe_next(next), "error": "Invalid or revoked API key.", "principal": None},
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, api_key.strip(), httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/",
    )
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request) -> Response:
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    store = app_state(request).store
    return _templates(request).TemplateResponse(
        request,
        "experiments.html",
        {
            "principal": principal,
            "pending": store.proposals.list(DECIDABLE_STATUS),
            "recent": store.audit.list(limit=RECENT_DECISIONS),
            "production": store.models.production(),
        },
    )


# Axis titles (quantity and unit) of the review page's charts. The x axis of the series charts is
# the bar index labelled with dates: trading bars only, so nights and weekends take no space.
SERIES_X_TITLE = "Trading date (market time; trading bars only)"
AXIS_TITLES = {
    "equity": (SERIES_X_TITLE, "Equity (USD, mark to market)"),
    "drawdown": (SERIES_X_TITLE, "Drawdown from peak (%)"),
    "pnl": ("Net PnL per trade (USD, after costs)", "Trades (count)"),
    "monthly": ("Month (market time)", "Monthly return (%)"),
}


def build_charts(d: ExperimentDetail, tz: ZoneInfo) -> dict[str, Any]:
    """The four inline SVG charts of the review page."""
    labels = [t.astimezone(tz).strftime("%Y-%m-%d") if isinstance(t, datetime) else "" for t in d.series.time]
    initial = (d.proposal.get("metrics") or {}).get("initial_capital")
    has_initial = isinstance(initial, (int, float))

    def titles(name: str) -> dict[str, str]:
        x_title, y_title = AXIS_TITLES[name]
        return {"x_title": x_title, "y_title": y_title}

    return {
        "equity": charts.line_chart(
            labels, d.series.equity, title="Equity (USD, mark to market)", css_class="equity", frame=charts.WIDE_FRAME,
            baseline=float(initial) if has_initial else None,
            baseline_label=f"initial capital ({initial:,.0f} USD)" if has_initial else None,
            overlays={OVERLAY_NAMES.get(k, k): v for k, v in d.series.overlays.items()},
            **titles("equity"),
        ),
        "drawdown": charts.line_chart(
            labels, d.series.drawdown, title="Drawdown from peak (%)", y_ticks=charts.pct_ticks, fill_to_zero=True,
            css_class="drawdown", frame=charts.WIDE_FRAME, **titles("drawdown"),
        ),
        "pnl": charts.histogram(
            d.trade_pnl, title="Trade PnL distribution (USD)", value_format=charts.fmt_money, css_class="pnl",
            frame=charts.HALF_FRAME,
            **titles("pnl"),
        ),
        "monthly": charts.bar_chart(
            [m for m, _ in d.monthly], [r for _, r in d.monthly], title="Monthly returns (%)",
            y_ticks=charts.pct_ticks, value_format=charts.fmt_pct, css_class="monthly", frame=charts.HALF_FRAME,
            max_x_labels=6, **titles("monthly"),
        ),
    }


def _override_confirmation(request: Request, principal: Any, proposal: Any, notes: str, promote: bool) -> Response:
    """The second step of approving a REJECT-rated proposal: the override restated, to be confirmed."""
    production = app_state(request).store.models.production()
    statement = override_statement(proposal, promote, production["model_id"] if production is not None else None)
    confirm = {"statement": statement, "notes": notes, "promote": promote}
    return _review_response(request, principal, proposal["proposal_id"], confirm=confirm)


def _review_response(
    request: Request, principal: Any, ident: str, *, flash: str | None = None, error: str | None = None,
    status_code: int = 200, confirm: dict[str, Any] | None = None,
) -> Response:
    state = app_state(request)
    tz = market_tz(state.settings)
    d = experiment_detail(state.store, state.lake, state.settings, ident, tz)
    p = d.proposal
    expired = p.get("expires_at") is not None and p["expires_at"] < datetime.now(tz)
    return _templates(request).TemplateResponse(
        request,
        "review.html",
        {
            "principal": principal,
            "p": p,
            "model": d.model,
            "charts": build_charts(d, tz),
            "monthly": d.monthly,
            "criteria": d.criteria,
            "reasons": d.reasons,
            "references": d.references,
            "min_trades_to_compare": MIN_TRADES_TO_COMPARE,
            "baseline": d.baseline,
            "lineage": d.lineage,
            "mlflow_url": d.mlflow_url,
            "mlflow_run_id": d.mlflow_run_id,
            "mlflow_ui": state.settings.resolved_mlflow_ui_url,
            "dagster_runs": d.dagster_runs,
            "dagster_ui": state.settings.resolved_dagster_ui_url,
            "history": d.history,
            "backtest_requests": d.backtest_requests,
            "additional_backtests": d.additional_backtests,
            "statistics": d.statistics,
            "diagnostics": d.diagnostics,
            "additional_metric_labels": [METRIC_DISPLAY[k][0] for k in ADDITIONAL_METRICS],
            "series_info": d.series,
            "trades_count": d.trades_total,
            "flash": flash,
            "error": error,
            "csrf": csrf_token(request.cookies.get(SESSION_COOKIE, "")),
            "can_decide": has_role(principal, "reviewer"),
            "decidable": p["status"] == DECIDABLE_STATUS and not expired,
            "needs_override": p["recommendation"] == "REJECT",
            "confirm": confirm,
        },
        status_code=status_code,
    )


@router.get("/experiments/{proposal_id}/review", response_class=HTMLResponse)
def review_page(request: Request, proposal_id: str, done: str | None = None) -> Response:
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    flash = None
    if done in FORM_DECISIONS:
        flash = {"APPROVE": "Approved.", "REJECT": "Rejected.", "REQUEST_MORE_TESTS": "More tests requested."}[done]
    return _review_response(request, principal, proposal_id, flash=flash)


def _parse_date(value: str | None, field: str) -> date:
    try:
        return date.fromisoformat((value or "").strip())
    except ValueError:
        raise ApiError(422, f"{field}: {value!r} is not a date (YYYY-MM-DD)") from None


@router.post("/experiments/{proposal_id}/decision", response_class=HTMLResponse)
def decision_form(
    request: Request,
    proposal_id: str,
    background: BackgroundTasks,
    decision: str = Form(...),
    notes: str = Form(""),
    promote_to_production: str | None = Form(None),
    start_date: str | None = Form(None),
    end_date: str | None = Form(None),
    csrf: str = Form(""),
    override_confirmed: str | None = Form(None),
) -> Response:
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    state = app_state(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    try:
        if not hmac.compare_digest(csrf, csrf_token(cookie)):
            raise ApiError(403, "the form's CSRF token does not match your session; reload the page and retry")
        if not has_role(principal, "reviewer"):
            raise ApiError(403, f"key {principal['name']!r} has role {principal['role']!r}; deciding needs 'reviewer'")
        enforce_rate_limit(request, principal)
        if decision not in FORM_DECISIONS:
            raise ApiError(422, f"decision: {decision!r} is not one of {', '.join(FORM_DECISIONS)}")
        if decision == "REQUEST_MORE_TESTS":
            start, end = _parse_date(start_date, "start_date"), _parse_date(end_date, "end_date")
            if end < start:
                raise ApiError(422, f"end_date {end} is before start_date {start}")
            actions.request_more_tests(state.store, state.settings, proposal_id, start, end, principal["name"], notes)
        else:
            promote = promote_to_production is not None
            confirmed = override_confirmed == "yes"
            proposal = find_proposal(state.store, proposal_id)
            if actions.needs_override_confirmation(proposal, decision) and not confirmed:
                if not notes.strip():
                    raise ApiError(422, "notes: the rules recommended REJECT; approving needs notes explaining the override")
                return _override_confirmation(request, principal, proposal, notes, promote)
            actions.decide(
                state.store, state.settings, proposal_id, decision, principal["name"], notes,
                promote_to_production=promote, schedule=background.add_task, override_confirmed=confirmed,
            )
    except ApiError as exc:
        return _review_response(request, principal, proposal_id, error=exc.message, status_code=exc.status)
    except StoreError as exc:
        status = store_error_status(exc)
        if status == 404 or status >= 500:
            raise
        return _review_response(request, principal, proposal_id, error=str(exc), status_code=status)
    return RedirectResponse(f"{review_path(proposal_id)}?done={decision}", status_code=303)
