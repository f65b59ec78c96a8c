"""Alert messages and their Slack-compatible rendering (pure: no network, no database).

Every monitoring event that a human must see becomes one `AlertMessage` (kind, severity, one-line
message, structured details). The adapter layer logs it, stores it in the alerts outbox
(store.alerts) and posts `slack_payload(alert)` — `{"text": ...}`, the JSON body a Slack
incoming webhook (and Mattermost, Teams' Slack connector, ...) accepts — to the configured URL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["INFO", "WARN", "ERROR", "CRITICAL"]
SEVERITIES: tuple[Severity, ...] = ("INFO", "WARN", "ERROR", "CRITICAL")

# Slack truncates a message's text at 40,000 characters; stay well inside (protocol limit).
SLACK_TEXT_LIMIT = 3_000
# Details rendered as bullet lines; the rest are summarized as "(+N more)".
MAX_DETAIL_LINES = 12

KIND_DRIFT = "feature_drift"
KIND_DEGRADATION = "realized_degradation"
KIND_ROLLBACK_PROPOSAL = "rollback_proposal"
KIND_ROLLBACK = "rollback"
KIND_RUN_FAILURE = "run_failure"
KIND_FRESHNESS = "freshness"
KIND_RETRAIN = "retrain_triggered"
KIND_AB = "shadow_ab"

_ICONS: dict[str, str] = {"INFO": ":information_source:", "WARN": ":warning:", "ERROR": ":x:", "CRITICAL": ":rotating_light:"}


@dataclass(frozen=True)
class AlertMessage:
    kind: str
    severity: Severity
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {self.severity!r}")
        if not self.kind or not self.message:
            raise ValueError("an alert needs a kind and a message")


def _escape(text: str) -> str:
    """Slack's three control characters (mrkdwn): &, <, > must be HTML-escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))[:200]
    return str(value)


def render_text(kind: str, severity: str, message: str, details: Mapping[str, Any] | None = None) -> str:
    """`:warning: *[WARN] feature_drift* message` followed by up to MAX_DETAIL_LINES `• key: value`."""
    icon = _ICONS.get(severity, "")
    lines = [f"{icon} *[{severity}] {_escape(kind)}* {_escape(message)}".strip()]
    items = [(k, v) for k, v in (details or {}).items() if v is not None]
    for key, value in items[:MAX_DETAIL_LINES]:
        lines.append(f"• {_escape(str(key))}: {_escape(_fmt(value))}")
    if len(items) > MAX_DETAIL_LINES:
        lines.append(f"(+{len(items) - MAX_DETAIL_LINES} more)")
    text = "\n".join(lines)
    return text if len(text) <= SLACK_TEXT_LIMIT else text[: SLACK_TEXT_LIMIT - 1] + "…"


def slack_payload(alert: AlertMessage | Mapping[str, Any]) -> dict[str, str]:
    """The webhook body: {"text": rendered}. Accepts an AlertMessage or a stored alert row."""
    if isinstance(alert, AlertMessage):
        return {"text": render_text(alert.kind, alert.severity, alert.message, alert.details)}
    return {"text": render_text(alert["kind"], alert["severity"], alert["message"], alert.get("details") or {})}


def log_line(alert: AlertMessage) -> str:
    """One plain line for the log (no Slack markup)."""
    extra = ", ".join(f"{k}={_fmt(v)}" for k, v in list(alert.details.items())[:MAX_DETAIL_LINES] if v is not None)
    return f"[{alert.severity}] {alert.kind}: {alert.message}" + (f" ({extra})" if extra else "")


# ---- the platform's alerts ----------------------------------------------------------------------
def drift_alert(
    *,
    drift_share: float,
    threshold: float,
    drifted_features: Sequence[str],
    model_id: str | None,
    live_sessions: Sequence[str],
    consecutive: int,
) -> AlertMessage:
    return AlertMessage(
        KIND_DRIFT,
        "WARN",
        f"drift share {drift_share:.2f} above threshold {threshold:.2f} "
        f"({len(drifted_features)} features drifted; {consecutive} consecutive check(s))",
        {
            "model_id": model_id,
            "drifted_features": ", ".join(drifted_features),
            "live_sessions": ", ".join(live_sessions),
            "drift_share": drift_share,
            "threshold": threshold,
            "consecutive_checks": consecutive,
        },
    )


def degradation_alert(*, model_id: str, status: str, reason: str, details: Mapping[str, Any]) -> AlertMessage:
    severity: Severity = "ERROR" if status == "ROLLBACK" else "WARN"
    return AlertMessage(KIND_DEGRADATION, severity, f"model {model_id}: {reason}", {"model_id": model_id, **details})


def rollback_proposal_alert(*, model_id: str, target_model_id: str | None, reason: str) -> AlertMessage:
    target = target_model_id or "none available"
    return AlertMessage(
        KIND_ROLLBACK_PROPOSAL,
        "ERROR",
        f"rollback proposed for production model {model_id} (would restore {target}); "
        "approve with `usdcop rollback --notes ...` or POST /api/models/rollback",
        {"model_id": model_id, "target_model_id": target_model_id, "reason": reason},
    )


def rollback_alert(*, restored_model_id: str, replaced_model_id: str | None, reviewer: str, automatic: bool, notes: str) -> AlertMessage:
    how = "automatically" if automatic else f"by {reviewer}"
    return AlertMessage(
        KIND_ROLLBACK,
        "CRITICAL" if automatic else "WARN",
        f"production rolled back {how}: {replaced_model_id or 'none'} -> {restored_model_id}",
        {"restored_model_id": restored_model_id, "replaced_model_id": replaced_model_id, "reviewer": reviewer, "notes": notes},
    )


def run_failure_alert(*, job_name: str, run_id: str, error: str | None, partition: str | None = None) -> AlertMessage:
    first = (error or "no error message").strip().splitlines()
    return AlertMessage(
        KIND_RUN_FAILURE,
        "ERROR",
        f"run {run_id[:8]} of job {job_name} failed: {first[0] if first else 'no error message'}",
        {"job": job_name, "run_id": run_id, "partition": partition},
    )


def freshness_alert(*, what: str, age_minutes: float | None, max_age_minutes: float, last: str | None) -> AlertMessage:
    age = "never" if age_minutes is None else f"{age_minutes:.1f} min old"
    return AlertMessage(
        KIND_FRESHNESS,
        "WARN",
        f"{what} stale during the session: newest is {age} (limit {max_age_minutes:g} min)",
        {"dataset": what, "last": last, "age_minutes": age_minutes, "max_age_minutes": max_age_minutes},
    )


def retrain_alert(*, experiment: str, reasons: Sequence[str], run_key: str) -> AlertMessage:
    return AlertMessage(
        KIND_RETRAIN,
        "INFO",
        f"retraining launched for experiment {experiment}: {'; '.join(reasons)} (ends at a proposal, never promotes)",
        {"experiment": experiment, "run_key": run_key},
    )


# ---- session-aware freshness ------------------------------------------------------------------
@dataclass(frozen=True)
class FreshnessVerdict:
    """Whether data must be fresh now, how old the newest item is, and whether that is too old.

    Fresh data is expected only while the market is open and `grace` after the open has passed
    (the first bar closes one bar after the open). Age = now - close of the newest bar
    (bar start + bar length); missing data during the expected window is stale.
    """

    expected: bool
    fresh: bool
    age_minutes: float | None
    reason: str


def freshness_verdict(
    now: Any,
    last_bar_start: Any | None,
    calendar: Any,
    *,
    max_age_minutes: float,
    grace_minutes: float,
) -> FreshnessVerdict:
    """`now` and `last_bar_start` are aware datetimes; `calendar` is core.calendar.TradingCalendar."""
    from datetime import timedelta  # local: keep the module's import surface to formatting

    age = None
    if last_bar_start is not None:
        age = (now - (last_bar_start + calendar.bar_delta)).total_seconds() / 60.0
    session = calendar.session_of(now)
    if not calendar.is_open(now):
        why = "not a trading session" if not calendar.is_session(session) else "market closed"
        return FreshnessVerdict(False, True, age, f"{why}: no fresh data expected")
    if now < calendar.session_open_utc(session) + timedelta(minutes=grace_minutes):
        return FreshnessVerdict(False, True, age, f"within {grace_minutes:g} min of the open: no fresh data expected yet")
    if age is None:
        return FreshnessVerdict(True, False, None, "no data at all during the session")
    if age > max_age_minutes:
        return FreshnessVerdict(True, False, age, f"newest is {age:.1f} min old > {max_age_minutes:g} min")
    return FreshnessVerdict(True, True, age, f"newest is {age:.1f} min old <= {max_age_minutes:g} min")
