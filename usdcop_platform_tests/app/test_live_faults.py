"""Faults of the live path with real outages (a TCP proxy in front of PostgreSQL/Redis that the
test takes down), through the path the live asset runs (LiveCycle.process, one transaction per
bar): the bar is retried and lands exactly once; a dead Redis only costs the cache."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from usdcop_platform.adapters.cache import FeatureCache
from usdcop_platform.adapters.store import DatabaseUnavailable, clear_store_cache
from usdcop_platform.bench.live import DriverTap
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, TcpProxy, make_world


@pytest.fixture
def pg_proxy(postgres_url):
    proxy = TcpProxy("127.0.0.1", 5432).start()
    yield proxy, postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    proxy.stop()
    clear_store_cache()


@contextlib.contextmanager
def database_down_at_the_write(proxy: TcpProxy, down_s: float | None, store: Any) -> Iterator[list[float]]:
    """Take PostgreSQL down just as the bar's write statement (the CTE: journal, state, signals)
    reaches the driver, the first time only; bring it back `down_s` later (None: left down).
    Yields the instants it went down. The bar's statements run on the DBAPI cursor, so the tap is
    the driver's (the store's pool is reopened through it)."""
    cuts: list[float] = []
    timers: list[threading.Timer] = []

    def before(_connection: int, statement: Any, _params: Any) -> None:
        if not cuts and isinstance(statement, str) and statement.lstrip().upper().startswith("WITH"):
            cuts.append(time.monotonic())
            proxy.stop()
            if down_s is not None:
                timers.append(threading.Timer(down_s, proxy.start))
                timers[-1].start()

    tap = DriverTap(store.url, before).install()
    store.dispose()
    try:
        yield cuts
    finally:
        tap.remove()
        for t in timers:
            t.join()


def test_database_down_during_signal_write_is_retried_then_written_once(tmp_path, pg_proxy):
    proxy, url = pg_proxy
    world = make_world(tmp_path, url)
    cycle = world.cycle()
    bars = world.session_bars()[:3]
    cycle.process(bars[0])
    with database_down_at_the_write(proxy, 1.5, world.store) as cuts:
        res = cycle.process(bars[1])
        assert cuts and time.monotonic() - cuts[0] >= 1.4, "the bar waited for the database to come back"
    assert not res.duplicate and [r["bar_time"] for r in res.signals] == [bars[1].time]
    rows = world.store.signals.list(session_date=LIVE_SESSION)
    assert [r["bar_time"] for r in rows] == [bars[0].time, bars[1].time]
    assert world.store.risk.load("live")["last_bar"] == bars[1].time.isoformat()
    assert world.store.journal.bars("live") == [bars[0].time, bars[1].time]
    # the run retried after an ack was lost: the stored signals come back, nothing is written twice
    again = world.cycle().process(bars[1])
    assert again.duplicate and [r["id"] for r in again.signals] == [r["id"] for r in res.signals]
    assert world.store.signals.count(LIVE_SESSION) == 2 and len(world.store.journal.bars("live")) == 2


def test_database_down_when_the_bar_arrives(tmp_path, pg_proxy):
    proxy, url = pg_proxy
    world = make_world(tmp_path, url)
    cycle = world.cycle()
    bars = world.session_bars()[:3]
    cycle.process(bars[0])
    proxy.stop()
    restart = threading.Timer(1.5, proxy.start)
    restart.start()
    res = cycle.process(bars[1])  # the whole bar transaction is retried until the database is back
    restart.join()
    assert not res.duplicate and [r["bar_time"] for r in res.signals] == [bars[1].time]
    cycle.process(bars[2])
    rows = world.store.signals.list(session_date=LIVE_SESSION)
    assert [r["bar_time"] for r in rows] == [b.time for b in bars]
    from usdcop_platform.app.replay import replay_session

    assert replay_session(world.cfg, world.calendar, world.lake, world.store, LIVE_SESSION).matched


def test_outage_longer_than_the_budget_fails_the_run_and_the_rerun_writes_once(tmp_path, pg_proxy):
    proxy, url = pg_proxy
    world = make_world(tmp_path, url)
    cycle = world.cycle()
    cycle.write_budget_s = 0.5
    bars = world.session_bars()[:2]
    cycle.process(bars[0])
    with database_down_at_the_write(proxy, None, world.store), pytest.raises(DatabaseUnavailable):
        cycle.process(bars[1])
    proxy.start()
    assert world.store.signals.count(LIVE_SESSION) == 1, "nothing of the failed bar was written"
    rerun = world.cycle()  # Dagster's retry policy re-runs the bar in a fresh step
    res = rerun.process(bars[1])
    assert not res.duplicate
    assert world.store.signals.count(LIVE_SESSION) == 2
    assert world.store.journal.load("live", bars[1].time) is not None


def test_sqlite_write_lock_held_by_another_writer(tmp_path):
    import sqlite3

    db = tmp_path / "db.sqlite"
    world = make_world(tmp_path, f"sqlite:///{db.as_posix()}")
    cycle = world.cycle()
    bars = world.session_bars()[:2]
    cycle.process(bars[0])
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a while
    release = threading.Timer(1.0, lambda: other.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    res = cycle.process(bars[1])  # the bar's transaction (BEGIN IMMEDIATE) waits for the lock
    assert time.monotonic() - t0 >= 0.9
    release.join()
    other.close()
    assert not res.duplicate and world.store.signals.count(LIVE_SESSION) == 2
    clear_store_cache()


def test_redis_down_the_live_path_keeps_going(tmp_path, redis_url):
    world = make_world(tmp_path, f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}")
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    proxy = TcpProxy(host, int(port)).start()
    try:
        cache = FeatureCache(f"redis://127.0.0.1:{proxy.port}/15", ttl_seconds=300, history_size=60,
                             namespace=f"usdcop:test:{tmp_path.name}", retry_after_seconds=0.2)
        cycle = world.cycle(cache)
        bars = world.session_bars()[:4]
        cycle.process(bars[0])
        assert cache.stats()["backend"] == "redis" and cache.latest().bar_time == bars[0].time
        proxy.stop()
        cycle.reset_features()  # a fresh run: resumes from the cache's memory mirror
        res = cycle.process(bars[1])
        assert res.pending.feature_source == "cache"
        assert cache.stats()["backend"] == "memory-fallback" and cache.stats()["redis_errors"] >= 1
        proxy.start()
        time.sleep(0.25)
        cycle.process(bars[2])
        assert cache.stats()["backend"] == "redis"
        assert world.store.signals.count(LIVE_SESSION) == 3
    finally:
        proxy.stop()
        clear_store_cache()


def test_redis_never_reachable(tmp_path):
    world = make_world(tmp_path, f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}")
    cache = FeatureCache("redis://127.0.0.1:1/0", ttl_seconds=300, history_size=60)
    cycle = world.cycle(cache)
    for b in world.session_bars()[:2]:
        cycle.process(b)
    assert world.store.signals.count(LIVE_SESSION) == 2 and cache.stats()["backend"] == "memory-fallback"
    clear_store_cache()
