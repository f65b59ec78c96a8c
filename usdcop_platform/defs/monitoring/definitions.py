"""Monitoring domain definitions: drift, shadow signals, realized performance, shadow A/B, freshness checks,
monitoring schedules, the retraining trigger, run-failure alerts, alert redelivery and proposal expiry."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.monitoring.assets import feature_drift, realized_performance, shadow_ab_report
from usdcop_platform.defs.monitoring.checks import FRESHNESS_CHECKS, MONITORING_CHECKS
from usdcop_platform.defs.monitoring.expiry import proposal_expiry_job, proposal_expiry_schedule
from usdcop_platform.defs.monitoring.jobs import (
    monitoring_drift_job,
    monitoring_freshness_job,
    monitoring_performance_job,
    monitoring_shadow_job,
    retrain_experiment_job,
)
from usdcop_platform.defs.monitoring.schedules import MONITORING_SCHEDULES
from usdcop_platform.defs.monitoring.sensors import MONITORING_SENSORS
from usdcop_platform.defs.monitoring.shadow import shadow_signals

defs = dg.Definitions(
    assets=[feature_drift, shadow_signals, realized_performance, shadow_ab_report],
    asset_checks=[*MONITORING_CHECKS, *FRESHNESS_CHECKS],
    jobs=[
        monitoring_drift_job,
        monitoring_shadow_job,
        monitoring_performance_job,
        monitoring_freshness_job,
        retrain_experiment_job,
        proposal_expiry_job,
    ],
    schedules=[*MONITORING_SCHEDULES, proposal_expiry_schedule],
    sensors=MONITORING_SENSORS,
)
