"""TwelveData USD/COP time series (GET /time_series).

Response: {"meta": {...}, "values": [{"datetime": "YYYY-MM-DD HH:MM:SS", "open": "...", ...}],
"status": "ok"}; errors come as {"code": N, "message": "...", "status": "error"}, sometimes with
HTTP 200. We request `timezone=UTC`, so datetimes are UTC wall-clock and labelled as such.
"No data is available" (code 400) is an empty result, not an error.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx
import polars as pl

from usdcop_platform.adapters.sources.base import SourceError, empty_raw_bars, newest_closed
from usdcop_platform.adapters.sources.http import HttpPolicy, get_json
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import UTC_TIME

OUTPUTSIZE_MAX = 5000  # the vendor's maximum rows per request
RATE_LIMIT_CODE = 429
NO_DATA_CODE = 400
MINUTES_PER_DAY = 24 * 60


def _rate_limited(body: Any) -> bool:
    return isinstance(body, dict) and body.get("status") == "error" and body.get("code") == RATE_LIMIT_CODE


class TwelveDataMarketSource:
    name = "twelvedata"

    def __init__(
        self,
        api_key: str,
        calendar: TradingCalendar,
        *,
        base_url: str = "https://api.twelvedata.com",
        symbol: str | None = None,
        policy: HttpPolicy | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not api_key:
            raise SourceError("twelvedata: no API key (set TWELVEDATA_API_KEY)")
        self.api_key = api_key
        self.calendar = calendar
        self.base_url = base_url.rstrip("/")
        self.symbol = symbol or calendar.instrument.symbol
        self.policy = policy or HttpPolicy()
        self.client = client or httpx.Client()
        self.interval = f"{calendar.instrument.bar_minutes}min"
        # Days per request so that even a 24-hour market fits in one response.
        self.chunk_days = max(1, OUTPUTSIZE_MAX // (MINUTES_PER_DAY // calendar.instrument.bar_minutes))

    def _request(self, params: dict[str, Any]) -> pl.DataFrame:
        body = get_json(
            self.client,
            f"{self.base_url}/time_series",
            {"symbol": self.symbol, "interval": self.interval, "timezone": "UTC", "apikey": self.api_key, **params},
            self.policy,
            vendor="twelvedata",
            secret_params=("apikey",),
            is_rate_limited=_rate_limited,
        )
        if not isinstance(body, dict):
            raise SourceError(f"twelvedata: malformed response (expected an object, got {type(body).__name__})")
        if body.get("status") == "error":
            if body.get("code") == NO_DATA_CODE and "no data" in str(body.get("message", "")).lower():
                return empty_raw_bars()
            raise SourceError(f"twelvedata: error {body.get('code')}: {body.get('message')}")
        values = body.get("values")
        if values is None:
            raise SourceError("twelvedata: malformed response (no 'values')")
        if not isinstance(values, list):
            raise SourceError("twelvedata: malformed response ('values' is not a list)")
        return _values_frame(values)

    def bars(self, start: date, end: date) -> pl.DataFrame:
        frames = []
        d = start
        while d <= end:
            stop = min(end, d + timedelta(days=self.chunk_days - 1))
            frames.append(
                self._request(
                    {"start_date": f"{d} 00:00:00", "end_date": f"{stop} 23:59:59", "order": "ASC",
                     "outputsize": OUTPUTSIZE_MAX}
                )
            )
            d = stop + timedelta(days=1)
        out = pl.concat(frames, how="vertical") if frames else empty_raw_bars()
        return out.unique(subset=["time"], keep="last").sort("time")

    def latest_bar(self, now: datetime) -> pl.DataFrame:
        # The newest few bars: the current, still-forming bar may be among them.
        recent = self._request({"outputsize": 3, "order": "DESC"})
        return newest_closed(recent, self.calendar, now)


def _values_frame(values: list[Any]) -> pl.DataFrame:
    if not values:
        return empty_raw_bars()
    try:
        df = pl.DataFrame(values, infer_schema_length=None)
    except Exception as exc:
        raise SourceError(f"twelvedata: malformed 'values' ({exc})") from exc
    missing = [c for c in ("datetime", "open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise SourceError(f"twelvedata: 'values' rows lack {missing}")
    prices = {}
    for c in ("open", "high", "low", "close"):
        s = df[c].cast(pl.Utf8).cast(pl.Float64, strict=False)
        if s.null_count():
            bad = df[c][int(s.is_null().arg_true()[0])]
            raise SourceError(f"twelvedata: non-numeric {c} {bad!r}")
        prices[c] = s
    time = df["datetime"].cast(pl.Utf8).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
    if time.null_count():
        bad = df["datetime"][int(time.is_null().arg_true()[0])]
        raise SourceError(f"twelvedata: unparseable datetime {bad!r}")
    volume = df["volume"].cast(pl.Utf8).cast(pl.Float64, strict=False).fill_null(0.0) if "volume" in df.columns else 0.0
    return pl.DataFrame(
        {
            "time": time.dt.replace_time_zone("UTC").cast(UTC_TIME),
            **prices,
            "volume": volume if isinstance(volume, pl.Series) else pl.Series([volume] * df.height),
        }
    )
