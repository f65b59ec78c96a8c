"""The dynamic "experiments" partitions kept in step with config/experiments/*.yaml: the sensor of
the training domain and every CLI path that launches an experiment run (train, tune, evaluate, run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from usdcop_platform.contracts.assets import EXPERIMENT_PARTITIONS
from usdcop_platform.contracts.platform import load_platform_config


class DynamicPartitionStore(Protocol):
    """What a Dagster instance offers for dynamic partitions (dg.DagsterInstance satisfies it)."""

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]: ...

    def add_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> None: ...


def missing_experiment_keys(instance: DynamicPartitionStore, config_dir: str) -> list[str]:
    """Experiment names in config/ (read fresh: the YAML may have changed) without a partition."""
    names = sorted(load_platform_config(config_dir).experiments)
    existing = set(instance.get_dynamic_partitions(EXPERIMENT_PARTITIONS))
    return [n for n in names if n not in existing]


def ensure_experiment_partitions(instance: DynamicPartitionStore, config_dir: str) -> list[str]:
    """Add the missing experiment partition keys directly (CLI / demo path); returns them."""
    missing = missing_experiment_keys(instance, config_dir)
    if missing:
        instance.add_dynamic_partitions(EXPERIMENT_PARTITIONS, missing)
    return missing
