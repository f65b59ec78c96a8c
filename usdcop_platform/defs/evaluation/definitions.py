"""Evaluation domain definitions: backtest and promotion proposal assets, and their job."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.evaluation.assets import BACKTEST_KEY, PROPOSAL_KEY, backtest, promotion_proposal
from usdcop_platform.defs.evaluation.walk_forward import walk_forward
from usdcop_platform.defs.partitions import experiment_partitions

evaluate_experiment_job = dg.define_asset_job(
    "evaluate_experiment_job",
    selection=dg.AssetSelection.assets(BACKTEST_KEY, PROPOSAL_KEY),
    partitions_def=experiment_partitions,
    description="out-of-sample backtest -> promotion proposal (first vote) for one experiment partition",
)

defs = dg.Definitions(assets=[backtest, promotion_proposal, walk_forward], jobs=[evaluate_experiment_job])
