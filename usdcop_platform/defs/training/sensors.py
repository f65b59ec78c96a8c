"""Keeps the dynamic "experiments" partitions in step with config/experiments/*.yaml."""


import dagster as dg

from usdcop_platform.app.experiments import missing_experiment_keys
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.resources import PlatformResource

SENSOR_INTERVAL_SECONDS = 60


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
