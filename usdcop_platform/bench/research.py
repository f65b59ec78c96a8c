"""`usdcop bench research`: 4 trainings on a local two-node Ray cluster vs the same 4 in-process.

  * sequential: the 4 trainings (seeds 0-3 of the smoke experiment's algorithm on synthetic arrays)
    one after another in this process (app.execution.InProcessExecutor);
  * Ray: the same 4 as Ray tasks with num_cpus=1 on a head node and a worker node started as
    separate processes (adapters.ray_cluster.LocalCluster, one CPU each), after one short warm-up
    training per node (a worker imports torch and SB3 once; the in-process side gets the same
    warm-up; the warm-up time is reported apart); early stopping off, so all 4 do equal work;
  * speedup = sequential wall / Ray wall (target >= 1.7 on 2 cores);
  * params_hash of every seed equal on Ray and in-process (target: all equal);
  * Ray overhead per trial = (Ray wall x CPUs - sum of the trainings' own seconds) / trials: the
    CPU time per trial that went to scheduling, transfer and idle slots (target <= 2 s).
The cluster's start and stop are timed but not in the speedup (a cluster outlives many searches).
"""

from __future__ import annotations

import time
from typing import Any

from usdcop_platform.bench.harness import BenchResult

N_TRAININGS = 4
TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD_S = 2.0
TIMESTEPS = 16384
QUICK_TIMESTEPS = 2048


WARM_TIMESTEPS = 512


def _warm(shared: Any, item: int) -> float:
    """A short training in a worker process (imports torch/SB3, first kernels); its seconds."""
    from usdcop_platform.app.execution import train_seed_summary

    t0 = time.perf_counter()
    exp, data, _ = shared
    train_seed_summary((exp, data, WARM_TIMESTEPS), 100 + int(item))
    return time.perf_counter() - t0


def run(quick: bool = False, **_: Any) -> tuple[list[BenchResult], dict[str, Any]]:
    import ray

    from usdcop_platform.adapters.ray_cluster import LocalCluster, connect, disconnect
    from usdcop_platform.app.execution import InProcessExecutor, RayExecutor, collect, train_seeds
    from usdcop_platform.bench.training import synthetic_market
    from usdcop_platform.contracts.platform import get_config
    from usdcop_platform.core.training import TrainingData

    cfg = get_config()
    # Early stopping off: every training does the same work, so the speedup measures parallelism,
    # not which seeds happened to stop early.
    exp = cfg.experiment("smoke").with_params({"algorithm.early_stopping": None})
    pos = cfg.features.names.index("position")
    n_feat = len(cfg.features.names)
    data = TrainingData(
        train=synthetic_market(60, 60, n_feat, pos, seed=0), val=synthetic_market(20, 60, n_feat, pos, seed=1), obs_bound=5.0
    )
    total = QUICK_TIMESTEPS if quick else TIMESTEPS
    seeds = list(range(N_TRAININGS))

    _warm((exp, data, None), 0)  # the same warm-up as each Ray worker gets: first kernels, imports
    t0 = time.perf_counter()
    local = train_seeds(InProcessExecutor(), exp, data, seeds, total_timesteps=total)
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    cluster = LocalCluster(workers=1, cpus_per_node=1).start()
    t_start = time.perf_counter() - t0
    try:
        connect(cluster.address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        t0 = time.perf_counter()
        warm = collect(RayExecutor().run(_warm, (exp, data, None), list(range(cpus))), cpus)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        remote = train_seeds(RayExecutor(), exp, data, seeds, total_timesteps=total)
        t_ray = time.perf_counter() - t0
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
    finally:
        disconnect()
        t0 = time.perf_counter()
        cluster.stop()
        t_stop = time.perf_counter() - t0

    same = [a["params_hash"] == b["params_hash"] for a, b in zip(local, remote)]
    train_s = sum(r["seconds"] for r in remote)
    overhead = (t_ray * cpus - train_s) / N_TRAININGS
    speedup = t_seq / t_ray
    results = [
        BenchResult(f"{N_TRAININGS} trainings on Ray ({nodes} nodes x 1 CPU)", round(t_ray, 2), "s",
                    peer="same 4 sequential in-process", peer_value=round(t_seq, 2),
                    target=f">= {TARGET_SPEEDUP}x faster", met=speedup >= TARGET_SPEEDUP),
        BenchResult("params_hash equal on Ray and in-process", float(sum(same)), f"of {N_TRAININGS}",
                    target=f"{N_TRAININGS} of {N_TRAININGS}", met=all(same)),
        BenchResult("Ray overhead per trial", round(overhead, 3), "s", target=f"<= {TARGET_OVERHEAD_S} s",
                    met=overhead <= TARGET_OVERHEAD_S),
        BenchResult("cluster start (head + worker node)", round(t_start, 2), "s"),
        BenchResult("warm-up (short training per node: imports, first kernels)", round(t_warm, 2), "s"),
        BenchResult("cluster stop", round(t_stop, 2), "s"),
    ]
    details = {
        "timesteps_per_training": total, "speedup": round(speedup, 3), "cpus": cpus, "nodes": nodes,
        "sequential_s": round(t_seq, 3), "ray_s": round(t_ray, 3), "ray_train_seconds_sum": round(train_s, 3),
        "warm_up_import_s": [round(w, 3) for w in warm],
        "seeds": [{"seed": a["seed"], "in_process_s": a["seconds"], "ray_s": b["seconds"], "params_hash": a["params_hash"],
                   "same": s} for a, b, s in zip(local, remote, same)],
    }
    return results, details
