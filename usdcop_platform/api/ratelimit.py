"""Token-bucket rate limiting of write endpoints, one bucket per API key.

A bucket holds at most `capacity` tokens and refills continuously at `rate` tokens per second:

    tokens(t) = min(capacity, tokens(t0) + (t - t0) * rate)

A request takes one token; with none left it is refused with 429 and
`Retry-After = ceil((1 - tokens) / rate)` seconds. With capacity = rate × 60 = N this allows a
burst of N writes and N writes per minute sustained (N = Settings.write_rate_limit_per_minute).

Scope: the buckets live in this process. Behind a load balancer with k API replicas a key can
write up to k × N per minute; a shared limiter (Redis) would be needed to make the limit global.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SECONDS_PER_MINUTE = 60.0


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int
    remaining: int


class TokenBucketLimiter:
    """Thread-safe per-key token buckets (sync routes run in a thread pool)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if per_minute < 1:
            raise ValueError(f"rate limit must be at least 1 request per minute, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate = per_minute / SECONDS_PER_MINUTE
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self.max_keys = max_keys  # bounds memory when keys are attacker-chosen (IPs, key prefixes)

    def _prune(self, now: float) -> None:
        """Forget buckets that refilled; if still too many, the least recently used half."""
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            for k, _ in sorted(self._buckets.items(), key=lambda kv: kv[1].updated)[: len(self._buckets) // 2]:
                del self._buckets[k]

    def take(self, key: str) -> Decision:
        """Take one token from `key`'s bucket if there is one."""
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                b = self._buckets[key] = _Bucket(self.capacity, now)
            b.tokens = min(self.capacity, b.tokens + (now - b.updated) * self.rate)
            b.updated = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return Decision(True, 0, int(b.tokens))
            return Decision(False, max(1, math.ceil((1.0 - b.tokens) / self.rate)), 0)

    def blocked_for(self, key: str) -> int:
        """Seconds until `key`'s bucket holds a token again (0: a token is available). Takes none."""
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                return 0
            tokens = min(self.capacity, b.tokens + (now - b.updated) * self.rate)
            if tokens >= 1.0:
                if tokens >= self.capacity:  # full again: forget it (keeps the table small)
                    del self._buckets[key]
                return 0
            return max(1, math.ceil((1.0 - tokens) / self.rate))
