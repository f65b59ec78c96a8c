"""Server-rendered inline SVG charts for the review page: no JavaScript, no CDN, works offline.

Every chart is a plain `<svg>` string (marked safe for Jinja2) with a `<title>` for screen
readers, titled axes (quantity and unit), "nice" tick values and CSS classes styled by
/static/review.css. Legends sit in a strip above the plot area, never on the data. All text
that comes from data is XML-escaped here, so a chart can never inject markup.

Plot geometry: a value v on an axis spanning [lo, hi] maps to pixel
    p = p0 + (v - lo) / (hi - lo) * (p1 - p0)
(y grows downwards in SVG, so the y axis maps lo to the bottom edge).

Tick labels use the fewest decimals that tell every tick apart (a 0.5% step shows one decimal,
a 1% step none), and a value that rounds to zero prints as "0", never "-0.00".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from html import escape

from markupsafe import Markup

Formatter = Callable[[float], str]
# Builds the label formatter of an axis from its tick values (so the precision fits the step).
TickFormat = Callable[[Sequence[float]], Formatter]


@dataclass(frozen=True)
class Frame:
    """Canvas size and the margins that hold tick labels, axis titles and the legend (viewBox pixels)."""

    width: int = 760
    height: int = 260
    left: int = 78
    right: int = 16
    top: int = 12
    bottom: int = 46

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
WIDE_FRAME = Frame(width=1100, height=320, left=86)
HALF_FRAME = Frame(width=540, height=300, left=70)
# Target number of axis ticks; nice_ticks may return one or two more or fewer.
TARGET_TICKS = 5
# Height of the legend strip above the plot, and the font metrics used to lay it out.
LEGEND_STRIP = 24
CHAR_WIDTH = 6.4  # average advance of the 11 px system font, for legend spacing
MAX_DECIMALS = 6


def fixed(v: float, decimals: int, *, thousands: bool = True) -> str:
    """`v` with `decimals` decimals; anything that rounds to zero is "0…", never "-0…"."""
    text = f"{v:,.{decimals}f}" if thousands else f"{v:.{decimals}f}"
    if text.startswith("-") and float(text[1:].replace(",", "")) == 0.0:
        text = text[1:]
    return text


def tick_decimals(ticks: Sequence[float], scale: float = 1.0) -> int:
    """Fewest decimals (0..6) showing every tick exactly: 0.5% steps need 1, 1% steps none."""
    scaled = [t * scale for t in ticks]
    for d in range(MAX_DECIMALS + 1):
        if all(abs(round(s, d) - s) <= 1e-9 * max(1.0, abs(s)) for s in scaled):
            return d
    return MAX_DECIMALS


def number_ticks(ticks: Sequence[float]) -> Formatter:
    d = tick_decimals(ticks)
    return lambda v: fixed(v, d)


def pct_ticks(ticks: Sequence[float]) -> Formatter:
    d = tick_decimals(ticks, 100.0)
    return lambda v: fixed(v * 100.0, d) + "%"


def fmt_number(v: float) -> str:
    """Compact number for tooltips: thousands separators, at most 4 significant digits below 1000."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    if abs(v) >= 1000:
        return fixed(v, 0)
    text = f"{v:.4g}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def fmt_money(v: float) -> str:
    """An amount in currency units with cents (tooltips of the PnL histogram)."""
    return fixed(v, 2)


def fmt_pct(v: float, decimals: int = 2) -> str:
    """A fraction as a percentage (0.0123 -> '1.23%'); never '-0.00%'."""
    return fixed(v * 100.0, decimals) + "%"


def nice_ticks(lo: float, hi: float, target: int = TARGET_TICKS, *, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 × 10^k (Heckbert's method).

    `integer` keeps the step at 1 or more (counts: no "0.5 trades" tick).
    """
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
    if integer:  # 2.5 × 10^k is whole for k >= 1; below that use 1 or 2
        step = 1.0 if step < 1 else 2.0 if step == 2.5 else step
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12) + 0.0)  # + 0.0 turns -0.0 into 0.0
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 12) + 0.0)
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


def _plot_bg(frame: Frame) -> str:
    return (
        f'<rect class="plot-bg" x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}"/>'
    )


def _axis_titles(frame: Frame, x_title: str, y_title: str) -> list[str]:
    """The quantity and unit of each axis: x centred under the tick labels, y rotated left of them."""
    xm = (frame.x0 + frame.x1) / 2
    ym = (frame.y0 + frame.y1) / 2
    return [
        f'<text class="axis-title x-title" x="{xm:.1f}" y="{frame.height - 8}" text-anchor="middle">'
        f"{escape(x_title)}</text>",
        f'<text class="axis-title y-title" x="{-ym:.1f}" y="14" transform="rotate(-90)" '
        f'text-anchor="middle">{escape(y_title)}</text>',
    ]


def _empty(frame: Frame, title: str, css_class: str, message: str, x_title: str, y_title: str) -> Markup:
    body = [
        _plot_bg(frame),
        f'<text class="empty" x="{(frame.x0 + frame.x1) / 2}" y="{(frame.y0 + frame.y1) / 2}" '
        f'text-anchor="middle">{escape(message)}</text>',
        *_axis_titles(frame, x_title, y_title),
    ]
    return _svg(frame, title, body, f"{css_class} empty-chart")


def _y_axis(frame: Frame, ticks: Sequence[float], lo: float, hi: float, fmt: Formatter) -> list[str]:
    out = ['<g class="axis y-axis">']
    for t in ticks:
        y = _scale(t, lo, hi, frame.y0, frame.y1)
        out.append(f'<line class="grid" x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text x="{frame.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(t))}</text>')
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
        out.append(f'<text x="{xs[i]:.1f}" y="{frame.y0 + 18}" text-anchor="middle">{escape(labels[i])}</text>')
    out.append("</g>")
    return out


def line_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    x_title: str,
    y_title: str,
    y_ticks: TickFormat = number_ticks,
    fill_to_zero: bool = False,
    baseline: float | None = None,
    baseline_label: str | None = None,
    overlays: Mapping[str, Sequence[float | None]] | None = None,
    series_label: str = "candidate",
    css_class: str = "line-chart",
    frame: Frame = DEFAULT_FRAME,
    max_x_labels: int = 6,
) -> Markup:
    """A line over equally spaced points (bar index), labelled with `labels` along x.

    Using the bar index rather than wall-clock time keeps nights, weekends and holidays from
    showing up as flat stretches. `fill_to_zero` shades the area between the line and 0
    (drawdown); `baseline` draws a dashed reference line (initial capital, named in the legend
    by `baseline_label`); `overlays` are further named lines on the same points (benchmarks).
    The legend, when there is more than one line, sits in a strip above the plot area.
    """
    pts = _finite_points(values)
    extra = {name: _finite_points(vals) for name, vals in (overlays or {}).items()}
    extra = {name: p for name, p in extra.items() if len(p) >= 2}
    entries = [(series_label, "series")] + [(name, f"overlay overlay-{k}") for k, name in enumerate(extra)]
    if baseline is not None and baseline_label:
        entries.append((baseline_label, "baseline"))
    if len(entries) > 1:
        frame = replace(frame, top=frame.top + LEGEND_STRIP)
    if len(pts) < 2:
        return _empty(frame, title, css_class, "not enough data to draw", x_title, y_title)
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
    body = [_plot_bg(frame), *_y_axis(frame, ticks, lo, hi, y_ticks(ticks))]
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
    if len(entries) > 1:
        body += legend(frame, entries)
    body += _x_labels(frame, labels, xs, max_x_labels)
    body += _axis_titles(frame, x_title, y_title)
    return _svg(frame, title, body, css_class)


def _finite_points(values: Sequence[float | None]) -> list[tuple[int, float]]:
    return [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]


def _path(coords: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)


def legend(frame: Frame, entries: Sequence[tuple[str, str]]) -> list[str]:
    """One row of swatch + name in the strip above the plot area (y < frame.y1), left-aligned
    with it; `entries` are (name, CSS class of the line it stands for)."""
    out = ['<g class="legend">']
    x = frame.x0
    y = frame.y1 - LEGEND_STRIP / 2 + 4
    for name, cls in entries:
        out.append(f'<line class="{cls}" x1="{x:.1f}" x2="{x + 18:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}"/>')
        out.append(f'<text x="{x + 24:.1f}" y="{y:.1f}">{escape(name)}</text>')
        x += 24 + CHAR_WIDTH * len(name) + 18
    out.append("</g>")
    return out


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    x_title: str,
    y_title: str,
    y_ticks: TickFormat = number_ticks,
    value_format: Formatter = fmt_number,
    css_class: str = "bar-chart",
    frame: Frame = DEFAULT_FRAME,
    max_x_labels: int = 12,
) -> Markup:
    """Vertical bars from 0, class `pos`/`neg` by sign; each bar carries a tooltip title."""
    vals = [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
    if not vals:
        return _empty(frame, title, css_class, "no data", x_title, y_title)
    ticks = nice_ticks(min(min(vals), 0.0), max(max(vals), 0.0))
    lo, hi = ticks[0], ticks[-1]
    n = len(vals)
    slot = (frame.x1 - frame.x0) / n
    width = max(slot * 0.8, 1.0)
    zero = _scale(0.0, lo, hi, frame.y0, frame.y1)
    body = [_plot_bg(frame), *_y_axis(frame, ticks, lo, hi, y_ticks(ticks)), '<g class="bars">']
    centers = []
    for i, (label, v) in enumerate(zip(labels, vals, strict=True)):
        cx = frame.x0 + slot * (i + 0.5)
        centers.append(cx)
        y = _scale(v, lo, hi, frame.y0, frame.y1)
        top, h = min(y, zero), max(abs(zero - y), 0.5)
        cls = "pos" if v >= 0 else "neg"
        body.append(
            f'<rect class="bar {cls}" x="{cx - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {escape(value_format(v))}</title></rect>'
        )
    body.append("</g>")
    body.append(f'<line class="zero" x1="{frame.x0}" x2="{frame.x1}" y1="{zero:.1f}" y2="{zero:.1f}"/>')
    body += _x_labels(frame, labels, centers, max_x_labels)
    body += _axis_titles(frame, x_title, y_title)
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
    x_title: str,
    y_title: str,
    x_ticks: TickFormat = number_ticks,
    value_format: Formatter = fmt_number,
    css_class: str = "histogram",
    frame: Frame = DEFAULT_FRAME,
) -> Markup:
    """Distribution of values (trade PnL); bins left of 0 are `neg`, right of 0 `pos`; the y
    axis counts values in whole numbers."""
    edges, counts = histogram_bins(values)
    if not counts:
        return _empty(frame, title, css_class, "no trades", x_title, y_title)
    ticks = nice_ticks(0, max(counts), integer=True)
    lo, hi = 0.0, ticks[-1]
    xlo, xhi = edges[0], edges[-1]
    body = [_plot_bg(frame), *_y_axis(frame, ticks, lo, hi, number_ticks(ticks)), '<g class="bars">']
    for i, c in enumerate(counts):
        a = _scale(edges[i], xlo, xhi, frame.x0, frame.x1)
        b = _scale(edges[i + 1], xlo, xhi, frame.x0, frame.x1)
        y = _scale(c, lo, hi, frame.y0, frame.y1)
        mid = (edges[i] + edges[i + 1]) / 2
        cls = "pos" if mid >= 0 else "neg"
        body.append(
            f'<rect class="bar {cls}" x="{a + 0.5:.1f}" y="{y:.1f}" width="{max(b - a - 1, 0.5):.1f}" '
            f'height="{max(frame.y0 - y, 0.0):.1f}"><title>{escape(value_format(edges[i]))} … '
            f"{escape(value_format(edges[i + 1]))}: {c}</title></rect>"
        )
    body.append("</g>")
    if xlo < 0 < xhi:
        zx = _scale(0.0, xlo, xhi, frame.x0, frame.x1)
        body.append(f'<line class="zero" x1="{zx:.1f}" x2="{zx:.1f}" y1="{frame.y1}" y2="{frame.y0}"/>')
    x_values = [t for t in nice_ticks(xlo, xhi, TARGET_TICKS + 2) if xlo <= t <= xhi]
    fmt = x_ticks(x_values)
    body.append('<g class="axis x-axis">')
    for t in x_values:
        x = _scale(t, xlo, xhi, frame.x0, frame.x1)
        body.append(f'<text x="{x:.1f}" y="{frame.y0 + 18}" text-anchor="middle">{escape(fmt(t))}</text>')
    body.append("</g>")
    body += _axis_titles(frame, x_title, y_title)
    return _svg(frame, title, body, css_class)
