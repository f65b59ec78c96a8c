"""Feature cache: the newest observations by bar time, in Redis with an in-memory fallback.

Layout in Redis (namespace `ns`, default "usdcop:features"):

    {ns}:bar:{bar_iso}   JSON entry of one bar, expires after `ttl_seconds`
    {ns}:latest          JSON entry of the newest bar put, same TTL
    {ns}:history         list of JSON entries, newest first, trimmed to `history_size`, same TTL

An entry is {"bar_time": ISO UTC, "features": [15 floats], "meta": {...}}. Floats go through
JSON's shortest round-trip repr, so a cached vector is bit-identical to the one put.

Every put also goes to a process-local memory mirror (same TTL and bound). When Redis is
unreachable (refused, timeout) the cache serves from the mirror and retries Redis after
`retry_after_seconds`; the caller never sees a Redis error. Hit/miss counts and the backend in use
are in `stats()`.

Defaults: the TTL is one bar interval (a feature vector older than one bar is no longer the
newest one) and the history is one session of bars; `build_feature_cache` derives both from the
instrument config.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import numpy as np

# Connect/read timeout for Redis calls: the live path must not stall on a dead cache.
REDIS_SOCKET_TIMEOUT_S: Final = 0.25
# After a Redis failure, serve from memory this long before trying Redis again.
REDIS_RETRY_AFTER_S: Final = 5.0
DEFAULT_NAMESPACE: Final = "usdcop:features"


@dataclass(frozen=True)
class CachedFeatures:
    bar_time: datetime
    features: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "bar_time": self.bar_time.astimezone(timezone.utc).isoformat(),
            "features": [float(x) for x in self.features],
            "meta": self.meta,
        }, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "CachedFeatures":
        d = json.loads(raw)
        return cls(datetime.fromisoformat(d["bar_time"]), np.asarray(d["features"], dtype=np.float64), d.get("meta", {}))


def _bar_key(bar_time: datetime) -> str:
    if bar_time.tzinfo is None:
        raise ValueError(f"naive bar time {bar_time!r}: pass a timezone-aware instant")
    return bar_time.astimezone(timezone.utc).isoformat()


class _MemoryBackend:
    """Bounded TTL store: the fallback and the mirror of the last puts."""

    def __init__(self, ttl_seconds: float, history_size: int) -> None:
        self.ttl, self.size = ttl_seconds, history_size
        self._bars: OrderedDict[str, tuple[float, CachedFeatures]] = OrderedDict()
        self._history: deque[tuple[float, CachedFeatures]] = deque(maxlen=history_size)

    def put(self, entry: CachedFeatures, now: float) -> None:
        key = _bar_key(entry.bar_time)
        self._bars[key] = (now + self.ttl, entry)
        self._bars.move_to_end(key)
        while len(self._bars) > self.size:
            self._bars.popitem(last=False)
        self._history.appendleft((now + self.ttl, entry))

    def get(self, bar_time: datetime, now: float) -> CachedFeatures | None:
        hit = self._bars.get(_bar_key(bar_time))
        return hit[1] if hit and hit[0] > now else None

    def latest(self, now: float) -> CachedFeatures | None:
        return self._history[0][1] if self._history and self._history[0][0] > now else None

    def history(self, n: int, now: float) -> list[CachedFeatures]:
        return [e for exp, e in list(self._history)[:n] if exp > now]

    def clear(self) -> None:
        self._bars.clear()
        self._history.clear()


class FeatureCache:
    """Thread-safe feature cache (Redis when reachable, memory otherwise) with hit/miss stats."""

    def __init__(
        self,
        redis_url: str | None,
        ttl_seconds: float,
        history_size: int,
        namespace: str = DEFAULT_NAMESPACE,
        retry_after_seconds: float = REDIS_RETRY_AFTER_S,
    ) -> None:
        if ttl_seconds <= 0 or history_size < 1:
            raise ValueError("ttl_seconds must be > 0 and history_size >= 1")
        self.redis_url, self.ttl, self.history_size, self.ns = redis_url, ttl_seconds, history_size, namespace
        self.retry_after = retry_after_seconds
        self._memory = _MemoryBackend(ttl_seconds, history_size)
        self._lock = threading.Lock()
        self._client: Any = None
        self._down_until = 0.0
        self._stats = {"hits": 0, "misses": 0, "puts": 0, "redis_errors": 0, "fallback_ops": 0}
        self.last_error: str | None = None
        if redis_url:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._redis_errors: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError,
                                                                   redis.exceptions.TimeoutError)
            self._client = redis.Redis.from_url(
                redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0), health_check_interval=0,
            )
        else:
            self._redis_errors = ()

    # ---- backend selection ---------------------------------------------------------------
    def _redis(self) -> Any:
        """The Redis client when it should be tried now, else None (memory)."""
        if self._client is None or time.monotonic() < self._down_until:
            return None
        return self._client

    def _failed(self, exc: BaseException) -> None:
        self._stats["redis_errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_until = time.monotonic() + self.retry_after

    @property
    def backend(self) -> str:
        if self._client is None:
            return "memory"
        return "memory-fallback" if time.monotonic() < self._down_until else "redis"

    def _k(self, suffix: str) -> str:
        return f"{self.ns}:{suffix}"

    # ---- operations ----------------------------------------------------------------------
    def put(self, bar_time: datetime, features: np.ndarray, meta: dict[str, Any] | None = None) -> CachedFeatures:
        entry = CachedFeatures(bar_time, np.asarray(features, dtype=np.float64).copy(), dict(meta or {}))
        raw = entry.to_json()
        with self._lock:
            self._stats["puts"] += 1
            self._memory.put(entry, time.monotonic())
            client = self._redis()
            if client is None:
                self._stats["fallback_ops"] += int(self._client is not None)
                return entry
            try:
                ttl_ms = int(self.ttl * 1000)
                pipe = client.pipeline(transaction=True)
                pipe.set(self._k(f"bar:{_bar_key(bar_time)}"), raw, px=ttl_ms)
                pipe.set(self._k("latest"), raw, px=ttl_ms)
                pipe.lpush(self._k("history"), raw)
                pipe.ltrim(self._k("history"), 0, self.history_size - 1)
                pipe.pexpire(self._k("history"), ttl_ms)
                pipe.execute()
            except self._redis_errors as exc:
                self._failed(exc)
        return entry

    def _read(self, redis_op: Any, memory_op: Any) -> Any:
        client = self._redis()
        if client is not None:
            try:
                return redis_op(client)
            except self._redis_errors as exc:
                self._failed(exc)
        if self._client is not None:
            self._stats["fallback_ops"] += 1
        return memory_op(time.monotonic())

    def _count(self, found: bool) -> None:
        self._stats["hits" if found else "misses"] += 1

    def get(self, bar_time: datetime) -> CachedFeatures | None:
        """The cached entry of one bar, or None (a miss)."""
        def from_redis(c: Any) -> CachedFeatures | None:
            raw = c.get(self._k(f"bar:{_bar_key(bar_time)}"))
            return CachedFeatures.from_json(raw) if raw else None

        with self._lock:
            out = self._read(from_redis, lambda now: self._memory.get(bar_time, now))
            self._count(out is not None)
            return out

    def latest(self) -> CachedFeatures | None:
        def from_redis(c: Any) -> CachedFeatures | None:
            raw = c.get(self._k("latest"))
            return CachedFeatures.from_json(raw) if raw else None

        with self._lock:
            out = self._read(from_redis, self._memory.latest)
            self._count(out is not None)
            return out

    def history(self, n: int | None = None) -> list[CachedFeatures]:
        """Newest first, at most `history_size` entries."""
        n = min(n or self.history_size, self.history_size)

        def from_redis(c: Any) -> list[CachedFeatures]:
            return [CachedFeatures.from_json(r) for r in c.lrange(self._k("history"), 0, n - 1)]

        with self._lock:
            return self._read(from_redis, lambda now: self._memory.history(n, now))

    def clear(self) -> None:
        with self._lock:
            self._memory.clear()
            client = self._redis()
            if client is not None:
                try:
                    keys = list(client.scan_iter(match=self._k("*")))
                    if keys:
                        client.delete(*keys)
                except self._redis_errors as exc:
                    self._failed(exc)

    def ping(self) -> bool:
        """True when Redis answers now (always False for a memory-only cache)."""
        if self._client is None:
            return False
        try:
            ok = bool(self._client.ping())
        except self._redis_errors as exc:
            with self._lock:
                self._failed(exc)
            return False
        with self._lock:
            self._down_until = 0.0
        return ok

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = dict(self._stats)
            lookups = s["hits"] + s["misses"]
            return {
                **s,
                "hit_rate": s["hits"] / lookups if lookups else None,
                "backend": self.backend,
                "redis_configured": self._client is not None,
                "ttl_seconds": self.ttl,
                "history_size": self.history_size,
                "last_error": self.last_error,
            }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def build_feature_cache(redis_url: str | None, bar_minutes: int, bars_per_session: int,
                        namespace: str = DEFAULT_NAMESPACE) -> FeatureCache:
    """The platform's cache: TTL one bar interval (300 s for 5-minute bars), one session of history."""
    return FeatureCache(redis_url, ttl_seconds=bar_minutes * 60, history_size=bars_per_session, namespace=namespace)
