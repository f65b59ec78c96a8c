"""The asset keys of the graph, as paths: the one home shells share without importing each other.

defs/ builds its dg.AssetKey from these; the CLI, the API and the benchmarks look runs and
materializations up by them (through usdcop_platform.definitions when they launch runs)."""

from __future__ import annotations

from typing import Final

AssetPath = tuple[str, ...]

RAW_BARS: Final[AssetPath] = ("raw", "usdcop_m5_ohlcv")
RAW_MACRO: Final[AssetPath] = ("raw", "macro_daily")
FEATURES: Final[AssetPath] = ("features", "m5_features")
DATASET: Final[AssetPath] = ("datasets", "experiment_dataset")
MODEL: Final[AssetPath] = ("models", "ppo_policy")
SEARCH: Final[AssetPath] = ("models", "search")
WALK_FORWARD: Final[AssetPath] = ("evaluation", "walk_forward")
BACKTEST: Final[AssetPath] = ("evaluation", "backtest")
PROPOSAL: Final[AssetPath] = ("evaluation", "promotion_proposal")
LIVE_BAR: Final[AssetPath] = ("live", "bar")
LIVE_FEATURES: Final[AssetPath] = ("live", "features")
LIVE_SIGNAL: Final[AssetPath] = ("live", "trading_signal")
FEATURE_DRIFT: Final[AssetPath] = ("monitoring", "feature_drift")
REALIZED_PERFORMANCE: Final[AssetPath] = ("monitoring", "realized_performance")
SHADOW_AB: Final[AssetPath] = ("monitoring", "shadow_ab_report")
SHADOW_SIGNALS: Final[AssetPath] = ("monitoring", "shadow_signals")

# The dynamic partitions of the experiment assets: one key per config/experiments/*.yaml.
EXPERIMENT_PARTITIONS: Final[str] = "experiments"


def key_string(path: AssetPath) -> str:
    """"raw/usdcop_m5_ohlcv": how Dagster's UI and metadata lookups spell a key."""
    return "/".join(path)
