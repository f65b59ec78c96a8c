"""Where trainings run: in this process, one after another, or as Ray tasks with declared CPUs.

Search trials, the seeds of a training and walk-forward folds are all "call fn(shared, item) for
each item": `shared` (the training arrays, the experiment) is sent once (Ray's object store), each
item is one unit of work that needs `num_cpus` CPUs (a training uses one thread: TRAINING_THREADS).
Results come back as they finish, in completion order, with their item index; an item whose task
failed yields the exception instead of a result, so a caller decides what a failure means.

In-process and Ray run the same function on the same inputs: a training under deterministic_torch
gives the same params_hash in either (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Work = Callable[[Any, Any], Any]

TASK_MAX_RETRIES = 1  # a task whose worker process died (node lost) runs once more elsewhere


class Executor(Protocol):
    name: str

    def run(self, fn: Work, shared: Any, items: Sequence[Any], *, num_cpus: float = 1, max_in_flight: int | None = None) -> Iterator[tuple[int, Any]]: ...


@dataclass
class InProcessExecutor:
    """Sequential, in this process: the default of a laptop and of the tests."""

    name: str = "in-process"

    def run(self, fn: Work, shared: Any, items: Sequence[Any], *, num_cpus: float = 1, max_in_flight: int | None = None) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            try:
                yield i, fn(shared, item)
            except Exception as exc:  # reported to the caller like a failed remote task
                yield i, exc


@dataclass
class RayExecutor:
    """Ray tasks with `num_cpus` each, at most `max_in_flight` submitted at a time (default: all;
    Ray then runs as many as the cluster's CPUs allow)."""

    address: str | None = None
    name: str = "ray"

    def run(self, fn: Work, shared: Any, items: Sequence[Any], *, num_cpus: float = 1, max_in_flight: int | None = None) -> Iterator[tuple[int, Any]]:
        import ray

        task = ray.remote(num_cpus=num_cpus, max_retries=TASK_MAX_RETRIES)(fn)
        shared_ref = ray.put(shared)
        limit = max_in_flight or len(items) or 1
        pending: dict[Any, int] = {}
        queue = list(enumerate(items))
        while queue or pending:
            while queue and len(pending) < limit:
                i, item = queue.pop(0)
                pending[task.remote(shared_ref, item)] = i
            [done], _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done)
            try:
                yield i, ray.get(done)
            except ray.exceptions.RayTaskError as exc:
                yield i, exc.as_instanceof_cause()
            except ray.exceptions.RayError as exc:  # worker/node died beyond the retries
                yield i, exc


def executor_for(use_ray: bool, address: str | None = None, *, num_cpus: int | None = None) -> Executor:
    """Ray (joining `address` / RAY_ADDRESS, or a local instance with `num_cpus`) or in-process."""
    if not use_ray:
        return InProcessExecutor()
    from usdcop_platform.adapters.ray_cluster import connect

    where = connect(address, num_cpus=num_cpus)
    return RayExecutor(address=where)


def collect(results: Iterator[tuple[int, Any]], n: int) -> list[Any]:
    """Results in item order; the first failure is raised."""
    out: list[Any] = [None] * n
    for i, value in results:
        if isinstance(value, BaseException):
            raise value
        out[i] = value
    return out


# ---- the seeds of a training ---------------------------------------------------------------------
def train_seed_summary(shared: Any, seed: int) -> dict[str, Any]:
    """One seed trained (core.training.train_seed) -> its summary and params_hash (no model object:
    what crosses processes is small; the caller retrains nothing, it compares and selects)."""
    from usdcop_platform.core.training import train_seed

    exp, data, total = shared
    result = train_seed(exp, data, int(seed), total_timesteps=total)
    return {**result.summary(), "state_dict": {k: v.detach().cpu().numpy() for k, v in result.model.policy.state_dict().items()}}


def train_seeds(executor: Executor, exp: Any, data: Any, seeds: Sequence[int], *, total_timesteps: int | None = None) -> list[dict[str, Any]]:
    """Every seed on `executor`, in seed order (each a dict with seed, params_hash, val_metrics, ...)."""
    return collect(executor.run(train_seed_summary, (exp, data, total_timesteps), list(seeds)), len(seeds))


def train_experiment_with(executor: Executor, exp: Any, data: Any, *, total_timesteps: int | None = None) -> Any:
    """core.training.train_experiment with its seeds on `executor`: every seed trained remotely,
    its parameters loaded into a fresh PPO here (same params_hash), the median seed selected.
    Returns a core.training.TrainingResult that package_model and the ledger accept unchanged."""
    import torch

    from usdcop_platform.core.training import (
        SeedResult,
        TrainingResult,
        build_ppo,
        deterministic_torch,
        make_vec_env,
        params_hash,
        select_median,
    )

    results = []
    for s in train_seeds(executor, exp, data, list(exp.seeds), total_timesteps=total_timesteps):
        with deterministic_torch():
            model = build_ppo(exp, make_vec_env(data.train, exp, obs_bound=data.obs_bound), int(s["seed"]))
            model.policy.load_state_dict({k: torch.as_tensor(v) for k, v in s["state_dict"].items()})
            model.policy.set_training_mode(False)
        if params_hash(model) != s["params_hash"]:
            raise RuntimeError(f"seed {s['seed']}: parameters changed in transfer from the {executor.name} worker")
        results.append(SeedResult(
            seed=int(s["seed"]), model=model, params_hash=s["params_hash"], val_metrics=s["val_metrics"],
            history=s["history"], timesteps=int(s["timesteps"]), best_timesteps=int(s["best_timesteps"]),
            stopped_early=bool(s["stopped_early"]), seconds=float(s["seconds"]),
        ))
    return TrainingResult(seeds=results, selected=select_median(results))
