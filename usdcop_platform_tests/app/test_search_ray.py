"""Search, seeds and faults on a real local two-node Ray cluster (head + worker node as separate
processes on loopback, one CPU each), with the study on the real PostgreSQL. Slow and bounded:
one cluster for the module, stopped (every process of it) at the end."""

from __future__ import annotations

import threading
import time

import optuna
import pytest

from usdcop_platform.adapters import optuna_store
from usdcop_platform.adapters.ray_cluster import LocalCluster, connect, disconnect
from usdcop_platform.app import search as app_search
from usdcop_platform.app.execution import InProcessExecutor, RayExecutor, train_seeds
from usdcop_platform_tests.app.search_support import inputs, recorder, small_experiment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(workers=1, cpus_per_node=1)  # its own temp dir (not pytest's, which gets rotated)
    c.start()
    try:
        connect(c.address)
        yield c
    finally:
        disconnect()
        c.stop()
    assert not c._members(), "processes of the Ray cluster are still running"


@pytest.fixture(scope="module")
def exp(platform_config):
    return small_experiment(platform_config.experiment("smoke"))


def test_seeds_on_ray_give_the_in_process_params_hash(cluster, exp, sqlite_url) -> None:
    import ray

    assert ray.cluster_resources().get("CPU") == 2 and len(ray.nodes()) == 2
    data = inputs(exp, sqlite_url).data
    local = train_seeds(InProcessExecutor(), exp, data, [0, 1], total_timesteps=512)
    remote = train_seeds(RayExecutor(), exp, data, [0, 1], total_timesteps=512)
    assert [r["params_hash"] for r in remote] == [r["params_hash"] for r in local]
    assert local[0]["params_hash"] != local[1]["params_hash"]


def test_walk_forward_folds_on_ray_equal_the_in_process_folds(cluster, exp, platform_config, calendar) -> None:
    from usdcop_platform.core import datasets as ds
    from usdcop_platform.core import walk_forward as wf
    from usdcop_platform.core.metrics import Annualization
    from usdcop_platform_tests.training_synth import synthetic_features, tiny

    contract = platform_config.features
    raw = tiny(platform_config.experiment("smoke")).canonical()
    raw["backtest"]["walk_forward"] = {"folds": 2, "test_sessions": 5, "min_train_sessions": 20}
    fexp = type(exp).model_validate(raw)
    sessions = ds.source_sessions(fexp, calendar.sessions(fexp.date_ranges.train.start, fexp.date_ranges.test.end))
    frame = synthetic_features(calendar, contract, sessions[0], sessions[-1])
    folds = wf.plan_folds(sessions, fexp, ds.effective_embargo(fexp, contract), calendar.bars_per_session)
    ann = Annualization.from_calendar(calendar)
    local = wf.run_walk_forward(frame, folds, fexp, contract, ann, total_timesteps=256)
    remote = wf.run_walk_forward(frame, folds, fexp, contract, ann, total_timesteps=256, runner=RayExecutor())
    assert len(remote["folds"]) == 2
    assert [f["params_hash"] for f in remote["folds"]] == [f["params_hash"] for f in local["folds"]]
    assert remote["aggregate"] == local["aggregate"]


def test_tune_four_trials_two_workers_on_ray_records_every_trial(cluster, exp, tmp_path, postgres_url) -> None:
    inp = inputs(exp, postgres_url)
    rec = recorder(tmp_path, exp, postgres_url)
    report = app_search.run_search(inp, trials=4, workers=2, executor=RayExecutor(), recorder=rec)
    assert report.finished == 4 and report.executor == "ray" and not report.task_failures
    rows = [r for r in rec.store.trials.family(exp.name) if r["kind"] == "search_trial"]
    assert sorted(r["details"]["number"] for r in rows) == [0, 1, 2, 3]
    client = rec.mlflow.client()
    children = client.search_runs(
        [rec.mlflow.experiment_id(client, exp.name)], filter_string=f"tags.mlflow.parentRunId = '{report.parent_run_id}'"
    )
    assert len(children) == 4
    # the trial's params_hash on Ray is the in-process one for the same config and seed
    from usdcop_platform.core import search as S
    from usdcop_platform.core.training import train_seed

    done = next(t for t in report.trials if t["state"] == "COMPLETE")
    direct = train_seed(exp.with_params(done["params"]), inp.data, exp.seeds[0], total_timesteps=S.trial_budget(exp))
    assert direct.params_hash == done["params_hash"]


def test_worker_killed_mid_trial_fails_the_trial_and_the_study_finishes(cluster, exp, tmp_path, postgres_url) -> None:
    """Kill every Ray worker process while the first trials train: those trials stop heartbeating,
    are marked FAIL (their parameters queued once more), and the search still reaches its target."""
    slow = small_experiment(exp, budget=4096, eval_every=1024)
    inp = inputs(slow, postgres_url)
    study = optuna_store.open_study(postgres_url, inp.study_name, slow.search)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if running and any(t.intermediate_values for t in running):
                killed.append(cluster.kill_worker_processes())
                return
            time.sleep(0.2)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    report = app_search.run_search(inp, trials=3, workers=2, executor=RayExecutor())
    th.join(timeout=5)
    assert killed and killed[0] >= 1
    assert report.finished == 3
    states = [t["state"] for t in report.trials]
    assert "FAIL" in states, states
    # a failed trial's parameters were queued again (Optuna's retry) or the task was retried by Ray
    print("states after the kill:", states, "task failures:", report.task_failures)
    assert any(t["retry_of"] is not None for t in report.trials) or report.task_failures == []


def test_training_seeds_on_ray_select_and_package_like_in_process(cluster, exp, sqlite_url, tmp_path) -> None:
    """An ordinary training's seeds on Ray: same seeds, hashes and selected seed as core.training's
    in-process train_experiment, and the rebuilt model exports to ONNX past the parity gate."""
    from usdcop_platform.app.execution import train_experiment_with
    from usdcop_platform.core.onnx_export import check_parity, export_onnx
    from usdcop_platform.core.training import train_experiment

    three = exp.model_copy(update={"seeds": (0, 1, 2)})
    data = inputs(three, sqlite_url).data
    local = train_experiment(three, data, total_timesteps=512)
    remote = train_experiment_with(RayExecutor(), three, data, total_timesteps=512)
    assert [s.params_hash for s in remote.seeds] == [s.params_hash for s in local.seeds]
    assert remote.selected.seed == local.selected.seed
    onnx_path = export_onnx(remote.selected.model, tmp_path / "policy.onnx", {"model_hash": remote.selected.params_hash})
    parity = check_parity(remote.selected.model, onnx_path, data.val.obs, data.val.position_index, seed=remote.selected.seed)
    assert parity.passed


def test_usdcop_train_with_ray_registers_the_in_process_model(cluster, tmp_path, calendar, platform_config) -> None:
    """models/ppo_policy with use_ray: the seeds train on the cluster and the registered model hash
    is the one core.training gives in this process for the same dataset and seed."""
    import dagster as dg

    from usdcop_platform.core import datasets as ds
    from usdcop_platform.core.training import TrainingData, train_seed
    from usdcop_platform.defs.training import assets as ta
    from usdcop_platform_tests.defs.test_training import BUDGET, EXPERIMENT, make_env, metadata

    env = make_env(tmp_path, calendar, platform_config.features)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("experiments", [EXPERIMENT])
        result = dg.materialize_to_memory(
            [ta.experiment_dataset, ta.ppo_policy], partition_key=EXPERIMENT, instance=instance, resources=env.resources,
            run_config=dg.RunConfig(ops={ta.ppo_policy.op.name: ta.TrainingRunConfig(total_timesteps=BUDGET, use_ray=True)}),
        )
    assert result.success
    meta = metadata(result, ta.MODEL_KEY)
    contract = platform_config.features
    dataset = ds.load_dataset(env.platform.lake, EXPERIMENT, contract)
    exp = platform_config.experiment(EXPERIMENT)
    data = TrainingData(dataset.market_data("train", contract), dataset.market_data("val", contract), contract.normalization_clip)
    assert train_seed(exp, data, exp.seeds[0], total_timesteps=BUDGET).params_hash == meta["model_hash"]
    assert meta["servable"] is True
