"""`usdcop backtest --experiment NAME [--start D --end D] [--model-id ID]`: backtest -> proposal;
`usdcop backtest --request-id N`: run a reviewer's backtest request (REQUEST_MORE_TESTS).

`evaluate_experiment()` and `run_backtest_request()` wire the use cases of app/evaluate_run.py
(evaluation/backtest -> evaluation/promotion_proposal for one experiment partition; a reviewer's
request served without a Dagster webserver) to the local instance and the definitions' own assets
and resources.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, open_local_instance, run_deps
from usdcop_platform.settings import Settings, get_settings

HEADLINE = ("sharpe", "sortino", "max_drawdown", "total_return", "annual_return", "trades", "win_rate",
            "profit_factor", "psr", "dsr", "min_track_record_years")


def evaluate_experiment(name: str, settings: Settings | None = None, **options: Any) -> dict[str, Any]:
    """app.evaluate_run.evaluate_run on the local instance with the definitions' assets and resources
    (`options`: start, end, model_id, request_id, allow_partial, timesteps, use_ray).

    Raises the domain error of the failing step (EvaluationError, BacktestInputError, ...) or
    UserFacingError for bad dates or a failed run."""
    from usdcop_platform.app.evaluate_run import evaluate_run

    return _with_deps(evaluate_run, settings, name, **options)


def run_backtest_request(request_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """app.evaluate_run.run_backtest_request on the local instance (the request is completed or FAILED)."""
    from usdcop_platform.app.evaluate_run import run_backtest_request as serve

    return _with_deps(serve, settings, request_id)


def _with_deps(use_case: Any, settings: Settings | None, *args: Any, **options: Any) -> dict[str, Any]:
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.app.train_run import RunFailed

    s = settings or get_settings()
    with open_local_instance(s) as instance:
        try:
            return use_case(*args, **run_deps(s, instance), lake=ParquetLake(s.data_dir),
                            store=get_store(s.resolved_database_url), **options)
        except RunFailed as exc:
            raise UserFacingError(str(exc)) from None


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
