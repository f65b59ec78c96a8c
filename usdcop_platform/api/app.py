"""App factory of the FastAPI sidecar: approvals API, review pages, health, plus the inference
router (when that module exists) and the monitoring router.

    uvicorn usdcop_platform.api.app:app      # or: usdcop serve

`create_app(settings, store)` builds an app bound to explicit settings and (optionally) an
already-open store; the module-level `app` uses the environment's Settings and opens the store
lazily on the first request, so importing this module touches no database.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders

from usdcop_platform.api import pages
from usdcop_platform.api.deps import API_KEY_HEADER, AppState
from usdcop_platform.api.edge import EdgeGuardMiddleware
from usdcop_platform.api.errors import install_error_handlers
from usdcop_platform.api.routers import experiments, registry
from usdcop_platform.api.routers.common import market_tz
from usdcop_platform.settings import Settings, get_settings

API_TITLE = "USD/COP approvals API"
API_VERSION = "1.0.0"
SWAGGER_MOUNT = "/docs-assets"
# Pages may load only what this app serves; inline styles are allowed for the SVG charts.
PAGE_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; script-src 'none'; frame-ancestors 'none'"
# Swagger UI needs its inline bootstrap script; still nothing from another origin.
DOCS_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


# Routers of other domains mounted in the same app when their module exists (each exposes `router`).
OPTIONAL_ROUTERS = ("usdcop_platform.api.inference",)


def _include_optional(app: FastAPI) -> None:
    """Mount the MLOps inference router when that module is installed."""
    for name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)


def _swagger_assets() -> str | None:
    try:
        import swagger_ui_bundle
    except ModuleNotFoundError:  # pragma: no cover - a declared dependency
        return None
    return str(swagger_ui_bundle.swagger_ui_path)


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding security headers (nosniff, referrer policy; CSP and frame
    denial on HTML). A `@app.middleware("http")` function wraps every response in a task and a
    stream, which halved /v1/inference throughput under load; this only edits the start message."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", DOCS_CSP if path == "/docs" else PAGE_CSP)
                    headers.setdefault("X-Frame-Options", "DENY")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings | None = None, store: Any | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description=(
            "Second vote on promotion proposals (approve / reject / request more tests), the model "
            f"registry and the approval audit log. Authenticate with an API key in the `{API_KEY_HEADER}` "
            "header (`usdcop keys create --name N --role viewer|reviewer|admin`). Errors always have "
            "the shape `{\"error\": {\"status\", \"code\", \"message\", \"fields\"}}`."
        ),
        docs_url=None,
        redoc_url=None,
    )
    state = AppState(settings, store)
    state.templates = pages.make_templates(market_tz(settings))
    app.state.usdcop = state

    # innermost of the three: its 401/413 answers still get CORS and security headers
    app.add_middleware(EdgeGuardMiddleware, state=state)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin_list(),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=[API_KEY_HEADER, "Content-Type"],
        expose_headers=["Retry-After"],
        allow_credentials=False,
    )

    app.add_middleware(SecurityHeadersMiddleware)

    app.mount("/static", StaticFiles(directory=str(pages.STATIC_DIR)), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        """Browsers ask for /favicon.ico on every page: answer it (an SVG icon) instead of a 404."""
        return FileResponse(pages.STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})
    swagger_dir = _swagger_assets()
    if swagger_dir is not None:
        app.mount(SWAGGER_MOUNT, StaticFiles(directory=swagger_dir), name="swagger")

        @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
        def docs() -> HTMLResponse:
            """Swagger UI from local assets (works offline)."""
            return get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{API_TITLE} · docs",
                swagger_js_url=f"{SWAGGER_MOUNT}/swagger-ui-bundle.js",
                swagger_css_url=f"{SWAGGER_MOUNT}/swagger-ui.css",
                swagger_favicon_url=f"{SWAGGER_MOUNT}/favicon-32x32.png",
            )

    # The inference router first: FastAPI tries routers in order on every request, and
    # /v1/inference is by far the busiest route (no path below overlaps its /v1/* and /metrics).
    _include_optional(app)
    app.include_router(registry.health_router)
    app.include_router(experiments.router)
    app.include_router(registry.models_router)
    app.include_router(registry.audit_router)
    app.include_router(registry.keys_router)
    app.include_router(importlib.import_module("usdcop_platform.api.routers.macro").router)  # issue 17
    app.include_router(pages.router)
    app.include_router(importlib.import_module("usdcop_platform.api.monitoring").router)  # monitoring (issue 9): /health/detailed, alerts, rollback proposals, drift
    install_error_handlers(app, html_renderer=pages.render_error_page)
    return app


app = create_app()
