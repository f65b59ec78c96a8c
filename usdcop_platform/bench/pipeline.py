"""`usdcop bench pipeline`: the real-data main job through Dagster, against the per-partition path.

Each measurement runs in a fresh Python process on a fresh state folder (lake, SQL store and the
local Dagster instance under it), as a new user's shell would:

- ingest: `usdcop ingest --source file` of the real 2020-2024 exports (one range run of 1,221
  session partitions + the macro run), the whole command process timed (interpreter, imports,
  Great Expectations, Dagster bookkeeping). Target ≤ 10 s.
- features: features/m5_features for every session through Dagster in one range run (after the
  ingest above). Target ≤ 30 s.
  Peer, measured in the same run: the per-partition path (one Dagster run per session, each
  reading its warm-up and the full history up to it for the equality check), timed on a sample
  of sessions spread evenly over the history and extrapolated to all of them (the cost of a run
  grows linearly with its session's position, so the sample mean × N estimates the sum).
- demo: `usdcop demo` on a fresh state folder (synthetic source, `demo` experiment). Target ≤ 60 s.
- run: `usdcop run -e baseline --source file` of the real exports to a proposal, on a fresh state
  folder, with a small training budget (RUN_TIMESTEPS per seed and fold): the whole process minus
  the PPO learning inside it (every seed of the model and of the walk-forward folds, as the run
  reports it) is "everything besides training". Target ≤ 60 s.

With --quick: 2024 only, a 3-session peer sample, no demo and no run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from usdcop_platform.bench.harness import BenchResult
from usdcop_platform.bench.ingest import REAL_BARS, REAL_DATA_DIR, REAL_MACRO

TARGET_INGEST_S = 10.0
TARGET_FEATURES_S = 30.0
TARGET_DEMO_S = 60.0
TARGET_RUN_BESIDES_TRAINING_S = 60.0
RUN_TIMESTEPS = 2048  # one PPO rollout per seed and fold: the run's fixed costs, not a real training
PEER_SAMPLE = 8  # sessions timed one run each for the per-partition peer
QUICK_START = date(2024, 1, 1)


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DATABASE_URL", "MLFLOW_TRACKING_URI")}
    env.update(USDCOP_DATA_DIR=str(state / "lake"), USDCOP_MODELS_DIR=str(state / "models"),
               USDCOP_STATE_DIR=str(state / "state"))
    return env


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _usdcop(args: list[str], state: Path) -> tuple[float, str, float]:
    """Wall seconds of one `usdcop ...` process, its stdout and its CPU seconds (user + sys: on a
    shared machine the wall time depends on the load, the CPU time much less)."""
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "usdcop_platform.cli", *args], env=_env(state),
                          capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"usdcop {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout, cpu


def _child(code: str, state: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code], env=_env(state), capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"bench pipeline child failed:\n{proc.stderr[-3000:]}")
    return json.loads(line.removeprefix("BENCH_RESULT "))


def _features_child(keys: list[str] | None, sample: list[str] | None) -> None:
    """In the child: one range run over all published sessions, or one run per sampled session."""
    import dagster as dg

    from usdcop_platform.adapters.dagster_instance import open_instance
    from usdcop_platform.contracts.assets import FEATURES
    from usdcop_platform.definitions import asset_def, build_resources
    from usdcop_platform.settings import get_settings

    s = get_settings()
    resources = build_resources(s)
    m5_features = asset_def(FEATURES)
    with open_instance(s.resolved_dagster_home) as instance:
        if keys is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            result = dg.materialize([m5_features], instance=instance, resources=resources, raise_on_error=False,
                                    tags={"dagster/asset_partition_range_start": keys[0],
                                          "dagster/asset_partition_range_end": keys[-1]})
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            mats = result.asset_materializations_for_node(m5_features.op.name)
            published = sum(1 for m in mats if m.metadata["published"].value)
            print("BENCH_RESULT " + json.dumps({"wall_s": wall, "cpu_s": cpu, "sessions": len(mats),
                                                    "published": published}))
            return
        walls = []
        for key in sample or []:
            t0 = time.perf_counter()
            dg.materialize([m5_features], partition_key=key, instance=instance, resources=resources,
                           raise_on_error=False)
            walls.append(time.perf_counter() - t0)
        print("BENCH_RESULT " + json.dumps({"walls_s": walls}))


def _sessions(state: Path) -> list[str]:
    from usdcop_platform.adapters.lake import ParquetLake

    return ParquetLake(state / "lake").partitions("raw/usdcop_m5_ohlcv")


def run(quick: bool = False) -> list[BenchResult]:
    if not (REAL_BARS.exists() and REAL_MACRO.exists()):
        print(f"bench pipeline: skipped, the real exports are not in {REAL_DATA_DIR}", file=sys.stderr)
        return []
    return measure_real(quick) + ([] if quick else measure_demo() + measure_run())


def measure_run() -> list[BenchResult]:
    """`usdcop run -e baseline` of the real files to a proposal, whole process, minus its training."""
    with tempfile.TemporaryDirectory(prefix="usdcop-bench-run-") as tmp:
        args = ["run", "-e", "baseline", "--source", "file", "--bars", str(REAL_BARS), "--macro", str(REAL_MACRO),
                "--timesteps", str(RUN_TIMESTEPS), "--json"]
        wall, out, cpu = _usdcop(args, Path(tmp))
    proposal = json.loads(out.strip().splitlines()[-1])
    training = float(proposal.get("training_seconds") or 0.0)
    besides = wall - training
    return [
        BenchResult(f"usdcop run -e baseline, real 2020-2024 files to a {proposal['recommendation']} proposal "
                    f"(--timesteps {RUN_TIMESTEPS}; whole process)", round(wall, 1), "s"),
        BenchResult("usdcop run: PPO learning inside it (every seed of the model and of the walk-forward folds)",
                    round(training, 1), "s"),
        BenchResult("usdcop run: everything besides training (whole process minus PPO learning)", round(besides, 1),
                    "s", target=f"<= {TARGET_RUN_BESIDES_TRAINING_S:g} s", met=besides <= TARGET_RUN_BESIDES_TRAINING_S),
        BenchResult("usdcop run: CPU time of the process (user + sys)", round(cpu, 1), "s"),
    ]


def measure_real(quick: bool = False) -> list[BenchResult]:
    """Ingest and features of the real files through Dagster, and the per-partition peer."""
    label = "2024" if quick else "2020-2024"
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="usdcop-bench-pipeline-") as tmp:
        state = Path(tmp)
        args = ["ingest", "--source", "file", "--bars", str(REAL_BARS), "--macro", str(REAL_MACRO), "--json"]
        if quick:
            args += ["--start", QUICK_START.isoformat()]
        ingest_s, out, ingest_cpu = _usdcop(args, state)
        summary = json.loads(out.strip().splitlines()[-1])
        results.append(BenchResult(
            f"usdcop ingest {label} through Dagster ({summary['sessions_expected']} session partitions, whole process)",
            round(ingest_s, 2), "s", target=f"<= {TARGET_INGEST_S:g} s", met=ingest_s <= TARGET_INGEST_S))
        results.append(BenchResult(f"usdcop ingest {label}: CPU time of the process (user + sys)", round(ingest_cpu, 2), "s"))

        keys = _sessions(state)
        code = ("from usdcop_platform.bench.pipeline import _features_child; "
                f"_features_child({keys!r}, None)")
        feats = _child(code, state)
        n = len(keys)
        step = max(1, n // (3 if quick else PEER_SAMPLE))
        sample = keys[step // 2::step][: (3 if quick else PEER_SAMPLE)]
        peer = _child(f"from usdcop_platform.bench.pipeline import _features_child; _features_child(None, {sample!r})",
                      state)
        peer_total = sum(peer["walls_s"]) / len(peer["walls_s"]) * n
        results.append(BenchResult(
            f"features {label}, all {feats['sessions']} sessions through Dagster (one range run; "
            f"{feats['published']} published)", round(feats["wall_s"], 2), "s",
            peer=f"one run per session ({len(sample)}-session sample, extrapolated)", peer_value=round(peer_total, 1),
            target=f"<= {TARGET_FEATURES_S:g} s", met=feats["wall_s"] <= TARGET_FEATURES_S))
        results.append(BenchResult(f"features {label}: CPU time of the range run", round(feats["cpu_s"], 2), "s"))
        results.append(BenchResult("features per-partition peer: mean run (sampled sessions)",
                                   round(sum(peer["walls_s"]) / len(peer["walls_s"]), 3), "s"))
    return results


def measure_demo() -> list[BenchResult]:
    """`usdcop demo` on a fresh state folder, the whole process."""
    with tempfile.TemporaryDirectory(prefix="usdcop-bench-demo-") as tmp:
        demo_s, _, demo_cpu = _usdcop(["demo"], Path(tmp))
    return [BenchResult("usdcop demo on a fresh state (synthetic, demo experiment; whole process)", round(demo_s, 1),
                        "s", target=f"<= {TARGET_DEMO_S:g} s", met=demo_s <= TARGET_DEMO_S),
            BenchResult("usdcop demo: CPU time of the process (user + sys)", round(demo_cpu, 1), "s")]
