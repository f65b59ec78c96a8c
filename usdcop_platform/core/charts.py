"""Equity + drawdown chart as PNG (matplotlib, Agg backend), and its inline-markdown form.

Dagster renders markdown metadata, including `![alt](data:image/png;base64,...)`, so an asset
can show its chart in the UI without a file server; the approvals pages embed the same bytes.
Long series are thinned to at most `max_points` evenly spaced bars (the drawdown keeps each
bucket's minimum, so the worst drawdown is never thinned away).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_MAX_POINTS = 1500
FIGSIZE_IN = (9.0, 4.8)
DPI = 80



def _pyplot() -> Any:
    """matplotlib on the Agg backend (no display: renders in workers and servers alike), loaded on
    first use: every Dagster run process imports this module, few of them draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

def _thin(x: np.ndarray, max_points: int) -> np.ndarray:
    if x.size <= max_points:
        return np.arange(x.size)
    return np.unique(np.linspace(0, x.size - 1, max_points).round().astype(int))


def _bucket_min(dd: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Minimum of dd over each bucket ending at idx[k] (so thinning keeps the troughs)."""
    starts = np.r_[0, idx[:-1] + 1]
    return np.minimum.reduceat(dd, starts) if dd.size else dd


def equity_drawdown_png(
    equity: np.ndarray,
    drawdown: np.ndarray,
    *,
    times: np.ndarray | Sequence | None = None,
    benchmarks: Mapping[str, np.ndarray | None] | None = None,
    title: str = "",
    max_points: int = DEFAULT_MAX_POINTS,
) -> bytes:
    """PNG bytes: equity (and benchmark equities) on top, drawdown (%) below."""
    eq = np.asarray(equity, dtype=np.float64)
    dd = np.asarray(drawdown, dtype=np.float64)
    if eq.size == 0 or eq.shape != dd.shape:
        raise ValueError(f"equity and drawdown must be non-empty and aligned; got {eq.shape}, {dd.shape}")
    idx = _thin(eq, max_points)
    x = np.asarray(times)[idx] if times is not None else idx
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=FIGSIZE_IN, dpi=DPI, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    try:
        ax1.plot(x, eq[idx], color="#1f77b4", lw=1.4, label="candidate")
        colors = ("#ff7f0e", "#7f7f7f", "#2ca02c", "#9467bd")
        for (name, series), color in zip((benchmarks or {}).items(), colors):
            if series is None:
                continue
            s = np.asarray(series, dtype=np.float64)
            if s.shape == eq.shape:
                ax1.plot(x, s[idx], color=color, lw=1.0, alpha=0.85, label=name)
        ax1.set_ylabel("equity")
        ax1.grid(alpha=0.3)
        ax1.legend(loc="upper left", fontsize=8, frameon=False)
        if title:
            ax1.set_title(title, fontsize=10)
        ax2.fill_between(x, _bucket_min(dd, idx) * 100.0, 0.0, color="#d62728", alpha=0.45, lw=0)
        ax2.set_ylabel("drawdown %")
        ax2.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_image(png: bytes, alt: str = "equity and drawdown") -> str:
    """Markdown that renders the PNG inline (Dagster metadata, approvals pages)."""
    return f"![{alt}]({png_data_uri(png)})"
