"""Live bars pass the batch bar rules (issue 17): one implementation (core.quality.apply_bar_rules
via core.cleaning.screen_live_bar), the same quarantine, and a signal row saying why a bar was
not traded. Real SQL store, real lake, real ONNX fixture models."""

from __future__ import annotations

import polars as pl
import pytest

from usdcop_platform.adapters.store import clear_store_cache
from usdcop_platform.core.cleaning import BARS_DATASET, clean_bars
from usdcop_platform.app.live_bars import Bar
from usdcop_platform.app.live_cycle import QUARANTINED_CHECK
from usdcop_platform.app.replay import replay_session
from usdcop_platform.app.quarantine import read_quarantine
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, make_world


@pytest.fixture
def world(tmp_path, db_url):
    w = make_world(tmp_path, db_url)
    yield w
    clear_store_cache()


def _frame(bars: list[Bar]) -> pl.DataFrame:
    return pl.concat([b.to_frame() for b in bars], how="vertical")


def _spike(prev: Bar, bar: Bar, factor: float = 1.05) -> Bar:
    c = prev.close * factor  # a 5% one-bar move (limit 3%)
    return Bar(bar.time, bar.open, max(bar.high, c), bar.low, c, bar.volume)


def test_a_spike_bar_is_quarantined_like_batch_and_not_traded(world):
    cycle = world.cycle()
    bars = world.session_bars()
    for b in bars[:3]:
        cycle.process(b)
    pre = world.store.risk.load("live")
    spike = _spike(bars[2], bars[3])
    result = cycle.process(spike)

    # batch on the same bars (the spike last: no next bar confirms it) quarantines the same row
    batch = clean_bars(_frame([*bars[:3], spike]), world.calendar, world.cfg.quality.bars, repair_timezone=False)
    assert batch.quarantined.height == 1
    live_q = read_quarantine(world.lake, BARS_DATASET)
    cols = ["dataset", "partition", "rule", "field", "value", "row"]
    assert live_q.select(cols).rows() == batch.quarantined.select(cols).rows()
    assert live_q["rule"].to_list() == ["spike"] and result.quarantined is not None

    # a signal row per member says why; the position is kept; the model never saw the bar
    rows = world.store.signals.list(session_date=LIVE_SESSION)
    refused = [r for r in rows if r["bar_time"] == spike.time]
    assert refused and all(r["risk_status"] == "REJECTED" and r["failing_check"] == f"{QUARANTINED_CHECK}spike"
                           and r["features"] == [] and r["confidence"] == 0.0 for r in refused)
    assert all(r["position_recommendation"] == pre["position"] * pre["position_size"] for r in refused)
    lake_times = world.lake.read(BARS_DATASET, LIVE_SESSION.isoformat())["time"].to_list()
    assert spike.time not in lake_times and bars[2].time in lake_times
    state = world.store.risk.load("live")
    assert state["last_bar"] == spike.time.isoformat() and state["position"] == pre["position"]

    # the retried bar returns its stored rows; the next clean bar trades normally
    again = cycle.process(spike)
    assert again.duplicate and again.signals[0]["failing_check"] == f"{QUARANTINED_CHECK}spike"
    nxt = cycle.process(bars[4])
    assert nxt.quarantined is None and not str(nxt.signals[0]["failing_check"] or "").startswith(QUARANTINED_CHECK)
    assert len(nxt.signals[0]["features"]) == len(world.cfg.features.names)
    assert read_quarantine(world.lake, BARS_DATASET).height == 1
    # a replay of the session reproduces the refusal and every traded bar
    report = replay_session(world.cfg, world.calendar, world.lake, world.store, LIVE_SESSION,
                            models_root=world.root / "models")
    assert report.matched and len(report.bars) == 5


def test_the_lake_path_after_a_refused_bar_equals_a_warm_engine(world):
    """A refused bar is neither in the lake nor in the feature engine: a fresh process (lake
    rebuild) computes the next bar's features bit for bit like the warm process."""
    bars = world.session_bars()
    warm = world.cycle()
    for b in bars[:3]:
        warm.process(b)
    warm.process(_spike(bars[2], bars[3]))
    pending_warm = warm.compute(bars[4])
    cold = world.cycle()
    pending_cold = cold.compute(bars[4])
    assert pending_cold.feature_source == "lake" and pending_warm.feature_source == "memory"
    assert pending_cold.feature_hash == pending_warm.feature_hash


@pytest.mark.parametrize("broken", ["high_below_low", "price_out_of_band", "missing_price"])
def test_static_bar_rules_refuse_in_live(world, broken):
    cycle = world.cycle()
    b = world.session_bars()[0]
    bad = {"high_below_low": Bar(b.time, b.open, b.low - 1, b.low, b.close),
           "price_out_of_band": Bar(b.time, 99.0, 99.0, 99.0, 99.0),
           "missing_price": Bar(b.time, b.open, b.high, b.low, float("nan"))}[broken]
    result = cycle.process(bad)
    assert result.quarantined is not None and result.quarantined["rule"].to_list() == [broken]
    assert result.signals[0]["failing_check"] == f"{QUARANTINED_CHECK}{broken}"
    assert world.lake.read(BARS_DATASET, LIVE_SESSION.isoformat()) is None  # the first bar: nothing published
