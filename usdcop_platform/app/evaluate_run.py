"""Evaluate one experiment's model: the use case behind `usdcop backtest` and the proposal stage of
`usdcop run`, and the serving of a reviewer's backtest request without a Dagster webserver.

Launches evaluation/backtest and evaluation/promotion_proposal (and the experiment's walk-forward
when its folds for this config and budget are missing) for the experiment's partition through
`launch` (an adapters.dagster_runs.DagsterAssetsLauncher); the backtest and the vote themselves are
app/evaluation.py, inside the assets. A request's run carries BACKTEST_REQUEST_TAG, so its assets
complete the request exactly as in a run the API launched.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.walk_forward_reports import load_report as load_walk_forward
from usdcop_platform.app.backtest_requests import BACKTEST_REQUEST_TAG, error_text
from usdcop_platform.app.experiments import DynamicPartitionStore, ensure_experiment_partitions
from usdcop_platform.app.train_run import LaunchAssets, RunFailed
from usdcop_platform.contracts.assets import BACKTEST, PROPOSAL, WALK_FORWARD, AssetPath, key_string
from usdcop_platform.contracts.platform import PlatformConfig


def _check_date(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise RunFailed(f"{flag} must be a date YYYY-MM-DD, got {value!r}") from None


def evaluate_run(
    name: str,
    *,
    config: PlatformConfig,
    config_dir: str,
    partitions: DynamicPartitionStore,
    launch: LaunchAssets,
    lake: ParquetLake,
    store: Any,
    start: str | None = None,
    end: str | None = None,
    model_id: str | None = None,
    request_id: int | None = None,
    allow_partial: bool = False,
    timesteps: int | None = None,
    use_ray: bool = False,
) -> dict[str, Any]:
    """Backtest the experiment's model (default: its newest) and write its proposal; with
    `request_id`, serve that backtest request instead (the run carries it in its tags).
    A period the lake covers only in part is refused unless `allow_partial`; a period touching the
    model's training data is an IN-SAMPLE diagnostic, and any explicit period a diagnostic: only the
    test split (and the walk-forward folds) vote, so neither changes the proposal.

    Returns {"experiment", "dagster_run_id", "backtest", "walk_forward_train_seconds", "proposal": <row>}.
    Raises ConfigError, RunFailed or the failing step's domain error (EvaluationError, ...)."""
    exp = config.experiment(name)  # unknown name: ConfigError before any work
    start, end = _check_date(start, "--start"), _check_date(end, "--end")
    if (start is None) != (end is None):
        raise RunFailed("give both --start and --end, or neither (default: the experiment's test split)")
    ops: dict[AssetPath, dict[str, Any]] = {
        BACKTEST: {"model_id": model_id, "start": start, "end": end, "allow_partial": allow_partial},
        PROPOSAL: {"model_id": model_id},
    }
    assets = [BACKTEST, PROPOSAL]
    # The vote of an experiment with walk-forward folds needs its expanding walk-forward for this config.
    # `timesteps` (the model's --timesteps override) is the folds' budget too.
    budget = timesteps or exp.algorithm.total_timesteps
    if request_id is None and exp.backtest.walk_forward.folds and \
            load_walk_forward(lake, name, exp.config_hash, total_timesteps=budget) is None:
        assets.insert(0, WALK_FORWARD)
        ops[WALK_FORWARD] = {"total_timesteps": timesteps, "use_ray": use_ray}
    ensure_experiment_partitions(partitions, config_dir)
    tags = {"usdcop/command": "backtest", **({} if request_id is None else {BACKTEST_REQUEST_TAG: str(request_id)})}
    run = launch(assets, partition_key=name, op_config=ops, tags=tags)
    if run.stopped is not None:
        raise RunFailed(f"evaluation of {name!r} stopped: {run.stopped}")
    if not run.success:
        raise RunFailed(f"evaluation of {name!r} failed (dagster run {run.run_id})")
    proposal_meta = run.metadata.get(key_string(PROPOSAL), {})
    row = store.proposals.get(proposal_meta["proposal_id"]) if proposal_meta.get("proposal_id") else None
    return {
        "experiment": name,
        "dagster_run_id": run.run_id,
        "backtest": run.metadata.get(key_string(BACKTEST), {}),
        "walk_forward_train_seconds": run.metadata.get(key_string(WALK_FORWARD), {}).get("train_seconds"),
        "proposal": dict(row) if row is not None else None,
    }


def run_backtest_request(request_id: int, *, store: Any, **deps: Any) -> dict[str, Any]:
    """Run backtest request `request_id` (its model and period) as evaluate_run does (`deps`: its
    config, config_dir, partitions, launch, lake).

    The run's assets complete the request (DONE, attached to the proposal, proposal back to
    PENDING_APPROVAL) or mark it FAILED; a failure before the assets run (e.g. the experiment's
    YAML is gone) is recorded here the same way. Returns evaluate_run's dict plus "request" (the
    request row after the run). Re-running a request never duplicates anything."""
    request = store.backtest_requests.get(request_id)
    if request is None:
        raise RunFailed(f"backtest request {request_id} does not exist")
    model = store.models.get(request["model_id"])
    if model is None:  # pragma: no cover - a foreign key keeps the model
        raise RunFailed(f"backtest request {request_id} refers to unknown model {request['model_id']!r}")
    try:
        out = evaluate_run(model["experiment_name"], store=store, start=request["start_date"].isoformat(),
                           end=request["end_date"].isoformat(), model_id=request["model_id"],
                           request_id=request_id, **deps)
    except Exception as exc:
        store.backtest_requests.fail(request_id, error_text(exc))
        raise
    out["request"] = dict(store.backtest_requests.get(request_id) or {})
    return out
