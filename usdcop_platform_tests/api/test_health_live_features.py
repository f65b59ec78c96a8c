"""A model never goes dark silently (issue 17): /health/detailed says whether the live path can
build features for the current session, and if not why (the live sensor's own check)."""

from __future__ import annotations

from datetime import date

import polars as pl

from usdcop_platform.adapters.store import clear_store_cache
from usdcop_platform.api.monitoring import _live_features
from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, bogota, make_world


def test_health_names_the_missing_production_model(client) -> None:
    body = client.get("/health/detailed").json()
    live = body["live_features"]
    assert live["status"] == "degraded" and live["blocker"] == "no_production_model"
    assert "live signals paused for session" in live["detail"] and "no production model" in live["detail"]
    assert body["status"] == "degraded"


def test_health_says_why_features_cannot_be_built(tmp_path, db_url) -> None:
    world = make_world(tmp_path, db_url)
    try:
        now = bogota(LIVE_SESSION, 9, 30)
        ok = _live_features(world.cfg, world.calendar, world.lake, world.store, now)
        assert ok.status == "ok" and ok.session == LIVE_SESSION.isoformat() and ok.blocker is None

        macro = world.lake.read(MACRO_DATASET, MACRO_PARTITION)  # macro stops a month before: NaN features
        world.lake.write(MACRO_DATASET, MACRO_PARTITION, macro.filter(pl.col("date") < date(2024, 2, 1)))
        stale = _live_features(world.cfg, world.calendar, world.lake, world.store, now)
        assert stale.status == "degraded" and stale.blocker == "stale_macro"
        assert f"live signals paused for session {LIVE_SESSION}" in stale.detail and "stale macro" in stale.detail
        # a Saturday looks at the next session
        sat = _live_features(world.cfg, world.calendar, world.lake, world.store, bogota(date(2024, 3, 9), 10, 0))
        assert sat.session == "2024-03-11"
    finally:
        clear_store_cache()
