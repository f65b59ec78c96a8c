"""Search use case in-process: TPE + median pruning with the study in SQL (SQLite and PostgreSQL),
resume, trial ledger and MLflow parent/child runs, best config as an ordinary experiment."""

from __future__ import annotations

import uuid

import optuna
import pytest

from usdcop_platform.adapters import optuna_store
from usdcop_platform.app import search as app_search
from usdcop_platform.app.execution import InProcessExecutor
from usdcop_platform.core import search as S
from usdcop_platform_tests.app.search_support import inputs, recorder, small_experiment


@pytest.fixture(scope="module")
def exp(platform_config):
    return small_experiment(platform_config.experiment("smoke"))


def test_search_runs_records_every_trial_and_resumes(tmp_path, exp, db_url) -> None:
    inp = inputs(exp, db_url)
    rec = recorder(tmp_path, exp, db_url)
    rec.run_id = "dagster-run-1"  # launched by the models/search asset
    seen = []
    report = app_search.run_search(inp, trials=3, workers=1, executor=InProcessExecutor(), recorder=rec, progress=seen.append)
    assert report.finished == 3 and report.complete + report.pruned == 3 and not report.task_failures
    assert [p["finished"] for p in seen] == [1, 2, 3]
    assert report.best is not None and report.best["params_hash"]
    # every finished trial: one ledger row (kind search_trial) and one MLflow child run under one parent
    rows = [r for r in rec.store.trials.family(exp.name) if r["kind"] == "search_trial"]
    assert len(rows) == 3 and len({r["trial_id"] for r in rows}) == 3
    client = rec.mlflow.client()
    eid = rec.mlflow.experiment_id(client, exp.name)
    children = client.search_runs([eid], filter_string=f"tags.mlflow.parentRunId = '{report.parent_run_id}'")
    assert {r.info.run_id for r in children} == {r["mlflow_run_id"] for r in rows}
    dagster_url = f"{rec.mlflow.dagster_ui_url}/runs/dagster-run-1"  # each run links the Dagster run
    assert {r.data.tags["dagster_run_url"] for r in children} == {dagster_url}
    assert client.get_run(report.parent_run_id).data.tags["dagster_run_url"] == dagster_url
    complete = [r for r in rows if r["details"]["state"] == "COMPLETE"]
    assert complete and all(r["test_sharpe"] is not None and r["returns_partition"] for r in complete)
    # the validation scores were reported during training (what the pruner reads)
    assert all(t["steps_reported"] >= 2 for t in report.trials if t["state"] == "COMPLETE")

    # resumed by a new driver (new recorder, new study object): only the missing trials run, nothing twice
    rec2 = recorder(tmp_path / "again", exp, db_url)
    rec2.mlflow, rec2.parent_run_id = rec.mlflow, None
    report2 = app_search.run_search(inp, trials=5, workers=1, executor=InProcessExecutor(), recorder=rec2)
    assert report2.finished == 5 and len(report2.trials) == 5
    assert report2.parent_run_id == report.parent_run_id  # the study's parent run found again
    assert len([r for r in rec.store.trials.family(exp.name) if r["kind"] == "search_trial"]) == 5


def test_median_pruner_stops_a_trial_below_the_median(tmp_path, exp, sqlite_url) -> None:
    """Three trials finish; then every reported score is below their median: pruned at the first
    report after warm-up, long before its budget."""
    inp = inputs(exp, sqlite_url)
    study = optuna_store.open_study(sqlite_url, inp.study_name, exp.search)
    for value in (5.0, 6.0, 7.0):
        t = study.ask()
        for step in (256, 512, 768, 1024):
            t.report(value, step)
        study.tell(t, value)
    # the next trial is a real training whose val_reward is far below 6.0 on random data
    report = app_search.run_search(inp, trials=4, workers=1, executor=InProcessExecutor())
    last = report.trials[-1]
    assert last["state"] == "PRUNED" and last["steps_reported"] == 1


def test_same_config_same_params_hash_as_the_plain_training(tmp_path, exp, sqlite_url) -> None:
    from usdcop_platform.core.training import train_seed

    inp = inputs(exp, sqlite_url)
    report = app_search.run_search(inp, trials=1, workers=1, executor=InProcessExecutor())
    [t] = report.trials
    direct = train_seed(exp.with_params(t["params"]), inp.data, exp.seeds[0], total_timesteps=S.trial_budget(exp))
    assert direct.params_hash == t["params_hash"]


def test_best_config_is_an_ordinary_experiment_version(tmp_path, exp, sqlite_url) -> None:
    inp = inputs(exp, sqlite_url)
    app_search.run_search(inp, trials=2, workers=1, executor=InProcessExecutor())
    study = optuna.load_study(study_name=inp.study_name, storage=sqlite_url)
    tuned = app_search.best_config(exp, study)
    assert tuned.search is None and tuned.version.startswith(f"{exp.version}+tuned.")
    best = app_search.best_trial(study, exp.search)
    assert list(tuned.algorithm.net_arch) == list(best["params"]["algorithm.net_arch"])


def test_study_name_follows_the_config_and_the_space(exp) -> None:
    assert S.study_name(exp) == S.study_name(exp.model_copy())
    raw = exp.model_dump(mode="json")
    raw["search"]["params"]["reward.drawdown_penalty"]["high"] = 0.4
    other = type(exp).model_validate(raw)
    assert S.study_name(other) != S.study_name(exp) and other.config_hash == exp.config_hash


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_once_old(request, backend) -> None:
    """Optuna never calls a RUNNING trial without a heartbeat row stale; fail_stale does, after the grace."""
    from datetime import datetime, timedelta

    import optuna
    import sqlalchemy as sa

    url = request.getfixturevalue(backend)
    storage = optuna_store.storage(url)
    study = optuna.create_study(storage=storage, study_name=f"no-heartbeat-{uuid.uuid4().hex[:8]}")
    trial = study.ask()  # RUNNING, and ask/tell never heartbeats: like a worker killed at once
    assert optuna_store.fail_stale(study) == []  # younger than the grace period: may still be starting
    with storage.engine.begin() as conn:
        conn.execute(sa.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :i"),
                     {"t": datetime.now() - timedelta(seconds=optuna_store.GRACE_SECONDS + 5), "i": trial._trial_id})
    assert optuna_store.fail_stale(study) == [trial.number]
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
