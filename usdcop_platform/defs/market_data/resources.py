"""Source resources: `market_source` and `macro_source`, chosen by settings (env vars).

Secrets travel as dg.EnvVar (never stored in run config): TWELVEDATA_API_KEY, FRED_API_KEY.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg

from usdcop_platform.adapters.sources import (
    MacroSource,
    MarketSource,
    build_macro_source,
    build_market_source,
    macro_history_start,
)
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.settings import Settings


class MarketSourceResource(dg.ConfigurableResource):
    """USDCOP_MARKET_SOURCE = synthetic | file | twelvedata."""

    kind: str = "synthetic"
    bars_file: str | None = None
    seed: int = 42
    edge: float = 0.0  # planted edge of the synthetic market (USDCOP_SYNTHETIC_EDGE)
    api_key: str | None = None
    base_url: str | None = None

    def build(self, calendar: TradingCalendar) -> MarketSource:
        return build_market_source(
            self.kind, calendar, bars_file=self.bars_file, seed=self.seed, api_key=self.api_key, base_url=self.base_url,
            edge=self.edge,
        )


class MacroSourceResource(dg.ConfigurableResource):
    """USDCOP_MACRO_SOURCE = synthetic | file | fred."""

    kind: str = "synthetic"
    macro_file: str | None = None
    seed: int = 42
    api_key: str | None = None
    base_url: str | None = None

    def build(self, config: PlatformConfig, calendar: TradingCalendar) -> MacroSource:
        return build_macro_source(
            self.kind, config.macro, anchor=history_start(config, calendar), macro_file=self.macro_file,
            seed=self.seed, api_key=self.api_key, base_url=self.base_url,
        )


def history_start(config: PlatformConfig, calendar: TradingCalendar, first_session: date | None = None) -> date:
    """Macro history needed before `first_session` (default: the calendar start): the features'
    rolling z-score window, in sessions."""
    first = first_session or config.instrument.calendar_start
    return macro_history_start(calendar, first, config.features.macro_zscore_window)


def build_source_resources(settings: Settings) -> dict[str, Any]:
    """Resource keys of the market_data domain, from settings (env vars)."""
    return {
        "market_source": MarketSourceResource(
            kind=settings.market_source,
            bars_file=str(settings.bars_file) if settings.bars_file else None,
            seed=settings.synthetic_seed,
            edge=settings.synthetic_edge,
            api_key=dg.EnvVar("TWELVEDATA_API_KEY") if settings.twelvedata_api_key else None,
            base_url=settings.twelvedata_base_url,
        ),
        "macro_source": MacroSourceResource(
            kind=settings.macro_source,
            macro_file=str(settings.macro_file) if settings.macro_file else None,
            seed=settings.synthetic_seed,
            api_key=dg.EnvVar("FRED_API_KEY") if settings.fred_api_key else None,
            base_url=settings.fred_base_url,
        ),
    }
