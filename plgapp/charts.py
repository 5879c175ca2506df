"""Charts as inline SVG drawn on the server (ADR 0011): no chart library, no script, nothing fetched. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, float]]
    css_class: str = "series-1"


def line_chart(series: Sequence[Series], *, width: int = 560, height: int = 160, y_max: float = 1.0,
               percent: bool = True, title: str = "") -> SafeString:  # fmt: skip
    """Lines over time on a shared axis from 0 to `y_max`, with gridlines, end labels and a text alternative."""
    pad_left, pad_right, pad_top, pad_bottom = 36, 12, 10, 22
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom
    times = [t.timestamp() for s in series for t, _v in s.points]
    if not times:
        return mark_safe(f'<p class="muted">{escape(title or "No history yet")}: nothing recorded yet.</p>')  # noqa: S308
    start, end = min(times), max(times)
    span = max(end - start, 1.0)

    def x(moment: datetime) -> float:
        return pad_left + (moment.timestamp() - start) / span * plot_w

    def y(value: float) -> float:
        return pad_top + plot_h - max(0.0, min(value, y_max)) / y_max * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        level = y(fraction * y_max)
        label = f"{fraction * y_max:.0%}" if percent else f"{fraction * y_max:g}"
        parts.append(f'<line class="grid" x1="{pad_left}" x2="{width - pad_right}" y1="{level:.1f}" y2="{level:.1f}"/>')
        parts.append(f'<text class="axis" x="{pad_left - 4}" y="{level + 3:.1f}" text-anchor="end">{label}</text>')
    first, last = datetime.fromtimestamp(start, tz=UTC), datetime.fromtimestamp(end, tz=UTC)
    parts.append(f'<text class="axis" x="{pad_left}" y="{height - 6}">{first:%b %-d}</text>')
    parts.append(f'<text class="axis" x="{width - pad_right}" y="{height - 6}" text-anchor="end">{last:%b %-d}</text>')
    summary = []
    for item in series:
        if not item.points:
            continue
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in item.points)
        parts.append(f'<polyline class="line {escape(item.css_class)}" points="{path}"/>')
        t, v = item.points[-1]
        parts.append(f'<circle class="dot {escape(item.css_class)}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3"/>')
        summary.append(f"{item.label}: {v:.0%} now" if percent else f"{item.label}: {v:g} now")
    parts.append(f"<title>{escape(title)} — {escape('; '.join(summary))}</title></svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped, the rest are numbers


def bar_chart(bars: Sequence[tuple[str, float]], *, width: int = 380, bar_height: int = 16, percent: bool = False,
              title: str = "") -> SafeString:  # fmt: skip
    """Horizontal bars, longest = full width (feature importance, score distribution, funnels)."""
    if not bars:
        return mark_safe(f'<p class="muted">{escape(title or "Nothing to show")}: no data yet.</p>')  # noqa: S308
    label_w, gap = 130, 5
    top = max(max(value for _label, value in bars), 1e-9)
    height = len(bars) * (bar_height + gap)
    parts = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    for row, (label, value) in enumerate(bars):
        y = row * (bar_height + gap)
        length = max(value, 0) / top * (width - label_w - 50)
        shown = f"{value:.0%}" if percent else f"{value:,.3g}"
        parts.append(f'<text class="axis" x="{label_w - 6}" y="{y + bar_height * 0.7:.1f}" text-anchor="end">'
                     f"{escape(label[:22])}</text>")  # fmt: skip
        parts.append(f'<rect class="bar" x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_height}" rx="2"/>')
        parts.append(
            f'<text class="value" x="{label_w + length + 4:.1f}" y="{y + bar_height * 0.7:.1f}">{shown}</text>'
        )
    parts.append(f"<title>{escape(title)}</title></svg>")
    return mark_safe("".join(parts))  # noqa: S308 - texts escaped, the rest are numbers


def calibration_chart(points: Sequence[tuple[float, float]], *, size: int = 220, title: str = "") -> SafeString:
    """Predicted (x) against observed (y) probability per bin, with the diagonal a calibrated model follows."""
    if not points:
        return mark_safe(f'<p class="muted">{escape(title or "Calibration")}: not trained yet.</p>')  # noqa: S308
    pad = 28
    plot = size - 2 * pad

    def at(value: float) -> float:
        return pad + max(0.0, min(value, 1.0)) * plot

    parts = [f'<svg class="chart calibration" viewBox="0 0 {size} {size}" role="img" aria-label="{escape(title)}">',
             f'<rect class="frame" x="{pad}" y="{pad}" width="{plot}" height="{plot}"/>',
             f'<line class="diagonal" x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}"/>']  # fmt: skip
    path = " ".join(f"{at(p):.1f},{size - at(o):.1f}" for p, o in points)
    parts.append(f'<polyline class="line series-1" points="{path}"/>')
    parts += [f'<circle class="dot series-1" cx="{at(p):.1f}" cy="{size - at(o):.1f}" r="3"/>' for p, o in points]
    parts.append(f'<text class="axis" x="{size / 2}" y="{size - 6}" text-anchor="middle">predicted</text>')
    parts.append(f'<text class="axis" x="10" y="{size / 2}" transform="rotate(-90 10 {size / 2})" '
                 'text-anchor="middle">observed</text>')  # fmt: skip
    worst = max(abs(p - o) for p, o in points)
    parts.append(f"<title>{escape(title)}: at most {worst:.0%} off the diagonal</title></svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped text only
