"""core.display: the one way numbers read in asset metadata and its tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usdcop_platform.core import display as d


@pytest.mark.parametrize(("value", "expected"), [
    (1.23456789, 1.235),
    (4.12666579163604e-85, 4.127e-85),  # a tiny statistic keeps its magnitude
    (0.9712737127371274, 0.9713),
    (-0.000123456, -0.0001235),
    (123.456, 123.5),
    (1012345.67, 1012346.0),  # from 10,000 up: whole numbers
    (0.0, 0.0),
    (np.float64(2.345678), 2.346),
    (7, 7),  # a count is exact
    (None, None),
])
def test_num_keeps_four_significant_digits(value, expected) -> None:
    assert d.num(value) == expected


def test_num_keeps_non_finite_values_and_refuses_non_numbers() -> None:
    assert math.isnan(d.num(float("nan"))) and d.num(float("inf")) == float("inf")
    with pytest.raises(TypeError, match="num: expected a number, got str"):
        d.num("1.2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool"):
        d.pct(True)


def test_fractions_read_as_percentages() -> None:
    assert d.pct(0.9712737127371274) == 97.13
    assert d.pct(-0.0123456) == -1.23
    assert d.pct(-0.00001) == 0.0 and str(d.pct(-0.00001)) == "0.0"  # never "-0.0"
    assert d.pct_text(0.9712737127371274) == "97.13 %"
    assert d.pct_text(None) == d.NONE_TEXT


def test_probabilities_stay_on_their_scale() -> None:
    assert d.prob(0.951234) == 0.9512
    assert d.prob(4.1e-85) == 0.0
    assert d.prob_text(0.5) == "0.5000"


def test_metric_entries_name_the_unit() -> None:
    got = d.metric_entries({"sharpe": 1.23456, "max_drawdown": 0.0123456, "total_return": -0.2,
                            "psr": 4.1e-85, "trades": 12, "live_rule_fill": "open 1 bar(s) after the signal",
                            "refused_sessions": ["2024-01-02"], "published": True})
    assert got == {"sharpe": 1.235, "max_drawdown_pct": 1.23, "total_return_pct": -20.0, "psr": 0.0, "trades": 12,
                   "live_rule_fill": "open 1 bar(s) after the signal", "refused_sessions": ["2024-01-02"],
                   "published": True}


def test_table_cells_follow_the_metric_scale() -> None:
    assert d.metric_text("win_rate", 0.5) == "50.00 %"
    assert d.metric_text("dsr", 0.97654) == "0.9765"
    assert d.metric_text("sharpe", 1.23456) == "1.235"
    assert d.metric_text("final_equity", 1012345.67) == "1,012,346"
    assert d.metric_text("trades", 1234) == "1,234"
    assert d.metric_text("sharpe", None) == d.NONE_TEXT
    assert d.num_text(True) == "True" and d.num_text(float("nan")) == "nan"


def test_no_metric_is_both_a_fraction_and_a_probability() -> None:
    assert not d.FRACTION_METRICS & d.PROBABILITY_METRICS
