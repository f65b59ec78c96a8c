"""Live domain definitions: the live bar/features/signal assets, their job and the bar sensor."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.live.assets import live_signal, live_signal_job
from usdcop_platform.defs.live.sensors import live_bar_sensor

defs = dg.Definitions(assets=[live_signal], jobs=[live_signal_job], sensors=[live_bar_sensor])
