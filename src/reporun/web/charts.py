"""The admin page's charts, drawn here as SVG (no script, no library): queue wait p50/p95 and
jobs finished per minute over the last hour. Pure code."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str  # the class its line takes (colour from the stylesheet)
    values: list[float | None]  # one a minute, oldest first; None: nothing that minute


def minute_of(stamp: datetime, start: datetime) -> int:
    return int((stamp - start).total_seconds() // 60)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th quantile by nearest rank (as the observer's p95)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def wait_series(
    waits: Sequence[tuple[datetime, float]], now: datetime, minutes: int = 60
) -> list[Series]:
    """p50 and p95 of the queue waits of jobs that started in each minute."""
    start = now - timedelta(minutes=minutes)
    by_minute: list[list[float]] = [[] for _ in range(minutes)]
    for started, wait in waits:
        index = minute_of(started, start)
        if 0 <= index < minutes:
            by_minute[index].append(wait)
    return [
        Series("p50", "p50", [percentile(m, 0.5) if m else None for m in by_minute]),
        Series("p95", "p95", [percentile(m, 0.95) if m else None for m in by_minute]),
    ]


def finished_series(finished: Sequence[datetime], now: datetime, minutes: int = 60) -> Series:
    start = now - timedelta(minutes=minutes)
    counts = [0.0] * minutes
    for stamp in finished:
        index = minute_of(stamp, start)
        if 0 <= index < minutes:
            counts[index] += 1
    return Series("finished", "finished", list(counts))


def nice_top(value: float) -> float:
    """A round number at or above `value` for the axis' top."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power:
            return step * power
    return 10.0 * power


def svg(title: str, unit: str, series: Sequence[Series], *, width: int = 600) -> str:
    """A line chart of minutes (oldest left), with its title, axis and a legend; the numbers
    are in a <title> per point for those who hover or read it with a screen reader."""
    height, left, right, top, bottom = 180, 48, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for v in s.values if v is not None]
    peak = nice_top(max(values, default=0.0))
    count = max((len(s.values) for s in series), default=1)

    def x(i: int) -> float:
        return left + (plot_w * i / max(1, count - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - v / peak)

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        level = y(peak * fraction)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{level:.1f}" '
            f'y2="{level:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{level + 4:.1f}" text-anchor="end">'
            f"{_number(peak * fraction)}</text>"
        )
    parts.append(
        f'<text class="axis" x="{left}" y="{height - 8}">-{count} min</text>'
        f'<text class="axis" x="{width - right}" y="{height - 8}" text-anchor="end">now</text>'
        f'<text class="axis" x="{left + plot_w / 2:.0f}" y="{height - 8}" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    for line in series:
        runs: list[list[tuple[int, float]]] = [[]]
        for i, v in enumerate(line.values):
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append((i, v))
        for run in (r for r in runs if r):
            if len(run) == 1:
                i, v = run[0]
                parts.append(f'<circle class="{line.css}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="2"/>')
                continue
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            parts.append(f'<polyline class="{line.css}" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    """An axis label: as few digits as tell the levels apart (0.05, 0.5, 2.5, 50)."""
    if value >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"
