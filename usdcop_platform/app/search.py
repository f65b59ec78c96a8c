"""Use case: hyperparameter search of an experiment (Optuna TPE + median pruning, study in SQL).

    study   = adapters.optuna_store.open_study(DATABASE_URL, core.search.study_name(exp), exp.search)
    a trial = one worker task (`run_trial`, in-process or a Ray task with one CPU):
              ask the study for a configuration (TPE), train one seed of it (core.training.train_seed)
              reporting every validation score to the study (MedianPruner may stop it there), score
              the trained policy on validation and test like every ledger trial (core.trials), and
              store the outcome on the trial (user attributes) before telling the study the value.
    driver  = `run_search`: runs trials until the study holds `trials` finished ones (COMPLETE or
              PRUNED; a study that already has some is resumed, not restarted), then records every
              finished trial in the trial ledger (kind search_trial) and in MLflow (a parent run per
              study, a child run per trial). Recording reads the study, so trials finished under a
              driver that died are recorded by the next one; ledger ids make it idempotent.

The objective is the validation reward (core.search.OBJECTIVE), never the test split: test Sharpes
go to the ledger only so the promotion statistics (DSR's N and V, PBO) count every trial.

The best configuration is NOT a model: it becomes an ordinary experiment version (`best_config`),
trained by `usdcop train`, backtested and proposed like any other, and voted on by the promotion
gate, whose DSR now counts the search's trials. Nothing here registers or promotes a model.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import date, timedelta
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usdcop_platform.adapters import optuna_store
from usdcop_platform.app.execution import Executor
from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.core import search as S
from usdcop_platform.core import trials as T
from usdcop_platform.core.metrics import Annualization

TRIAL_SEED_ATTR = "seed"
MAX_ATTEMPTS_FACTOR = 2  # tasks submitted at most 2 x trials (+ workers): failures cannot loop forever
LEDGER_KIND = "search_trial"
SPLITS = ("val", "test")
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class SearchInputs:
    """What every trial task needs; sent once to the workers."""

    exp: ExperimentConfig
    data: Any  # core.training.TrainingData
    scoring: dict[str, Any]  # split -> core.env.MarketData (val, test)
    ann: Annualization
    database_url: str
    study_name: str


def _score(inputs: SearchInputs, exp: ExperimentConfig, model: Any) -> dict[str, Any]:
    from usdcop_platform.core.training import greedy_action_table

    out: dict[str, Any] = {}
    for split, md in inputs.scoring.items():
        positions = T.replay_positions(
            greedy_action_table(model, md), md.session, flat_at_session_end=exp.environment.flat_at_session_end
        )
        sc = T.score_positions(
            md.close, positions, md.session, cost_bps=exp.backtest.cost_bps,
            initial_capital=exp.backtest.initial_capital, annualization=inputs.ann, confidence=exp.success_criteria.p_min,
        )
        out[f"{split}_sharpe"] = sc.sharpe if np.isfinite(sc.sharpe) else None
        out[f"{split}_bars"] = sc.n_bars
        out[f"{split}_sessions"] = [int(s) for s in sc.sessions]
        out[f"{split}_returns"] = [float(r) for r in sc.session_returns]
    return out


def run_trial(inputs: SearchInputs, attempt: int) -> dict[str, Any]:
    """One trial of the study (a worker task). Returns {number, state, value}."""
    import optuna

    from usdcop_platform.core.training import train_seed

    space = S.space_of(inputs.exp)
    study = optuna_store.open_study(inputs.database_url, inputs.study_name, space)
    seed = int(inputs.exp.seeds[0])
    outcome: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        outcome["number"] = trial.number
        params = S.suggest(trial, space)
        trial.set_user_attr(TRIAL_SEED_ATTR, seed)
        try:
            exp = inputs.exp.with_params(params)
        except ValueError as exc:  # a combination the contract refuses (e.g. batch > rollout)
            trial.set_user_attr("invalid", str(exc)[:500])
            raise optuna.TrialPruned(f"invalid combination: {exc}") from None
        trial.set_user_attr("config_hash", exp.config_hash)

        def sink(metrics: dict[str, float], step: int) -> None:
            if S.OBJECTIVE in metrics:
                trial.report(metrics[S.OBJECTIVE], step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"{S.OBJECTIVE} below the median at step {step}")

        t0 = time.perf_counter()
        result = train_seed(exp, inputs.data, seed, total_timesteps=S.trial_budget(inputs.exp), sink=sink, prefix="")
        trial.set_user_attr("params_hash", result.params_hash)
        trial.set_user_attr("train_seconds", round(time.perf_counter() - t0, 3))
        trial.set_user_attr("timesteps", result.timesteps)
        for k, v in _score(inputs, exp, result.model).items():
            trial.set_user_attr(k, v)
        return float(result.val_metrics[S.OBJECTIVE])

    study.optimize(objective, n_trials=1, catch=())
    t = study.trials[outcome["number"]] if "number" in outcome else None
    return {"number": t.number if t else None, "state": t.state.name if t else None, "value": t.value if t else None,
            "attempt": attempt}


# ---- the driver ----------------------------------------------------------------------------------
FINISHED = ("COMPLETE", "PRUNED")


def finished_trials(study: Any) -> list[Any]:
    import optuna

    states = tuple(optuna.trial.TrialState[s] for s in FINISHED)
    return study.get_trials(deepcopy=False, states=states)


@dataclass
class SearchReport:
    study_name: str
    target: int
    finished: int
    complete: int
    pruned: int
    failed: int
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    executor: str
    seconds: float
    task_failures: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    parent_run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def trial_rows(study: Any, space: Any) -> list[dict[str, Any]]:
    """The trials table: number, state, value, parameters, params_hash, Sharpes, seconds."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value,
            "params": S.decode_params(space, dict(t.params)), "params_hash": a.get("params_hash"),
            "val_sharpe": a.get("val_sharpe"), "test_sharpe": a.get("test_sharpe"),
            "steps_reported": len(t.intermediate_values), "train_seconds": a.get("train_seconds"),
            "retry_of": t.system_attrs.get("failed_trial"),
        })
    return rows


def best_trial(study: Any, space: Any) -> dict[str, Any] | None:
    try:
        b = study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None
    return {"number": b.number, "value": b.value, "params": S.decode_params(space, dict(b.params)),
            "params_hash": b.user_attrs.get("params_hash"), "val_sharpe": b.user_attrs.get("val_sharpe")}


def best_config(exp: ExperimentConfig, study: Any, *, version_suffix: str | None = None) -> ExperimentConfig:
    """The best trial's configuration as an ordinary experiment (no `search`), version
    `<version>+tuned.<trial number>`: the input of an ordinary training, backtest and proposal."""
    best = best_trial(study, S.space_of(exp))
    if best is None:
        raise S.SearchSpaceError(f"study {study.study_name!r} has no complete trial yet")
    tuned = exp.with_params(best["params"])
    suffix = version_suffix or f"tuned.{best['number']}"
    return tuned.model_copy(update={"version": f"{exp.version}+{suffix}"})


def failure_text(exc: BaseException) -> str:
    """A failed trial task in one line, naming the error it was raised while handling: Optuna's
    tell asserts "Should not reach." in its own `finally` when a cut connection lost the trial's
    commit, which would otherwise hide the storage error behind it."""
    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    under = exc.__cause__ or exc.__context__
    return text if under is None else f"{text} (while handling {type(under).__name__}: {str(under)[:300]})"


def run_search(
    inputs: SearchInputs,
    *,
    trials: int,
    workers: int,
    executor: Executor,
    recorder: "TrialRecorder | None" = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> SearchReport:
    """Run trials until the study holds `trials` finished ones; record them; report."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    space = S.space_of(inputs.exp)
    study = optuna_store.open_study(inputs.database_url, inputs.study_name, space)
    # The driver's own work on the study is idempotent: a connection cut under it runs it again
    # (a trial's own failure is the trial's, counted below).
    retry = functools.partial(optuna_store.retrying, inputs.database_url)
    t0 = time.perf_counter()
    failures: list[str] = []
    attempts = 0
    budget = MAX_ATTEMPTS_FACTOR * trials + workers
    while True:
        retry(lambda: optuna_store.fail_stale(study))
        missing = trials - len(retry(lambda: finished_trials(study)))
        if missing <= 0 or attempts >= budget:
            break
        batch = list(range(attempts, attempts + missing))
        attempts += len(batch)
        for _i, out in executor.run(run_trial, inputs, batch, num_cpus=1, max_in_flight=workers):
            if isinstance(out, BaseException):
                failures.append(failure_text(out))
            if recorder is not None:
                retry(lambda: recorder.record(study, space))
            if progress is not None:
                done, best = retry(lambda: (finished_trials(study), best_trial(study, space)))
                progress({"finished": len(done), "target": trials, "last": None if isinstance(out, BaseException) else out,
                          "error": failures[-1] if isinstance(out, BaseException) else None, "best": best})
        if failures and len(failures) >= budget:
            break
    retry(lambda: optuna_store.settle(study))  # a dead driver's orphan is reported FAIL, not RUNNING
    if recorder is not None:
        retry(lambda: recorder.record(study, space))
    states, finished, best, rows = retry(lambda: (
        [t.state.name for t in study.get_trials(deepcopy=False)], len(finished_trials(study)),
        best_trial(study, space), trial_rows(study, space)))
    report = SearchReport(
        study_name=inputs.study_name, target=trials, finished=finished,
        complete=states.count("COMPLETE"), pruned=states.count("PRUNED"), failed=states.count("FAIL"),
        best=best, trials=rows, executor=executor.name,
        seconds=round(time.perf_counter() - t0, 3), task_failures=failures,
        recorded=list(recorder.recorded) if recorder is not None else [],
        parent_run_id=recorder.parent_run_id if recorder is not None else None,
    )
    if recorder is not None:
        recorder.finish(report)
    return report


# ---- recording: trial ledger + MLflow ------------------------------------------------------------
def ledger_trial_id(study_name: str, number: int) -> str:
    return content_hash({"kind": LEDGER_KIND, "study": study_name, "number": int(number)})


@dataclass
class TrialRecorder:
    """Appends each finished trial once to the trial ledger, its returns to the lake, and a child
    MLflow run under the study's parent run (found again by tag when a study is resumed)."""

    store: Any
    lake: Any
    mlflow: Any  # adapters.tracking.MlflowTracking
    exp: ExperimentConfig
    data_hash: str
    run_id: str | None = None  # the Dagster run, when launched from the asset
    recorded: set[str] = field(default_factory=set)
    parent_run_id: str | None = None

    def _parent(self, study_name: str) -> str:
        if self.parent_run_id:
            return self.parent_run_id
        client = self.mlflow.client()
        exp_id = self.mlflow.experiment_id(client, self.exp.name)
        found = client.search_runs(
            [exp_id], filter_string=f"tags.optuna_study = '{study_name}' and tags.kind = 'search'", max_results=1
        )
        if found:
            self.parent_run_id = found[0].info.run_id
        else:
            run = self.mlflow.start_run(self.exp.name, run_name=f"search {study_name}", tags={
                "optuna_study": study_name, "kind": "search", "experiment": self.exp.name,
                "experiment_version": self.exp.version, "dataset_hash": self.data_hash,
            }, dagster_run_id=self.run_id)
            run.log_params({"search": S.space_of(self.exp).model_dump(mode="json"), "budget_timesteps": S.trial_budget(self.exp)})
            self.parent_run_id = run.run_id
        return self.parent_run_id

    def finish(self, report: "SearchReport") -> None:
        """Close the study's parent run with the search's summary (a resumed study reopens nothing:
        its new children hang under the same, finished parent)."""
        if not self.parent_run_id:
            return
        client = self.mlflow.client()
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in
                   (("trials_finished", report.finished), ("trials_pruned", report.pruned), ("trials_failed", report.failed))]
        if report.best:
            metrics.append(Metric("best_value", float(report.best["value"]), now, 0))
            client.set_tag(self.parent_run_id, "best_trial", str(report.best["number"]))
        client.log_batch(self.parent_run_id, metrics=metrics, synchronous=True)
        client.set_terminated(self.parent_run_id, status="FINISHED")

    def record(self, study: Any, space: Any) -> list[str]:
        """Record the study's finished trials not recorded yet; returns the new ledger trial ids."""
        from mlflow.entities import Metric, RunStatus

        new_rows, new_ids = [], []
        known = self.recorded | {r["trial_id"] for r in self.store.trials.family(self.exp.name) if r["kind"] == LEDGER_KIND}
        for t in finished_trials(study):
            trial_id = ledger_trial_id(study.study_name, t.number)
            if trial_id in known:
                self.recorded.add(trial_id)
                continue
            a = t.user_attrs
            params = S.decode_params(space, dict(t.params))
            client = self.mlflow.client()
            child = self.mlflow.start_run(self.exp.name, run_name=f"trial {t.number}", tags={
                "mlflow.parentRunId": self._parent(study.study_name), "optuna_study": study.study_name,
                "optuna_trial": t.number, "state": t.state.name, "kind": "search_trial", "ledger_trial_id": trial_id,
            }, dagster_run_id=self.run_id)
            child.log_params({"params": params, "seed": a.get(TRIAL_SEED_ATTR), "params_hash": a.get("params_hash")})
            client.log_batch(child.run_id, metrics=[Metric(S.OBJECTIVE, float(v), 0, int(step))
                                                    for step, v in sorted(t.intermediate_values.items())], synchronous=True)
            final = {k: a[k] for k in ("val_sharpe", "test_sharpe", "train_seconds") if a.get(k) is not None}
            if t.value is not None:
                final["objective"] = t.value
            child.log_metrics(final)
            child.end(RunStatus.to_string(RunStatus.FINISHED if t.state.name == "COMPLETE" else RunStatus.KILLED))
            partition = self._save_returns(trial_id, a)
            new_rows.append({
                "trial_id": trial_id, "family": self.exp.name, "experiment_version": self.exp.version,
                "kind": LEDGER_KIND, "seed": a.get(TRIAL_SEED_ATTR), "selected": False,
                "params_hash": a.get("params_hash"),
                "config_hash": a.get("config_hash") or self.exp.config_hash, "data_hash": self.data_hash,
                "val_sharpe": a.get("val_sharpe"), "test_sharpe": a.get("test_sharpe"), "test_bars": a.get("test_bars"),
                "returns_partition": partition, "run_id": self.run_id or study.study_name, "mlflow_run_id": child.run_id,
                "details": {"study": study.study_name, "number": t.number, "state": t.state.name, "value": t.value,
                            "params": params, "steps_reported": len(t.intermediate_values)},
            })
            new_ids.append(trial_id)
        if new_rows:
            self.store.trials.record(new_rows)
            self.recorded.update(new_ids)
        return new_ids

    def _save_returns(self, trial_id: str, attrs: dict[str, Any]) -> str | None:
        """Per-session val/test returns of a scored trial to the lake (PBO reads them); None when
        the trial was pruned before it was scored."""
        import polars as pl

        from usdcop_platform.adapters import trial_returns

        frames = [
            pl.DataFrame(
                {"session": [EPOCH + timedelta(days=int(d)) for d in attrs[f"{split}_sessions"]],
                 "split": [split] * len(attrs[f"{split}_sessions"]), "session_return": attrs[f"{split}_returns"]},
                schema={"session": pl.Date, "split": pl.Utf8, "session_return": pl.Float64},
            )
            for split in SPLITS if attrs.get(f"{split}_sessions")
        ]
        if not frames:
            return None
        trial_returns.save_trial_returns(self.lake, self.exp.name, trial_id, pl.concat(frames))
        return trial_id


def inputs_from_dataset(
    exp: ExperimentConfig, dataset: Any, contract: Any, ann: Annualization, database_url: str
) -> SearchInputs:
    """SearchInputs from a stored experiment dataset (core.datasets.ExperimentDataset)."""
    from usdcop_platform.core.training import TrainingData

    data = TrainingData(
        train=dataset.market_data("train", contract), val=dataset.market_data("val", contract),
        obs_bound=contract.normalization_clip,
    )
    return SearchInputs(
        exp=exp, data=data, scoring={s: dataset.market_data(s, contract) for s in SPLITS}, ann=ann,
        database_url=database_url, study_name=S.study_name(exp),
    )


# ---- the use case as the asset and the command run it --------------------------------------------
_LISTENERS: list[Callable[[dict[str, Any]], None]] = []


class progress_listener:  # noqa: N801 (a context manager used like a function)
    """Receive the progress of searches run in this process while the block runs (the CLI prints
    it while Dagster materializes models/search in-process)."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def __enter__(self) -> "progress_listener":
        _LISTENERS.append(self.fn)
        return self

    def __exit__(self, *exc: object) -> None:
        _LISTENERS.remove(self.fn)


def parameter_importances(study: Any) -> dict[str, float]:
    """fANOVA importances of the parameters over the complete trials ({} with too few trials)."""
    import optuna

    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):
        return {}


def importance_plot(importances: dict[str, float], path: Any) -> Any:
    """A horizontal bar chart of the importances, written as PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(names))))
    ax.barh(names, [importances[n] for n in names], color="#4c72b0")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def tune(
    inputs: SearchInputs,
    *,
    trials: int,
    workers: int,
    use_ray: bool,
    address: str | None,
    recorder: TrialRecorder | None,
    out_dir: Any,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the search on the chosen executor; write best.yaml (the best config as an ordinary
    experiment version) and the importance plot under out_dir/<study>/; return the summary."""
    from pathlib import Path

    import yaml

    from usdcop_platform.app.execution import executor_for

    executor = executor_for(use_ray, address, num_cpus=workers)

    def notify(p: dict[str, Any]) -> None:
        for fn in [progress, *_LISTENERS]:
            if fn is not None:
                fn(p)

    report = run_search(inputs, trials=trials, workers=workers, executor=executor, recorder=recorder, progress=notify)
    study = optuna_store.open_study(inputs.database_url, inputs.study_name, S.space_of(inputs.exp))
    folder = Path(out_dir) / inputs.study_name
    folder.mkdir(parents=True, exist_ok=True)
    importances = parameter_importances(study)
    plot = importance_plot(importances, folder / "importance.png") if importances else None
    best_path = None
    if report.best is not None:
        tuned = best_config(inputs.exp, study)
        best_path = folder / "best.yaml"
        best_path.write_text(
            "# Best configuration of study " + inputs.study_name + ": an ordinary experiment version.\n"
            "# Train it like any other (it is never promoted directly): copy it to config/experiments/,\n"
            "# then `usdcop train`, `usdcop backtest` -> proposal -> the promotion gate's two votes.\n"
            + yaml.safe_dump(tuned.canonical(), sort_keys=False),
            encoding="utf-8",
        )
    return {**report.as_dict(), "importances": importances, "importance_plot": str(plot) if plot else None,
            "best_config_path": str(best_path) if best_path else None}


def search_experiment(
    name: str,
    exp: ExperimentConfig,
    contract: Any,
    *,
    store: Any,
    lake: Any,
    tracking: Any,
    ann: Annualization,
    database_url: str,
    dagster_run_id: str,
    trials: int,
    workers: int,
    use_ray: bool,
    address: str | None,
    out_dir: Any,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The search of experiment `name` (config `exp`) over its stored dataset (the use case behind models/search):
    `tune`'s summary plus the dataset hash and the family's trial count in the ledger afterwards.
    `tracking` is the MLflow adapter (adapters.tracking.MlflowTracking) the trials are logged to."""
    from usdcop_platform.core import datasets as ds

    dataset = ds.load_dataset(lake, name, contract)
    inputs = inputs_from_dataset(exp, dataset, contract, ann, database_url)
    recorder = TrialRecorder(store=store, lake=lake, mlflow=tracking, exp=exp, data_hash=dataset.dataset_hash,
                             run_id=dagster_run_id)
    out = tune(inputs, trials=trials, workers=workers, use_ray=use_ray, address=address, recorder=recorder,
               out_dir=out_dir, progress=progress)
    return {**out, "dataset_hash": dataset.dataset_hash, "ledger_family_trials": store.trials.count(name)}
