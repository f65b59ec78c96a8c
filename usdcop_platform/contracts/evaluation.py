"""Evaluation contract: the statistical settings of backtests and the first-vote decision rules.

The per-experiment numbers (capital, costs, minimum test length, folds, success criteria) live in
the experiment YAML (contracts.experiment.BacktestConfig / SuccessCriteria). What is here is shared
by every experiment: the confidence level of every statistical statement, the block bootstrap, and
the confidence attached to each recommendation (REFERENCE.md "Promotion proposal").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from usdcop_platform.contracts.base import StrictModel

Recommendation = Literal["PROMOTE", "REVIEW", "REJECT"]


class StatisticsConfig(StrictModel):
    """Settings of PSR / DSR / minimum track record length and of the block bootstrap."""

    # One-sided confidence of "true Sharpe > benchmark" (PSR, MinTRL, certifiable Sharpe) and the
    # two-sided coverage of the bootstrap interval.
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1)
    # Bootstrap blocks in bars; None = one session (intraday returns are autocorrelated within a
    # session, nearly independent across sessions).
    bootstrap_block_bars: int | None = Field(default=None, ge=1)
    bootstrap_samples: int = Field(default=2000, ge=100)
    bootstrap_seed: int = 0
    # PBO by CSCV: the wanted number of blocks S (even; fewer when the common sessions are few).
    pbo_partitions: int = Field(default=16, ge=2)
    # Hansen's SPA: stationary-bootstrap resamples and mean block length in sessions.
    spa_reps: int = Field(default=1000, ge=100)
    spa_block_sessions: int = Field(default=5, ge=1)


class PromotionPolicy(StrictModel):
    """Confidence of each recommendation (REFERENCE.md): all pass + improved -> PROMOTE,
    all pass + not improved -> REVIEW, anything failing -> REJECT."""

    promote_confidence: float = Field(default=0.85, ge=0, le=1)
    review_confidence: float = Field(default=0.60, ge=0, le=1)
    reject_confidence: float = Field(default=0.90, ge=0, le=1)
    # How long a PENDING_APPROVAL proposal stays open before it expires.
    proposal_ttl_days: int = Field(default=14, ge=1)


class LiveRuleConfig(StrictModel):
    """The backtest's live-rule column (core.live_rule): when its orders fill."""

    # An order decided at bar t fills at the open of bar t + fill_delay_bars of the same session
    # (else at the session's last close). 1 = the next open: live signals arrive 7-17 s after the
    # close; 0 = the signal's own close (the argmax column's convention).
    fill_delay_bars: int = Field(default=1, ge=0)


class EvaluationConfig(StrictModel):
    statistics: StatisticsConfig = StatisticsConfig()
    promotion: PromotionPolicy = PromotionPolicy()
    live_rule: LiveRuleConfig = LiveRuleConfig()


DEFAULT_EVALUATION = EvaluationConfig()
