"""adapters.webhook against a real local HTTP receiver and the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import time

import pytest

from usdcop_platform.adapters.webhook import AlertDispatcher, WebhookClient, WebhookError
from usdcop_platform.contracts.mlops import AlertDeliveryConfig
from usdcop_platform.core.alerts import AlertMessage
from usdcop_platform_tests.webhook_receiver import webhook_receiver

FAST = AlertDeliveryConfig(
    webhook_timeout_seconds=0.3, webhook_attempts=2, webhook_backoff_seconds=0.01, max_delivery_attempts=3
)


@pytest.fixture
def store(db_url):
    from usdcop_platform.adapters.store import Store

    s = Store(db_url)
    s.upgrade()
    yield s
    s.dispose()


def test_client_posts_slack_json() -> None:
    with webhook_receiver() as rx:
        WebhookClient(rx.url, 1.0, 1, 0).post({"text": "hello"})
        assert rx.received == [{"text": "hello"}]


def test_client_timeout_retries_then_raises_without_leaking_the_token() -> None:
    with webhook_receiver() as rx:
        rx.delay_s = 1.0
        t0 = time.monotonic()
        with pytest.raises(WebhookError, match="timed out after 0.2s") as exc:
            WebhookClient(rx.url, 0.2, 2, 0.0).post({"text": "x"})
        assert time.monotonic() - t0 < 2.0
        assert rx.requests == 2  # both attempts reached the receiver
        assert "secret-token" not in str(exc.value)


def test_client_does_not_retry_client_errors_but_retries_server_errors() -> None:
    with webhook_receiver() as rx:
        rx.status = 404
        with pytest.raises(WebhookError, match="HTTP 404"):
            WebhookClient(rx.url, 1.0, 3, 0.0).post({"text": "x"})
        assert rx.requests == 1
        rx.status = 503
        with pytest.raises(WebhookError, match="after 3 attempt"):
            WebhookClient(rx.url, 1.0, 3, 0.0).post({"text": "x"})
        assert rx.requests == 4


def test_connection_refused_is_a_webhook_error() -> None:
    with webhook_receiver() as rx:
        url = rx.url
    with pytest.raises(WebhookError, match="ConnectError"):
        WebhookClient(url, 0.5, 1, 0).post({"text": "x"})


def test_dispatcher_logs_stores_and_delivers(store, caplog: pytest.LogCaptureFixture) -> None:
    with webhook_receiver() as rx, caplog.at_level(logging.WARNING):
        d = AlertDispatcher.create(store, rx.url, FAST)
        row = d.emit(AlertMessage("feature_drift", "WARN", "drift share 0.4 above 0.15", {"model_id": "m"}))
        assert row["delivered"] and row["attempts"] == 1
        assert rx.texts() == [":warning: *[WARN] feature_drift* drift share 0.4 above 0.15\n• model_id: m"]
    assert "[WARN] feature_drift: drift share 0.4 above 0.15" in caplog.text
    stored = store.alerts.list()
    assert [a["kind"] for a in stored] == ["feature_drift"] and stored[0]["details"] == {"model_id": "m"}


def test_timed_out_alert_is_kept_and_retried_later(store) -> None:
    with webhook_receiver() as rx:
        rx.delay_s = 1.0  # slower than the 0.3 s timeout
        d = AlertDispatcher.create(store, rx.url, FAST)
        t0 = time.monotonic()
        row = d.emit(AlertMessage("run_failure", "ERROR", "run failed"))  # must not raise
        assert time.monotonic() - t0 < 3.0
        assert row is not None and not row["delivered"] and "timed out" in row["last_error"]
        assert [a["id"] for a in store.alerts.pending()] == [row["id"]]

        rx.delay_s = 0.0  # the webhook recovers
        out = d.retry_pending()
        assert (out.delivered, out.failed) == (1, 0)
        assert store.alerts.pending() == []
        assert any("run failed" in t for t in rx.texts())
        final = store.alerts.list()[0]
        assert final["delivered"] and final["attempts"] == 2 and final["last_error"] is None


def test_retries_stop_after_max_delivery_attempts(store) -> None:
    with webhook_receiver() as rx:
        rx.status = 500
        d = AlertDispatcher.create(store, rx.url, FAST)
        d.emit(AlertMessage("k", "WARN", "m"))
        for _ in range(5):
            d.retry_pending()
        row = store.alerts.list()[0]
        assert row["attempts"] == FAST.max_delivery_attempts and not row["delivered"]
        assert store.alerts.pending(max_attempts=FAST.max_delivery_attempts) == []


def test_without_webhook_the_log_and_store_are_the_channels(store) -> None:
    d = AlertDispatcher.create(store, None, FAST)
    row = d.emit(AlertMessage("k", "INFO", "m"))
    assert row["delivered"]
    assert d.retry_pending().delivered == 0


def test_store_down_does_not_raise(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from usdcop_platform.adapters.store import Store

    broken = Store("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with webhook_receiver() as rx, caplog.at_level(logging.ERROR):
        d = AlertDispatcher.create(broken, rx.url, FAST)
        assert d.emit(AlertMessage("k", "ERROR", "still told")) is None
        assert rx.texts() and "still told" in rx.texts()[0]  # delivered directly, once
    assert "could not be stored" in caplog.text
    broken.dispose()
