"""Market and macro sources behind small interfaces, chosen by settings.

USDCOP_MARKET_SOURCE = synthetic | file | twelvedata   (USDCOP_BARS_FILE, TWELVEDATA_API_KEY/BASE_URL)
USDCOP_MACRO_SOURCE  = synthetic | file | fred         (USDCOP_MACRO_FILE, FRED_API_KEY/BASE_URL)
USDCOP_SYNTHETIC_SEED seeds the synthetic sources.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from usdcop_platform.adapters.sources.base import (
    MacroSource,
    MarketSource,
    SourceError,
    macro_history_start,
)
from usdcop_platform.adapters.sources.file import FileMacroSource, FileMarketSource, read_bars_file, read_macro_file
from usdcop_platform.adapters.sources.fred import FredMacroSource
from usdcop_platform.adapters.sources.http import HttpPolicy
from usdcop_platform.adapters.sources.synthetic import SyntheticMacroSource, SyntheticMarketSource
from usdcop_platform.adapters.sources.twelvedata import TwelveDataMarketSource
from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.synthetic import PlantedEdge

MARKET_SOURCES = ("synthetic", "file", "twelvedata")
MACRO_SOURCES = ("synthetic", "file", "fred")


def build_market_source(
    kind: str,
    calendar: TradingCalendar,
    *,
    bars_file: Path | str | None = None,
    seed: int = 0,
    api_key: str | None = None,
    base_url: str | None = None,
    edge: float = 0.0,
) -> MarketSource:
    if kind == "synthetic":
        return SyntheticMarketSource(calendar, seed, edge=PlantedEdge(edge))
    if kind == "file":
        if not bars_file:
            raise SourceError("market source 'file' needs a bars file (USDCOP_BARS_FILE or --bars)")
        return FileMarketSource(bars_file, calendar)
    if kind == "twelvedata":
        kwargs = {"base_url": base_url} if base_url else {}
        return TwelveDataMarketSource(api_key or "", calendar, **kwargs)
    raise SourceError(f"unknown market source {kind!r}; choose one of {', '.join(MARKET_SOURCES)}")


def build_macro_source(
    kind: str,
    ssot: MacroSSOT,
    *,
    anchor: date,
    macro_file: Path | str | None = None,
    seed: int = 0,
    api_key: str | None = None,
    base_url: str | None = None,
) -> MacroSource:
    """`anchor`: the first date of synthetic series (fixed, so values never depend on the range)."""
    if kind == "synthetic":
        return SyntheticMacroSource(ssot, anchor, seed)
    if kind == "file":
        if not macro_file:
            raise SourceError("macro source 'file' needs a macro file (USDCOP_MACRO_FILE or --macro)")
        return FileMacroSource(macro_file, [v.column for v in ssot.variables.values()])
    if kind == "fred":
        kwargs = {"base_url": base_url} if base_url else {}
        return FredMacroSource(api_key or "", ssot, **kwargs)
    raise SourceError(f"unknown macro source {kind!r}; choose one of {', '.join(MACRO_SOURCES)}")


__all__ = [
    "MACRO_SOURCES",
    "MARKET_SOURCES",
    "FileMacroSource",
    "FileMarketSource",
    "FredMacroSource",
    "HttpPolicy",
    "MacroSource",
    "MarketSource",
    "SourceError",
    "SyntheticMacroSource",
    "SyntheticMarketSource",
    "TwelveDataMarketSource",
    "build_macro_source",
    "build_market_source",
    "macro_history_start",
    "read_bars_file",
    "read_macro_file",
]
