"""`usdcop run --experiment NAME [--source file --bars F --macro M | --source synthetic]`.

The main job through Dagster on the local instance, one stage after the other, each a run the UI
shows with its lineage:

    raw bars + macro  ->  features  ->  dataset + model  ->  backtest + proposal

Resumable: a stage whose output is current is skipped —
* bars: every session of the experiment's span already has a materialization (`--refresh` re-ingests);
* features: a session's features are newer than its bars and than the macro series;
* model: the experiment's model is newer than every feature partition of the span, was trained
  from the same experiment config (config hash) and, with --timesteps, the same budget;
* proposal: the model already has one (one proposal per model id).

`run_pipeline()` is the reusable entry (the demo calls it with the synthetic source).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from usdcop_platform.commands.common import (
    UserFacingError,
    cli_errors,
    console,
    err_console,
    log_file,
    open_local_instance,
    print_json,
)
from usdcop_platform.settings import Settings, get_settings

STAGES = ("bars + macro", "features", "dataset + model", "backtest + proposal")
TEST_METRICS = ("sharpe", "total_return", "max_drawdown", "turnover", "n_trades")

StageFn = Callable[[int, str, str], None]  # (stage index, stage name, status text)


@dataclass
class Stage:
    name: str
    status: str = "pending"  # ran | skipped (current) | pending
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def experiment_span(settings: Settings, experiment: str) -> tuple[date, date]:
    """Sessions to ingest: the experiment's train start minus the feature warm-up, to its test end."""
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar

    cfg = load_platform_config(settings.config_dir)
    exp = cfg.experiment(experiment)
    calendar = TradingCalendar(cfg.instrument)
    warmup_sessions = -(-cfg.features.warmup_bars // calendar.bars_per_session) + 2  # ceil + slack for gaps
    start = exp.date_ranges.train.start
    for _ in range(warmup_sessions):
        start = calendar.previous_session(start)
    return max(start, calendar.instrument.calendar_start), exp.date_ranges.test.end


# ---- what is current (read from the instance) -------------------------------------------------------


def _key(path: tuple[str, ...]) -> Any:
    """The dg.AssetKey of a contracts.assets path."""
    import dagster as dg

    return dg.AssetKey(list(path))


def _latest_ids(instance: Any, key: Any, partitions: set[str]) -> dict[str, int]:
    import dagster as dg

    return dict(instance.event_log_storage.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions))


def _latest_record(instance: Any, key: Any, partition: str) -> Any:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0] if records else None


def _metadata(record: Any) -> dict[str, Any]:
    mat = record.asset_materialization
    return {k: v.value for k, v in (mat.metadata if mat else {}).items()}


def _requested_timesteps(instance: Any, run_id: str) -> int | None:
    """The --timesteps override the model's training run was given (None: the experiment's budget)."""
    from usdcop_platform.contracts.assets import MODEL
    from usdcop_platform.definitions import asset_def

    run = instance.get_run_by_id(run_id)
    ops = (run.run_config or {}).get("ops", {}) if run is not None else {}
    return (ops.get(asset_def(MODEL).op.name, {}).get("config") or {}).get("total_timesteps")


def missing_bar_sessions(instance: Any, keys: list[str]) -> list[str]:
    from usdcop_platform.contracts.assets import RAW_BARS

    done = _latest_ids(instance, _key(RAW_BARS), set(keys))
    return [k for k in keys if k not in done]


def stale_feature_sessions(instance: Any, keys: list[str]) -> list[str]:
    """Sessions whose features are missing or older than their bars or than the macro series."""
    from usdcop_platform.contracts.assets import FEATURES, RAW_BARS, RAW_MACRO

    bars = _latest_ids(instance, _key(RAW_BARS), set(keys))
    feats = _latest_ids(instance, _key(FEATURES), set(keys))
    records = instance.fetch_materializations(_key(RAW_MACRO), limit=1).records
    macro_id = records[0].storage_id if records else -1
    return [k for k in keys if k in bars and feats.get(k, -1) < max(bars[k], macro_id)]


def current_model(instance: Any, experiment: str, config_hash: str, keys: list[str], timesteps: int | None) -> dict[str, Any] | None:
    """The experiment's model metadata when it is current (see the module docstring), else None."""
    from usdcop_platform.contracts.assets import DATASET, FEATURES, MODEL

    model = _latest_record(instance, _key(MODEL), experiment)
    dataset = _latest_record(instance, _key(DATASET), experiment)
    if model is None or dataset is None or not _metadata(model).get("model_id"):
        return None
    feats = _latest_ids(instance, _key(FEATURES), set(keys))
    if (feats and max(feats.values()) > dataset.storage_id) or model.storage_id < dataset.storage_id:
        return None
    if _metadata(dataset).get("config_hash") != config_hash:
        return None
    if _requested_timesteps(instance, model.run_id) != timesteps:
        return None
    return _metadata(model)


# ---- the pipeline ---------------------------------------------------------------------------


def _features_run(instance: Any, settings: Settings, keys: list[str]) -> dict[str, Any]:
    """One Dagster run of features/m5_features over keys[0]..keys[-1]; counts from each partition's own metadata."""
    import dagster as dg

    from usdcop_platform.contracts.assets import FEATURES
    from usdcop_platform.definitions import asset_def, build_resources

    m5_features = asset_def(FEATURES)
    result = dg.materialize(
        [m5_features], instance=instance, resources=build_resources(settings), raise_on_error=False,
        tags={"usdcop/command": "run", "dagster/asset_partition_range_start": keys[0],
              "dagster/asset_partition_range_end": keys[-1]},
    )
    for event in result.get_step_failure_events():
        err = event.step_failure_data.error
        if err is not None and err.cls_name == "DagsterAssetCheckFailedError":
            continue  # a blocking check refused some sessions (named in its metadata); the rest is published
        raise UserFacingError(f"features failed: {(err.cause or err).message.strip() if err else 'see the log'}")
    per = {m.partition: m.metadata for m in result.asset_materializations_for_node(m5_features.op.name)}
    published = [k for k, m in per.items() if m.get("published") is not None and m["published"].value]
    rank = {spec.name: i for i, spec in enumerate(m5_features.check_specs)}  # the gates' own order
    failed = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed},
                    key=lambda name: (rank.get(name, len(rank)), name))
    if not published:
        raise UserFacingError(f"features: no session of {keys[0]}..{keys[-1]} was published (failed checks: "
                              f"{', '.join(failed) or 'none'}); see dagster run {result.run_id}")
    return {"sessions": len(per), "published": len(published), "not_published": len(per) - len(published),
            "failed_checks": failed, "dagster_run_id": result.run_id}


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
    """raw -> features -> dataset -> model -> backtest -> proposal for `experiment`, skipping what is current.

    Returns {"experiment", "source", "span", "stages": [...], "trained": ..., "proposal": <row>, "seconds"}.
    Raises UserFacingError / ConfigError / the domain error of a failing step, with a one-line message."""
    from usdcop_platform.adapters.store import StoreError, get_store
    from usdcop_platform.commands.data import ingest
    from usdcop_platform.commands.evaluation import evaluate_experiment
    from usdcop_platform.commands.training import train_experiment
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.datasets import DatasetError
    from usdcop_platform.app.experiments import ensure_experiment_partitions

    t0 = time.perf_counter()
    s = settings or get_settings()
    cfg = load_platform_config(s.config_dir)
    exp = cfg.experiment(experiment)  # unknown name: ConfigError, before any work
    if source == "file" and bars is None:
        raise UserFacingError("--source file needs --bars PATH (and --macro PATH for the macro features)")
    calendar = TradingCalendar(cfg.instrument)
    start, end = experiment_span(s, experiment)
    if source == "file":  # the whole file is ingested (the UI shows every session of it), not just the span
        start, end = _with_file_span(bars, calendar, start, end)
    keys = [d.isoformat() for d in calendar.sessions(start, end)]
    stages = [Stage(n) for n in STAGES]

    def begin(i: int) -> float:
        if on_stage:
            on_stage(i, stages[i].name, "running")
        return time.perf_counter()

    def end_stage(i: int, started: float, status: str, **detail: Any) -> None:
        stages[i].status, stages[i].seconds, stages[i].detail = status, round(time.perf_counter() - started, 2), detail
        if on_stage:
            on_stage(i, stages[i].name, status)

    with open_local_instance(s) as instance:
        ensure_experiment_partitions(instance, str(s.config_dir))
        t = begin(0)
        missing = keys if refresh else missing_bar_sessions(instance, keys)
        if missing:
            summary = ingest(source=source, bars=bars, macro=macro, start=date.fromisoformat(missing[0]),
                             end=date.fromisoformat(missing[-1]), seed=seed, settings=s, instance=instance)
            end_stage(0, t, "ran", sessions=summary["sessions"], sessions_missing=summary.get("sessions_missing"),
                      bars=summary["bars_published"], refused=summary["sessions_refused"],
                      macro_published=summary.get("macro_published"))
            if summary["sessions_refused"] or summary.get("macro_refused"):
                raise UserFacingError(f"quality gates refused {summary['sessions_refused']} session(s) "
                                      f"{summary['refused_sessions'][:5]}{' and the macro series' if summary.get('macro_refused') else ''}"
                                      ": see `usdcop quarantine list`")
        else:
            end_stage(0, t, "skipped (current)", sessions=len(keys))

        t = begin(1)
        stale = keys if refresh else stale_feature_sessions(instance, keys)
        if stale:
            feats = _features_run(instance, s, stale)
            end_stage(1, t, "ran", **feats)
        else:
            end_stage(1, t, "skipped (current)", sessions=len(keys))

        t = begin(2)
        model = None if refresh else current_model(instance, experiment, exp.config_hash, keys, timesteps)
    if model is None:
        try:
            trained = train_experiment(experiment, s, total_timesteps=timesteps)
        except (DatasetError, StoreError) as exc:
            raise UserFacingError(str(exc)) from exc
        end_stage(2, t, "ran", model_id=trained["model_id"], servable=trained["servable"],
                  train_seconds=trained.get("train_seconds"), dagster_run_id=trained["dagster_run_id"])
    else:
        trained = {"model_id": model["model_id"], "servable": model.get("servable"),
                   "mlflow_run_id": model.get("mlflow_run_id"), "artifact_dir": model.get("artifact_dir")}
        end_stage(2, t, "skipped (current)", model_id=model["model_id"])

    t = begin(3)
    store = get_store(s.resolved_database_url)
    existing = store.proposals.by_model(trained["model_id"]) if trained.get("model_id") else None
    if existing is None:
        evaluated = _evaluate(evaluate_experiment, experiment, s, trained["model_id"], timesteps)
        proposal = evaluated["proposal"]
        end_stage(3, t, "ran", proposal_id=proposal["proposal_id"] if proposal else None,
                  train_seconds=evaluated.get("walk_forward_train_seconds"))
    else:
        proposal = dict(existing)
        end_stage(3, t, "skipped (current)", proposal_id=proposal["proposal_id"])
    return {
        "experiment": experiment, "source": source, "span": [start.isoformat(), end.isoformat()],
        "sessions": len(keys), "stages": [asdict(st) for st in stages], "trained": trained,
        "proposal": proposal, "seconds": round(time.perf_counter() - t0, 1),
        # PPO learning inside the stages (every seed of the model and of the walk-forward folds)
        "training_seconds": round(sum(st.detail.get("train_seconds") or 0.0 for st in stages), 1),
        "dagster_home": str(s.resolved_dagster_home), "log_file": str(log_file(s)),
    }


def _with_file_span(bars: Path | None, calendar: Any, start: date, end: date) -> tuple[date, date]:
    from datetime import datetime

    from usdcop_platform.adapters.sources import FileMarketSource, SourceError

    if bars is None or not Path(bars).exists():
        raise UserFacingError(f"{bars}: file not found")
    try:
        lo, hi = FileMarketSource(Path(bars), calendar).date_span()
    except SourceError as exc:
        raise UserFacingError(str(exc)) from None
    today = datetime.now(calendar.tz).date()
    return max(min(start, lo), calendar.instrument.calendar_start), min(max(end, hi), today)


def _evaluate(
    fn: Callable[..., dict[str, Any]], experiment: str, s: Settings, model_id: str, timesteps: int | None = None
) -> dict[str, Any]:
    from usdcop_platform.adapters.store import StoreError
    from usdcop_platform.core.datasets import DatasetError
    from usdcop_platform.app.evaluation import EvaluationError

    try:
        return fn(experiment, s, model_id=model_id, timesteps=timesteps)
    except (EvaluationError, DatasetError, StoreError) as exc:
        raise UserFacingError(str(exc)) from exc


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
