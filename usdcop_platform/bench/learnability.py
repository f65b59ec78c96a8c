"""`usdcop bench learnability`: does training recover a planted edge, and stay flat where there is none?

Shell over app.learnability (see there and core.learnability for the markets, the oracle and the
targets). One row per (market, cost): the policy's median out-of-sample net Sharpe beside the
oracle's, with the target and whether it is met; the JSON's `details` hold every case in full
(references, each seed, medians, verdict). `--quick` trains one seed on a small budget.
"""

from __future__ import annotations

from typing import Any

from usdcop_platform.bench.harness import BenchResult

QUICK_TIMESTEPS = 60_000


def run(quick: bool = False, **_: Any) -> tuple[list[BenchResult], dict[str, Any]]:
    from rich.console import Console

    from usdcop_platform.app.learnability import LearnabilityRequest, run_learnability
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.settings import get_settings

    console = Console(stderr=True)
    cfg = load_platform_config(get_settings().config_dir)
    request = LearnabilityRequest(seeds=(0,), total_timesteps=QUICK_TIMESTEPS) if quick else LearnabilityRequest()
    with console.status("learnability") as status:
        report = run_learnability(cfg, request, progress=lambda msg: status.update(f"learnability: {msg}"))
    return [row for case in report["cases"] for row in rows(case)], report


def rows(case: dict[str, Any]) -> list[BenchResult]:
    """The table rows of one case: what is judged, beside its oracle."""
    label = f"{case['market']} @ {case['cost_bps']:g} bps"
    verdict, pol, oracle = case["verdict"], case["policy_median"], case["references"]["oracle"]
    if verdict["target"] == "flat":
        return [
            BenchResult(f"{label}: round trips / 20 sessions (median)", pol["round_trips_per_20_sessions"], "count",
                        peer="oracle", peer_value=oracle["round_trips_per_20_sessions"], ratio=None,
                        target="<= 1 and return >= -0.5%", met=verdict["passed"]),
            BenchResult(f"{label}: test return (median)", pol["total_return"], "fraction", peer="oracle",
                        peer_value=oracle["total_return"], ratio=None, target=">= -0.005", met=verdict["passed"]),
        ]
    target = ">= 60% of oracle" if verdict["target"] == "edge" else "reported"
    return [
        BenchResult(f"{label}: net Sharpe (median)", pol["sharpe"], "sharpe", peer="oracle", peer_value=oracle["sharpe"],
                    ratio=case["share_of_oracle"], target=target, met=verdict["passed"]),
    ]
