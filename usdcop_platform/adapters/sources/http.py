"""JSON over HTTP with timeouts, retries with exponential backoff, and 429 handling.

Retried: HTTP 429 (waiting Retry-After when the server sends it, capped), HTTP 5xx, timeouts and
connection errors. Not retried: other 4xx and malformed JSON (a vendor bug does not fix itself).
Wait before attempt k+1: min(backoff_max_s, backoff_base_s * 2^(k-1)). API keys never appear in
error messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from usdcop_platform.adapters.sources.base import SourceError


@dataclass(frozen=True)
class HttpPolicy:
    timeout_s: float = 10.0
    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))


class RateLimited(SourceError):
    """The vendor kept answering 429 (or its JSON equivalent) after every retry."""


def _retry_after(resp: httpx.Response, policy: HttpPolicy, attempt: int) -> float:
    header = resp.headers.get("Retry-After")
    if header:
        try:
            return min(policy.max_retry_after_s, max(0.0, float(header)))
        except ValueError:
            pass
    return policy.backoff(attempt)


def get_json(
    client: httpx.Client,
    url: str,
    params: Mapping[str, Any],
    policy: HttpPolicy,
    *,
    vendor: str,
    secret_params: tuple[str, ...] = (),
    sleep: Callable[[float], None] = time.sleep,
    is_rate_limited: Callable[[Any], bool] = lambda _body: False,
) -> Any:
    """GET url?params and return the decoded JSON, or raise SourceError naming vendor and reason.

    `is_rate_limited(body)` lets vendors that answer 200 with an error body (TwelveData) signal
    a rate limit, which is then retried like an HTTP 429.
    """
    shown = {k: ("***" if k in secret_params else v) for k, v in params.items()}
    where = f"{vendor} GET {url} {shown}"
    last = ""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            resp = client.get(url, params=dict(params), timeout=policy.timeout_s)
        except httpx.TimeoutException:
            last = f"timed out after {policy.timeout_s:g} s"
            wait = policy.backoff(attempt)
        except httpx.TransportError as exc:
            last = f"connection error: {type(exc).__name__}"
            wait = policy.backoff(attempt)
        else:
            if resp.status_code == 429:
                last = "HTTP 429 rate limited"
                wait = _retry_after(resp, policy, attempt)
            elif resp.status_code >= 500:
                last = f"HTTP {resp.status_code} server error"
                wait = policy.backoff(attempt)
            elif resp.status_code >= 400:
                raise SourceError(f"{where}: HTTP {resp.status_code}: {resp.text[:200]}")
            else:
                try:
                    body = json.loads(resp.content)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise SourceError(f"{where}: malformed JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from exc
                if not is_rate_limited(body):
                    return body
                last = "rate limited (error body)"
                wait = policy.backoff(attempt)
        if attempt < policy.max_attempts:
            sleep(wait)
    error = RateLimited if "rate limited" in last else SourceError
    raise error(f"{where}: {last}; gave up after {policy.max_attempts} attempts")
