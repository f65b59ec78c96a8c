"""The `alerts` resource: where monitoring alerts go besides the log and the store (a webhook)."""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg

from usdcop_platform.adapters.webhook import AlertDispatcher
from usdcop_platform.contracts.mlops import AlertDeliveryConfig
from usdcop_platform.settings import Settings

WEBHOOK_ENV = "USDCOP_ALERT_WEBHOOK_URL"


class AlertsResource(dg.ConfigurableResource):
    """Slack-compatible webhook URL (a secret: its path carries the token), or None for log+store only."""

    webhook_url: str | None = None

    def dispatcher(self, store: Any, cfg: AlertDeliveryConfig, logger: Any = None) -> AlertDispatcher:
        return AlertDispatcher.create(store, self.webhook_url or None, cfg, logger or logging.getLogger(__name__))


def alerts_resources(settings: Settings) -> dict[str, Any]:
    """Builder for defs.resources: the URL stays an EnvVar, so it never appears in the UI or run config."""
    url = dg.EnvVar(WEBHOOK_ENV) if settings.alert_webhook_url else None
    return {"alerts": AlertsResource(webhook_url=url)}
