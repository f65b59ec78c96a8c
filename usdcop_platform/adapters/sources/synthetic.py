"""Synthetic sources (the embedded default): deterministic by seed, calibrated on the real data."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl

from usdcop_platform.adapters.sources.base import newest_closed
from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.synthetic import (
    NO_EDGE,
    BarCalibration,
    MacroCalibration,
    PlantedEdge,
    synthetic_bars,
    synthetic_macro,
)


class SyntheticMarketSource:
    name = "synthetic"

    def __init__(
        self, calendar: TradingCalendar, seed: int, calibration: BarCalibration | None = None, *, quirks: bool = True,
        edge: PlantedEdge = NO_EDGE,
    ) -> None:
        self.calendar = calendar
        self.seed = seed
        self.calibration = calibration or BarCalibration()
        self.quirks = quirks
        self.edge = edge

    def bars(self, start: date, end: date) -> pl.DataFrame:
        return synthetic_bars(self.calendar, start, end, self.seed, self.calibration, quirks=self.quirks, edge=self.edge)

    def latest_bar(self, now: datetime) -> pl.DataFrame:
        today = self.calendar.session_of(now)
        return newest_closed(self.bars(today, today), self.calendar, now)


class SyntheticMacroSource:
    """Synthetic daily macro for every SSOT variable; series start at a fixed `anchor` date."""

    name = "synthetic"

    def __init__(self, ssot: MacroSSOT, anchor: date, seed: int, calibration: MacroCalibration | None = None) -> None:
        self.ssot = ssot
        self.anchor = anchor
        self.seed = seed
        self.calibration = calibration or MacroCalibration()

    def values(self, start: date, end: date) -> pl.DataFrame:
        return synthetic_macro(self.ssot, self.anchor, max(start, self.anchor), end, self.seed, self.calibration)
