"""Server-rendered inline SVG charts for the review page: no JavaScript, no CDN, works offline.

Every chart is a plain `<svg>` string (marked safe for Jinja2) with a `<title>` for screen
readers, axes with "nice" tick values and CSS classes styled by /static/review.css. All text
that comes from data is XML-escaped here, so a chart can never inject markup.

Plot geometry: a value v on an axis spanning [lo, hi] maps to pixel
    p = p0 + (v - lo) / (hi - lo) * (p1 - p0)
(y grows downwards in SVG, so the y axis maps lo to the bottom edge).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

Formatter = Callable[[float], str]


@dataclass(frozen=True)
class Frame:
    """Canvas size and the margins that hold the axis labels (pixels of the viewBox)."""

    width: int = 760
    height: int = 240
    left: int = 64
    right: int = 16
    top: int = 12
    bottom: int = 28

    @property
    def x0(self) -> float:
        return float(self.left)

    @property
    def x1(self) -> float:
        return float(self.width - self.right)

    @property
    def y0(self) -> float:  # bottom edge of the plot area
        return float(self.height - self.bottom)

    @property
    def y1(self) -> float:  # top edge of the plot area
        return float(self.top)


DEFAULT_FRAME = Frame()
# Presets sized so that, at the page's layout widths, 11 px of viewBox is ~11 px on screen.
WIDE_FRAME = Frame(width=1100, height=300, left=72)
HALF_FRAME = Frame(width=540, height=280, left=60)
# Target number of axis ticks; nice_ticks may return one or two more or fewer.
TARGET_TICKS = 5


def fmt_number(v: float) -> str:
    """Compact number: thousands separators, at most 4 significant decimals."""
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def fmt_pct(v: float) -> str:
    """A fraction as a percentage (0.0123 -> '1.23%')."""
    return f"{v * 100:.2f}%"


def nice_ticks(lo: float, hi: float, target: int = TARGET_TICKS) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 × 10^k (Heckbert's method)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 12))
    return ticks


def _scale(v: float, lo: float, hi: float, p0: float, p1: float) -> float:
    return p0 + (v - lo) / (hi - lo) * (p1 - p0) if hi != lo else (p0 + p1) / 2


def _svg(frame: Frame, title: str, body: list[str], css_class: str) -> Markup:
    t = escape(title)
    return Markup(
        f'<svg class="chart {escape(css_class)}" viewBox="0 0 {frame.width} {frame.height}" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{t}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{t}</title>{"".join(body)}</svg>'
    )


def _empty(frame: Frame, title: str, css_class: str, message: str) -> Markup:
    body = [
        f'<rect class="plot-bg" x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}"/>',
        f'<text class="empty" x="{frame.width / 2}" y="{frame.height / 2}" text-anchor="middle">'
        f"{escape(message)}</text>",
    ]
    return _svg(frame, title, body, f"{css_class} empty-chart")


def _y_axis(frame: Frame, ticks: Sequence[float], lo: float, hi: float, fmt: Formatter) -> list[str]:
    out = [f'<g class="axis y-axis">']
    for t in ticks:
        y = _scale(t, lo, hi, frame.y0, frame.y1)
        out.append(f'<line class="grid" x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text x="{frame.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(t))}</text>'
        )
    out.append("</g>")
    return out


def _x_labels(frame: Frame, labels: Sequence[str], xs: Sequence[float], max_labels: int) -> list[str]:
    """Evenly spaced category labels along the bottom edge (at most max_labels of them)."""
    n = len(labels)
    if n == 0:
        return []
    stride = max(1, math.ceil(n / max_labels))
    out = ['<g class="axis x-axis">']
    for i in range(0, n, stride):
        out.append(
            f'<text x="{xs[i]:.1f}" y="{frame.y0 + 18}" text-anchor="middle">{escape(labels[i])}</text>'
        )
    out.append("</g>")
    return out


def line_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    y_format: Formatter = fmt_number,
    fill_to_zero: bool = False,
    baseline: float | None = None,
    overlays: Mapping[str, Sequence[float | None]] | None = None,
    series_label: str = "candidate",
    css_class: str = "line-chart",
    frame: Frame = DEFAULT_FRAME,
    max_x_labels: int = 6,
) -> Markup:
    """A line over equally spaced points (bar index), labelled with `labels` along x.

    Using the bar index rather than wall-clock time keeps nights, weekends and holidays from
    showing up as flat stretches. `fill_to_zero` shades the area between the line and 0
    (drawdown); `baseline` draws a dashed reference line (initial capital); `overlays` are
    further named lines on the same points (benchmarks), listed in a legend.
    """
    pts = _finite_points(values)
    if len(pts) < 2:
        return _empty(frame, title, css_class, "not enough data to draw")
    extra = {name: _finite_points(vals) for name, vals in (overlays or {}).items()}
    extra = {name: p for name, p in extra.items() if len(p) >= 2}
    ys = [v for _, v in pts] + [v for p in extra.values() for _, v in p]
    lo, hi = min(ys), max(ys)
    if fill_to_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if baseline is not None:
        lo, hi = min(lo, baseline), max(hi, baseline)
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    n = len(values)
    xs = [_scale(i, 0, n - 1, frame.x0, frame.x1) for i in range(n)]
    coords = [(xs[i], _scale(v, lo, hi, frame.y0, frame.y1)) for i, v in pts]
    path = _path(coords)
    body = [
        f'<rect class="plot-bg" x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}"/>',
        *_y_axis(frame, ticks, lo, hi, y_format),
    ]
    if fill_to_zero:
        zero = _scale(0.0, lo, hi, frame.y0, frame.y1)
        area = f"{path} L{coords[-1][0]:.1f},{zero:.1f} L{coords[0][0]:.1f},{zero:.1f} Z"
        body.append(f'<path class="area" d="{area}"/>')
    if baseline is not None:
        by = _scale(baseline, lo, hi, frame.y0, frame.y1)
        body.append(f'<line class="baseline" x1="{frame.x0}" x2="{frame.x1}" y1="{by:.1f}" y2="{by:.1f}"/>')
    for k, (name, p) in enumerate(extra.items()):
        line = _path([(xs[i], _scale(v, lo, hi, frame.y0, frame.y1)) for i, v in p])
        body.append(f'<path class="overlay overlay-{k}" d="{line}"><title>{escape(name)}</title></path>')
    body.append(f'<path class="series" d="{path}"><title>{escape(series_label)}</title></path>')
    if extra:
        body += _legend(frame, [series_label, *extra])
    body += _x_labels(frame, labels, xs, max_x_labels)
    return _svg(frame, title, body, css_class)


def _finite_points(values: Sequence[float | None]) -> list[tuple[int, float]]:
    return [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]


def _path(coords: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)


def _legend(frame: Frame, names: Sequence[str]) -> list[str]:
    """Swatch + name per line, top-left inside the plot; swatch classes match the lines."""
    out = ['<g class="legend">']
    x = frame.x0 + 8
    for k, name in enumerate(names):
        cls = "series" if k == 0 else f"overlay overlay-{k - 1}"
        y = frame.y1 + 14 + 14 * k
        out.append(f'<line class="{cls}" x1="{x}" x2="{x + 18}" y1="{y - 4}" y2="{y - 4}"/>')
        out.append(f'<text x="{x + 24}" y="{y}">{escape(name)}</text>')
    out.append("</g>")
    return out


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    y_format: Formatter = fmt_number,
    value_format: Formatter | None = None,
    css_class: str = "bar-chart",
    frame: Frame = DEFAULT_FRAME,
    max_x_labels: int = 12,
) -> Markup:
    """Vertical bars from 0, class `pos`/`neg` by sign; each bar carries a tooltip title."""
    vals = [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
    if not vals:
        return _empty(frame, title, css_class, "no data")
    ticks = nice_ticks(min(min(vals), 0.0), max(max(vals), 0.0))
    lo, hi = ticks[0], ticks[-1]
    n = len(vals)
    slot = (frame.x1 - frame.x0) / n
    width = max(slot * 0.8, 1.0)
    zero = _scale(0.0, lo, hi, frame.y0, frame.y1)
    tip = value_format or y_format
    body = [
        f'<rect class="plot-bg" x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}"/>',
        *_y_axis(frame, ticks, lo, hi, y_format),
        '<g class="bars">',
    ]
    centers = []
    for i, (label, v) in enumerate(zip(labels, vals, strict=True)):
        cx = frame.x0 + slot * (i + 0.5)
        centers.append(cx)
        y = _scale(v, lo, hi, frame.y0, frame.y1)
        top, h = min(y, zero), max(abs(zero - y), 0.5)
        cls = "pos" if v >= 0 else "neg"
        body.append(
            f'<rect class="bar {cls}" x="{cx - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {escape(tip(v))}</title></rect>'
        )
    body.append("</g>")
    body.append(f'<line class="zero" x1="{frame.x0}" x2="{frame.x1}" y1="{zero:.1f}" y2="{zero:.1f}"/>')
    body += _x_labels(frame, labels, centers, max_x_labels)
    return _svg(frame, title, body, css_class)


def histogram_bins(values: Sequence[float], max_bins: int = 30) -> tuple[list[float], list[int]]:
    """Equal-width bins: count k = min(max_bins, ceil(sqrt(n)) + 1) (square-root rule).

    Returns (edges of length k+1, counts of length k); the last bin is closed on the right.
    """
    vals = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not vals:
        return [], []
    lo, hi = vals[0], vals[-1]
    if hi == lo:
        pad = abs(lo) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    k = max(1, min(max_bins, math.ceil(math.sqrt(len(vals))) + 1))
    width = (hi - lo) / k
    edges = [lo + i * width for i in range(k + 1)]
    counts = [0] * k
    for v in vals:
        counts[min(int((v - lo) / width), k - 1)] += 1
    return edges, counts


def histogram(
    values: Sequence[float],
    *,
    title: str,
    x_format: Formatter = fmt_number,
    css_class: str = "histogram",
    frame: Frame = DEFAULT_FRAME,
) -> Markup:
    """Distribution of values (trade PnL); bins left of 0 are `neg`, right of 0 `pos`."""
    edges, counts = histogram_bins(values)
    if not counts:
        return _empty(frame, title, css_class, "no trades")
    ticks = nice_ticks(0, max(counts))
    lo, hi = 0.0, ticks[-1]
    xlo, xhi = edges[0], edges[-1]
    body = [
        f'<rect class="plot-bg" x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}"/>',
        *_y_axis(frame, ticks, lo, hi, lambda v: f"{v:.0f}"),
        '<g class="bars">',
    ]
    for i, c in enumerate(counts):
        a = _scale(edges[i], xlo, xhi, frame.x0, frame.x1)
        b = _scale(edges[i + 1], xlo, xhi, frame.x0, frame.x1)
        y = _scale(c, lo, hi, frame.y0, frame.y1)
        mid = (edges[i] + edges[i + 1]) / 2
        cls = "pos" if mid >= 0 else "neg"
        body.append(
            f'<rect class="bar {cls}" x="{a + 0.5:.1f}" y="{y:.1f}" width="{max(b - a - 1, 0.5):.1f}" '
            f'height="{max(frame.y0 - y, 0.0):.1f}"><title>{escape(x_format(edges[i]))} … '
            f"{escape(x_format(edges[i + 1]))}: {c}</title></rect>"
        )
    body.append("</g>")
    if xlo < 0 < xhi:
        zx = _scale(0.0, xlo, xhi, frame.x0, frame.x1)
        body.append(f'<line class="zero" x1="{zx:.1f}" x2="{zx:.1f}" y1="{frame.y1}" y2="{frame.y0}"/>')
    x_ticks = [t for t in nice_ticks(xlo, xhi) if xlo <= t <= xhi]
    body.append('<g class="axis x-axis">')
    for t in x_ticks:
        x = _scale(t, xlo, xhi, frame.x0, frame.x1)
        body.append(f'<text x="{x:.1f}" y="{frame.y0 + 18}" text-anchor="middle">{escape(x_format(t))}</text>')
    body.append("</g>")
    return _svg(frame, title, body, css_class)
