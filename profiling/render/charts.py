"""Time-series charts as inline SVG: one :class:`Chart` (plain data) in, one ``<svg>`` out.

No JavaScript and no external resources: axes, tick labels, a legend, stage markers, and a
``<title>`` on every series (and on every point of short series) for the browser's tooltip.
Values carry a unit (``s``, ``bytes``, ``percent``, ``count``) that picks their formatting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
"""Series colours, assigned in order; the same data always gets the same colours."""

Unit = Literal["s", "bytes", "percent", "count"]
Kind = Literal["line", "points", "step"]

WIDTH, PLOT_HEIGHT = 560, 220
LEFT, RIGHT, TOP, AXIS_BELOW = 64, 14, 14, 44
LEGEND_ROW = 20
MAX_POINTS = 600
"""Longer series are thinned to this many points (the maximum of each bucket is kept)."""
POINT_TITLES = 150
"""Series up to this many points get a tooltip per point."""


def color(index: int) -> str:
    """The palette colour for the ``index``-th series (wraps around)."""
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Series:
    """One named series of ``(x, y)`` points, x in seconds since the run start."""

    name: str
    """Legend label and tooltip."""
    points: Sequence[tuple[float, float]]
    """The points, by x."""
    color: str
    """CSS colour."""
    kind: Kind = "line"
    """``line`` (with small dots), ``points`` (dots only) or ``step`` (a staircase)."""
    dashed: bool = False
    """Draw the line dashed."""
    faint: bool = False
    """Thin and translucent: context lines such as single CPU cores."""
    in_legend: bool = True
    """Whether the legend lists it (one entry can stand for a family of faint lines)."""


@dataclass(frozen=True)
class Chart:
    """One chart: a title, a y unit, series and vertical markers."""

    title: str
    """Shown above the plot and as the SVG's ``<title>``."""
    unit: Unit
    """Unit of the y values."""
    series: list[Series]
    """What to draw; a chart with no points renders an empty frame."""
    markers: list[tuple[float, str]] = field(default_factory=list)
    """Vertical dashed lines ``(x, label)``, e.g. stage ends."""
    x_label: str = "seconds since run start"
    """Label of the x axis."""
    y_max: float | None = None
    """Fixed top of the y axis (e.g. 100 for a system CPU percentage); else from the data."""

    def point_count(self) -> int:
        """How many points the chart draws in all."""
        return sum(len(s.points) for s in self.series)


def format_value(value: float, unit: Unit | str) -> str:
    """``value`` with its unit, short: ``850 ms``, ``1.2 GB``, ``95%``, ``1,234``; NaN: ``-``."""
    if not math.isfinite(value):
        return "-"
    if unit == "s":
        size = abs(value)
        if size == 0:
            return "0 s"
        if size < 1e-3:
            return f"{value * 1e6:.3g} µs"
        if size < 1:
            return f"{value * 1e3:.3g} ms"
        return f"{value:.3g} s" if size < 100 else f"{value:,.0f} s"
    if unit == "bytes":
        for factor, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
            if abs(value) >= factor:
                return f"{value / factor:.3g} {name}"
        return f"{value:.0f} B"
    if unit == "percent":
        return f"{value:.3g}%" if abs(value) < 1000 else f"{value:,.0f}%"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten) covering the range."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def thin(
    points: Sequence[tuple[float, float]], limit: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """At most ``limit`` points: split into buckets by position and keep each bucket's peak."""
    if len(points) <= limit:
        return list(points)
    size = len(points) / limit
    kept = []
    for i in range(limit):
        bucket = points[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        kept.append(max(bucket, key=lambda p: p[1]))
    return kept


def _legend_rows(series: list[Series]) -> list[list[tuple[Series, float]]]:
    rows: list[list[tuple[Series, float]]] = [[]]
    x = float(LEFT)
    for s in series:
        width = 42 + 7 * len(s.name)
        if rows[-1] and x + width > WIDTH - RIGHT:
            rows.append([])
            x = float(LEFT)
        rows[-1].append((s, x))
        x += width
    return rows


def _swatch(s: Series, x: float, y: float) -> str:
    if s.kind == "points":
        return f'<circle cx="{x + 9:.1f}" cy="{y:.1f}" r="3.5" fill="{s.color}"/>'
    dash = ' stroke-dasharray="5 3"' if s.dashed else ""
    return (
        f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 18:.1f}" y2="{y:.1f}" '
        f'stroke="{s.color}" stroke-width="{1 if s.faint else 2.5}"{dash}/>'
    )


def _path(points: list[tuple[float, float]], step: bool) -> str:
    x0, y0 = points[0]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x, y in points[1:]:
        parts.append(f"H{x:.1f}V{y:.1f}" if step else f"L{x:.1f},{y:.1f}")
    return " ".join(parts)


def render_svg(chart: Chart) -> str:
    """The chart as one inline ``<svg>`` element (no XML namespace needed inside HTML)."""
    drawn = [(s, thin(s.points)) for s in chart.series]
    xs = [x for _, pts in drawn for x, _ in pts]
    ys = [y for _, pts in drawn for _, y in pts]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x_lo = min(x_lo, 0.0)
    x_hi = max([x_hi, *(m for m, _ in chart.markers)])
    y_hi = chart.y_max if chart.y_max is not None else max(ys, default=1.0)
    y_lo = min(0.0, min(ys, default=0.0))
    x_ticks = nice_ticks(x_lo, x_hi, 6)
    y_ticks = nice_ticks(y_lo, y_hi * 1.05 if chart.y_max is None else y_hi, 5)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    plot_w = WIDTH - LEFT - RIGHT
    bottom = TOP + PLOT_HEIGHT

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / ((x_hi - x_lo) or 1) * plot_w

    def py(y: float) -> float:
        return bottom - (y - y_lo) / ((y_hi - y_lo) or 1) * PLOT_HEIGHT

    legend = _legend_rows([s for s in chart.series if s.in_legend])
    height = bottom + AXIS_BELOW + LEGEND_ROW * len(legend) + 6
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="{escape(chart.title)}">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{PLOT_HEIGHT}" class="plot"/>',
    ]
    for y in y_ticks:
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            f'class="grid"/><text x="{LEFT - 6}" y="{py(y) + 4:.1f}" class="tick" '
            f'text-anchor="end">{escape(format_value(y, chart.unit))}</text>'
        )
    for x in x_ticks:
        out.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{bottom}" y2="{bottom + 5}" '
            f'class="axis"/><text x="{px(x):.1f}" y="{bottom + 18}" class="tick" '
            f'text-anchor="middle">{format_value(x, "count")}</text>'
        )
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" class="axis"/>'
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" class="axis"/>'
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{bottom + 36}" class="label" '
        f'text-anchor="middle">{escape(chart.x_label)}</text>'
    )
    for x, label in chart.markers:
        out.append(
            f'<g class="marker"><title>{escape(label)} at {x:.1f} s</title>'
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP}" y2="{bottom}"/>'
            f'<text x="{px(x) + 3:.1f}" y="{TOP + 11}">{escape(label)}</text>'
            "</g>"
        )
    for s, pts in drawn:
        out.append(_series_svg(s, pts, chart.unit, px, py))
    for row_no, row in enumerate(legend):
        y = bottom + AXIS_BELOW + LEGEND_ROW * row_no + 10
        for s, x in row:
            out.append(
                f'<g class="legend"><title>{escape(s.name)}</title>{_swatch(s, x, y)}'
                f'<text x="{x + 24:.1f}" y="{y + 4:.1f}">{escape(s.name)}</text></g>'
            )
    out.append("</svg>")
    return "\n".join(out)


def _series_svg(
    s: Series,
    pts: list[tuple[float, float]],
    unit: Unit,
    px: Callable[[float], float],
    py: Callable[[float], float],
) -> str:
    name = escape(s.name)
    last = f", last {format_value(pts[-1][1], unit)}" if pts else ""
    peak = f", peak {format_value(max(y for _, y in pts), unit)}" if pts else ""
    parts = [f'<g class="series"><title>{name} ({len(pts)} points{peak}{last})</title>']
    screen = [(px(x), py(y)) for x, y in pts]
    if s.kind != "points" and len(screen) > 1:
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        width, opacity = (1.0, 0.45) if s.faint else (2.0, 1.0)
        parts.append(
            f'<path d="{_path(screen, s.kind == "step")}" fill="none" stroke="{s.color}" '
            f'stroke-width="{width}" stroke-opacity="{opacity}"{dash}/>'
        )
    if not s.faint and (s.kind == "points" or len(pts) <= POINT_TITLES or len(screen) == 1):
        radius = 3.0 if s.kind == "points" else 2.2
        for (x, y), (sx, sy) in zip(pts, screen, strict=True):
            tip = (
                f"<title>{name}: {escape(format_value(y, unit))} at {x:.1f} s</title>"
                if len(pts) <= POINT_TITLES
                else ""
            )
            parts.append(
                f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="{radius}" fill="{s.color}">{tip}</circle>'
            )
    parts.append("</g>")
    return "".join(parts)
