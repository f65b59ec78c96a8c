"""`usdcop backtest --experiment NAME [--start D --end D] [--model-id ID]`: backtest -> proposal.

`evaluate_experiment()` is the reusable entry (the demo calls it): it materializes
evaluation/backtest and evaluation/promotion_proposal for one experiment partition on the local
Dagster instance, with the definitions' own assets and resources, and returns the proposal.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console
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
) -> dict[str, Any]:
    """Backtest the experiment's model (default: its newest) and write its proposal.

    Returns {"experiment", "dagster_run_id", "backtest": <backtest metadata>, "proposal": <row>}.
    Raises the domain error of the failing step (EvaluationError, BacktestInputError, ...)."""
    import dagster as dg

    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.defs.evaluation.assets import (
        BacktestRunConfig,
        ProposalRunConfig,
        backtest,
        promotion_proposal,
    )
    from usdcop_platform.defs.resources import build_resources
    from usdcop_platform.defs.training.sensors import ensure_experiment_partitions

    s = settings or get_settings()
    load_platform_config(s.config_dir).experiment(name)  # unknown name: ConfigError before any work
    start, end = _check_date(start, "--start"), _check_date(end, "--end")
    if (start is None) != (end is None):
        raise UserFacingError("give both --start and --end, or neither (default: the experiment's test split)")
    home = s.resolved_dagster_home
    home.mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        ensure_experiment_partitions(instance, str(s.config_dir))
        run_config = dg.RunConfig(
            ops={
                backtest.op.name: BacktestRunConfig(model_id=model_id, start=start, end=end),
                promotion_proposal.op.name: ProposalRunConfig(model_id=model_id),
            }
        )
        try:
            result = dg.materialize(
                [backtest, promotion_proposal],
                partition_key=name,
                instance=instance,
                resources=build_resources(s),
                run_config=run_config,
                tags={"usdcop/command": "backtest"},
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
    proposal_meta = meta.get("evaluation/promotion_proposal", {})
    store = get_store(s.resolved_database_url)
    proposal = store.proposals.get(proposal_meta["proposal_id"]) if proposal_meta.get("proposal_id") else None
    return {
        "experiment": name,
        "dagster_run_id": result.run_id,
        "backtest": meta.get("evaluation/backtest", {}),
        "proposal": dict(proposal) if proposal is not None else None,
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}"
    return "—" if v is None else str(v)


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest_cmd(
        experiment: str = typer.Option(..., "--experiment", "-e", help="name of a config/experiments/*.yaml"),
        start: str = typer.Option(None, "--start", help="first session YYYY-MM-DD (default: the test split)"),
        end: str = typer.Option(None, "--end", help="last session YYYY-MM-DD"),
        model_id: str = typer.Option(None, "--model-id", help="default: the experiment's newest registered model"),
    ) -> None:
        """Out-of-sample backtest of the experiment's model and its promotion proposal (first vote)."""
        from usdcop_platform.adapters.store import StoreError
        from usdcop_platform.core.backtest import BacktestInputError
        from usdcop_platform.core.datasets import DatasetError
        from usdcop_platform.defs.evaluation.assets import EvaluationError

        with cli_errors():
            try:
                out = evaluate_experiment(experiment, start=start, end=end, model_id=model_id)
            except (EvaluationError, BacktestInputError, DatasetError, StoreError) as exc:
                raise UserFacingError(str(exc)) from exc
        bt = out["backtest"]
        prop = out["proposal"] or {}
        table = Table(title=f"backtest {experiment} · model {bt.get('model_id')} · {bt.get('test_period', '')}")
        table.add_column("item")
        table.add_column("value")
        metrics = prop.get("metrics") or {}
        for key in HEADLINE:
            if key in metrics:
                table.add_row(key, _fmt(metrics[key]))
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
