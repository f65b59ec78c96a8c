"""Resources of the live domain: the market feed the sensor polls, and the feature cache.

Both are registered once in defs/resources.py (keys "live_feed" and "feature_cache"); secrets
(TwelveData key, a Redis URL with a password) stay EnvVars so they never show in the UI.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from usdcop_platform.adapters.cache import DEFAULT_NAMESPACE, FeatureCache, build_feature_cache
from usdcop_platform.contracts.instrument import InstrumentConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.settings import Settings

_LOCK = threading.Lock()
_SOURCES: dict[tuple[Any, ...], Any] = {}
_CACHES: dict[tuple[Any, ...], FeatureCache] = {}


class LiveFeedResource(dg.ConfigurableResource):
    """The market source the live sensor polls for the newest closed bar, and its clock.

    `frozen_now` (ISO instant with offset) makes the sensor evaluate as if the wall clock read
    that instant: for replaying a past session's sensor behaviour, tests and the latency bench.
    """

    market_source: str = "synthetic"
    bars_file: str | None = None
    synthetic_seed: int = 42
    synthetic_edge: float = 0.0
    twelvedata_api_key: str | None = None
    twelvedata_base_url: str | None = None
    frozen_now: str | None = None

    def now(self) -> datetime:
        if self.frozen_now:
            t = datetime.fromisoformat(self.frozen_now)
            if t.tzinfo is None:
                raise ValueError(f"live_feed.frozen_now {self.frozen_now!r} needs a UTC offset")
            return t.astimezone(timezone.utc)
        return datetime.now(timezone.utc)

    def source(self, calendar: TradingCalendar) -> Any:
        """The market source (one per process and configuration: the synthetic generator caches)."""
        from usdcop_platform.adapters.sources import build_market_source

        key = (self.market_source, self.bars_file, self.synthetic_seed, self.synthetic_edge, self.twelvedata_base_url,
               calendar.instrument)
        with _LOCK:
            if key not in _SOURCES:
                _SOURCES[key] = build_market_source(
                    self.market_source, calendar, bars_file=self.bars_file, seed=self.synthetic_seed,
                    api_key=self.twelvedata_api_key, base_url=self.twelvedata_base_url, edge=self.synthetic_edge,
                )
            return _SOURCES[key]


class FeatureCacheResource(dg.ConfigurableResource):
    """Redis feature cache (TTL one bar, one session of history); memory when no URL is set."""

    redis_url: str | None = None
    namespace: str = DEFAULT_NAMESPACE

    def cache(self, instrument: InstrumentConfig) -> FeatureCache:
        key = (self.redis_url, self.namespace, instrument.bar_minutes, instrument.bars_per_session)
        with _LOCK:
            if key not in _CACHES:
                _CACHES[key] = build_feature_cache(self.redis_url, instrument.bar_minutes,
                                                   instrument.bars_per_session, self.namespace)
            return _CACHES[key]


def live_resources(settings: Settings, frozen_now: str | None = None) -> dict[str, Any]:
    """Builder for defs.resources: {"live_feed", "feature_cache"} from settings; `frozen_now` fixes
    the feed's clock (LiveFeedResource)."""
    feed = LiveFeedResource(
        market_source=settings.market_source,
        bars_file=str(settings.bars_file) if settings.bars_file else None,
        synthetic_seed=settings.synthetic_seed,
        synthetic_edge=settings.synthetic_edge,
        twelvedata_api_key=dg.EnvVar("TWELVEDATA_API_KEY") if settings.twelvedata_api_key else None,
        twelvedata_base_url=settings.twelvedata_base_url,
        frozen_now=frozen_now,
    )
    cache = FeatureCacheResource(redis_url=dg.EnvVar("REDIS_URL") if settings.redis_url else None)
    return {"live_feed": feed, "feature_cache": cache}
