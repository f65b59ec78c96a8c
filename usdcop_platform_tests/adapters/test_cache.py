"""Feature cache against the real Redis: TTL, latest + bounded history, fallback when Redis dies."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from usdcop_platform.adapters.cache import FeatureCache, build_feature_cache
from usdcop_platform_tests.defs.live_support import TcpProxy

T0 = datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc)


def _vec(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.normal(size=15)


def test_put_get_latest_history_bit_exact(redis_url):
    cache = FeatureCache(redis_url, ttl_seconds=300, history_size=3)
    for i in range(5):
        cache.put(T0 + timedelta(minutes=5 * i), _vec(i), {"i": i})
    got = cache.get(T0 + timedelta(minutes=20))
    assert got is not None and np.array_equal(got.features, _vec(4)) and got.meta == {"i": 4}
    assert cache.latest().bar_time == T0 + timedelta(minutes=20)
    hist = cache.history()
    assert [h.meta["i"] for h in hist] == [4, 3, 2]  # bounded, newest first
    assert cache.get(T0 + timedelta(hours=9)) is None
    s = cache.stats()
    assert s["backend"] == "redis" and s["hits"] == 2 and s["misses"] == 1 and s["hit_rate"] == pytest.approx(2 / 3)
    import redis

    r = redis.Redis.from_url(redis_url)
    ttl = r.ttl("usdcop:features:latest")
    assert 0 < ttl <= 300
    assert r.llen("usdcop:features:history") == 3


def test_ttl_expiry_in_redis_and_memory(redis_url):
    cache = FeatureCache(redis_url, ttl_seconds=0.3, history_size=5)
    cache.put(T0, _vec(0))
    assert cache.get(T0) is not None
    time.sleep(0.45)
    assert cache.get(T0) is None and cache.latest() is None
    mem = FeatureCache(None, ttl_seconds=0.3, history_size=5)
    mem.put(T0, _vec(0))
    time.sleep(0.45)
    assert mem.get(T0) is None and mem.stats()["backend"] == "memory"


def test_redis_unreachable_falls_back_to_memory():
    # A port nobody listens on: the real refusal, not a mock.
    cache = FeatureCache("redis://127.0.0.1:1/0", ttl_seconds=300, history_size=4)
    t0 = time.perf_counter()
    cache.put(T0, _vec(1))
    got = cache.get(T0)
    assert got is not None and np.array_equal(got.features, _vec(1))
    assert time.perf_counter() - t0 < 1.0, "a dead Redis must not stall the caller"
    s = cache.stats()
    assert s["backend"] == "memory-fallback" and s["redis_errors"] == 1 and s["hits"] == 1
    assert "ConnectionError" in s["last_error"]


def test_redis_goes_down_and_comes_back(redis_url):
    import redis as redis_lib

    host_port = redis_url.split("//")[1].split("/")
    host, port = host_port[0].split(":")
    db = host_port[1]
    proxy = TcpProxy(host, int(port)).start()
    try:
        cache = FeatureCache(f"redis://127.0.0.1:{proxy.port}/{db}", ttl_seconds=300, history_size=4,
                             retry_after_seconds=0.2)
        cache.put(T0, _vec(0))
        assert cache.stats()["backend"] == "redis"
        proxy.stop()
        cache.put(T0 + timedelta(minutes=5), _vec(1))  # Redis gone: kept in memory
        assert cache.stats()["backend"] == "memory-fallback"
        got = cache.get(T0 + timedelta(minutes=5))
        assert got is not None and np.array_equal(got.features, _vec(1))
        proxy.start()
        time.sleep(0.25)
        cache.put(T0 + timedelta(minutes=10), _vec(2))
        assert cache.stats()["backend"] == "redis"
        direct = redis_lib.Redis.from_url(redis_url)
        assert direct.exists(f"usdcop:features:bar:{(T0 + timedelta(minutes=10)).isoformat()}")
    finally:
        proxy.stop()


def test_build_feature_cache_derives_ttl_and_history(platform_config):
    inst = platform_config.instrument
    cache = build_feature_cache(None, inst.bar_minutes, inst.bars_per_session)
    assert cache.ttl == 300 and cache.history_size == 60


def test_bad_arguments():
    with pytest.raises(ValueError):
        FeatureCache(None, ttl_seconds=0, history_size=1)
    with pytest.raises(ValueError, match="naive"):
        FeatureCache(None, ttl_seconds=1, history_size=1).put(datetime(2024, 1, 1), _vec(0))
