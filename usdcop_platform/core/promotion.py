"""First vote: success criteria -> PROMOTE / REVIEW / REJECT, with reasons and a statistical statement.

Rules (REFERENCE.md "Promotion proposal"; thresholds from the experiment's `success_criteria`,
confidences from contracts.evaluation.PromotionPolicy):

    criteria   min_test_bars  n_bars        >= backtest.min_test_bars
               min_sharpe     sharpe        >= min_sharpe
               max_drawdown   max_drawdown  <= max_drawdown
               min_win_rate   win_rate      >= min_win_rate
               min_trades     trades        >= min_trades
    improved   with a production baseline: sharpe >= baseline_sharpe + improvement_threshold * |baseline_sharpe|
               and sharpe > baseline_sharpe; without one there is nothing to beat (improved).
    decision   every criterion passes and improved      -> PROMOTE (0.85)
               every criterion passes, not improved     -> REVIEW  (0.60)
               any criterion fails                      -> REJECT  (0.90)

The statement reports PSR(0), DSR with its trial count, the test length against the minimum
track record length, the bootstrap interval of the Sharpe difference, and how large a Sharpe
this test length (and a one-year test) can certify at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from usdcop_platform.contracts.evaluation import PromotionPolicy, Recommendation
from usdcop_platform.contracts.experiment import SuccessCriteria
from usdcop_platform.core.metrics import Annualization, BootstrapInterval, certifiable_sharpe

Comparator = Literal[">=", "<="]


@dataclass(frozen=True)
class Criterion:
    name: str
    metric: str
    value: float | int | None
    threshold: float | int
    comparator: Comparator
    passed: bool

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def describe(self) -> str:
        shown = "n/a" if self.value is None else _fmt(self.value)
        return f"{self.name}: {self.metric} {shown} {self.comparator} {_fmt(self.threshold)} -> {self.status}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class PromotionDecision:
    recommendation: Recommendation
    confidence: float
    criteria: tuple[Criterion, ...]
    improved: bool
    reasons: tuple[str, ...]
    baseline_comparison: dict[str, Any] = field(default_factory=dict)
    statistical_statement: str = ""

    @property
    def all_passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def criteria_dict(self) -> dict[str, Any]:
        return {c.name: c.as_dict() for c in self.criteria}


def _fmt(x: float | int) -> str:
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 10):
        return f"{int(x):,}"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    return f"{x:.4g}"


def _num(metrics: dict[str, Any] | None, key: str) -> float | None:
    if not metrics or metrics.get(key) is None:
        return None
    v = float(metrics[key])
    return v if math.isfinite(v) else None


def evaluate_criteria(
    metrics: dict[str, Any] | None, n_bars: int, criteria: SuccessCriteria, min_test_bars: int
) -> tuple[Criterion, ...]:
    """Each criterion with its value and threshold; a missing value (no backtest) fails."""

    def ge(name: str, metric: str, value: float | None, threshold: float | int) -> Criterion:
        return Criterion(name, metric, value, threshold, ">=", value is not None and value >= threshold)

    def le(name: str, metric: str, value: float | None, threshold: float | int) -> Criterion:
        return Criterion(name, metric, value, threshold, "<=", value is not None and value <= threshold)

    trades = _num(metrics, "trades")
    return (
        ge("min_test_bars", "test_bars", n_bars, min_test_bars),
        ge("min_sharpe", "sharpe", _num(metrics, "sharpe"), criteria.min_sharpe),
        le("max_drawdown", "max_drawdown", _num(metrics, "max_drawdown"), criteria.max_drawdown),
        ge("min_win_rate", "win_rate", _num(metrics, "win_rate"), criteria.min_win_rate),
        ge("min_trades", "trades", None if trades is None else int(trades), criteria.min_trades),
    )


def improvement(
    sharpe: float | None, baseline_sharpe: float | None, threshold: float
) -> tuple[bool, dict[str, Any]]:
    """(improved, details) of the candidate's Sharpe against the production baseline."""
    if baseline_sharpe is None:
        return True, {"baseline": None, "required_sharpe": None, "note": "no production model: nothing to beat"}
    required = baseline_sharpe + threshold * abs(baseline_sharpe)
    ok = sharpe is not None and sharpe >= required and sharpe > baseline_sharpe
    rel = None if sharpe is None or baseline_sharpe == 0 else (sharpe - baseline_sharpe) / abs(baseline_sharpe)
    return ok, {
        "baseline_sharpe": baseline_sharpe,
        "required_sharpe": required,
        "improvement_threshold": threshold,
        "relative_improvement": rel,
    }


BASELINE_KEYS = ("sharpe", "sortino", "total_return", "annual_return", "max_drawdown", "win_rate", "trades", "profit_factor")


def baseline_deltas(metrics: dict[str, Any] | None, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """candidate, baseline and delta for the headline metrics (empty without a baseline)."""
    if not metrics or not baseline:
        return {}
    out = {}
    for k in BASELINE_KEYS:
        a, b = _num(metrics, k), _num(baseline, k)
        out[k] = {"candidate": a, "baseline": b, "delta": None if a is None or b is None else a - b}
    return out


def decide(
    metrics: dict[str, Any] | None,
    *,
    n_bars: int,
    criteria: SuccessCriteria,
    min_test_bars: int,
    policy: PromotionPolicy,
    baseline_metrics: dict[str, Any] | None = None,
    baseline_model_id: str | None = None,
    statement: str = "",
) -> PromotionDecision:
    """Apply the rules of the module docstring."""
    crit = evaluate_criteria(metrics, n_bars, criteria, min_test_bars)
    sharpe = _num(metrics, "sharpe")
    improved, detail = improvement(sharpe, _num(baseline_metrics, "sharpe"), criteria.improvement_threshold)
    failed = [c for c in crit if not c.passed]
    reasons: list[str] = []
    if any(c.name == "min_test_bars" for c in failed):
        reasons.append(
            f"test split too short: {n_bars:,} bars < min_test_bars {min_test_bars:,}; "
            "the statistics of so short a test cannot support a promotion"
        )
    reasons += [f"FAIL {c.describe()}" for c in failed if c.name != "min_test_bars"]
    if failed:
        rec: Recommendation = "REJECT"
        conf = policy.reject_confidence
    elif improved:
        rec, conf = "PROMOTE", policy.promote_confidence
        reasons.append(
            "all criteria pass and no production model exists"
            if baseline_metrics is None
            else f"all criteria pass and Sharpe {_fmt(sharpe or 0.0)} beats the production baseline "
            f"{_fmt(detail['baseline_sharpe'])} by at least {criteria.improvement_threshold:.0%}"
        )
    else:
        rec, conf = "REVIEW", policy.review_confidence
        reasons.append(
            f"all criteria pass but Sharpe {_fmt(sharpe or 0.0)} does not beat the production baseline "
            f"{_fmt(detail['baseline_sharpe'])} by {criteria.improvement_threshold:.0%} "
            f"(needs >= {_fmt(detail['required_sharpe'])}): a human should judge"
        )
    comparison = {
        "baseline_model_id": baseline_model_id,
        "improved": improved,
        **detail,
        "deltas": baseline_deltas(metrics, baseline_metrics),
    }
    return PromotionDecision(rec, conf, crit, improved, tuple(reasons), comparison, statement)


def one_year_certifiable_sharpe(ann: Annualization, confidence: float) -> float:
    """Smallest annual Sharpe a one-year test of normal returns can show to be > 0."""
    return certifiable_sharpe(int(round(ann.bars_per_year)), confidence) * ann.bar_factor


def statistical_statement(
    metrics: dict[str, Any] | None,
    *,
    ann: Annualization,
    confidence: float,
    test_start: str | None,
    test_end: str | None,
    bootstrap: dict[str, BootstrapInterval] | None = None,
) -> str:
    """A plain-language account of how much the test can and cannot tell."""
    one_year = one_year_certifiable_sharpe(ann, confidence)
    pct = f"{confidence:.0%}"
    period = f"{test_start} to {test_end}" if test_start and test_end else "the test period"
    if not metrics or not metrics.get("n_bars"):
        return (
            f"No backtest statistics: the out-of-sample test over {period} has too few bars. "
            f"For scale, even a full one-year test can only certify an annual Sharpe of about {one_year:.2f} "
            f"or more as better than zero at {pct} confidence."
        )
    n = int(metrics["n_bars"])
    years = float(metrics["years"])
    sharpe = float(metrics["sharpe"])
    psr = float(metrics["psr"])
    dsr = float(metrics["dsr"])
    trials = int(metrics["n_trials"])
    mintrl_years = metrics.get("min_track_record_years")
    cert = metrics.get("certifiable_sharpe")
    parts = [
        f"Out-of-sample test {period}: {n:,} five-minute bars in {int(metrics['n_sessions']):,} sessions "
        f"({years:.2f} years).",
        f"Annualized Sharpe {sharpe:.2f}. The probabilistic Sharpe ratio PSR(0) = {psr:.2f} is the probability "
        "that the true Sharpe is above zero given this sample's length, skew and fat tails.",
        f"Deflated for {trials} trial{'s' if trials != 1 else ''} (experiments x seeds evaluated), "
        f"DSR = {dsr:.2f}: the same probability measured against the best Sharpe that {trials} unskilled "
        f"trial{'s' if trials != 1 else ''} would show by luck (annual {float(metrics.get('sr0_annual', 0.0)):.2f}).",
    ]
    if mintrl_years is None or not math.isfinite(float(mintrl_years)):
        parts.append(
            f"With a Sharpe at or below zero, no track record length would make it significant at {pct}."
        )
    else:
        mt = float(mintrl_years)
        verdict = "long enough" if years >= mt else "too short"
        parts.append(
            f"To be {pct} confident that a Sharpe of {sharpe:.2f} is real, the minimum track record length is "
            f"{mt:.2f} years; this test ({years:.2f} years) is {verdict}."
        )
    if cert is not None and math.isfinite(float(cert)):
        parts.append(
            f"At this length only an annual Sharpe of about {float(cert):.2f} or more can be told apart from zero "
            f"at {pct} confidence"
            f"; even a one-year test can only certify a Sharpe of about {one_year:.2f} or more, "
            "so a smaller Sharpe is not evidence of skill."
        )
    for name, label in (("baseline", "the production model"), ("buy_and_hold", "buy-and-hold")):
        b = (bootstrap or {}).get(name)
        if b is None:
            continue
        covers = b.low <= 0 <= b.high
        parts.append(
            f"Sharpe difference versus {label}: {b.difference:+.2f}, {b.confidence:.0%} block-bootstrap interval "
            f"[{b.low:+.2f}, {b.high:+.2f}] ({b.samples:,} resamples of {b.block_bars}-bar blocks)"
            + ("; the interval includes zero, so the difference is not significant." if covers else
               "; the interval excludes zero.")
        )
    return " ".join(parts)
