"""core.alerts: messages and their Slack-compatible rendering."""

from __future__ import annotations

import json

import pytest

from usdcop_platform.core.alerts import (
    MAX_DETAIL_LINES,
    SLACK_TEXT_LIMIT,
    AlertMessage,
    degradation_alert,
    drift_alert,
    freshness_alert,
    log_line,
    rollback_proposal_alert,
    run_failure_alert,
    slack_payload,
)


def test_slack_payload_is_text_only_json_and_escaped() -> None:
    alert = AlertMessage("feature_drift", "WARN", "share 0.4 > 0.15 <b>&", {"model_id": "m1", "share": 0.41234567})
    payload = slack_payload(alert)
    assert set(payload) == {"text"}
    json.dumps(payload)  # serializable
    text = payload["text"]
    assert text.startswith(":warning: *[WARN] feature_drift*")
    assert "&lt;b&gt;&amp;" in text and "<b>" not in text
    assert "• model_id: m1" in text and "• share: 0.4123" in text


def test_stored_rows_render_like_messages() -> None:
    alert = run_failure_alert(job_name="live_signal_job", run_id="abcdef1234", error="boom\ntraceback...")
    row = {"kind": alert.kind, "severity": alert.severity, "message": alert.message, "details": dict(alert.details)}
    assert slack_payload(row) == slack_payload(alert)
    assert "failed: boom" in alert.message and "traceback" not in alert.message
    assert alert.severity == "ERROR"


def test_long_details_are_bounded() -> None:
    details = {f"k{i}": "x" * 400 for i in range(40)}
    text = slack_payload(AlertMessage("k", "INFO", "m", details))["text"]
    assert len(text) <= SLACK_TEXT_LIMIT
    few = slack_payload(AlertMessage("k", "INFO", "m", {f"k{i}": i for i in range(MAX_DETAIL_LINES + 3)}))["text"]
    assert "(+3 more)" in few


def test_validation() -> None:
    with pytest.raises(ValueError, match="severity"):
        AlertMessage("k", "LOUD", "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind and a message"):
        AlertMessage("", "INFO", "m")


def test_domain_alerts() -> None:
    d = drift_alert(drift_share=0.31, threshold=0.15, drifted_features=["rsi_9", "vix_z"], model_id="m",
                    live_sessions=["2024-03-04"], consecutive=2)
    assert d.severity == "WARN" and "0.31 above threshold 0.15" in d.message and "2 features" in d.message
    assert degradation_alert(model_id="m", status="ROLLBACK", reason="r", details={}).severity == "ERROR"
    assert degradation_alert(model_id="m", status="WARN", reason="r", details={}).severity == "WARN"
    rp = rollback_proposal_alert(model_id="m2", target_model_id="m1", reason="drop 2.5")
    assert "usdcop rollback" in rp.message and "m1" in rp.message
    f = freshness_alert(what="bars", age_minutes=None, max_age_minutes=15, last=None)
    assert "never" in f.message
    assert log_line(d).startswith("[WARN] feature_drift: drift share 0.31")


def test_freshness_is_only_expected_during_the_session(calendar) -> None:
    from datetime import datetime, timedelta, timezone

    from usdcop_platform.core.alerts import freshness_verdict

    kw = dict(max_age_minutes=15, grace_minutes=15)
    mon = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)  # 10:00 Bogota, a session
    fresh = freshness_verdict(mon, mon - timedelta(minutes=10), calendar, **kw)  # bar 09:50 closed 09:55
    assert fresh.expected and fresh.fresh and fresh.age_minutes == 5.0
    stale = freshness_verdict(mon, mon - timedelta(minutes=40), calendar, **kw)
    assert stale.expected and not stale.fresh and "35.0 min old > 15" in stale.reason
    missing = freshness_verdict(mon, None, calendar, **kw)
    assert missing.expected and not missing.fresh
    early = freshness_verdict(datetime(2024, 3, 4, 13, 10, tzinfo=timezone.utc), None, calendar, **kw)
    assert not early.expected and early.fresh and "of the open" in early.reason
    evening = freshness_verdict(datetime(2024, 3, 4, 20, 0, tzinfo=timezone.utc), mon, calendar, **kw)
    assert not evening.expected and evening.fresh and "market closed" in evening.reason
    holiday = datetime(2024, 3, 25, 15, 0, tzinfo=timezone.utc)  # San José (Colombia), a Monday
    assert calendar.is_holiday(holiday.date())
    h = freshness_verdict(holiday, None, calendar, **kw)
    assert not h.expected and "not a trading session" in h.reason
