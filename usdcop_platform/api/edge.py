"""The API's edge: body-size limit and authentication, both before any byte of the body is parsed.

A pure ASGI middleware (no per-request task or stream, see SecurityHeadersMiddleware):

1. A declared `Content-Length` above `Settings.max_body_bytes` is answered 413 at once, unread.
2. A request that carries a body to a JSON API path (`/v1/*`, `/api/*`) must authenticate first:
   the X-API-Key header is verified (with the failed-login throttle of `api/auth.py`) before the
   body is read; a missing or wrong key gets 401, a throttled client 429. The verified key row is
   left in `scope["state"]` so the route dependency does not verify it again.
3. The body is counted as it streams (chunked uploads declare no length): past the limit the
   read raises a 413 HTTPException, which FastAPI re-raises from its body parsing and the error
   handlers render in the one error shape. At most `max_body_bytes` are ever buffered.

FastAPI reads and validates a body *before* it resolves dependencies, so authentication in a
dependency alone lets an anonymous client make the server parse (and hold) anything it sends.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from usdcop_platform.adapters.store.errors import StoreError
from usdcop_platform.api.errors import error_payload, public_store_message, store_error_status

BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_PREFIXES: Final = ("/v1/", "/api/")
CACHED_AUTH_PREFIXES: Final = ("/v1/",)  # the inference path trusts a verified key for AUTH_CACHE_TTL_S
PRINCIPAL_STATE_KEY: Final = "usdcop_principal"
API_KEY_HEADER_BYTES: Final = b"x-api-key"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit:,} bytes (USDCOP_MAX_BODY_BYTES)")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_payload(status, message), status_code=status, headers=headers)


class EdgeGuardMiddleware:
    """Body-size limit + authentication before the body (see the module docstring)."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state  # the AppState: settings, store, authenticator

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = int(self.state.settings.max_body_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _error(400, f"Content-Length {declared[:32]!r} is not a byte count")(scope, receive, send)
                return
            if int(declared) > limit:
                await _error(413, BodyTooLarge(limit).detail, {"Connection": "close"})(scope, receive, send)
                return
        path = scope.get("path", "")
        if path.startswith(API_PREFIXES):
            refused = await self._authenticate(scope, path)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, self._counting(receive, limit), send)

    async def _authenticate(self, scope: dict[str, Any], path: str) -> JSONResponse | None:
        from starlette.concurrency import run_in_threadpool

        key = _header(scope, API_KEY_HEADER_BYTES)
        client = scope.get("client")
        if path.startswith(CACHED_AUTH_PREFIXES):  # the busy inference path: no thread hop on a hit
            hit = self.state.authenticator.cached(key)
            if hit is not None:
                scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = hit
                return None

        def verify() -> Any:
            return self.state.authenticator.authenticate(
                self.state.store, key, client[0] if client else None, cached=path.startswith(CACHED_AUTH_PREFIXES)
            )

        try:
            result = await run_in_threadpool(verify)
        except StoreError as exc:
            return _error(store_error_status(exc), public_store_message(exc))
        if result.principal is not None:
            scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = result.principal
            return None
        headers = {"Retry-After": str(result.retry_after_s)} if result.status == 429 else {"WWW-Authenticate": "X-API-Key"}
        return _error(result.status, result.message, headers)

    @staticmethod
    def _counting(receive: Any, limit: int) -> Any:
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted
