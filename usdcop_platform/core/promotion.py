"""First vote: success criteria -> PROMOTE / REVIEW / REJECT, with reasons and a statistical statement.

Rules (REFERENCE.md "Promotion proposal"; thresholds from the experiment's `success_criteria`,
confidences from contracts.evaluation.PromotionPolicy). Every criterion is recorded PASS/FAIL
with its value and threshold, and has a kind:

    point         min_test_bars    n_bars            >= backtest.min_test_bars
                  min_sharpe       sharpe            >= min_sharpe
                  max_drawdown     max_drawdown      <= max_drawdown
                  min_win_rate     win_rate          >= min_win_rate
                  min_trades       trades            >= min_trades
                  fold_stability   share of walk-forward folds with Sharpe > 0 >= min_positive_fold_share
                                   (only when the backtest has walk-forward folds)
    significance  psr              PSR(0)            >= p_min
                  dsr              DSR (N trials of the family, V their Sharpe variance) >= p_min
                  min_track_record test bars         >= MinTRL(p_min) in bars
    improved      with a production baseline: sharpe >= baseline_sharpe + improvement_threshold * |baseline_sharpe|
                  and sharpe > baseline_sharpe; without one there is nothing to beat (improved).
    decision      any point criterion fails                                  -> REJECT  (0.90)
                  point criteria pass, significance or improvement fails     -> REVIEW  (0.60), with the reason
                  everything passes                                          -> PROMOTE (0.85)

The statement reports PSR(0), DSR with its trial count N and cross-trial variance V (and where they
come from), the test length against the minimum track record length, the bootstrap interval of the
Sharpe difference, and how large a Sharpe this test length (and a one-year test) can certify at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from usdcop_platform.contracts.evaluation import PromotionPolicy, Recommendation
from usdcop_platform.contracts.experiment import SuccessCriteria
from usdcop_platform.core.metrics import (
    NORMAL_KURTOSIS,
    Annualization,
    BootstrapInterval,
    certifiable_sharpe,
    min_track_record_length,
)

Comparator = Literal[">=", "<="]
CriterionKind = Literal["point", "significance"]


@dataclass(frozen=True)
class Criterion:
    name: str
    metric: str
    value: float | int | None
    threshold: float | int
    comparator: Comparator
    passed: bool
    kind: CriterionKind = "point"

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
    metrics: dict[str, Any] | None,
    n_bars: int,
    criteria: SuccessCriteria,
    min_test_bars: int,
    walk_forward: dict[str, Any] | None = None,
) -> tuple[Criterion, ...]:
    """The point criteria, each with its value and threshold; a missing value (no backtest) fails."""
    trades = _num(metrics, "trades")
    out = [
        _ge("min_test_bars", "test_bars", n_bars, min_test_bars),
        _ge("min_sharpe", "sharpe", _num(metrics, "sharpe"), criteria.min_sharpe),
        _le("max_drawdown", "max_drawdown", _num(metrics, "max_drawdown"), criteria.max_drawdown),
        _ge("min_win_rate", "win_rate", _num(metrics, "win_rate"), criteria.min_win_rate),
        _ge("min_trades", "trades", None if trades is None else int(trades), criteria.min_trades),
    ]
    share = ((walk_forward or {}).get("aggregate") or {}).get("positive_share")
    if walk_forward:
        out.append(
            _ge("fold_stability", "positive_fold_share", None if share is None else float(share),
                criteria.min_positive_fold_share)
        )
    return tuple(out)


def _ge(name: str, metric: str, value: float | None, threshold: float | int, kind: CriterionKind = "point") -> Criterion:
    return Criterion(name, metric, value, threshold, ">=", value is not None and value >= threshold, kind)


def _le(name: str, metric: str, value: float | None, threshold: float | int, kind: CriterionKind = "point") -> Criterion:
    return Criterion(name, metric, value, threshold, "<=", value is not None and value <= threshold, kind)


def min_track_record_bars(metrics: dict[str, Any] | None, p_min: float) -> float | None:
    """MinTRL at confidence p_min in bars, from the backtest's per-bar moments (inf when the Sharpe
    is <= 0: no length certifies it; None without statistics). The per-bar Sharpe is the annual
    one over sqrt(bars per year), and bars per year = n_bars / years, both recorded by the backtest."""
    sharpe, n, years = _num(metrics, "sharpe"), _num(metrics, "n_bars"), _num(metrics, "years")
    if sharpe is None or not n or not years:
        return None
    sr = sharpe / math.sqrt(n / years)
    skew = _num(metrics, "skew") or 0.0
    kurt = _num(metrics, "kurtosis") or NORMAL_KURTOSIS
    return min_track_record_length(sr, skew, kurt, p_min)


def significance_criteria(metrics: dict[str, Any] | None, n_bars: int, p_min: float) -> tuple[Criterion, ...]:
    """PSR(0) >= p_min, DSR >= p_min and test length >= MinTRL(p_min) (bars)."""
    mintrl = min_track_record_bars(metrics, p_min)
    return (
        _ge("psr", "psr", _num(metrics, "psr"), p_min, "significance"),
        _ge("dsr", "dsr", _num(metrics, "dsr"), p_min, "significance"),
        Criterion(
            "min_track_record", "test_bars", n_bars,
            math.inf if mintrl is None else math.ceil(mintrl) if math.isfinite(mintrl) else math.inf,
            ">=", mintrl is not None and math.isfinite(mintrl) and n_bars >= mintrl, "significance",
        ),
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
    walk_forward: dict[str, Any] | None = None,
) -> PromotionDecision:
    """Apply the rules of the module docstring."""
    point = evaluate_criteria(metrics, n_bars, criteria, min_test_bars, walk_forward)
    significance = significance_criteria(metrics, n_bars, criteria.p_min)
    crit = point + significance
    sharpe = _num(metrics, "sharpe")
    improved, detail = improvement(sharpe, _num(baseline_metrics, "sharpe"), criteria.improvement_threshold)
    failed = [c for c in point if not c.passed]
    unsure = [c for c in significance if not c.passed]
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
        reasons += [f"FAIL {c.describe()}" for c in unsure]
    else:
        if unsure:
            reasons.append(
                f"the point criteria pass but the result is not significant at p_min {criteria.p_min:g}: "
                + "; ".join(_significance_reason(c, criteria.p_min) for c in unsure)
                + ": a human should judge"
            )
        if not improved:
            reasons.append(
                f"the point criteria pass but Sharpe {_fmt(sharpe or 0.0)} does not beat the production baseline "
                f"{_fmt(detail['baseline_sharpe'])} by {criteria.improvement_threshold:.0%} "
                f"(needs >= {_fmt(detail['required_sharpe'])}): a human should judge"
            )
        if unsure or not improved:
            rec, conf = "REVIEW", policy.review_confidence
        else:
            rec, conf = "PROMOTE", policy.promote_confidence
            reasons.append(
                f"all criteria pass, significant at p_min {criteria.p_min:g}, and "
                + ("no production model exists" if baseline_metrics is None
                   else f"Sharpe {_fmt(sharpe or 0.0)} beats the production baseline "
                   f"{_fmt(detail['baseline_sharpe'])} by at least {criteria.improvement_threshold:.0%}")
            )
    comparison = {
        "baseline_model_id": baseline_model_id,
        "improved": improved,
        **detail,
        "deltas": baseline_deltas(metrics, baseline_metrics),
    }
    return PromotionDecision(rec, conf, crit, improved, tuple(reasons), comparison, statement)


def _significance_reason(c: Criterion, p_min: float) -> str:
    if c.name == "psr":
        return f"PSR(0) {_fmt_opt(c.value)} < {p_min:g} (the Sharpe may be zero)"
    if c.name == "dsr":
        return f"DSR {_fmt_opt(c.value)} < {p_min:g} (not better than the best of the family's trials by luck)"
    if isinstance(c.threshold, float) and not math.isfinite(c.threshold):
        return "no track record length certifies a Sharpe <= 0"
    return f"the test holds {_fmt_opt(c.value)} bars, fewer than MinTRL({p_min:g}) = {_fmt(c.threshold)} bars"


def _fmt_opt(x: float | int | None) -> str:
    return "n/a" if x is None else _fmt(x)


def dsr_sentence(metrics: dict[str, Any], dsr: float, trials: int) -> str:
    """DSR with N and V and where each comes from; N = 1 and V = 0 are stated, not hidden."""
    plural = "s" if trials != 1 else ""
    n_source = metrics.get("n_trials_source") or "trials counted by the caller"
    head = f"Deflated for N = {trials} trial{plural} of the experiment family ({n_source}), DSR = {dsr:.2f}"
    if trials == 1:
        return f"{head}: with one trial there is no selection to deflate for, so DSR = PSR(0)."
    v = metrics.get("trial_sharpe_variance_annual")
    v_source = metrics.get("trial_variance_source") or "not recorded"
    if v is not None and float(v) == 0.0:
        return (f"{head}: V = 0, the trials' Sharpes are identical (repeats of one result), so the best Sharpe "
                "luck alone would show is 0 and DSR = PSR(0).")
    v_text = "n/a" if v is None else f"{float(v):.3g}"
    return (
        f"{head}: the same probability measured against the best Sharpe that {trials} unskilled trials would show "
        f"by luck (annual {float(metrics.get('sr0_annual', 0.0)):.2f}), with V = {v_text} the variance of the "
        f"annualized trial Sharpes ({v_source})."
    )


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
        dsr_sentence(metrics, dsr, trials),
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
