"""How numbers read where operators see them: Dagster asset/check metadata and its markdown tables.

One rule set, used everywhere (no local formatting helpers):

* a measurement (Sharpe, PnL, a statistic, a tolerance) keeps 4 significant digits
  (`num`: 1.23456789 -> 1.235, 4.1266e-85 -> 4.127e-85); from 10,000 up it is rounded to a whole
  number (final equity 1,012,345.67 -> 1012346.0);
* a fraction of a whole (completeness, returns, drawdown, exposure, hit rate, drift share,
  coverage, win rate) is a percentage with 2 decimals: as a float under a `<name>_pct` key
  (`pct`: 0.97127 -> 97.13), as text "97.13 %" inside a table (`pct_text`);
* a probability or p-value (PSR, DSR, PBO, SPA p-value, confidence) stays in [0, 1] with 4
  decimals (`prob`: 0.951234 -> 0.9512; 4e-85 -> 0.0), the scale its thresholds are written in.

Which scale a named metric is on is decided here too (`FRACTION_METRICS`, `PROBABILITY_METRICS`;
`metric_entry` / `metric_text`), so a metric reads the same in every asset and table.
Non-finite values stay as they are (NaN says "not computable"); None stays None. Pure: no Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

SIGNIFICANT_DIGITS = 4
PERCENT_DECIMALS = 2
PROBABILITY_DECIMALS = 4
NONE_TEXT = "—"

# Metrics that are fractions of a whole (returns, drawdowns, shares, rates) across the platform.
FRACTION_METRICS = frozenset({
    "total_return", "annual_return", "max_drawdown", "max_drawdown_worst", "volatility", "exposure", "win_rate",
    "hit_rate", "positive_share", "coverage", "completeness", "completeness_mean", "completeness_min",
    "drift_share", "drift_threshold", "val_return", "live_rule_total_return", "live_rule_max_drawdown",
})
# Probabilities and p-values: kept on [0, 1].
PROBABILITY_METRICS = frozenset({
    "psr", "dsr", "pbo", "pvalue", "p_value", "spa_pvalue", "ks_p", "confidence", "alpha", "power",
    "prob_at_least_expected",
})


def _real(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def num(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """`value` to `digits` significant digits (a whole number from 10**digits up)."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)  # a count is exact
    v = _real(value, "num")
    if v is None or not math.isfinite(v) or v == 0.0:
        return v
    if abs(v) >= 10**digits:
        return float(round(v))
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


def pct(fraction: float | None, decimals: int = PERCENT_DECIMALS) -> float | None:
    """A fraction of a whole as a percentage (0.97127 -> 97.13)."""
    v = _real(fraction, "pct")
    if v is None or not math.isfinite(v):
        return v
    return round(100.0 * v, decimals) + 0.0  # + 0.0: no "-0.0"


def prob(p: float | None, decimals: int = PROBABILITY_DECIMALS) -> float | None:
    """A probability or p-value on its own [0, 1] scale, to `decimals` decimals."""
    v = _real(p, "prob")
    if v is None or not math.isfinite(v):
        return v
    return round(v, decimals) + 0.0


def num_text(value: object) -> str:
    """A table cell: integers with thousands separators, floats as `num`, anything else as text."""
    if value is None:
        return NONE_TEXT
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        v = num(float(value))
        assert v is not None
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.0f}" if abs(v) >= 10**SIGNIFICANT_DIGITS else f"{v:.{SIGNIFICANT_DIGITS}g}"
    return str(value)


def pct_text(fraction: object) -> str:
    """A table cell for a fraction of a whole: "97.13 %"."""
    if fraction is None:
        return NONE_TEXT
    v = pct(fraction)  # type: ignore[arg-type]
    assert v is not None
    return f"{v:.{PERCENT_DECIMALS}f} %" if math.isfinite(v) else str(v)


def prob_text(p: object) -> str:
    """A table cell for a probability: "0.9512"."""
    if p is None:
        return NONE_TEXT
    v = prob(p)  # type: ignore[arg-type]
    assert v is not None
    return f"{v:.{PROBABILITY_DECIMALS}f}" if math.isfinite(v) else str(v)


def metric_entry(name: str, value: Any) -> tuple[str, Any]:
    """(key, value) of a named metric for metadata: a fraction becomes `<name>_pct` in percent, a
    probability keeps 4 decimals, any other number 4 significant digits; non-numbers pass through."""
    if value is None or isinstance(value, (bool, str)) or not isinstance(value, Real):
        return name, value
    if name in FRACTION_METRICS:
        return f"{name}_pct", pct(value)
    if name in PROBABILITY_METRICS:
        return name, prob(value)
    return name, num(value)


def metric_entries(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`metric_entry` over a mapping, in its order."""
    return dict(metric_entry(k, v) for k, v in metrics.items())


def metric_text(name: str, value: Any) -> str:
    """A table cell for a named metric, on the metric's scale."""
    if value is None or isinstance(value, (bool, str)) or not isinstance(value, Real):
        return NONE_TEXT if value is None else str(value)
    if name in FRACTION_METRICS:
        return pct_text(value)
    if name in PROBABILITY_METRICS:
        return prob_text(value)
    return num_text(value)
