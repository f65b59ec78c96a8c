"""Errors as one JSON shape, whatever raised them.

Every error response of the API is

    {"error": {"status": 409, "code": "conflict", "message": "...", "fields": [...]}}

`fields` is filled for validation errors (422) and names each offending field
(`{"field": "decision", "location": "body.decision", "message": "...", "type": "enum"}`).
Store errors map to HTTP codes here, in one place:
NotFoundError → 404, ConflictError → 409, OverrideNoteRequired → 422, DatabaseUnavailable → 503.
HTML pages get the same information rendered as a page (see pages.py).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from usdcop_platform.adapters.store.errors import (
    ConflictError,
    DatabaseUnavailable,
    NotFoundError,
    OverrideNoteRequired,
    StoreError,
)

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


class FieldError(BaseModel):
    field: str
    location: str
    message: str
    type: str


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorResponse(BaseModel):
    """The one error shape of the API."""

    error: ErrorBody


class ApiError(Exception):
    """Raise from a route to answer with the standard error shape."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.headers = headers or {}


def error_payload(status: int, message: str, code: str | None = None, fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = ErrorBody(status=status, code=code or _CODES.get(status, "error"), message=message,
                     fields=[FieldError(**f) for f in fields or []])
    return ErrorResponse(error=body).model_dump()


def store_error_status(exc: StoreError) -> int:
    """HTTP status of a store error (the one mapping)."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, OverrideNoteRequired):
        return 422
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, DatabaseUnavailable):
        return 503
    return 400


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"]+[/\\])+([^\s/\\'\"]+)")


def redact_paths(text: str | None) -> str | None:
    """Absolute file paths in a message shortened to their file name (…/policy.onnx): unauthenticated
    endpoints must not map the server's filesystem."""
    return None if text is None else _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(1), text)


def public_store_message(exc: StoreError) -> str:
    """What a client may read about a store error: an unavailable database is logged in full (URL
    without password, reason) and answered without the user, host, port or database name."""
    if isinstance(exc, DatabaseUnavailable):
        log.error("database unavailable: %s", exc)
        return "database unavailable; retry later (the server log has the details)"
    return str(exc)


def validation_fields(exc: RequestValidationError) -> list[dict[str, Any]]:
    """One entry per pydantic error; `field` is the innermost name, `location` the dotted path."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        named = [p for p in loc if not p.isdigit()]
        field = named[-1] if named else "body"
        if err.get("type") == "json_invalid":
            field = "body"
        out.append(
            {
                "field": field,
                "location": ".".join(loc) or "body",
                "message": str(err.get("msg", "invalid value")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return out


def validation_message(fields: list[dict[str, Any]]) -> str:
    return "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)


def _json(status: int, message: str, code: str | None = None, fields: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_payload(status, message, code, fields), status_code=status, headers=headers)


def wants_html(request: Request) -> bool:
    """Page routes (not /api, /health, /docs) answer errors with HTML for browsers."""
    path = request.url.path
    if path.startswith(("/api", "/health", "/openapi", "/docs", "/redoc")):
        return False
    return "text/html" in request.headers.get("accept", "")


def _route_paths_and_methods(app: Any) -> list[tuple[str, set[str]]]:
    """(path template, methods) of every HTTP route, through included routers (FastAPI >= 0.16x
    nests them; older versions flatten them into app.routes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI: routes are flat
        contexts: Any = app.router.routes
    else:
        contexts = iter_route_contexts(app.router.routes)
    out = []
    for ctx in contexts:
        path, methods = getattr(ctx, "path", None), getattr(ctx, "methods", None)
        if path and methods:
            out.append((path, set(methods)))
    return out


def allowed_methods(request: Request) -> list[str]:
    """Methods of every route whose path matches this request's, plus HEAD (with GET) and OPTIONS."""
    from starlette.routing import compile_path

    methods: set[str] = {"OPTIONS"}
    for path, route_methods in _route_paths_and_methods(request.app):
        if compile_path(path)[0].match(request.url.path):
            methods |= route_methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handlers(app: FastAPI, html_renderer: Any | None = None) -> None:
    """Register handlers so every error leaves the app in the one shape (or as an HTML page)."""

    def respond(request: Request, status: int, message: str, code: str | None = None,
                fields: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> Response:
        if html_renderer is not None and wants_html(request):
            return html_renderer(request, status, message, headers)
        return _json(status, message, code, fields, headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return respond(request, exc.status, exc.message, exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        fields = validation_fields(exc)
        return respond(request, 422, validation_message(fields), "validation_error", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette answers from the first route whose path matches, so /api/keys (GET and POST
            # routes) said "Allow: GET". The Allow header lists every route on the path.
            allow = ", ".join(allowed_methods(request))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            return respond(request, 405, f"{request.method} is not allowed on {request.url.path}; allowed: {allow}",
                           headers={"Allow": allow})
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return respond(request, exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> Response:
        return respond(request, store_error_status(exc), public_store_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(request, 500, f"internal error ({type(exc).__name__}); see the server log")
