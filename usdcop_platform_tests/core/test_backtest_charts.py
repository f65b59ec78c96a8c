"""core.charts: a real PNG of equity + drawdown, and markdown that inlines it."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from usdcop_platform.core.charts import _bucket_min, _thin, equity_drawdown_png, markdown_image, png_data_uri


def test_png_renders_with_benchmarks_and_times() -> None:
    n = 5000
    equity = 1e5 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 1e-3, n)))
    dd = equity / np.maximum.accumulate(equity) - 1
    times = np.datetime64("2024-05-03T13:00") + np.arange(n) * np.timedelta64(5, "m")
    png = equity_drawdown_png(equity, dd, times=times, benchmarks={"buy & hold": equity * 0.99, "production": None},
                              title="t")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200
    assert len(png) < 200_000  # small enough for Dagster metadata


def test_markdown_inlines_the_png() -> None:
    png = equity_drawdown_png(np.array([1.0, 1.1, 1.0]), np.array([0.0, 0.0, -0.09]))
    md = markdown_image(png, "eq")
    assert md.startswith("![eq](data:image/png;base64,") and md.endswith(")")
    assert base64.b64decode(png_data_uri(png).split(",", 1)[1]) == png


def test_thinning_keeps_the_worst_drawdown() -> None:
    dd = np.zeros(10_000)
    dd[4321] = -0.3
    idx = _thin(dd, 100)
    assert idx.size <= 100 and idx[0] == 0 and idx[-1] == 9_999
    assert _bucket_min(dd, idx).min() == -0.3


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        equity_drawdown_png(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        equity_drawdown_png(np.ones(3), np.zeros(2))
