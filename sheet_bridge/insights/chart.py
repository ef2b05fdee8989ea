"""The weekly stage counts as a standalone SVG line chart (no dependencies, inline-safe)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

from sheet_bridge.insights.funnel import LEARNING_PHASE_PER_WEEK, FunnelReport

# Okabe–Ito: told apart by colour-blind readers too; cycled when there are more stages.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"


def weekly_chart(report: FunnelReport, *, width: int = 640, height: int = 340) -> str:
    """The report's sent-per-week counts, one line per positive stage, with the 50/week line."""
    labels = [w.label.split("-")[-1] + ("*" if not w.complete else "") for w in report.weeks]
    sub = [f"{w.start:%d %b}" for w in report.weeks]
    return line_chart_svg(
        labels,
        report.series(),
        sublabels=sub,
        threshold=LEARNING_PHASE_PER_WEEK,
        threshold_label=f"{LEARNING_PHASE_PER_WEEK}/week: learning phase",
        title="Events sent to Meta per week, by stage",
        note="* this week so far · weeks start Monday, UTC",
        width=width,
        height=height,
    )


def nice_ceiling(value: float) -> tuple[float, float]:
    """A round axis top ≥ value and its tick step (1, 2 or 5 × 10ⁿ, about 5 ticks)."""
    if value <= 0:
        return 5.0, 1.0
    raw = value / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(step, 1.0)  # counts: never a fractional tick
    return math.ceil(value / step) * step, step


def line_chart_svg(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    sublabels: Sequence[str] | None = None,
    threshold: float | None = None,
    threshold_label: str = "",
    title: str = "",
    note: str = "",
    width: int = 640,
    height: int = 340,
) -> str:
    """A self-contained SVG document: x = labels, one coloured line with dots per series."""
    legend_rows = math.ceil(len(series) / 4) if series else 0
    top = 34 + legend_rows * 18
    left, right, bottom = 48, 16, 52 if sublabels else 38
    plot_w = width - left - right
    plot_h = height - top - bottom
    peak = max([*(v for vals in series.values() for v in vals), threshold or 0, 1])
    y_max, step = nice_ceiling(peak * 1.05)
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label={quoteattr(title or 'chart')}>",
        f"<title>{escape(title)}</title>",
        f"<rect x='0' y='0' width='{width}' height='{height}' fill='#ffffff'/>",
        f"<g {_FONT} font-size='11' fill='#333333'>",
    ]
    if title:
        out.append(
            f"<text x='{left}' y='18' font-size='14' font-weight='600'>{escape(title)}</text>"
        )
    # Legend: up to four entries a row, under the title.
    for i, name in enumerate(series):
        lx = left + (i % 4) * (plot_w / 4)
        ly = 34 + (i // 4) * 18
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f"<line x1='{lx:.1f}' y1='{ly - 4}' x2='{lx + 16:.1f}' y2='{ly - 4}' "
            f"stroke='{colour}' stroke-width='3'/>"
            f"<text x='{lx + 21:.1f}' y='{ly}'>{escape(_clip(name, 18))}</text>"
        )
    # Grid and y ticks.
    tick = 0.0
    while tick <= y_max + 1e-9:
        ty = y(tick)
        out.append(
            f"<line x1='{left}' y1='{ty:.1f}' x2='{left + plot_w}' y2='{ty:.1f}' "
            f"stroke='#e5e5e5'/>"
            f"<text x='{left - 6}' y='{ty + 4:.1f}' text-anchor='end'>{tick:g}</text>"
        )
        tick += step
    out.append(
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        "stroke='#999999'/>"
    )
    for i, label in enumerate(labels):
        out.append(
            f"<text x='{x(i):.1f}' y='{top + plot_h + 15}' text-anchor='middle'>"
            f"{escape(label)}</text>"
        )
        if sublabels and i < len(sublabels):
            out.append(
                f"<text x='{x(i):.1f}' y='{top + plot_h + 28}' text-anchor='middle' "
                f"fill='#777777' font-size='10'>{escape(sublabels[i])}</text>"
            )
    if threshold is not None and threshold <= y_max:
        ty = y(threshold)
        out.append(
            f"<line x1='{left}' y1='{ty:.1f}' x2='{left + plot_w}' y2='{ty:.1f}' "
            "stroke='#b00020' stroke-dasharray='5 4' stroke-width='1.2'/>"
            f"<text x='{left + plot_w - 2}' y='{ty - 4:.1f}' text-anchor='end' fill='#b00020' "
            f"font-size='10'>{escape(threshold_label)}</text>"
        )
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{x(j):.1f},{y(v):.1f}" for j, v in enumerate(values))
        out.append(
            f"<g><title>{escape(name)}</title>"
            f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='2.2' "
            "stroke-linejoin='round'/>"
        )
        for j, v in enumerate(values):
            out.append(
                f"<circle cx='{x(j):.1f}' cy='{y(v):.1f}' r='3' fill='{colour}'>"
                f"<title>{escape(name)} {escape(labels[j] if j < len(labels) else '')}: "
                f"{v:g}</title></circle>"
            )
        out.append("</g>")
    if note:
        out.append(
            f"<text x='{left + plot_w}' y='{height - 6}' text-anchor='end' fill='#777777' "
            f"font-size='10'>{escape(note)}</text>"
        )
    out.append("</g></svg>")
    return "\n".join(out)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
