"""Small, dependency-free SVG charts for report.html (rendering a report stays in milliseconds)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

PALETTE = ("#4a6fd1", "#e07a29", "#2e9e5b", "#d1495b", "#8a5cc2", "#8c6d3f", "#d46fb2", "#7f7f7f")
_FONT = 'font-family="system-ui,sans-serif"'


def _e(text: object) -> str:
    return html.escape(str(text))


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _ticks(vmax: float, n: int = 4) -> list[float]:
    """Round tick values from 0 to about ``vmax``."""
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(vmax / step) + 1)]


def hbar(labels: Sequence[str], values: Sequence[float], title: str = "", unit: str = "",
         colors: Sequence[str] | None = None, ref_line: float | None = None, width: int = 640) -> str:
    """Horizontal bar chart with value labels; ``ref_line`` draws a dashed vertical line (e.g. 100 %)."""
    row, label_w, top = 22, min(220, 8 + 7 * max((len(s) for s in labels), default=4)), 28 if title else 8
    plot_w = width - label_w - 70
    vmax = max([*values, ref_line or 0, 1e-12])
    height = top + row * len(labels) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT} font-size="11" role="img" aria-label="{_e(title)}">']
    if title:
        out.append(f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_e(title)}</text>')
    for t in _ticks(vmax):
        x = label_w + plot_w * t / vmax
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + row * len(labels)}" stroke="#e4e7ef"/>')
        out.append(f'<text x="{x:.1f}" y="{top + row * len(labels) + 14}" text-anchor="middle" '
                   f'fill="#556">{_fmt(t)}</text>')
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = top + i * row
        w = max(plot_w * v / vmax, 0.0)
        color = colors[i] if colors else PALETTE[0]
        out.append(f'<text x="{label_w - 6}" y="{y + row * 0.68:.1f}" text-anchor="end">{_e(lab)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1.0):.1f}" height="{row - 6}" fill="{color}">'
                   f"<title>{_e(lab)}: {_fmt(v)} {_e(unit)}</title></rect>")
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + row * 0.68:.1f}" fill="#333">{_fmt(v)}</text>')
    if ref_line is not None:
        x = label_w + plot_w * ref_line / vmax
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + row * len(labels)}" '
                   'stroke="#b3261e" stroke-dasharray="4 3"/>')
    if unit:
        out.append(f'<text x="{label_w + plot_w / 2}" y="{height - 4}" text-anchor="middle" '
                   f'fill="#556">{_e(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def stacked(labels: Sequence[str], values: Sequence[float], unit: str, width: int = 640) -> str:
    """One horizontal bar split into segments (e.g. latency per layer), with a legend."""
    total = sum(values) or 1e-12
    plot_w, height = width - 20, 40 + 16 * ((len(labels) + 2) // 3)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT} font-size="11" role="img" aria-label="breakdown">']
    x = 10.0
    for i, (lab, v) in enumerate(zip(labels, values)):
        w = plot_w * v / total
        out.append(f'<rect x="{x:.1f}" y="4" width="{max(w, 0.5):.1f}" height="18" fill="{PALETTE[i % len(PALETTE)]}">'
                   f"<title>{_e(lab)}: {_fmt(v)} {_e(unit)} ({100 * v / total:.1f} %)</title></rect>")
        x += w
    for i, (lab, v) in enumerate(zip(labels, values)):
        lx, ly = 10 + (i % 3) * (plot_w / 3), 40 + (i // 3) * 16
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(f'<text x="{lx + 14:.1f}" y="{ly}">{_e(lab)}: {_fmt(v)} {_e(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def ranges(labels: Sequence[str], lows: Sequence[float | None], highs: Sequence[float | None],
           mids: Sequence[float | None], unit: str, width: int = 640) -> str:
    """Intervals (low-high) with a point estimate, one row per label (energy tiers)."""
    vals = [v for seq in (lows, highs, mids) for v in seq if v is not None]
    vmax = max([*vals, 1e-12]) * 1.1
    row, label_w, top = 24, min(380, 8 + 7 * max((len(s) for s in labels), default=4)), 8
    plot_w = width - label_w - 20
    height = top + row * len(labels) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT} font-size="11" role="img" aria-label="ranges">']
    for t in _ticks(vmax):
        x = label_w + plot_w * t / vmax
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + row * len(labels)}" stroke="#e4e7ef"/>')
        out.append(f'<text x="{x:.1f}" y="{top + row * len(labels) + 14}" text-anchor="middle" '
                   f'fill="#556">{_fmt(t)}</text>')
    for i, lab in enumerate(labels):
        y = top + i * row + row / 2
        out.append(f'<text x="{label_w - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(lab)}</text>')
        lo, hi, mid = lows[i], highs[i], mids[i]
        if lo is not None and hi is not None:
            x0, x1 = label_w + plot_w * lo / vmax, label_w + plot_w * hi / vmax
            out.append(f'<rect x="{x0:.1f}" y="{y - 5:.1f}" width="{max(x1 - x0, 1.0):.1f}" height="10" '
                       f'fill="{PALETTE[0]}" opacity="0.6"><title>{_fmt(lo)}–{_fmt(hi)} {_e(unit)}</title></rect>')
        if mid is not None:
            out.append(f'<circle cx="{label_w + plot_w * mid / vmax:.1f}" cy="{y:.1f}" r="4" fill="#1d2330">'
                       f"<title>{_fmt(mid)} {_e(unit)}</title></circle>")
    out.append(f'<text x="{label_w + plot_w / 2}" y="{height - 4}" text-anchor="middle" fill="#556">{_e(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def heatmap(matrix: Sequence[Sequence[float]], classes: Sequence[str], width: int = 420) -> str:
    """A confusion matrix: rows true, columns predicted, darker = more."""
    n = len(matrix)
    label_w, cell = 90, (width - 100) / max(n, 1)
    height = int(label_w + cell * n)
    vmax = max((v for r in matrix for v in r), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT} font-size="11" role="img" aria-label="confusion matrix">']
    for j, c in enumerate(classes):
        out.append(f'<text x="{label_w + (j + 0.5) * cell:.1f}" y="{label_w - 8}" text-anchor="middle">{_e(c)}</text>')
    for i, r in enumerate(matrix):
        out.append(f'<text x="{label_w - 6}" y="{label_w + (i + 0.6) * cell:.1f}" text-anchor="end">'
                   f"{_e(classes[i])}</text>")
        for j, v in enumerate(r):
            shade = 0.08 + 0.85 * (v / vmax) ** 0.35 if v else 0.0
            fill = f"rgba(74,111,209,{shade:.3f})"
            out.append(f'<rect x="{label_w + j * cell:.1f}" y="{label_w + i * cell:.1f}" width="{cell:.1f}" '
                       f'height="{cell:.1f}" fill="{fill}" stroke="#fff"/>')
            color = "#fff" if shade > 0.55 else "#1d2330"
            out.append(f'<text x="{label_w + (j + 0.5) * cell:.1f}" y="{label_w + (i + 0.55) * cell + 4:.1f}" '
                       f'text-anchor="middle" fill="{color}">{_fmt(v)}</text>')
    out.append(f'<text x="{label_w + cell * n / 2:.1f}" y="14" text-anchor="middle" fill="#556">predicted</text>')
    out.append("</svg>")
    return "".join(out)


def scatter(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], xlabel: str, ylabel: str,
            front: Sequence[bool] | None = None, width: int = 560, height: int = 360) -> str:
    """Points with labels; points on the front are joined by a line (Pareto plots)."""
    left, bottom, pad = 60, 40, 16
    pw, ph = width - left - pad, height - bottom - pad
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)
    dx, dy = 0.08 * (x1 - x0), 0.08 * (y1 - y0)  # room for the point labels
    x0, x1, y0, y1 = x0 - dx, x1 + dx, y0 - dy, y1 + dy

    def px(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return pad + ph * (1 - (y - y0) / (y1 - y0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT} font-size="11" role="img" aria-label="scatter">',
           f'<rect x="{left}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="#ccd"/>']
    on = [i for i in range(len(xs)) if front is None or front[i]]
    pts = sorted(on, key=lambda i: xs[i])
    if len(pts) > 1:
        path = " ".join(f"{px(xs[i]):.1f},{py(ys[i]):.1f}" for i in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>')
    for i, (x, y, lab) in enumerate(zip(xs, ys, labels)):
        fill = PALETTE[0] if front is None or front[i] else "#aab"
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{fill}"><title>{_e(lab)}: '
                   f"{_fmt(x)}, {y:.4g}</title></circle>")
        out.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}" font-size="10">{_e(lab)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" fill="#556">{_e(xlabel)}</text>')
    out.append(f'<text x="14" y="{pad + ph / 2}" text-anchor="middle" fill="#556" '
               f'transform="rotate(-90 14 {pad + ph / 2})">{_e(ylabel)}</text>')
    for t in (x0, x1):
        out.append(f'<text x="{px(t):.1f}" y="{pad + ph + 14}" text-anchor="middle" fill="#556">{_fmt(t)}</text>')
    for t in (y0, y1):
        out.append(f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#556">{t:.4g}</text>')
    out.append("</svg>")
    return "".join(out)
