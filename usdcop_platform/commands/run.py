"""`usdcop run --experiment NAME [--source file --bars F --macro M | --source synthetic]`.

The main job through Dagster on the local instance, one stage after the other, each a run the UI
shows with its lineage, skipping the stages whose output is current: the use case is
app/pipeline.py; this module wires it to the local instance and prints its summary.
`run_with_progress()` is the reusable entry (the demo calls it with the synthetic source).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from usdcop_platform.app.pipeline import STAGES, StageFn
from usdcop_platform.commands.common import (
    UserFacingError,
    cli_errors,
    console,
    err_console,
    log_file,
    open_local_instance,
    print_json,
    run_deps,
)
from usdcop_platform.settings import Settings, get_settings

TEST_METRICS = ("sharpe", "total_return", "max_drawdown", "turnover", "n_trades")


def run_pipeline(
    experiment: str,
    *,
    source: str = "synthetic",
    bars: Path | None = None,
    macro: Path | None = None,
    settings: Settings | None = None,
    timesteps: int | None = None,
    seed: int | None = None,
    refresh: bool = False,
    on_stage: StageFn | None = None,
) -> dict[str, Any]:
    """app.pipeline.run_pipeline on the local instance: the raw assets launched with the request's
    source and seed bound in, the others with the settings' resources. Its dict plus "dagster_home"
    and "log_file"; a failing stage is a UserFacingError (one line) or ConfigError."""
    from usdcop_platform import definitions
    from usdcop_platform.adapters.dagster_history import DagsterHistory
    from usdcop_platform.adapters.dagster_runs import DagsterRunLauncher, RunError
    from usdcop_platform.adapters.expectations import start_gx_worker
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.adapters.sources import SourceError
    from usdcop_platform.adapters.store import StoreError, get_store
    from usdcop_platform.app.evaluation import EvaluationError
    from usdcop_platform.app.ingest_range import IngestError
    from usdcop_platform.app.pipeline import PipelineDeps, PipelineRequest
    from usdcop_platform.app.pipeline import run_pipeline as pipeline
    from usdcop_platform.app.train_run import RunFailed
    from usdcop_platform.contracts.assets import MODEL
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.cleaning import CleaningError
    from usdcop_platform.core.datasets import DatasetError

    s = settings or get_settings()
    request = PipelineRequest(experiment, source=source, bars=Path(bars) if bars else None,
                              macro=Path(macro) if macro else None, timesteps=timesteps, refresh=refresh)
    start_gx_worker()  # GX's import (3-4 s of CPU) overlaps Dagster's start-up on the other core
    # the request's source, files and seed, bound into the graph's own source resources
    ingest_settings = s.model_copy(update={
        "market_source": source, "macro_source": source, "bars_file": request.bars, "macro_file": request.macro,
        "synthetic_seed": s.synthetic_seed if seed is None else seed,
    })
    with open_local_instance(s) as instance:
        wiring = run_deps(s, instance)
        deps = PipelineDeps(
            **wiring, history=DagsterHistory(instance, definitions.asset_def(MODEL).op.name),
            ingest_launch=DagsterRunLauncher(definitions.asset_def, definitions.build_resources(ingest_settings),
                                             instance),
            lake=ParquetLake(s.data_dir), store=get_store(s.resolved_database_url),
            today=datetime.now(TradingCalendar(wiring["config"].instrument).tz).date())
        try:
            out = pipeline(request, deps, on_stage)
        except (RunFailed, IngestError, RunError, SourceError, CleaningError, DatasetError, StoreError,
                EvaluationError) as exc:
            raise UserFacingError(str(exc)) from exc
    return {**out, "dagster_home": str(s.resolved_dagster_home), "log_file": str(log_file(s))}


# ---- output ---------------------------------------------------------------------------------


def proposal_json(out: dict[str, Any]) -> dict[str, Any]:
    """The proposal as `usdcop run --json` prints it: recommendation, criteria, out-of-sample test metrics."""
    p = out["proposal"] or {}
    m = p.get("metrics") or {}
    metrics = {
        "sharpe": m.get("sharpe"), "total_return": m.get("total_return"), "max_drawdown": m.get("max_drawdown"),
        "turnover": m.get("turnover", m.get("turnover_per_session")), "n_trades": m.get("n_trades", m.get("trades")),
    }
    return {
        "experiment": out["experiment"], "proposal_id": p.get("proposal_id"), "model_id": p.get("model_id"),
        "recommendation": p.get("recommendation"), "confidence": p.get("confidence"), "status": p.get("status"),
        "reasons": p.get("reasons"), "criteria": p.get("criteria"), "test_metrics": metrics,
        "test_period": [str(p.get("test_start")), str(p.get("test_end"))],
        "stages": {st["name"]: st["status"] for st in out["stages"]}, "seconds": out["seconds"],
        "training_seconds": out.get("training_seconds"),
    }


def summary_table(out: dict[str, Any]) -> Table:
    table = Table(title=f"usdcop run -e {out['experiment']} ({out['source']}, {out['sessions']} sessions "
                        f"{out['span'][0]} .. {out['span'][1]})")
    for col in ("stage", "status", "seconds", "detail"):
        table.add_column(col)
    for st in out["stages"]:
        detail = ", ".join(f"{k}={v}" for k, v in st["detail"].items() if k != "dagster_run_id")
        table.add_row(st["name"], st["status"], f"{st['seconds']:.1f}", detail)
    return table


def where_to_look(out: dict[str, Any], settings: Settings) -> str:
    p = out["proposal"] or {}
    base = settings.public_api_url
    lines = [
        f"proposal        {p.get('proposal_id')}: {p.get('recommendation')} (confidence {p.get('confidence')})",
        f"review page     {base}/experiments/{p.get('proposal_id')}/review   (start it: usdcop serve)",
        f"Dagster UI      DAGSTER_HOME={out['dagster_home']} dagster dev -w workspace.yaml",
        f"MLflow          mlflow ui --backend-store-uri {settings.resolved_mlflow_uri}",
        f"lake            {settings.data_dir}",
        f"logs            {out['log_file']}",
    ]
    if out["trained"].get("artifact_dir"):
        lines.append(f"model artefacts {out['trained']['artifact_dir']}")
    return "\n".join(lines)


def run_with_progress(progress_console: Console, **kwargs: Any) -> dict[str, Any]:
    """run_pipeline with one progress display (one line per stage, transient)."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=progress_console, transient=True) as bar:
        task = bar.add_task("starting", total=len(STAGES))

        def on_stage(i: int, name: str, status: str) -> None:
            done = i + (0 if status == "running" else 1)
            bar.update(task, completed=done, description=f"{i + 1}/{len(STAGES)} {name}: {status}")

        return run_pipeline(on_stage=on_stage, **kwargs)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        experiment: str = typer.Option(..., "--experiment", "-e", help="name of a config/experiments/*.yaml"),
        source: str = typer.Option("synthetic", "--source", help="synthetic | file"),
        bars: Path = typer.Option(None, "--bars", help="bars export for --source file"),
        macro: Path = typer.Option(None, "--macro", help="daily macro export for --source file"),
        timesteps: int = typer.Option(None, "--timesteps", help="override the training budget"),
        seed: int = typer.Option(None, "--seed", help="synthetic seed (default USDCOP_SYNTHETIC_SEED)"),
        refresh: bool = typer.Option(False, "--refresh", help="redo every stage, even the current ones"),
        as_json: bool = typer.Option(False, "--json", help="print the proposal as JSON instead of the summary"),
    ) -> None:
        """raw -> features -> dataset -> model -> backtest -> proposal through Dagster; skips what is current."""
        settings = get_settings()
        with cli_errors():
            out = run_with_progress(err_console, experiment=experiment, source=source, bars=bars, macro=macro,
                                    settings=settings, timesteps=timesteps, seed=seed, refresh=refresh)
        if as_json:
            print_json(proposal_json(out))
            return
        console.print(summary_table(out))
        console.print(where_to_look(out, settings), soft_wrap=True)
