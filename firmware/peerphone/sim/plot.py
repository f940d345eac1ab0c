"""A small SVG of hops and latency against N, written by hand: no plotting dependency."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .engine import hops_formula

if TYPE_CHECKING:
    from .scenario import Report

WIDTH, HEIGHT, MARGIN = 640, 360, 56


def _polyline(points: list[tuple[float, float]], colour: str, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{coords}"/>'


def hops_and_latency_svg(reports: list["Report"]) -> str:
    rows = []
    for r in reports:
        hops = next((v for k, v in r.figures.items() if k.endswith(" hops")), 0.0)
        latency = next((v for k, v in r.figures.items() if k.endswith(" latency")), 0.0)
        rows.append((r.spec.nodes, hops, latency))
    rows.sort()
    if not rows:
        return "<svg xmlns='http://www.w3.org/2000/svg'/>"
    xs = [math.log2(n) for n, _, _ in rows]
    x_lo, x_hi = min(xs) - 0.5, max(xs) + 0.5
    hop_hi = max(max(h for _, h, _ in rows), max(hops_formula(n) for n, _, _ in rows)) * 1.2 or 1
    lat_hi = max(lat for _, _, lat in rows) * 1.2 or 1

    def sx(n: int) -> float:
        return MARGIN + (math.log2(n) - x_lo) / (x_hi - x_lo) * (WIDTH - 2 * MARGIN)

    def sy(v: float, hi: float) -> float:
        return HEIGHT - MARGIN - v / hi * (HEIGHT - 2 * MARGIN)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="black"/>',
        _polyline([(sx(n), sy(h, hop_hi)) for n, h, _ in rows], "#1f77b4"),
        _polyline([(sx(n), sy(hops_formula(n), hop_hi)) for n, _, _ in rows], "#1f77b4", dashed=True),
        _polyline([(sx(n), sy(lat, lat_hi)) for n, _, lat in rows], "#d62728"),
        f'<text x="{MARGIN}" y="20">hops (blue; dashed: 1/2 log2 N, max {hop_hi:.1f}) and lookup latency p50 '
        f'(red, max {lat_hi:.0f} ms) against N</text>',
    ]
    for n, hops, lat in rows:
        parts.append(f'<text x="{sx(n):.1f}" y="{HEIGHT - MARGIN + 16}" text-anchor="middle">{n}</text>')
        parts.append(f'<circle cx="{sx(n):.1f}" cy="{sy(hops, hop_hi):.1f}" r="3" fill="#1f77b4"/>')
        parts.append(f'<text x="{sx(n) + 5:.1f}" y="{sy(hops, hop_hi) - 5:.1f}">{hops:.2f}</text>')
        parts.append(f'<circle cx="{sx(n):.1f}" cy="{sy(lat, lat_hi):.1f}" r="3" fill="#d62728"/>')
        parts.append(f'<text x="{sx(n) + 5:.1f}" y="{sy(lat, lat_hi) + 14:.1f}">{lat:.0f} ms</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
