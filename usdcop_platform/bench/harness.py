"""Benchmark harness: result rows, machine facts, timing helpers, the table and the JSON file.

JSON shape (issue #2): {"benchmark": NAME, "machine": {...}, "results": [{"name", "value", "unit",
"peer", "peer_value", "ratio", "target", "met"}]}. `ratio` is peer_value / value for timings
(how many times faster we are) and value / peer_value for throughputs, so > 1 always means ours wins.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

# name -> module under usdcop_platform.bench exposing run() -> list[BenchResult]
BENCHMARKS: dict[str, str] = {
    "ingest": "usdcop_platform.bench.ingest",
    "features": "usdcop_platform.bench.features",
    "training": "usdcop_platform.bench.training",
    "backtest": "usdcop_platform.bench.backtest",
    "live": "usdcop_platform.bench.live",
    "learnability": "usdcop_platform.bench.learnability",
    "realdata": "usdcop_platform.bench.realdata",
    "research": "usdcop_platform.bench.research",
    "pipeline": "usdcop_platform.bench.pipeline",
    "chaos": "usdcop_platform.bench.chaos",
}

LOWER_IS_BETTER_UNITS = {"s", "ms", "us", "µs", "ns", "MB", "GB"}


@dataclass
class BenchResult:
    name: str
    value: float
    unit: str
    peer: str | None = None
    peer_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.peer_value is not None and self.value:
            if self.unit in LOWER_IS_BETTER_UNITS:
                self.ratio = self.peer_value / self.value
            else:
                self.ratio = self.value / self.peer_value if self.peer_value else None


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Minimum wall seconds over `repeat` calls (the least-disturbed measurement)."""
    return min(time_once(fn)[0] for _ in range(repeat))


def latency_percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p99 in microseconds."""
    s = sorted(samples_s)
    q = lambda p: s[min(len(s) - 1, int(round(p * (len(s) - 1))))] * 1e6  # noqa: E731
    return {"p50_us": q(0.50), "p95_us": q(0.95), "p99_us": q(0.99), "mean_us": statistics.fmean(s) * 1e6}


def render_table(benchmark: str, results: list[BenchResult]) -> Table:
    table = Table(title=f"usdcop bench {benchmark}")
    for col in ("name", "value", "unit", "peer", "peer value", "ratio", "target", "met"):
        table.add_column(col)
    for r in results:
        met = "" if r.met is None else ("[green]yes[/]" if r.met else "[red]no[/]")
        table.add_row(
            r.name,
            f"{r.value:,.4g}",
            r.unit,
            r.peer or "",
            "" if r.peer_value is None else f"{r.peer_value:,.4g}",
            "" if r.ratio is None else f"{r.ratio:,.2f}x",
            r.target or "",
            met,
        )
    return table


def run_benchmark(name: str, json_path: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    module = importlib.import_module(BENCHMARKS[name])
    out = module.run(**kwargs)
    # A benchmark returns its rows, or (rows, details) when the rows summarize a richer report.
    results, details = out if isinstance(out, tuple) else (out, None)
    payload: dict[str, Any] = {"benchmark": name, "machine": machine_info(), "results": [asdict(r) for r in results]}
    if details is not None:
        payload["details"] = details
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2))
    return payload
