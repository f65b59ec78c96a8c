"""Training domain definitions: dataset and model assets (with their checks), job, sensor."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.training.assets import DATASET_KEY, MODEL_KEY, experiment_dataset, ppo_policy
from usdcop_platform.defs.training.search import model_search
from usdcop_platform.defs.training.sensors import experiment_partitions_sensor

train_experiment_job = dg.define_asset_job(
    "train_experiment_job",
    selection=dg.AssetSelection.assets(DATASET_KEY, MODEL_KEY),
    partitions_def=experiment_partitions,
    description="dataset -> PPO policy (ONNX + parity + MLflow + registry) for one experiment partition",
)

defs = dg.Definitions(
    assets=[experiment_dataset, ppo_policy, model_search],
    jobs=[train_experiment_job],
    sensors=[experiment_partitions_sensor],
)
