"""core.promotion: the first-vote rules, reasons, deltas and the statistical statement."""

from __future__ import annotations

import math

import pytest

from usdcop_platform.contracts.evaluation import PromotionPolicy
from usdcop_platform.contracts.experiment import SuccessCriteria
from usdcop_platform.core import promotion as P
from usdcop_platform.core.metrics import Annualization, BootstrapInterval

CRIT = SuccessCriteria()  # REFERENCE.md defaults: 0.5 / 0.15 / 0.45 / 50 / 5 %
POLICY = PromotionPolicy()


def good(**over) -> dict:
    m = {"sharpe": 1.2, "max_drawdown": 0.08, "win_rate": 0.52, "trades": 120, "sortino": 1.5, "total_return": 0.1,
         "annual_return": 0.1, "profit_factor": 1.3}
    m.update(over)
    return m


def decide(metrics, n_bars=5000, baseline=None, **kw):
    return P.decide(metrics, n_bars=n_bars, criteria=CRIT, min_test_bars=3000, policy=POLICY,
                    baseline_metrics=baseline, **kw)


def test_all_pass_without_baseline_promotes() -> None:
    d = decide(good())
    assert (d.recommendation, d.confidence, d.improved) == ("PROMOTE", 0.85, True)
    assert all(c.status == "PASS" for c in d.criteria)
    assert d.baseline_comparison["deltas"] == {} and "no production model" in d.reasons[-1]


def test_all_pass_and_beats_baseline_by_the_threshold_promotes() -> None:
    d = decide(good(sharpe=1.06), baseline=good(sharpe=1.0), baseline_model_id="prod")
    assert d.recommendation == "PROMOTE"
    assert d.baseline_comparison["baseline_model_id"] == "prod"
    assert d.baseline_comparison["deltas"]["sharpe"]["delta"] == pytest.approx(0.06)
    assert d.baseline_comparison["required_sharpe"] == pytest.approx(1.05)


def test_all_pass_but_not_improved_is_review() -> None:
    d = decide(good(sharpe=1.04), baseline=good(sharpe=1.0))
    assert (d.recommendation, d.confidence, d.improved) == ("REVIEW", 0.60, False)
    assert "does not beat" in d.reasons[-1] and "1.05" in d.reasons[-1]


def test_improvement_against_a_negative_baseline_uses_its_magnitude() -> None:
    ok, detail = P.improvement(-0.9, -1.0, 0.05)
    assert ok and detail["required_sharpe"] == pytest.approx(-0.95)
    assert not P.improvement(-0.96, -1.0, 0.05)[0]
    assert not P.improvement(0.0, 0.0, 0.05)[0] and P.improvement(0.01, 0.0, 0.05)[0]


@pytest.mark.parametrize(
    ("over", "failing"),
    [
        ({"sharpe": 0.3}, "min_sharpe"),
        ({"max_drawdown": 0.2}, "max_drawdown"),
        ({"win_rate": 0.4}, "min_win_rate"),
        ({"trades": 10}, "min_trades"),
    ],
)
def test_any_failing_criterion_rejects_naming_it(over, failing) -> None:
    d = decide(good(**over), baseline=good(sharpe=0.1))
    assert (d.recommendation, d.confidence) == ("REJECT", 0.90)
    crit = d.criteria_dict()
    assert crit[failing]["status"] == "FAIL" and crit[failing]["passed"] is False
    assert [c.name for c in d.criteria if not c.passed] == [failing]
    assert any(r.startswith(f"FAIL {failing}") for r in d.reasons)


def test_criterion_records_value_threshold_and_comparator() -> None:
    crit = decide(good()).criteria_dict()
    assert crit["max_drawdown"] == {"name": "max_drawdown", "metric": "max_drawdown", "value": 0.08,
                                   "threshold": 0.15, "comparator": "<=", "passed": True, "status": "PASS"}
    assert crit["min_trades"]["value"] == 120 and crit["min_test_bars"]["threshold"] == 3000


def test_short_test_split_rejects_with_that_reason_not_a_crash() -> None:
    d = decide(good(), n_bars=1200)
    assert d.recommendation == "REJECT"
    assert d.reasons[0].startswith("test split too short: 1,200 bars < min_test_bars 3,000")
    # no backtest statistics at all (an empty period): everything fails, still no crash
    empty = decide(None, n_bars=0)
    assert empty.recommendation == "REJECT" and all(not c.passed for c in empty.criteria)
    assert empty.criteria_dict()["min_sharpe"]["value"] is None


def test_non_finite_metric_counts_as_missing() -> None:
    d = decide(good(sharpe=math.inf))
    assert d.criteria_dict()["min_sharpe"]["passed"] is False


def test_statement_is_honest_about_what_the_test_can_certify(calendar) -> None:
    ann = Annualization.from_calendar(calendar)
    metrics = {"n_bars": 14_700, "n_sessions": 245, "years": 14_700 / ann.bars_per_year, "sharpe": 0.9, "psr": 0.81,
               "dsr": 0.55, "n_trials": 6, "sr0_annual": 0.8, "min_track_record_years": 3.4, "certifiable_sharpe": 1.64}
    boot = {"baseline": BootstrapInterval(0.3, -0.9, 1.5, 0.95, 0.31, 60, 2000)}
    text = P.statistical_statement(metrics, ann=ann, confidence=0.95, test_start="2024-01-09",
                                   test_end="2024-12-31", bootstrap=boot)
    assert "PSR(0) = 0.81" in text and "DSR = 0.55" in text and "6 trials" in text
    assert "minimum track record length is 3.40 years" in text and "is too short" in text
    one_year = P.one_year_certifiable_sharpe(ann, 0.95)
    assert f"{one_year:.2f}" in text and 1.6 < one_year < 1.7
    assert "[-0.90, +1.50]" in text and "not significant" in text
    no_stats = P.statistical_statement(None, ann=ann, confidence=0.95, test_start=None, test_end=None)
    assert "No backtest statistics" in no_stats and f"{one_year:.2f}" in no_stats


def test_statement_for_a_losing_strategy(calendar) -> None:
    ann = Annualization.from_calendar(calendar)
    metrics = {"n_bars": 3000, "n_sessions": 50, "years": 0.2, "sharpe": -0.4, "psr": 0.4, "dsr": 0.2, "n_trials": 1,
               "min_track_record_years": math.inf, "certifiable_sharpe": 3.6}
    text = P.statistical_statement(metrics, ann=ann, confidence=0.95, test_start="a", test_end="b")
    assert "no track record length would make it significant" in text and "1 trial " in text
