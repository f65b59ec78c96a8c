"""Shared Dagster resources, defined once and imported (two objects under one key break merges).

`platform` gives every asset the typed config, the calendar, the parquet lake, the SQL store and
the models dir, all from Settings (env vars). Domain resources (sources, MLflow, cache) are
registered here too so every key has exactly one definition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.tracking import MlflowTracking
from usdcop_platform.contracts.platform import PlatformConfig, get_config
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.settings import DATABASE_PASSWORD_ENV, Settings, get_settings, url_with_password


class PlatformResource(dg.ConfigurableResource):
    """Paths and URLs of the platform's storage; defaults come from Settings (env vars)."""

    data_dir: str
    models_dir: str
    config_dir: str
    database_url: str  # without its password: the Dagster UI shows resource config
    state_dir: str
    # dg.EnvVar(DATABASE_PASSWORD) when the environment has one: resolved in the run, never in the config
    database_password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "PlatformResource":
        s = settings or get_settings()
        return cls(
            data_dir=str(s.data_dir),
            models_dir=str(s.models_dir),
            config_dir=str(s.config_dir),
            database_url=s.public_database_url,
            state_dir=str(s.state_dir),
            database_password=dg.EnvVar(DATABASE_PASSWORD_ENV) if s.database_password is not None else None,
        )

    @property
    def sql_url(self) -> str:
        """The URL the store connects with: the password joins here, from the environment."""
        password = self.database_password
        if isinstance(password, dg.EnvVar):  # outside a Dagster run (CLI, tests): read it now
            password = password.get_value()
        if password:
            return url_with_password(self.database_url, password)
        env = get_settings()
        if env.public_database_url == self.database_url:  # a password written into DATABASE_URL itself
            return env.resolved_database_url
        return self.database_url

    @property
    def config(self) -> PlatformConfig:
        return get_config(self.config_dir)

    @property
    def calendar(self) -> TradingCalendar:
        return TradingCalendar(self.config.instrument)

    @property
    def lake(self) -> ParquetLake:
        return ParquetLake(self.data_dir)

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir)

    def store(self) -> Any:
        """The SQL store (migrated to head on first use in this process)."""
        from usdcop_platform.adapters.store import get_store

        return get_store(self.sql_url)


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Every resource key of the code location, built from settings."""
    s = settings or get_settings()
    resources: dict[str, Any] = {"platform": PlatformResource.from_settings(s)}
    for extra in _DOMAIN_RESOURCE_BUILDERS:
        resources.update(extra(s))
    return resources


# Domain modules append builders: (Settings) -> {resource_key: resource}.
_DOMAIN_RESOURCE_BUILDERS: list[Any] = []


class MlflowResource(dg.ConfigurableResource, MlflowTracking):
    """Resource key "mlflow": the MLflow adapter (adapters.tracking.MlflowTracking: its fields and
    methods) as a Dagster resource, so its configuration shows in the UI. Nothing else."""


def _mlflow_resources(s: Settings) -> dict[str, Any]:
    """The "mlflow" resource: tracking URI and artifact root from settings (training domain)."""
    return {"mlflow": MlflowResource.from_settings(s)}


_DOMAIN_RESOURCE_BUILDERS.append(_mlflow_resources)


def _alerts_resources(s: Settings) -> dict[str, Any]:
    """The "alerts" resource: the alert webhook URL from settings (monitoring domain)."""
    from usdcop_platform.defs.monitoring.resources import alerts_resources

    return alerts_resources(s)


_DOMAIN_RESOURCE_BUILDERS.append(_alerts_resources)


def _live_resources(s: Settings) -> dict[str, Any]:
    """The "live_feed" (market source the live sensor polls) and "feature_cache" resources (live domain)."""
    from usdcop_platform.defs.live.resources import live_resources

    return live_resources(s)


_DOMAIN_RESOURCE_BUILDERS.append(_live_resources)


def _market_data_resources(s: Settings) -> dict[str, Any]:
    """The "market_source" and "macro_source" resources (market_data domain)."""
    from usdcop_platform.defs.market_data.resources import build_source_resources

    return build_source_resources(s)


_DOMAIN_RESOURCE_BUILDERS.append(_market_data_resources)
