"""FRED series observations (GET /fred/series/observations, file_type=json).

Response: {"observations": [{"date": "YYYY-MM-DD", "value": "3.95", ...}], ...}; "." marks a
missing value. Errors: {"error_code": N, "error_message": "..."}. Only SSOT variables with a
`fred_series` are served; the others are reported missing by core.cleaning.clean_macro.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import polars as pl

from usdcop_platform.adapters.sources.base import SourceError
from usdcop_platform.adapters.sources.http import HttpPolicy, get_json
from usdcop_platform.contracts.macro import MacroSSOT

MISSING_VALUE = "."


class FredMacroSource:
    name = "fred"

    def __init__(
        self,
        api_key: str,
        ssot: MacroSSOT,
        *,
        base_url: str = "https://api.stlouisfed.org",
        policy: HttpPolicy | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not api_key:
            raise SourceError("fred: no API key (set FRED_API_KEY)")
        self.api_key = api_key
        self.ssot = ssot
        self.base_url = base_url.rstrip("/")
        self.policy = policy or HttpPolicy()
        self.client = client or httpx.Client()

    def series(self, series_id: str, start: date, end: date) -> pl.DataFrame:
        """One series' observations in [start, end]: date, value (null for '.')."""
        body = get_json(
            self.client,
            f"{self.base_url}/fred/series/observations",
            {"series_id": series_id, "api_key": self.api_key, "file_type": "json",
             "observation_start": start.isoformat(), "observation_end": end.isoformat()},
            self.policy,
            vendor="fred",
            secret_params=("api_key",),
        )
        if not isinstance(body, dict):
            raise SourceError(f"fred {series_id}: malformed response (expected an object)")
        if "error_code" in body:
            raise SourceError(f"fred {series_id}: error {body.get('error_code')}: {body.get('error_message')}")
        obs = body.get("observations")
        if not isinstance(obs, list):
            raise SourceError(f"fred {series_id}: malformed response (no 'observations' list)")
        return _observations_frame(series_id, obs)

    def values(self, start: date, end: date) -> pl.DataFrame:
        frame: pl.DataFrame | None = None
        for var in self.ssot.variables.values():
            if not var.fred_series:
                continue
            s = self.series(var.fred_series, start, end).rename({"value": var.column})
            frame = s if frame is None else frame.join(s, on="date", how="full", coalesce=True)
        if frame is None:
            raise SourceError("fred: no SSOT variable has a fred_series")
        return frame.sort("date")


def _observations_frame(series_id: str, obs: list[Any]) -> pl.DataFrame:
    dates, values = [], []
    for i, o in enumerate(obs):
        if not isinstance(o, dict) or "date" not in o or "value" not in o:
            raise SourceError(f"fred {series_id}: malformed observation #{i}: {str(o)[:80]}")
        try:
            dates.append(date.fromisoformat(str(o["date"])))
        except ValueError as exc:
            raise SourceError(f"fred {series_id}: bad date {o['date']!r}") from exc
        raw = str(o["value"]).strip()
        if raw == MISSING_VALUE:
            values.append(None)
            continue
        try:
            values.append(float(raw))
        except ValueError as exc:
            raise SourceError(f"fred {series_id}: non-numeric value {raw!r} on {o['date']}") from exc
    return pl.DataFrame({"date": dates, "value": values}, schema={"date": pl.Date, "value": pl.Float64})
