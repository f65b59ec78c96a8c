"""Typed models of config/, the single source of truth."""

from usdcop_platform.contracts.errors import ConfigError
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.contracts.platform import PlatformConfig, get_config, load_platform_config

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "FeatureContract",
    "PlatformConfig",
    "get_config",
    "load_platform_config",
]
