"""app.learnability: the learnability benchmark in small, through the real pipeline (slow, runs in CI).

The full benchmark (`usdcop bench learnability`: three markets x three costs x three seeds on the
experiment's own budget) is what judges the training; these cases are a small version of it: one
seed, a reduced budget, the markets where the verdict is least ambiguous.
"""

from __future__ import annotations

import numpy as np
import pytest

from usdcop_platform.app import learnability as app
from usdcop_platform.core import learnability as lb
from usdcop_platform.core.synthetic import PlantedEdge

pytestmark = pytest.mark.slow

STRONG = lb.MarketSpec("strong_edge", PlantedEdge(0.3))
ZERO = lb.MarketSpec("zero_edge", PlantedEdge(0.0))
BUDGET = 150_000


def _one(platform_config, market: lb.MarketSpec, cost: float, budget: int = BUDGET, **kwargs) -> dict:
    request = app.LearnabilityRequest(markets=(market,), costs_bps=(cost,), seeds=(0,), total_timesteps=budget, **kwargs)
    report = app.run_learnability(platform_config, request)
    (case,) = report["cases"]
    return case


def test_a_strong_planted_edge_is_recovered_on_a_market_with_gaps(platform_config, calendar) -> None:
    # the market carries the export's quirks: missing bars, stale runs, backfill rows
    market = app.build_market(platform_config, calendar, STRONG, app.LearnabilityRequest())
    per_session = market.dataset.splits["train"].group_by("session").len()["len"]
    assert (per_session < calendar.bars_per_session).any()
    assert np.std(market.drift["train"]) > 0

    case = _one(platform_config, STRONG, 2.0)
    refs = case["references"]
    assert refs["oracle"]["sharpe"] >= lb.STRONG_ORACLE_SHARPE
    assert refs["latent_optimum"]["sharpe"] > refs["oracle"]["sharpe"]  # the latent drift is better than any estimate
    assert case["verdict"]["target"] == "edge" and case["verdict"]["passed"] is True, case["verdict"]
    assert case["policy_median"]["exposure"] > 0.05


def test_no_edge_means_no_trades(platform_config) -> None:
    case = _one(platform_config, ZERO, 25.0)
    assert "latent_optimum" not in case["references"]
    assert case["verdict"]["target"] == "flat" and case["verdict"]["passed"] is True, case["verdict"]


def test_a_cost_of_zero_runs(platform_config) -> None:
    case = _one(platform_config, STRONG, 0.0, budget=20_000)
    assert case["cost_bps"] == 0.0 and case["verdict"]["target"] == "edge"
    assert np.isfinite(case["policy_median"]["sharpe"])


def test_a_market_shorter_than_an_episode_is_a_clear_error(platform_config) -> None:
    ranges = app.DateRanges.model_validate(
        {
            "train": {"start": "2021-03-01", "end": "2021-03-02"},  # two sessions; baseline episodes are five
            "val": {"start": "2021-03-25", "end": "2021-04-30"},
            "test": {"start": "2021-05-20", "end": "2021-06-30"},
        }
    )
    with pytest.raises(ValueError, match="fewer than one episode"):
        _one(platform_config, ZERO, 25.0, date_ranges=ranges)


def test_bad_requests_are_refused() -> None:
    with pytest.raises(app.LearnabilityError, match="at least one market"):
        app.LearnabilityRequest(seeds=())
    with pytest.raises(app.LearnabilityError, match="costs must be finite"):
        app.LearnabilityRequest(costs_bps=(-1.0,))
