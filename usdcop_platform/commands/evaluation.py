"""`usdcop backtest --experiment NAME [--start D --end D] [--model-id ID]`: backtest -> proposal;
`usdcop backtest --request-id N`: run a reviewer's backtest request (REQUEST_MORE_TESTS).

`evaluate_experiment()` is the reusable entry (the demo calls it): it materializes
evaluation/backtest and evaluation/promotion_proposal for one experiment partition on the local
Dagster instance, with the definitions' own assets and resources, and returns the proposal.
`run_backtest_request()` serves a request without a Dagster webserver: the same run, tagged with
the request, so the assets complete it exactly as in a run the API launched.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, open_local_instance
from usdcop_platform.settings import Settings, get_settings

HEADLINE = ("sharpe", "sortino", "max_drawdown", "total_return", "annual_return", "trades", "win_rate",
            "profit_factor", "psr", "dsr", "min_track_record_years")


def _check_date(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise UserFacingError(f"{flag} must be a date YYYY-MM-DD, got {value!r}") from None


def evaluate_experiment(
    name: str,
    settings: Settings | None = None,
    *,
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

    Returns {"experiment", "dagster_run_id", "backtest": <backtest metadata>, "proposal": <row>}.
    Raises the domain error of the failing step (EvaluationError, BacktestInputError, ...)."""
    import dagster as dg

    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.adapters.walk_forward_reports import load_report as load_walk_forward
    from usdcop_platform.app.backtest_requests import BACKTEST_REQUEST_TAG
    from usdcop_platform.app.experiments import ensure_experiment_partitions
    from usdcop_platform.contracts.assets import BACKTEST, PROPOSAL, WALK_FORWARD, key_string
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.definitions import asset_def, build_resources

    s = settings or get_settings()
    exp = load_platform_config(s.config_dir).experiment(name)  # unknown name: ConfigError before any work
    start, end = _check_date(start, "--start"), _check_date(end, "--end")
    if (start is None) != (end is None):
        raise UserFacingError("give both --start and --end, or neither (default: the experiment's test split)")
    resources = build_resources(s)
    backtest, proposal, walk_forward = asset_def(BACKTEST), asset_def(PROPOSAL), asset_def(WALK_FORWARD)
    ops: dict[str, Any] = {
        backtest.op.name: {"config": {"model_id": model_id, "start": start, "end": end, "allow_partial": allow_partial}},
        proposal.op.name: {"config": {"model_id": model_id}},
    }
    assets = [backtest, proposal]
    # The vote of an experiment with walk-forward folds needs its expanding walk-forward for this config.
    # `timesteps` (the model's --timesteps override) is the folds' budget too.
    budget = timesteps or exp.algorithm.total_timesteps
    if request_id is None and exp.backtest.walk_forward.folds and \
            load_walk_forward(resources["platform"].lake, name, exp.config_hash, total_timesteps=budget) is None:
        assets.insert(0, walk_forward)
        ops[walk_forward.op.name] = {"config": {"total_timesteps": timesteps, "use_ray": use_ray}}
    instance = open_local_instance(s)
    try:
        ensure_experiment_partitions(instance, str(s.config_dir))
        try:
            result = dg.materialize(
                assets,
                partition_key=name,
                instance=instance,
                resources=resources,
                run_config={"ops": ops},
                tags={
                    "usdcop/command": "backtest",
                    **({} if request_id is None else {BACKTEST_REQUEST_TAG: str(request_id)}),
                },
            )
        except dg.DagsterExecutionStepExecutionError as exc:
            if exc.user_exception is not None:
                raise exc.user_exception from None
            raise
        if not result.success:
            raise UserFacingError(f"evaluation of {name!r} failed (dagster run {result.run_id})")
        meta = {
            "/".join(e.materialization.asset_key.path): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()
        }
    finally:
        instance.dispose()
    proposal_meta = meta.get(key_string(PROPOSAL), {})
    store = get_store(s.resolved_database_url)
    row = store.proposals.get(proposal_meta["proposal_id"]) if proposal_meta.get("proposal_id") else None
    return {
        "experiment": name,
        "dagster_run_id": result.run_id,
        "backtest": meta.get(key_string(BACKTEST), {}),
        "walk_forward_train_seconds": meta.get(key_string(WALK_FORWARD), {}).get("train_seconds"),
        "proposal": dict(row) if row is not None else None,
    }


def run_backtest_request(request_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """Run backtest request `request_id` (its model and period) as evaluate_experiment does.

    The run's assets complete the request (DONE, attached to the proposal, proposal back to
    PENDING_APPROVAL) or mark it FAILED; a failure before the assets run (e.g. the experiment's
    YAML is gone) is recorded here the same way. Returns evaluate_experiment's dict plus
    "request" (the request row after the run). Re-running a request never duplicates anything."""
    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.app.backtest_requests import error_text

    s = settings or get_settings()
    store = get_store(s.resolved_database_url)
    request = store.backtest_requests.get(request_id)
    if request is None:
        raise UserFacingError(f"backtest request {request_id} does not exist")
    model = store.models.get(request["model_id"])
    if model is None:  # pragma: no cover - a foreign key keeps the model
        raise UserFacingError(f"backtest request {request_id} refers to unknown model {request['model_id']!r}")
    try:
        out = evaluate_experiment(
            model["experiment_name"],
            s,
            start=request["start_date"].isoformat(),
            end=request["end_date"].isoformat(),
            model_id=request["model_id"],
            request_id=request_id,
        )
    except Exception as exc:
        store.backtest_requests.fail(request_id, error_text(exc))
        raise
    out["request"] = dict(store.backtest_requests.get(request_id) or {})
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}"
    return "—" if v is None else str(v)


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest_cmd(
        experiment: str = typer.Option(None, "--experiment", "-e", help="name of a config/experiments/*.yaml"),
        start: str = typer.Option(None, "--start", help="first session YYYY-MM-DD (default: the test split)"),
        end: str = typer.Option(None, "--end", help="last session YYYY-MM-DD"),
        model_id: str = typer.Option(None, "--model-id", help="default: the experiment's newest registered model"),
        request_id: int = typer.Option(
            None, "--request-id", help="run this reviewer's backtest request (REQUEST_MORE_TESTS) instead"
        ),
        allow_partial: bool = typer.Option(
            False, "--allow-partial",
            help="backtest a period the lake covers only in part (the coverage is stated); refused otherwise",
        ),
        ray: bool = typer.Option(False, "--ray", help="train the walk-forward folds as Ray tasks (RAY_ADDRESS joins a cluster)"),
    ) -> None:
        """Out-of-sample backtest of the experiment's model and its promotion proposal (first vote),
        or, with --request-id, a reviewer's requested backtest attached to the proposal."""
        from usdcop_platform.adapters.store import StoreError
        from usdcop_platform.core.backtest import BacktestInputError
        from usdcop_platform.core.datasets import DatasetError
        from usdcop_platform.app.evaluation import EvaluationError
        from usdcop_platform.app.backtest_requests import BacktestRequestError

        with cli_errors():
            if request_id is not None and any(v is not None for v in (experiment, start, end, model_id)):
                raise UserFacingError(
                    "--request-id takes the experiment, model and period from the request: give it alone"
                )
            if request_id is None and experiment is None:
                raise UserFacingError("give --experiment NAME (or --request-id N)")
            try:
                if request_id is not None:
                    out = run_backtest_request(request_id)
                else:
                    out = evaluate_experiment(experiment, start=start, end=end, model_id=model_id,
                                              allow_partial=allow_partial, use_ray=ray)
            except (EvaluationError, BacktestInputError, DatasetError, StoreError, BacktestRequestError) as exc:
                raise UserFacingError(str(exc)) from exc
        if request_id is not None:
            _print_request(out)
            return
        bt = out["backtest"]
        prop = out["proposal"] or {}
        if "diagnostic" in str(bt.get("vote", "")):
            _print_diagnostic(bt, prop)
            return
        table = Table(title=f"backtest {experiment} · model {bt.get('model_id')} · {bt.get('test_period', '')}")
        table.add_column("item")
        table.add_column("value")
        metrics = prop.get("metrics") or {}
        for key in HEADLINE:
            if key in metrics:
                table.add_row(key, _fmt(metrics[key]))
        table.add_row("N trials", f"{metrics.get('n_trials')} ({metrics.get('n_trials_source', 'not recorded')})")
        table.add_row("V (trial Sharpes)", f"{_fmt(metrics.get('trial_sharpe_variance_annual'))} "
                                           f"({metrics.get('trial_variance_source', 'not recorded')})")
        over = metrics.get("overfitting") or {}
        table.add_row("PBO", _fmt((over.get("pbo") or {}).get("pbo")))
        table.add_row("SPA p-value", _fmt((over.get("spa") or {}).get("pvalue")))
        if bt.get("coverage"):
            table.add_row("coverage", str(bt["coverage"]))
        table.add_row("baseline", str(bt.get("baseline_model_id")))
        table.add_row("recommendation", f"{prop.get('recommendation')} (confidence {prop.get('confidence')})")
        table.add_row("status", str(prop.get("status")))
        table.add_row("proposal_id", str(prop.get("proposal_id")))
        table.add_row("backtest_hash", str(prop.get("backtest_hash")))
        table.add_row("series", str(prop.get("series_path")))
        console.print(table)
        for name, c in (prop.get("criteria") or {}).items():
            console.print(f"  {c['status']:4}  {name}: {c['metric']} {_fmt(c['value'])} {c['comparator']} {_fmt(c['threshold'])}")
        for reason in prop.get("reasons") or []:
            console.print(f"  - {reason}")
        if prop.get("statistical_statement"):
            console.print(prop["statistical_statement"])


def _print_diagnostic(bt: dict[str, Any], prop: dict[str, Any]) -> None:
    """A backtest of an explicit period: its numbers, marked as a diagnostic (IN-SAMPLE when it
    touches the training data), and the unchanged vote."""
    kind = "IN-SAMPLE diagnostic" if bt.get("out_of_sample") is False else "out-of-sample diagnostic"
    table = Table(title=f"{kind} · model {bt.get('model_id')} · {bt.get('test_period', '')}")
    table.add_column("item")
    table.add_column("value")
    # the backtest asset's metadata keys (fractions in percent: core.display)
    for key in ("n_bars", "sharpe", "max_drawdown_pct", "total_return_pct", "trades", "psr", "dsr", "n_trials"):
        if key in bt:
            table.add_row(key, _fmt(bt[key]))
    table.add_row("lake partition", str(bt.get("lake_partition")))
    console.print(table)
    if bt.get("coverage"):
        console.print(f"coverage: {bt['coverage']}", soft_wrap=True, highlight=False)
    console.print(f"[bold yellow]{bt['vote']}[/]", soft_wrap=True, highlight=False)
    if prop:
        console.print(f"The proposal {prop.get('proposal_id')} keeps its out-of-sample vote: "
                      f"{prop.get('recommendation')} ({prop.get('status')}).")
    else:
        console.print("No proposal: only a backtest of the test split can vote (usdcop backtest without --start/--end).")


def _print_request(out: dict[str, Any]) -> None:
    req, bt, prop = out["request"], out["backtest"], out["proposal"] or {}
    table = Table(title=f"backtest request {req.get('id')} · model {req.get('model_id')} · "
                        f"{req.get('start_date')} .. {req.get('end_date')}")
    table.add_column("item")
    table.add_column("value")
    table.add_row("request status", str(req.get("status")))
    table.add_row("bars", _fmt(bt.get("n_bars")))
    for key in ("sharpe", "max_drawdown_pct", "total_return_pct", "trades"):
        if key in bt:
            table.add_row(key, _fmt(bt[key]))
    if bt.get("insufficient"):
        table.add_row("insufficient", str(bt["insufficient"]))
    table.add_row("lake partition", str(bt.get("lake_partition")))
    table.add_row("proposal", f"{prop.get('proposal_id')} ({prop.get('status')})")
    console.print(table)
