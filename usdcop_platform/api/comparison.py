"""The review page's metrics table: the candidate beside the production model and buy-and-hold.

Both references were backtested by the evaluation step on the candidate's own bars and costs with
the same code as the candidate (core.backtest.evaluate → backtest → compute_metrics), and the
proposal keeps their full metric sets under `metrics.benchmarks` ("baseline" is the production
model, "buy_and_hold" the benchmark). So every metric the candidate shows has a value for each
reference; older proposals that only kept the headline deltas fall back to those.

The production model's DSR is deflated for its own experiment family's trials (the evaluation
backtests a reference as one trial, which would make its DSR equal its PSR), with the same
function the statistics card uses for the candidate (core.trials.deflate_with_family).

A Δ is coloured better/worse only where the comparison means something:
- trades, exposure and turnover describe how a strategy trades, not how well (costs are already
  in every return), so they are never coloured;
- per-trade statistics (win rate, profit factor, average trade) are coloured only when both sides
  closed at least MIN_TRADES_TO_COMPARE trades: buy-and-hold's single trade is no sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Metric display: key -> (label, kind); kinds: num, pct (fraction shown as %), int, money.
METRIC_DISPLAY: dict[str, tuple[str, str]] = {
    "sharpe": ("Sharpe (annualized)", "num"),
    "sortino": ("Sortino", "num"),
    "total_return": ("Total return", "pct"),
    "annual_return": ("Annual return", "pct"),
    "max_drawdown": ("Max drawdown", "pct"),
    "win_rate": ("Win rate", "pct"),
    "trades": ("Trades", "int"),
    "profit_factor": ("Profit factor", "num"),
    "avg_trade": ("Average trade (USD)", "money"),
    "exposure": ("Exposure", "pct"),
    "turnover": ("Turnover (units)", "int"),  # positions are -1/0/+1: whole units
    "psr": ("PSR(0)", "pct"),
    "dsr": ("Deflated Sharpe", "pct"),
    "final_equity": ("Final equity (USD)", "money"),
}
LOWER_IS_BETTER = frozenset({"max_drawdown"})
# How a strategy trades, not how well: shown, never coloured.
NEUTRAL = frozenset({"trades", "exposure", "turnover"})
# Statistics of the closed trades: meaningless against a side with (almost) no trades.
PER_TRADE = frozenset({"win_rate", "profit_factor", "avg_trade"})
MIN_TRADES_TO_COMPARE = 10

# (model id, its metrics) -> its DSR deflated for its own family; () -> recomputed full metrics.
FamilyDsr = Callable[[str, Mapping[str, Any]], float | None]
Recompute = Callable[[], Mapping[str, Any] | None]
Formatter = Callable[[Any, str], str]


@dataclass(frozen=True)
class Reference:
    """One comparison column: a strategy backtested on the candidate's bars."""

    key: str  # "production" or "buy_and_hold"
    label: str  # column header
    metrics: Mapping[str, Any]
    note: str | None = None  # where the numbers come from, shown under the table
    model_id: str | None = None  # the production model's id


def _num(m: Mapping[str, Any], key: str) -> float | None:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def production_reference(
    proposal: Mapping[str, Any], family_dsr: FamilyDsr | None = None, recompute: Recompute | None = None
) -> Reference | None:
    """The production model the candidate was evaluated against, or None when there was none.

    `family_dsr(model_id, metrics)` returns the reference's DSR for its own family (or None);
    `recompute()` returns its full metrics recomputed from the backtest series (or None), for
    proposals that kept only the headline deltas.
    """
    bc = proposal.get("baseline_comparison") or {}
    base_id = bc.get("baseline_model_id")
    full = ((proposal.get("metrics") or {}).get("benchmarks") or {}).get("baseline")
    deltas = bc.get("deltas") or {}
    if isinstance(full, Mapping) and full:
        metrics = dict(full)
        note = "backtested on the candidate's bars and costs by the evaluation step"
    elif (base_id or deltas) and recompute is not None and (again := recompute()):
        metrics = dict(again)
        note = "recomputed from its positions in the backtest series (core.backtest, the candidate's costs)"
    else:
        metrics = {k: v.get("baseline") for k, v in deltas.items() if isinstance(v, Mapping)}
        note = "headline metrics only (this proposal predates the full production metrics)"
    if not metrics:
        return None
    if family_dsr is not None and base_id and "sharpe" in metrics:
        dsr = family_dsr(base_id, metrics)
        if dsr is not None:
            metrics["dsr"] = dsr
            note += "; its DSR deflated for its own family's trials"
    return Reference("production", "Production model", metrics, note, base_id)


def buy_and_hold_reference(proposal: Mapping[str, Any]) -> Reference | None:
    bh = ((proposal.get("metrics") or {}).get("benchmarks") or {}).get("buy_and_hold")
    if not isinstance(bh, Mapping) or not bh:
        return None
    return Reference("buy_and_hold", "Buy & hold", dict(bh), "long USD from the first bar to the last, same costs")


def references(
    proposal: Mapping[str, Any], family_dsr: FamilyDsr | None = None, recompute: Recompute | None = None
) -> list[Reference]:
    refs = (production_reference(proposal, family_dsr, recompute), buy_and_hold_reference(proposal))
    return [r for r in refs if r is not None]


def delta_class(key: str, delta: float | None, candidate: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """'pos' (candidate better), 'neg' (worse) or '' (not coloured: see the module docstring)."""
    if key in NEUTRAL or delta is None or delta == 0 or not math.isfinite(delta):
        return ""
    if key in PER_TRADE:
        trades = (_num(candidate, "trades"), _num(reference, "trades"))
        if any(t is None or t < MIN_TRADES_TO_COMPARE for t in trades):
            return ""
    better = delta < 0 if key in LOWER_IS_BETTER else delta > 0
    return "pos" if better else "neg"


def comparison_rows(metrics: Mapping[str, Any], refs: list[Reference], fmt: Formatter) -> list[dict[str, Any]]:
    """One row per metric the candidate or a reference has: values, Δ (candidate − reference), colour.

    `fmt(value, kind)` formats a value (views.fmt_value)."""
    rows = []
    for key, (label, kind) in METRIC_DISPLAY.items():
        if key not in metrics and not any(key in r.metrics for r in refs):
            continue
        cand = _num(metrics, key)
        cells = []
        for ref in refs:
            base = _num(ref.metrics, key)
            delta = cand - base if cand is not None and base is not None else None
            text = fmt(delta, kind)
            if delta is not None and delta > 0 and any(c in "123456789∞" for c in text):
                text = "+" + text  # a positive delta that does not round to zero
            cells.append({
                "reference": ref.key,
                "value": base,
                "value_text": fmt(ref.metrics.get(key), kind),
                "delta": delta,
                "delta_text": text,
                "delta_class": delta_class(key, delta, metrics, ref.metrics),
            })
        rows.append({"metric": key, "label": label, "candidate": metrics.get(key),
                     "candidate_text": fmt(metrics.get(key), kind), "cells": cells})
    return rows
