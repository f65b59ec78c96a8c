"""Monitoring jobs, and the retraining job the trigger sensor launches."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.evaluation.assets import BACKTEST_KEY, PROPOSAL_KEY
from usdcop_platform.defs.monitoring.assets import (
    FEATURE_DRIFT_KEY,
    REALIZED_PERFORMANCE_KEY,
    SHADOW_AB_KEY,
    SHADOW_SIGNALS_KEY,
)
from usdcop_platform.defs.monitoring.checks import FRESHNESS_CHECKS
from usdcop_platform.defs.partitions import experiment_partitions
from usdcop_platform.defs.training.assets import DATASET_KEY, MODEL_KEY

# The retraining chain ends at the promotion proposal (PENDING_APPROVAL): nothing here promotes.
RETRAIN_KEYS = (DATASET_KEY, MODEL_KEY, BACKTEST_KEY, PROPOSAL_KEY)

monitoring_drift_job = dg.define_asset_job(
    "monitoring_drift_job",
    selection=dg.AssetSelection.assets(FEATURE_DRIFT_KEY),
    description="Feature drift of live observations vs the production model's train split (+ WARN check)",
)

monitoring_performance_job = dg.define_asset_job(
    "monitoring_performance_job",
    selection=dg.AssetSelection.assets(SHADOW_SIGNALS_KEY, REALIZED_PERFORMANCE_KEY, SHADOW_AB_KEY),
    description="Shadow signals catch-up, realized performance (production + shadow), degradation check, "
    "shadow A/B report",
)

monitoring_shadow_job = dg.define_asset_job(
    "monitoring_shadow_job",
    selection=dg.AssetSelection.assets(SHADOW_SIGNALS_KEY),
    description="Challenger models on the newest production observations (role shadow, never acted on)",
)

monitoring_freshness_job = dg.define_asset_job(
    "monitoring_freshness_job",
    selection=dg.AssetSelection.checks(*FRESHNESS_CHECKS),
    description="Session-aware freshness checks of bars and signals",
)

retrain_experiment_job = dg.define_asset_job(
    "retrain_experiment_job",
    selection=dg.AssetSelection.assets(*RETRAIN_KEYS),
    partitions_def=experiment_partitions,
    description="Retraining launched by the trigger sensor: dataset -> model -> backtest -> proposal "
    "(ends PENDING_APPROVAL; never promotes)",
    tags={"usdcop/kind": "retrain"},
)
