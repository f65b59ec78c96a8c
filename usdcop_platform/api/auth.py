"""Key verification shared by every entry point (edge middleware, route dependencies, login form),
with a short cache of verified keys and throttling of failed logins.

Failed logins are throttled per client IP and per key prefix (`usdcop_` + 8 characters, the part
shown in listings) with token buckets of `Settings.auth_failures_per_minute`: each failure takes a
token, and while either bucket is empty a request is refused with 429 *before* the key is looked up,
so a guessing client costs no database round trip. The per-prefix bucket catches guesses spread over
many addresses against one known prefix. Like the write limiter, the buckets live in this process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from usdcop_platform.adapters.store.api_keys import KEY_SCHEME, key_prefix
from usdcop_platform.api.ratelimit import TokenBucketLimiter
from usdcop_platform.contracts.base import sha256_hex

AUTH_CACHE_TTL_S: Final = 10.0  # a verified key is trusted this long without a database round trip
AUTH_CACHE_MAX: Final = 10_000  # verified keys remembered at most (a bounded dict, cleared when full)


@dataclass(frozen=True)
class AuthResult:
    """`principal` (the key row) when verified; else `status` 401 or 429 and a message."""

    principal: Any | None
    status: int = 200
    message: str = ""
    retry_after_s: int = 0


class Authenticator:
    """Verify API keys against the store; remember successes briefly; throttle failures."""

    def __init__(self, failures_per_minute: int) -> None:
        self.failures_per_minute = failures_per_minute
        self._failures = TokenBucketLimiter(failures_per_minute)
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _buckets(self, key: str, client_ip: str | None) -> list[str]:
        out = [f"ip:{client_ip or 'unknown'}"]
        if key.startswith(KEY_SCHEME):
            out.append(f"prefix:{key_prefix(key)}")
        return out

    def cached(self, key: str | None) -> Any | None:
        """A key row verified less than AUTH_CACHE_TTL_S ago (no I/O: safe on the event loop)."""
        if not key:
            return None
        hit = self._cache.get(sha256_hex(key))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def authenticate(self, store: Any, key: str | None, client_ip: str | None, *, cached: bool = False) -> AuthResult:
        """Verify `key` for a client at `client_ip`. `cached` allows a success up to
        AUTH_CACHE_TTL_S old (the inference path: a revoked key stops working within that time)."""
        if not key:
            return AuthResult(None, 401, "missing API key: send it in the X-API-Key header")
        digest = sha256_hex(key)
        now = time.monotonic()
        if cached:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return AuthResult(hit[1])
        buckets = self._buckets(key, client_ip)
        for bucket in buckets:
            wait = self._failures.blocked_for(bucket)
            if wait:
                return AuthResult(None, 429, f"too many failed logins from this client or for this key prefix "
                                             f"(at most {self.failures_per_minute} a minute); retry in {wait} s",
                                  retry_after_s=wait)
        row = store.api_keys.verify(key) if key.isprintable() else None  # control characters never make a key
        if row is None:
            for bucket in buckets:
                self._failures.take(bucket)
            return AuthResult(None, 401, "invalid or revoked API key")
        with self._lock:
            if len(self._cache) >= AUTH_CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (now + AUTH_CACHE_TTL_S, row)
        return AuthResult(row)
