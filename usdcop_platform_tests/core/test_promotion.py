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


BARS_PER_YEAR = 14_700.0


def good(**over) -> dict:
    """Point criteria pass and the test is significant: annual Sharpe 4 over 5,000 bars (normal
    returns) gives PSR(0) ~ 0.99 and MinTRL(0.95) ~ 2,500 bars."""
    m = {"sharpe": 4.0, "max_drawdown": 0.08, "win_rate": 0.52, "trades": 120, "sortino": 1.5, "total_return": 0.1,
         "annual_return": 0.1, "profit_factor": 1.3, "psr": 0.99, "dsr": 0.97, "n_bars": 5000,
         "years": 5000 / BARS_PER_YEAR, "skew": 0.0, "kurtosis": 3.0}
    m.update(over)
    return m


POINT = {"min_test_bars", "min_sharpe", "max_drawdown", "min_win_rate", "min_trades"}
SIGNIFICANCE = {"psr", "dsr", "min_track_record"}


def decide(metrics, n_bars=5000, baseline=None, **kw):
    return P.decide(metrics, n_bars=n_bars, criteria=CRIT, min_test_bars=3000, policy=POLICY,
                    baseline_metrics=baseline, **kw)


def test_all_pass_without_baseline_promotes() -> None:
    d = decide(good())
    assert (d.recommendation, d.confidence, d.improved) == ("PROMOTE", 0.85, True)
    assert all(c.status == "PASS" for c in d.criteria)
    assert d.baseline_comparison["deltas"] == {} and "no production model" in d.reasons[-1]


def test_all_pass_and_beats_baseline_by_the_threshold_promotes() -> None:
    d = decide(good(sharpe=4.2), baseline=good(sharpe=4.0), baseline_model_id="prod")
    assert d.recommendation == "PROMOTE"
    assert d.baseline_comparison["baseline_model_id"] == "prod"
    assert d.baseline_comparison["deltas"]["sharpe"]["delta"] == pytest.approx(0.2)
    assert d.baseline_comparison["required_sharpe"] == pytest.approx(4.2)


def test_all_pass_but_not_improved_is_review() -> None:
    d = decide(good(sharpe=4.1), baseline=good(sharpe=4.0))
    assert (d.recommendation, d.confidence, d.improved) == ("REVIEW", 0.60, False)
    assert "does not beat" in d.reasons[-1] and "4.2" in d.reasons[-1]


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
    assert [c.name for c in d.criteria if not c.passed and c.kind == "point"] == [failing]
    assert any(r.startswith(f"FAIL {failing}") for r in d.reasons)


def test_criterion_records_value_threshold_and_comparator() -> None:
    crit = decide(good()).criteria_dict()
    assert crit["max_drawdown"] == {"name": "max_drawdown", "metric": "max_drawdown", "value": 0.08,
                                   "threshold": 0.15, "comparator": "<=", "passed": True, "status": "PASS",
                                   "kind": "point"}
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
    assert "PSR(0) = 0.81" in text and "DSR = 0.55" in text and "N = 6 trials" in text
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


# ---- significance (audit finding 2: decide() ignored PSR, DSR and MinTRL) --------------------------
def test_audit_case_point_criteria_without_significance_is_review_not_promote() -> None:
    """Sharpe 0.6, drawdown 0.10, win rate 0.5, 60 trades, DSR 0.18 over one year: the old rules
    said PROMOTE (0.85); a one-year test cannot certify a Sharpe below ~1.64."""
    one_year = int(BARS_PER_YEAR)
    m = good(sharpe=0.6, max_drawdown=0.10, win_rate=0.5, trades=60, psr=0.73, dsr=0.18, n_bars=one_year,
             years=1.0)
    d = decide(m, n_bars=one_year)
    assert (d.recommendation, d.confidence) == ("REVIEW", 0.60)
    crit = d.criteria_dict()
    assert {k for k, c in crit.items() if c["kind"] == "point"} == POINT
    assert all(crit[k]["status"] == "PASS" for k in POINT)
    assert {k for k, c in crit.items() if c["kind"] == "significance"} == SIGNIFICANCE
    assert crit["psr"] | {} == {**crit["psr"], "value": 0.73, "threshold": 0.95, "status": "FAIL"}
    assert crit["dsr"]["status"] == "FAIL" and crit["dsr"]["value"] == 0.18
    mintrl = crit["min_track_record"]
    assert mintrl["status"] == "FAIL" and mintrl["value"] == one_year and mintrl["threshold"] > 7 * one_year
    reason = d.reasons[-1]
    assert "not significant at p_min 0.95" in reason and "PSR(0) 0.73 < 0.95" in reason
    assert "DSR 0.18 < 0.95" in reason and "fewer than MinTRL(0.95)" in reason


@pytest.mark.parametrize("failing", ["psr", "dsr", "min_track_record"])
def test_each_significance_criterion_alone_blocks_promotion(failing) -> None:
    over = {"psr": {"psr": 0.94}, "dsr": {"dsr": 0.5}, "min_track_record": {"n_bars": 2000, "years": 2000 / BARS_PER_YEAR}}
    n = over[failing].get("n_bars", 5000)
    d = P.decide(good(**over[failing]), n_bars=n, criteria=CRIT, min_test_bars=1000, policy=POLICY)
    assert d.recommendation == "REVIEW"
    assert [c.name for c in d.criteria if not c.passed] == [failing]


def test_test_shorter_than_mintrl_is_stated_in_bars() -> None:
    """Bad input of the issue: a test shorter than MinTRL -> REVIEW with the two lengths."""
    m = good(sharpe=2.0, psr=0.96, dsr=0.96, n_bars=5000)
    want = P.min_track_record_bars(m, 0.95)
    assert want > 5000
    d = decide(m)
    assert d.recommendation == "REVIEW"
    assert f"fewer than MinTRL(0.95) = {math.ceil(want):,} bars" in d.reasons[-1]


def test_p_min_comes_from_the_experiment() -> None:
    strict = SuccessCriteria(p_min=0.999)
    d = P.decide(good(), n_bars=5000, criteria=strict, min_test_bars=3000, policy=POLICY)
    assert d.recommendation == "REVIEW" and d.criteria_dict()["psr"]["threshold"] == 0.999
    assert SuccessCriteria().p_min == 0.95


def test_losing_sharpe_has_no_track_record_length() -> None:
    m = good(sharpe=-0.5)
    assert P.min_track_record_bars(m, 0.95) == math.inf
    c = decide(m).criteria_dict()["min_track_record"]
    assert c["status"] == "FAIL" and c["threshold"] == math.inf


def test_point_failure_still_rejects_and_lists_significance() -> None:
    d = decide(good(trades=10, dsr=0.2))
    assert d.recommendation == "REJECT"
    assert any(r.startswith("FAIL min_trades") for r in d.reasons) and any(r.startswith("FAIL dsr") for r in d.reasons)


def test_fold_stability_is_a_point_criterion_when_folds_exist() -> None:
    wf = {"aggregate": {"positive_share": 0.25, "folds": 4}}
    d = decide(good(), walk_forward=wf)
    c = d.criteria_dict()["fold_stability"]
    assert (c["value"], c["threshold"], c["status"], c["kind"]) == (0.25, 0.5, "FAIL", "point")
    assert d.recommendation == "REJECT"
    assert decide(good(), walk_forward={"aggregate": {"positive_share": 0.75}}).recommendation == "PROMOTE"
    assert "fold_stability" not in decide(good()).criteria_dict()


def test_statement_states_one_trial_and_zero_variance(calendar) -> None:
    ann = Annualization.from_calendar(calendar)
    base = {"n_bars": 3000, "n_sessions": 50, "years": 0.2, "sharpe": 1.0, "psr": 0.7, "dsr": 0.7,
            "min_track_record_years": 1.0, "certifiable_sharpe": 3.6}
    one = P.statistical_statement({**base, "n_trials": 1, "n_trials_source": "trial ledger: 1 training seed"},
                                  ann=ann, confidence=0.95, test_start="a", test_end="b")
    assert "N = 1 trial of the experiment family (trial ledger: 1 training seed)" in one and "DSR = PSR(0)" in one
    zero = P.statistical_statement({**base, "n_trials": 3, "trial_sharpe_variance_annual": 0.0}, ann=ann,
                                   confidence=0.95, test_start="a", test_end="b")
    assert "V = 0" in zero and "identical" in zero and "DSR = PSR(0)" in zero
    many = P.statistical_statement({**base, "n_trials": 3, "trial_sharpe_variance_annual": 0.25,
                                    "trial_variance_source": "cross-trial"}, ann=ann, confidence=0.95,
                                   test_start="a", test_end="b")
    assert "V = 0.25" in many and "(cross-trial)" in many
