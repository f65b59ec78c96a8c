"""Market-data domain: raw bars and macro assets with their in-asset checks, the after-close
schedule and the macro automation (with its sensor)."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.market_data.assets import raw_macro_daily, raw_usdcop_m5_ohlcv
from usdcop_platform.defs.market_data.schedules import market_data_automation, raw_bars_after_close, raw_bars_job

defs = dg.Definitions(
    assets=[raw_usdcop_m5_ohlcv, raw_macro_daily],
    jobs=[raw_bars_job],
    schedules=[raw_bars_after_close],
    sensors=[market_data_automation],
)
