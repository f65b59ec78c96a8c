"""core.cleaning.screen_live_bar, evaluated from its parts, gives exactly the batch verdict
(apply_bar_rules over the session's bars plus the new one) for the session's latest bar."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from usdcop_platform.core.cleaning import SessionScreen, screen_live_bar
from usdcop_platform.core.quality import apply_bar_rules
from usdcop_platform.core.schema import BAR_SCHEMA, QUARANTINE_SCHEMA

START = datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc)


def _frame(closes: list[float], kinds: list[str], hi: float) -> pl.DataFrame:
    rows = []
    for i, (c, k) in enumerate(zip(closes, kinds)):
        o, h, low = c, c * 1.0005, c * 0.9995
        if k == "nan":
            c = float("nan")
        elif k == "band":
            o = c = h = hi * 2
        elif k == "ohlc":
            c = h * 1.001
        rows.append({"time": START + timedelta(minutes=5 * i), "open": o, "high": h, "low": low, "close": c,
                     "volume": 0.0})
    return pl.DataFrame(rows, schema=dict(BAR_SCHEMA))


def _batch_verdict(before: pl.DataFrame, bar: pl.DataFrame, calendar, quality) -> pl.DataFrame:
    """The definition: the batch rules over the session so far, the new bar's rows."""
    known = pl.concat([before, bar], how="vertical").unique(subset="time", keep="last").sort("time")
    return apply_bar_rules(known, calendar, quality).failed.filter(pl.col("time") == bar["time"][0])


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.06, 0.06), st.sampled_from(["ok"] * 6 + ["nan", "band", "ohlc"])),
                min_size=1, max_size=20))
def test_the_live_screen_equals_the_batch_rules_on_the_latest_bar(calendar, platform_config, steps):
    quality = platform_config.quality.bars
    lo, hi = quality.price_band
    closes = list((lo + hi) / 2 * np.exp(np.cumsum([s for s, _ in steps])))
    frame = _frame(closes, [k for _, k in steps], hi)
    before, bar = frame.head(frame.height - 1), frame.tail(1)
    got = screen_live_bar(before if before.height else None, bar, calendar, quality,
                          detected_at=START)
    want = _batch_verdict(before, bar, calendar, quality)
    assert got.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert got.height == want.height
    if want.height:
        assert got.select("rule", "field", "value").row(0) == want.select("_rule", "_field", "_value").row(0)


def _same_rows(got: pl.DataFrame, want: pl.DataFrame) -> bool:
    cols = ["dataset", "partition", "rule", "field", "value", "row"]
    return got.height == want.height and got.select(cols).rows() == want.select(cols).rows()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.06, 0.06), st.sampled_from(["ok"] * 6 + ["nan", "band", "ohlc"])),
                min_size=1, max_size=24),
       st.integers(0, 23))
def test_a_session_screen_moved_bar_by_bar_equals_the_screen_over_the_lake(calendar, platform_config, steps, seeded):
    """What the live cycle keeps (SessionScreen, built once, then moved by each bar it writes)
    gives, bar after bar, the verdict screen_live_bar gives over the partition as written; also
    when the partition already holds later bars, or the bar's own instant (replaced by the upsert)."""
    quality = platform_config.quality.bars
    lo, hi = quality.price_band
    closes = list((lo + hi) / 2 * np.exp(np.cumsum([s for s, _ in steps])))
    frame = _frame(closes, [k for _, k in steps], hi)
    # a partition seeded with some bars of the session, some of them at or after those replayed
    lake = frame.sample(n=min(seeded, frame.height), seed=seeded, shuffle=True).sort("time") if seeded else None
    screen = SessionScreen.of(lake, quality)
    for i in range(frame.height):
        bar = frame.slice(i, 1)
        got = screen.verdict(bar.row(0, named=True), calendar, detected_at=START)
        want = screen_live_bar(lake, bar, calendar, quality, detected_at=START)
        assert _same_rows(got, want), i
        if got.is_empty():  # written to the lake, as the live cycle does
            lake = bar if lake is None else pl.concat([lake, bar]).unique("time", keep="last").sort("time")
            screen = screen.with_bar(bar["time"][0], float(bar["close"][0]))
            assert np.array_equal(screen.times, SessionScreen.of(lake, quality).times)
            assert np.array_equal(screen.closes, SessionScreen.of(lake, quality).closes)
