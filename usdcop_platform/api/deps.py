"""Reusable FastAPI dependencies: settings, the store, the lake, authentication, roles, rate limits.

Authentication: an API key in the `X-API-Key` header (JSON API), or — for the server-rendered
pages only — the same key in the HttpOnly `usdcop_key` cookie set by the login form. Keys are
verified against their stored hash (`store.api_keys.verify`); the caller's identity is the key's
owner (`name`), never a value from the request body.

Roles are ordered viewer < reviewer < admin: viewers read, reviewers also decide, admins also
manage (keys, rollbacks). Missing/invalid key → 401, insufficient role → 403.

Other routers (e.g. the inference API) reuse `get_store`, `require_role(...)` and `write_role(...)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.api.auth import Authenticator
from usdcop_platform.api.edge import PRINCIPAL_STATE_KEY
from usdcop_platform.api.errors import ApiError
from usdcop_platform.api.ratelimit import TokenBucketLimiter
from usdcop_platform.settings import Settings

API_KEY_HEADER = "X-API-Key"
SESSION_COOKIE = "usdcop_key"
Role = Literal["viewer", "reviewer", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 0, "reviewer": 1, "admin": 2}

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="API key from `usdcop keys create --name N --role viewer|reviewer|admin`.",
)


class AppState:
    """What the app factory puts on `app.state.usdcop`: settings, a lazily opened store, limiter."""

    def __init__(self, settings: Settings, store: Any | None = None) -> None:
        self.settings = settings
        self._store = store
        self._lock = threading.Lock()
        self.limiter = TokenBucketLimiter(settings.write_rate_limit_per_minute)
        self.authenticator = Authenticator(settings.auth_failures_per_minute)
        self.lake = ParquetLake(settings.data_dir)
        self.templates: Any = None  # set by the app factory (pages.make_templates)

    @property
    def store(self) -> Any:
        """The SQL store, opened (and migrated) on first use so importing the app touches no DB."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from usdcop_platform.adapters.store import get_store as open_store

                    self._store = open_store(self.settings.resolved_database_url)
        return self._store


def app_state(request: Request) -> AppState:
    return request.app.state.usdcop


def get_settings(request: Request) -> Settings:
    return app_state(request).settings


def get_store(request: Request) -> Any:
    """The SQL store of this app (see adapters/store)."""
    return app_state(request).store


def get_lake(request: Request) -> ParquetLake:
    return app_state(request).lake


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def verify_key(request: Request, key: str | None, *, cached: bool = False) -> Any | None:
    """The key's row (name, role, ...) when `key` is a valid, unrevoked key; else None.
    Raises 429 while the client or the key prefix is throttled for failed logins."""
    state = app_state(request)
    result = state.authenticator.authenticate(state.store, key, client_ip(request), cached=cached)
    if result.status == 429:
        raise ApiError(429, result.message, headers={"Retry-After": str(result.retry_after_s)})
    return result.principal


def principal_from_edge(request: Request) -> Any | None:
    """The key row the edge middleware verified before the body was read (requests with a body)."""
    return request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)


def authenticate(request: Request, key: str | None = Security(api_key_header), *, cached: bool = False) -> Any:
    """The caller's key row; 401 when the header is missing or the key is unknown/revoked."""
    row = principal_from_edge(request)
    if row is not None:
        return row
    if not key:
        raise ApiError(
            401,
            f"missing API key: send it in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    row = verify_key(request, key, cached=cached)
    if row is None:
        raise ApiError(401, "invalid or revoked API key", headers={"WWW-Authenticate": API_KEY_HEADER})
    return row


def has_role(principal: Any, role: str) -> bool:
    return ROLE_RANK.get(principal["role"], -1) >= ROLE_RANK[role]


def _with_role(principal: Any, role: Role) -> Any:
    if not has_role(principal, role):
        raise ApiError(403, f"key {principal['name']!r} has role {principal['role']!r}; this needs {role!r} or higher")
    return principal


def require_role(role: Role, *, cached: bool = False) -> Callable[..., Any]:
    """Dependency: the authenticated key row, if its role is at least `role` (else 403).

    `cached`: a key verified less than api.auth.AUTH_CACHE_TTL_S ago is not looked up again, and the
    dependency runs on the event loop (no thread hop): the inference path's read endpoints."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLE_RANK)}")
    if cached:
        async def dependency(request: Request, key: str | None = Security(api_key_header)) -> Any:
            return _with_role(authenticate(request, key, cached=True), role)
    else:
        def dependency(principal: Any = Depends(authenticate)) -> Any:  # type: ignore[misc]
            return _with_role(principal, role)

    dependency.__name__ = f"require_{role}_cached" if cached else f"require_{role}"
    return dependency


def enforce_rate_limit(request: Request, principal: Any) -> None:
    """Take a write token for this key; 429 with Retry-After when its bucket is empty."""
    decision = app_state(request).limiter.take(str(principal["name"]))
    if not decision.allowed:
        raise ApiError(
            429,
            f"rate limit exceeded for key {principal['name']!r}: at most "
            f"{app_state(request).settings.write_rate_limit_per_minute} writes per minute; "
            f"retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


def write_role(role: Role) -> Callable[..., Any]:
    """Like require_role, plus the per-key write rate limit (for state-changing endpoints)."""
    base = require_role(role)

    def dependency(request: Request, principal: Any = Depends(base)) -> Any:
        enforce_rate_limit(request, principal)
        return principal

    dependency.__name__ = f"write_{role}"
    return dependency
