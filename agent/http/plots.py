"""Server-side SVG plots of answer rates: no script, no CDN, nothing fetched by the browser.
Pure: values in, SVG text out (every label is escaped).

One point per bucket (day or hour) that has dialled calls; buckets without data leave a gap
in the x axis rather than a fake zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from agent.admin.views import Counts

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 24


def rate_svg(labels: Sequence[str], counts: Sequence[Counts], *, title: str) -> Markup:
    """Answer rate per bucket; ``labels`` name the buckets (days or hours), first to last."""
    n = max(len(labels), 1)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n)

    def y(rate: float) -> float:
        return TOP + plot_h * (1.0 - rate)

    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for level in (0.0, 0.5, 1.0):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level):.1f}"'
            f' y2="{y(level):.1f}"/>'
            f'<text class="axis" x="{LEFT - 4}" y="{y(level) + 4:.1f}" text-anchor="end">'
            f"{level:.0%}</text>"
        )
    step = max(1, n // 6)
    for i in range(0, len(labels), step):
        parts.append(
            f'<text class="axis" x="{x(i):.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"{escape(labels[i])}</text>"
        )
    points = [(i, c.answer_rate, c) for i, c in enumerate(counts) if c.answer_rate is not None]
    if len(points) > 1:
        path = " ".join(f"{x(i):.1f},{y(r):.1f}" for i, r, _ in points if r is not None)
        parts.append(f'<polyline class="line" points="{path}"/>')
    for i, rate, c in points:
        assert rate is not None
        label = escape(labels[i]) if i < len(labels) else str(i)
        parts.append(
            f'<circle class="pt" cx="{x(i):.1f}" cy="{y(rate):.1f}" r="3.5" data-bucket="{label}"'
            f' data-rate="{rate:.4f}"><title>{label}: {rate:.0%} of {c.dialled} dialled'
            "</title></circle>"
        )
    if not points:
        parts.append(
            f'<text class="axis" x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle">'
            "no dialled calls in this period</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # built above from escaped labels and numbers only
