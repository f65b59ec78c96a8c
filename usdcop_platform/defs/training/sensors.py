"""Keeps the dynamic "experiments" partitions in step with config/experiments/*.yaml."""


import dagster as dg

from usdcop_platform.contracts.platform import load_platform_config
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import PlatformResource

SENSOR_INTERVAL_SECONDS = 60


def missing_experiment_keys(instance: dg.DagsterInstance, config_dir: str) -> list[str]:
    """Experiment names in config/ (read fresh: the YAML may have changed) without a partition."""
    names = sorted(load_platform_config(config_dir).experiments)
    existing = set(instance.get_dynamic_partitions(experiment_partitions.name))
    return [n for n in names if n not in existing]


def ensure_experiment_partitions(instance: dg.DagsterInstance, config_dir: str) -> list[str]:
    """Add the missing experiment partition keys directly (CLI / demo path); returns them."""
    missing = missing_experiment_keys(instance, config_dir)
    if missing:
        instance.add_dynamic_partitions(experiment_partitions.name, missing)
    return missing


@dg.sensor(
    name="experiment_partitions_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds an 'experiments' partition for every config/experiments/*.yaml",
)
def experiment_partitions_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    missing = missing_experiment_keys(context.instance, platform.config_dir)
    if not missing:
        return dg.SkipReason("every experiment in config/experiments has a partition")
    return dg.SensorResult(dynamic_partitions_requests=[experiment_partitions.build_add_request(missing)])
