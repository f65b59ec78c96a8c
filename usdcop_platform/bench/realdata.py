"""`usdcop bench realdata`: the `baseline` experiment on the real 2020-2024 files, stated honestly.

Shell over app.real_data_study. Files: USDCOP_BARS_FILE / USDCOP_MACRO_FILE, else the shared exports
beside the repository (../shared/data). One row per cost level and period (2024 test, walk-forward
mean): the policy's median net Sharpe beside the best simple rule's; no target, this is a report.
`--quick` trains one seed on a small budget and no walk-forward folds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usdcop_platform.bench.harness import BenchResult

QUICK_TIMESTEPS = 50_000
REPO_ROOT = Path(__file__).resolve().parents[2]


def run(quick: bool = False, **_: Any) -> tuple[list[BenchResult], dict[str, Any]]:
    from rich.console import Console

    from usdcop_platform.app.real_data_study import RealDataRequest, default_real_files, run_real_data_study
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.settings import get_settings

    settings = get_settings()
    bars, macro = default_real_files(REPO_ROOT)
    request = RealDataRequest(bars_file=settings.bars_file or bars, macro_file=settings.macro_file or macro)
    if quick:
        request = RealDataRequest(bars_file=request.bars_file, macro_file=request.macro_file, seeds=(0,),
                                  folds=(), total_timesteps=QUICK_TIMESTEPS)
    console = Console(stderr=True)
    with console.status("realdata") as status:
        report = run_real_data_study(load_platform_config(settings.config_dir), request,
                                     progress=lambda msg: status.update(f"realdata: {msg}"))
    return [row for cost in report["costs"] for row in rows(cost)], report


def rows(cost: dict[str, Any]) -> list[BenchResult]:
    out = []
    periods = [("test " + cost["test"]["start"][:4], cost["test"]["policy_median"]["sharpe"], cost["test"]["benchmarks"])]
    folds = cost["walk_forward"]["folds"]
    if folds:
        mean_bench = {
            name: {"sharpe": sum(f["benchmarks"][name]["sharpe"] for f in folds) / len(folds)} for name in folds[0]["benchmarks"]
        }
        periods.append((f"walk-forward mean of {len(folds)} folds", cost["walk_forward"]["mean_sharpe"], mean_bench))
    for label, sharpe, benches in periods:
        best = max((n for n in benches if n != "flat"), key=lambda n: benches[n]["sharpe"])
        out.append(BenchResult(f"{cost['cost_bps']:g} bps, {label}: policy net Sharpe (median)", sharpe, "sharpe",
                               peer=f"best rule ({best})", peer_value=benches[best]["sharpe"], ratio=None,
                               target="report", met=None))
    return out
