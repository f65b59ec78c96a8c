"""Oracle: rsi_9, atr_pct and adx_14 equal TA-Lib's RSI / ATR / ADX to 1e-9 after warm-up, on the
real 2020–2024 bars and on random series (including close-only and flat stretches)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usdcop_platform.core.features import compute_features, wilder_indicators
from usdcop_platform_tests.core.features_support import real_bars, real_macro

talib = pytest.importorskip("talib")

TOL = 1e-9


def _talib(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    return {"rsi_9": talib.RSI(c, 9), "atr_pct": talib.ATR(h, lo, c, 14) / c, "adx_14": talib.ADX(h, lo, c, 14)}


def test_real_bars_match_talib(real_bars_path, real_macro_path, platform_config, calendar) -> None:
    bars = real_bars(str(real_bars_path))
    feats = compute_features(bars, real_macro(str(real_macro_path)), platform_config.features, calendar,
                             platform_config.macro)
    w = platform_config.features.warmup_bars
    h, lo, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
    assert feats.height == bars.height - w > 70_000
    for name, ref in _talib(h, lo, c).items():
        ours = feats[name].to_numpy()
        assert np.isfinite(ours).all(), name
        assert np.max(np.abs(ours - ref[w:])) <= TOL, name


@st.composite
def ohlc_series(draw):
    n = draw(st.integers(min_value=2, max_value=400))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    vol = draw(st.sampled_from([0.0, 1e-6, 1e-4, 1e-3, 2e-2]))
    flat_share = draw(st.floats(min_value=0.0, max_value=1.0))
    level = draw(st.sampled_from([1e-3, 1.0, 4000.0, 1e6]))
    rng = np.random.default_rng(seed)
    c = level * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    stale = rng.random(n) < draw(st.floats(min_value=0.0, max_value=0.8))
    for i in np.flatnonzero(stale):
        if i:
            c[i] = c[i - 1]  # unchanged closes (stale runs)
    spread = np.abs(rng.normal(0.0, vol, n)) * c
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) + spread
    lo = np.minimum(o, c) - spread
    flat = rng.random(n) < flat_share  # close-only bars: O = H = L = C
    return np.where(flat, c, h), np.where(flat, c, lo), c


@settings(max_examples=300, deadline=None)
@given(ohlc_series())
def test_kernel_matches_talib_on_random_series(series) -> None:
    h, lo, c = series
    ind, _ = wilder_indicators(h, lo, c, rsi_period=9, atr_period=14, adx_period=14)
    ref = _talib(h, lo, c)
    for j, (name, r) in enumerate(ref.items()):
        ours = ind[j] / c if name == "atr_pct" else ind[j]
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(r), err_msg=f"{name} lookback")
        ok = ~np.isnan(r)
        if ok.any():
            assert np.max(np.abs(ours[ok] - r[ok])) <= TOL, name


def test_kernel_continues_from_state_exactly() -> None:
    rng = np.random.default_rng(7)
    c = 4000 * np.exp(np.cumsum(rng.normal(0, 1e-3, 900)))
    h, lo = c * 1.0005, c * 0.9995
    whole, s_whole = wilder_indicators(h, lo, c, rsi_period=9, atr_period=14, adx_period=14)
    first, state = wilder_indicators(h[:333], lo[:333], c[:333], rsi_period=9, atr_period=14, adx_period=14)
    rest, state = wilder_indicators(h[333:], lo[333:], c[333:], rsi_period=9, atr_period=14, adx_period=14, state=state)
    np.testing.assert_array_equal(np.hstack([first, rest]), whole)
    np.testing.assert_array_equal(state, s_whole)
