"""Small inline SVG line charts for the run pages: no image files, no scripts, no network, crisp at any zoom, and
written in microseconds (a run page per run would otherwise cost a matplotlib figure each)."""

from __future__ import annotations

import html
from typing import Sequence

# matplotlib's tab10, the colours the report's PNG plots use
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
Series = tuple[str, Sequence[tuple[float, float]]]  # (label, [(x, y), ...])


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def line_chart(series: Sequence[Series], *, x_label: str, y_label: str, title: str, width: int = 520,
               height: int = 250, y_max: float = 100.0) -> str:
    """Lines with round markers on a 0..y_max axis (percentages), integer x ticks, and a legend below as HTML."""
    left, right, top, bottom = 46, 12, 24, 38
    xs = [x for _, points in series for x, _ in points] or [0.0, 1.0]
    x_min, x_max = min(xs), max(max(xs), min(xs) + 1)

    def sx(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - max(0.0, min(y, y_max)) / y_max) * (height - top - bottom)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>']
    for tick in range(0, int(y_max) + 1, int(y_max) // 4):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
                     f'stroke="#ddd"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    for tick in range(int(x_min), int(x_max) + 1):
        parts.append(f'<text x="{sx(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle">'
                 f'{html.escape(x_label)}</text><text transform="translate(12 {(top + height - bottom) / 2:.0f}) '
                 f'rotate(-90)" text-anchor="middle">{html.escape(y_label)}</text>')
    for index, (label, points) in enumerate(series):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{colour(index)}" stroke-width="2" points="{coords}">'
                     f'<title>{html.escape(label)}</title></polyline>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour(index)}"><title>'
                  f'{html.escape(label)}: {y:.2f} at {x:g}</title></circle>' for x, y in points]
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="background:{colour(i)}"></span>{html.escape(label)}</li>'
                     for i, (label, _) in enumerate(series))
    return f'<figure class="svg">{"".join(parts)}<ul class="legend">{legend}</ul></figure>'
