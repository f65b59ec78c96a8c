"""Shared fixtures. PostgreSQL/Redis tests use the real servers; without them they skip with a
reason, unless USDCOP_REQUIRE_SERVICES=1 (set by .ci/run), which turns that skip into a failure."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
REAL_BARS = SHARED_DATA / "usdcop_m5_ohlcv_2020_2024.csv.gz"
REAL_MACRO = SHARED_DATA / "macro_indicators_daily_to_2024.csv.gz"

POSTGRES_URL = os.environ.get("USDCOP_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
# one Redis database per pytest-xdist worker (gw0 -> 15, gw1 -> 14, ...) so flushes never collide
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("USDCOP_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{15 - _WORKER % 15}")
REQUIRE_SERVICES = os.environ.get("USDCOP_REQUIRE_SERVICES") == "1"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    msg = f"{service} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg} and USDCOP_REQUIRE_SERVICES=1 (CI) forbids skipping")
    pytest.skip(f"{msg}; start it to run this test")


def _need_file(path: Path) -> None:
    if path.exists():
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"real data file {path} is missing and USDCOP_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(f"real data file {path} not present (../shared/data)")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the real server, dropped afterwards."""
    _need("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'test.db').as_posix()}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test on both SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'test.db').as_posix()}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def redis_url() -> Iterator[str]:
    _need("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def real_bars_path() -> Path:
    _need_file(REAL_BARS)
    return REAL_BARS


@pytest.fixture(scope="session")
def real_macro_path() -> Path:
    _need_file(REAL_MACRO)
    return REAL_MACRO


@pytest.fixture(scope="session")
def platform_config():
    from usdcop_platform.contracts.platform import load_platform_config

    return load_platform_config()


@pytest.fixture(scope="session")
def calendar(platform_config):
    from usdcop_platform.core.calendar import TradingCalendar

    return TradingCalendar(platform_config.instrument)


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing every store at tmp_path (lake, SQLite, MLflow, models)."""
    from usdcop_platform.settings import Settings, get_settings

    monkeypatch.setenv("USDCOP_DATA_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("USDCOP_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("USDCOP_STATE_DIR", str(tmp_path / "state"))
    for var in ("DATABASE_URL", "MLFLOW_TRACKING_URI", "REDIS_URL", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()
