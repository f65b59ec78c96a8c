"""One typed Settings object, read from environment variables. Secrets come only from here."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from usdcop_platform.contracts.platform import PlatformConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"  # `mlflow ui` and the compose service
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"  # `dagster dev` and the compose webserver


DATABASE_PASSWORD_ENV = "DATABASE_PASSWORD"


def url_with_password(url: str, password: str | None) -> str:
    """`url` with `password` as its password; None: `url` without any password (safe to show)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    parsed = parsed.set(password=password) if password is not None else parsed._replace(password=None)  # set(None) keeps it
    return parsed.render_as_string(hide_password=False)


def _ui_url(explicit: str | None, server: str | None, default: str) -> str:
    if explicit:
        return explicit.rstrip("/")
    if server and server.startswith(("http://", "https://")):
        return server.rstrip("/")
    return default


class Settings(BaseSettings):
    """Environment-driven settings. Defaults give the embedded single-laptop setup."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # where things live
    data_dir: Path = Field(default=PROJECT_ROOT / ".usdcop" / "lake", alias="USDCOP_DATA_DIR")
    models_dir: Path = Field(default=PROJECT_ROOT / "models", alias="USDCOP_MODELS_DIR")
    config_dir: Path = Field(default=PROJECT_ROOT / "config", alias="USDCOP_CONFIG_DIR")
    state_dir: Path = Field(default=PROJECT_ROOT / ".usdcop", alias="USDCOP_STATE_DIR")

    # storage and services
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    # The database password on its own (compose passes POSTGRES_PASSWORD here), so DATABASE_URL and
    # the Dagster resource config that shows it carry no secret; it wins over a password in the URL.
    database_password: SecretStr | None = Field(default=None, alias=DATABASE_PASSWORD_ENV)
    mlflow_tracking_uri: str | None = Field(default=None, alias="MLFLOW_TRACKING_URI")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    dagster_home: Path | None = Field(default=None, alias="DAGSTER_HOME")
    dagster_webserver_url: str | None = Field(default=None, alias="USDCOP_DAGSTER_URL")
    # Browser links between the UIs: Dagster asset metadata -> MLflow run, MLflow run tags -> Dagster run.
    # Unset: the http(s) tracking URI / USDCOP_DAGSTER_URL (a server is its own UI), else the local defaults.
    mlflow_ui_url: str | None = Field(default=None, alias="USDCOP_MLFLOW_UI_URL")
    dagster_ui_url: str | None = Field(default=None, alias="USDCOP_DAGSTER_UI_URL")
    # Ray cluster the search/training tasks join (read by Ray itself too); unset = a local Ray instance
    ray_address: str | None = Field(default=None, alias="RAY_ADDRESS")

    # data sources
    market_source: Literal["synthetic", "file", "twelvedata"] = Field(
        default="synthetic", alias="USDCOP_MARKET_SOURCE"
    )
    macro_source: Literal["synthetic", "file", "fred"] = Field(default="synthetic", alias="USDCOP_MACRO_SOURCE")
    bars_file: Path | None = Field(default=None, alias="USDCOP_BARS_FILE")
    macro_file: Path | None = Field(default=None, alias="USDCOP_MACRO_FILE")
    synthetic_seed: int = Field(default=42, alias="USDCOP_SYNTHETIC_SEED")
    # Planted edge of the synthetic market (core.synthetic.PlantedEdge strength: per-bar drift sd /
    # bar vol). 0 = a market with no edge; the demo plants one so a newcomer sees a model learn.
    synthetic_edge: float = Field(default=0.0, ge=0, le=5, alias="USDCOP_SYNTHETIC_EDGE")
    twelvedata_api_key: SecretStr | None = Field(default=None, alias="TWELVEDATA_API_KEY")
    twelvedata_base_url: str = Field(default="https://api.twelvedata.com", alias="TWELVEDATA_BASE_URL")
    fred_api_key: SecretStr | None = Field(default=None, alias="FRED_API_KEY")
    fred_base_url: str = Field(default="https://api.stlouisfed.org", alias="FRED_BASE_URL")

    # API sidecar
    api_host: str = Field(default="127.0.0.1", alias="USDCOP_API_HOST")
    api_port: int = Field(default=8000, alias="USDCOP_API_PORT")
    api_public_url: str | None = Field(default=None, alias="USDCOP_API_PUBLIC_URL")
    cors_origins: str = Field(default="http://localhost:8000,http://127.0.0.1:8000", alias="USDCOP_CORS_ORIGINS")
    write_rate_limit_per_minute: int = Field(default=60, alias="USDCOP_WRITE_RATE_LIMIT")
    # Largest request body accepted (413 above it, before parsing). The largest legitimate body is a
    # full /v1/inference/batch: 256 observations x 15 floats, ~100 kB even at 17 significant digits.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, alias="USDCOP_MAX_BODY_BYTES")
    # Failed logins allowed per client IP and per key prefix per minute (429 beyond, no key lookup).
    auth_failures_per_minute: int = Field(default=20, ge=1, alias="USDCOP_AUTH_FAILURES_PER_MINUTE")
    alert_webhook_url: str | None = Field(default=None, alias="USDCOP_ALERT_WEBHOOK_URL")

    @field_validator("mlflow_ui_url", "dagster_ui_url")
    @classmethod
    def _browser_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s):// URL a browser can open, got {value!r}")
        return value or None

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL with DATABASE_PASSWORD as its password, or the embedded SQLite file under the state dir."""
        url = self.database_url or f"sqlite:///{(self.state_dir / 'usdcop.db').as_posix()}"
        if self.database_password is None:
            return url
        return url_with_password(url, self.database_password.get_secret_value())

    @property
    def public_database_url(self) -> str:
        """The database URL without its password: what configs, logs and UIs may show."""
        return url_with_password(self.resolved_database_url, None)

    @property
    def resolved_mlflow_uri(self) -> str:
        """MLFLOW_TRACKING_URI, or a local sqlite:/// store (MLflow 3 refuses the file store)."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.state_dir / 'mlflow.db').as_posix()}"

    @property
    def resolved_mlflow_ui_url(self) -> str:
        """Where a browser opens MLflow: USDCOP_MLFLOW_UI_URL, an http(s) tracking server, or `mlflow ui`'s port."""
        return _ui_url(self.mlflow_ui_url, self.mlflow_tracking_uri, DEFAULT_MLFLOW_UI_URL)

    @property
    def resolved_dagster_ui_url(self) -> str:
        """Where a browser opens Dagster: USDCOP_DAGSTER_UI_URL, USDCOP_DAGSTER_URL, or `dagster dev`'s port."""
        return _ui_url(self.dagster_ui_url, self.dagster_webserver_url, DEFAULT_DAGSTER_UI_URL)

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def resolved_dagster_home(self) -> Path:
        return self.dagster_home or (self.state_dir / "dagster_home")

    @property
    def public_api_url(self) -> str:
        return self.api_public_url or f"http://{self.api_host}:{self.api_port}"

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def as_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` (an environment) with these settings in it, so a child process's get_settings()
        equals this one; variables of unset fields are removed."""
        env = dict(base)
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            alias = field.alias or name
            env.pop(alias, None)
            env.pop(alias.upper(), None)
            if value is not None:
                env[alias] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def platform_config(settings: Settings | None = None) -> "PlatformConfig":
    """The typed config of `settings.config_dir` (USDCOP_CONFIG_DIR): what definitions, partitions and
    sensors are built with. Never `get_config()` bare: that is the repo's config/ whatever the env says."""
    from usdcop_platform.contracts.platform import get_config

    # A fresh Settings, not get_settings(): modules call this at import, and caching the whole
    # environment then would freeze every other setting (seed, URLs) before a caller sets it.
    return get_config(str((settings or Settings()).config_dir))
