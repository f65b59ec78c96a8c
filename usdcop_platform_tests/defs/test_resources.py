"""The database password is a secret: never in the resource config the Dagster UI shows, joined at run time."""

from __future__ import annotations

import dagster as dg
import pytest

from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import Settings, get_settings

PG = "postgresql+psycopg2://usdcop@postgres:5432/usdcop"


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", PG)
    monkeypatch.setenv("DATABASE_PASSWORD", "s3cr@t/pw")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_password_is_an_env_var_in_the_resource_config(pg_env: None) -> None:
    res = PlatformResource.from_settings(Settings())
    assert res.database_url == PG and "s3cr" not in repr(res)
    assert isinstance(res.database_password, dg.EnvVar) and res.database_password.env_var_name == "DATABASE_PASSWORD"
    # outside a run (CLI, tests) the password is read from the environment when the store connects
    assert res.sql_url == "postgresql+psycopg2://usdcop:s3cr%40t%2Fpw@postgres:5432/usdcop"
    assert Settings().resolved_database_url == res.sql_url


def test_dagster_resolves_the_password_in_the_run(pg_env: None) -> None:
    seen: list[str] = []

    @dg.asset
    def probe(platform: PlatformResource) -> None:
        seen.append(platform.sql_url)

    assert dg.materialize([probe], resources={"platform": PlatformResource.from_settings(Settings())}).success
    assert seen == ["postgresql+psycopg2://usdcop:s3cr%40t%2Fpw@postgres:5432/usdcop"]


def test_a_password_inside_database_url_stays_out_of_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://usdcop:inline@postgres:5432/usdcop")
    monkeypatch.delenv("DATABASE_PASSWORD", raising=False)
    get_settings.cache_clear()
    try:
        res = PlatformResource.from_settings(Settings())
        assert res.database_url == PG and res.database_password is None and "inline" not in repr(res)
        assert res.sql_url == "postgresql+psycopg2://usdcop:inline@postgres:5432/usdcop"
    finally:
        get_settings.cache_clear()


def test_sqlite_default_is_unchanged(isolated_settings: Settings) -> None:
    res = PlatformResource.from_settings(isolated_settings)
    assert res.database_password is None
    assert res.sql_url == res.database_url == isolated_settings.resolved_database_url
    assert res.database_url.startswith("sqlite:///")
