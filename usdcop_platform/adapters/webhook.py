"""Alert delivery: log, persist in the store's alerts outbox, post to a Slack-compatible webhook.

Delivery is at-least-once and never breaks the caller:

1. `AlertDispatcher.emit(alert)` logs the alert, stores it (store.alerts.add) and tries the
   webhook at once (`WebhookClient.post`: `attempts` tries, exponential backoff, a timeout each).
2. On success the row is marked delivered; on failure (timeout, connection refused, HTTP >= 400)
   it stays pending with the error recorded, and `retry_pending()` (run by a sensor) posts it
   again later, until `max_delivery_attempts` rounds have failed.
3. Nothing raised by the webhook or the store escapes `emit`/`retry_pending`: monitoring must not
   fail the pipeline it observes. Two processes retrying at the same time may post an alert twice
   (at-least-once); alerts are notifications, so a duplicate is harmless.

Without a webhook URL the log and the store are the channels: the alert is marked delivered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from usdcop_platform.contracts.mlops import AlertDeliveryConfig
from usdcop_platform.core.alerts import AlertMessage, log_line, slack_payload

log = logging.getLogger(__name__)

_LOG_LEVELS = {"INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


class WebhookError(RuntimeError):
    """The webhook did not accept the payload after every attempt; the message says why."""


def _redact(url: str) -> str:
    """Scheme and host only: webhook paths carry the secret token (Slack: /services/T../B../xyz)."""
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}{':' + str(u.port) if u.port else ''}/…"


@dataclass
class WebhookClient:
    """POSTs JSON to one URL with per-attempt timeout and exponential backoff between attempts."""

    url: str
    timeout_s: float
    attempts: int
    backoff_s: float

    @classmethod
    def from_config(cls, url: str, cfg: AlertDeliveryConfig) -> "WebhookClient":
        return cls(url, cfg.webhook_timeout_seconds, cfg.webhook_attempts, cfg.webhook_backoff_seconds)

    def post(self, payload: dict[str, Any]) -> None:
        """Deliver `payload`; raises WebhookError naming the last failure after `attempts` tries."""
        last = "not attempted"
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            for attempt in range(self.attempts):
                if attempt:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                try:
                    resp = client.post(self.url, json=payload)
                except httpx.TimeoutException:
                    last = f"timed out after {self.timeout_s:g}s"
                    continue
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    continue
                if resp.status_code < 400:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code < 500 and resp.status_code != 429:
                    break  # a client error will not heal by retrying now
        raise WebhookError(f"webhook {_redact(self.url)} failed after {attempt + 1} attempt(s): {last}")


@dataclass(frozen=True)
class RetryOutcome:
    delivered: int
    failed: int
    remaining: int


class AlertDispatcher:
    """Log + store + webhook, as described in the module docstring."""

    def __init__(
        self,
        store: Any,
        webhook: WebhookClient | None,
        cfg: AlertDeliveryConfig,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.store = store
        self.webhook = webhook
        self.cfg = cfg
        self.log = logger or log

    @classmethod
    def create(
        cls, store: Any, webhook_url: str | None, cfg: AlertDeliveryConfig, logger: Any = None
    ) -> "AlertDispatcher":
        hook = WebhookClient.from_config(webhook_url, cfg) if webhook_url else None
        return cls(store, hook, cfg, logger)

    def emit(self, alert: AlertMessage) -> Any | None:
        """Log, persist and try to deliver one alert; returns the stored row (None if the store failed)."""
        self.log.log(_LOG_LEVELS[alert.severity], log_line(alert))
        try:
            row = self.store.alerts.add(alert.kind, alert.severity, alert.message, dict(alert.details))
        except Exception as exc:  # the store being down must not fail the caller; the log has it
            self.log.error("alert could not be stored (%s); it was logged only", exc)
            if self.webhook is not None:
                self._post_quietly(slack_payload(alert))
            return None
        return self._deliver(row)

    def retry_pending(self, limit: int = 100) -> RetryOutcome:
        """Post every pending alert again (oldest first) that has not used up its attempts."""
        if self.webhook is None:
            return RetryOutcome(0, 0, 0)
        delivered = failed = 0
        try:
            pending = self.store.alerts.pending(max_attempts=self.cfg.max_delivery_attempts, limit=limit)
        except Exception as exc:
            self.log.error("pending alerts could not be read: %s", exc)
            return RetryOutcome(0, 0, -1)
        for row in pending:
            after = self._deliver(row)
            if after is not None and after["delivered"]:
                delivered += 1
            else:
                failed += 1
        return RetryOutcome(delivered, failed, failed)

    def _deliver(self, row: Any) -> Any:
        try:
            if self.webhook is not None:
                self.webhook.post(slack_payload(row))
            return self.store.alerts.mark_delivered(row["id"])
        except WebhookError as exc:
            self.log.warning("alert %s kept for retry: %s", row["id"], exc)
            try:
                return self.store.alerts.mark_failed(row["id"], str(exc))
            except Exception as store_exc:
                self.log.error("alert %s failure could not be recorded: %s", row["id"], store_exc)
                return row
        except Exception as exc:
            self.log.error("alert %s delivery bookkeeping failed: %s", row["id"], exc)
            return row

    def _post_quietly(self, payload: dict[str, Any]) -> None:
        try:
            assert self.webhook is not None
            self.webhook.post(payload)
        except WebhookError as exc:
            self.log.error("%s", exc)
