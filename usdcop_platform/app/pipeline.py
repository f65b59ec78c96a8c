"""The main job, stage after stage, skipping what is current: the use case behind `usdcop run` and
`usdcop demo`.

    raw bars + macro  ->  features  ->  dataset + model  ->  backtest + proposal

Each stage is a run of the Dagster graph (launched through the adapters the shell passes), so the UI
shows it with its lineage. A stage whose output is current is skipped (`refresh` redoes them all):
* bars: every session of the experiment's span already has a materialization;
* features: a session's features are newer than its bars and than the macro series;
* model: the experiment's model is newer than every feature partition of the span, was trained
  from the same experiment config (config hash) and, with `timesteps`, the same budget;
* proposal: the model already has one (one proposal per model id).
What is current is read from the run history (adapters.dagster_history.DagsterHistory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.sources import FileMarketSource, SourceError
from usdcop_platform.app.evaluate_run import evaluate_run
from usdcop_platform.app.experiments import DynamicPartitionStore, ensure_experiment_partitions
from usdcop_platform.app.ingest_range import IngestRequest, Launch, ingest_range
from usdcop_platform.app.train_run import LaunchAssets, RunFailed, train_run
from usdcop_platform.contracts.assets import FEATURES, AssetPath
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar

STAGES = ("bars + macro", "features", "dataset + model", "backtest + proposal")

StageFn = Callable[[int, str, str], None]  # (stage index, stage name, status text)


class RangeRunLike(Protocol):
    run_id: str
    partitions: dict[str, dict[str, Any]]
    failed_checks: list[str]
    error: str | None


class PipelineLauncher(LaunchAssets, Protocol):
    """Launches the assets of one partition (LaunchAssets) and one asset over a partition range."""

    def range_run(self, path: AssetPath, keys: list[str], *, tags: dict[str, str]) -> RangeRunLike: ...


class RunHistory(Protocol):
    """What is current, read from the runs recorded so far (adapters.dagster_history.DagsterHistory)."""

    def missing_bar_sessions(self, keys: list[str]) -> list[str]: ...

    def stale_feature_sessions(self, keys: list[str]) -> list[str]: ...

    def current_model(self, experiment: str, config_hash: str, keys: list[str],
                      timesteps: int | None) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class PipelineRequest:
    experiment: str
    source: str = "synthetic"
    bars: Path | None = None
    macro: Path | None = None
    timesteps: int | None = None
    refresh: bool = False


@dataclass(frozen=True)
class PipelineDeps:
    """The adapters the stages run on. `ingest_launch` launches the raw assets with the request's
    source bound in (file or synthetic, seed); `launch` the other assets."""

    config: PlatformConfig
    config_dir: str
    partitions: DynamicPartitionStore
    launch: PipelineLauncher
    ingest_launch: Launch
    history: RunHistory
    lake: ParquetLake
    store: Any
    today: date


@dataclass
class Stage:
    name: str
    status: str = "pending"  # ran | skipped (current) | pending
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def experiment_span(config: PlatformConfig, experiment: str) -> tuple[date, date]:
    """Sessions to ingest: the experiment's train start minus the feature warm-up, to its test end."""
    exp = config.experiment(experiment)
    calendar = TradingCalendar(config.instrument)
    warmup_sessions = -(-config.features.warmup_bars // calendar.bars_per_session) + 2  # ceil + slack for gaps
    start = exp.date_ranges.train.start
    for _ in range(warmup_sessions):
        start = calendar.previous_session(start)
    return max(start, calendar.instrument.calendar_start), exp.date_ranges.test.end


def with_file_span(bars: Path | None, calendar: TradingCalendar, start: date, end: date,
                   today: date) -> tuple[date, date]:
    """The span widened to the whole bars file (the UI shows every session of it), up to today."""
    if bars is None or not Path(bars).exists():
        raise RunFailed(f"{bars}: file not found")
    try:
        lo, hi = FileMarketSource(Path(bars), calendar).date_span()
    except SourceError as exc:
        raise RunFailed(str(exc)) from None
    return max(min(start, lo), calendar.instrument.calendar_start), min(max(end, hi), today)


def features_run(launch: PipelineLauncher, keys: list[str]) -> dict[str, Any]:
    """One run of features/m5_features over keys[0]..keys[-1]; counts from each partition's own metadata.
    A blocking check refusing some sessions is reported (the rest is published); no session published
    or a step's error raises RunFailed."""
    run = launch.range_run(FEATURES, keys, tags={"usdcop/command": "run"})
    if run.error is not None:
        raise RunFailed(f"features failed: {run.error}")
    published = [k for k, m in run.partitions.items() if m.get("published")]
    if not published:
        raise RunFailed(f"features: no session of {keys[0]}..{keys[-1]} was published (failed checks: "
                        f"{', '.join(run.failed_checks) or 'none'}); see dagster run {run.run_id}")
    return {"sessions": len(run.partitions), "published": len(published),
            "not_published": len(run.partitions) - len(published), "failed_checks": run.failed_checks,
            "dagster_run_id": run.run_id}


def run_pipeline(request: PipelineRequest, deps: PipelineDeps, on_stage: StageFn | None = None) -> dict[str, Any]:
    """raw -> features -> dataset -> model -> backtest -> proposal for the request's experiment,
    skipping what is current.

    Returns {"experiment", "source", "span", "sessions", "stages": [...], "trained", "proposal",
    "seconds", "training_seconds"}. Raises ConfigError (unknown experiment, before any work),
    RunFailed, or the domain error of a failing step, each with a one-line message."""
    t0 = time.perf_counter()
    cfg = deps.config
    exp = cfg.experiment(request.experiment)
    if request.source == "file" and request.bars is None:
        raise RunFailed("--source file needs --bars PATH (and --macro PATH for the macro features)")
    calendar = TradingCalendar(cfg.instrument)
    start, end = experiment_span(cfg, request.experiment)
    if request.source == "file":  # the whole file is ingested, not just the span
        start, end = with_file_span(request.bars, calendar, start, end, deps.today)
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

    ensure_experiment_partitions(deps.partitions, deps.config_dir)
    t = begin(0)
    missing = keys if request.refresh else deps.history.missing_bar_sessions(keys)
    if missing:
        summary = _ingest(request, deps, calendar, date.fromisoformat(missing[0]), date.fromisoformat(missing[-1]))
        end_stage(0, t, "ran", sessions=summary["sessions"], sessions_missing=summary.get("sessions_missing"),
                  bars=summary["bars_published"], refused=summary["sessions_refused"],
                  macro_published=summary.get("macro_published"))
        if summary["sessions_refused"] or summary.get("macro_refused"):
            raise RunFailed(f"quality gates refused {summary['sessions_refused']} session(s) "
                            f"{summary['refused_sessions'][:5]}{' and the macro series' if summary.get('macro_refused') else ''}"
                            ": see `usdcop quarantine list`")
    else:
        end_stage(0, t, "skipped (current)", sessions=len(keys))

    t = begin(1)
    stale = keys if request.refresh else deps.history.stale_feature_sessions(keys)
    if stale:
        end_stage(1, t, "ran", **features_run(deps.launch, stale))
    else:
        end_stage(1, t, "skipped (current)", sessions=len(keys))

    t = begin(2)
    model = None if request.refresh else deps.history.current_model(
        request.experiment, exp.config_hash, keys, request.timesteps)
    launch_deps = {"config": cfg, "config_dir": deps.config_dir, "partitions": deps.partitions, "launch": deps.launch}
    if model is None:
        trained = train_run(request.experiment, **launch_deps, total_timesteps=request.timesteps)
        end_stage(2, t, "ran", model_id=trained["model_id"], servable=trained["servable"],
                  train_seconds=trained.get("train_seconds"), dagster_run_id=trained["dagster_run_id"])
    else:
        trained = {"model_id": model["model_id"], "servable": model.get("servable"),
                   "mlflow_run_id": model.get("mlflow_run_id"), "artifact_dir": model.get("artifact_dir")}
        end_stage(2, t, "skipped (current)", model_id=model["model_id"])

    t = begin(3)
    existing = deps.store.proposals.by_model(trained["model_id"]) if trained.get("model_id") else None
    if existing is None:
        evaluated = evaluate_run(request.experiment, **launch_deps, lake=deps.lake, store=deps.store,
                                 model_id=trained["model_id"], timesteps=request.timesteps)
        proposal = evaluated["proposal"]
        end_stage(3, t, "ran", proposal_id=proposal["proposal_id"] if proposal else None,
                  train_seconds=evaluated.get("walk_forward_train_seconds"))
    else:
        proposal = dict(existing)
        end_stage(3, t, "skipped (current)", proposal_id=proposal["proposal_id"])
    return {
        "experiment": request.experiment, "source": request.source, "span": [start.isoformat(), end.isoformat()],
        "sessions": len(keys), "stages": [asdict(st) for st in stages], "trained": trained,
        "proposal": proposal, "seconds": round(time.perf_counter() - t0, 1),
        # PPO learning inside the stages (every seed of the model and of the walk-forward folds)
        "training_seconds": round(sum(st.detail.get("train_seconds") or 0.0 for st in stages), 1),
    }


def _ingest(request: PipelineRequest, deps: PipelineDeps, calendar: TradingCalendar, start: date,
            end: date) -> dict[str, Any]:
    ingest = IngestRequest(source=request.source, bars=request.bars, macro=request.macro, start=start, end=end,
                           tags={"usdcop/command": "ingest", "usdcop/source": request.source})
    return ingest_range(ingest, config=deps.config, calendar=calendar, lake=deps.lake, launch=deps.ingest_launch,
                        today=deps.today)
