"""Loop health over time as an SVG picture, legible at the size the UI shows it (1:1 in the
markdown dialog: 900 x 640 px, 12-16 px text)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from feedback_loop_dagster.lib import svg
from feedback_loop_dagster.lib.lineage.render import visible_text
from feedback_loop_dagster.lib.report.health import ACCURACY_TARGET, FALSE_POSITIVE_TARGET, Health

# How each A/B experiment with a verdict ended, stacked (a promotion is confirmed, rolled back
# or still under watch): (field, label, colour).
OUTCOMES = (
    ("confirmed", "promoted, confirmed", "#2e7d32"),
    ("under_watch", "promoted, under watch", "#a5d6a7"),
    ("rolled_back", "promoted, rolled back", "#c62828"),
    ("rejected", "rejected", "#6d4c41"),
    ("inconclusive", "inconclusive", "#bdbdbd"),
)
OPEN = (  # what waits at each window's end, stacked
    ("running", "A/B running", "#1565c0"),
    ("pending_review", "pending review", "#6a1b9a"),
)
RATES = (  # (field, label, colour, target, target label)
    ("improvement_accuracy", "improvement accuracy", "#2e7d32", ACCURACY_TARGET, f"target > {ACCURACY_TARGET:.0%}"),
    ("false_positive_rate", "false-positive rate", "#c62828", FALSE_POSITIVE_TARGET, f"target < {FALSE_POSITIVE_TARGET:.0%}"),
)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, GAP, AXIS = 900, 640, 76, 662, 44, 16, 56
LABEL, TICK = 13, 12


class _Panel:
    """One panel: windows left to right (each held until the next), values bottom to top."""

    def __init__(self, first: date, days: int, top: float, height: float, low: float, high: float):
        self.first, self.days, self.top, self.height, self.low, self.high = first, days, top, height, low, high

    def x(self, day: date) -> float:
        return LEFT + (day - self.first).days / self.days * (RIGHT - LEFT)

    def y(self, value: float) -> float:
        return self.top + self.height - (value - self.low) / (self.high - self.low) * self.height

    def steps(self, values: Sequence[float | None]) -> str:
        """Path data of `values` as steps; a gap where a value is None."""
        d, drawing = [], False
        for i, v in enumerate(values):
            if v is None:
                drawing = False
                continue
            start, end = self.x(self.first + timedelta(days=i)), self.x(self.first + timedelta(days=i + 1))
            d.append(f"{'L' if drawing else 'M'}{start:.1f} {self.y(v):.1f}H{end:.1f}")
            drawing = True
        return "".join(d)

    def area(self, base: Sequence[float], top: Sequence[float], colour: str) -> str:
        """The band between two step series."""
        xs = [self.x(self.first + timedelta(days=i)) for i in range(len(top) + 1)]
        upper = [f"{xs[i]:.1f} {self.y(v):.1f} {xs[i + 1]:.1f} {self.y(v):.1f}" for i, v in enumerate(top)]
        lower = [f"{xs[i + 1]:.1f} {self.y(v):.1f} {xs[i]:.1f} {self.y(v):.1f}" for i, v in reversed(list(enumerate(base)))]
        return f'<polygon points="{" ".join(upper + lower)}" fill="{colour}"/>'

    def axis(self, ticks: Sequence[float], tick_text, title: str) -> list[str]:
        """Grid lines with their values at the left, the frame, and the panel's name along it."""
        parts = [svg.path(f"M{LEFT} {self.y(t):.1f}H{RIGHT}", "#e0e0e0") for t in ticks]
        parts += [svg.text(LEFT - 6, self.y(t) + 4, tick_text(t), TICK, "end") for t in ticks]
        parts.append(f'<rect x="{LEFT}" y="{self.top:.1f}" width="{RIGHT - LEFT}" height="{self.height:.1f}" fill="none" '
                     f'stroke="#757575"/>')
        middle = self.top + self.height / 2
        parts.append(svg.text(18, middle, title, LABEL, "middle", extra=f' transform="rotate(-90 18 {middle:.1f})"'))
        return parts

    def legend(self, entries: Sequence[tuple[str, str, str | None]]) -> list[str]:
        """(label, colour, dash or None for a filled swatch) to the right of the panel."""
        parts = []
        for i, (label, colour, dash) in enumerate(entries):
            y = self.top + 14 + i * 19
            if dash is None:
                parts.append(f'<rect x="{RIGHT + 14}" y="{y - 10}" width="22" height="12" fill="{colour}"/>')
            else:
                parts.append(svg.path(f"M{RIGHT + 14} {y - 4}h22", colour, 2, dash or None))
            parts.append(svg.text(RIGHT + 42, y, label, LABEL))
        return parts


def _count_ticks(high: float) -> list[int]:
    """Whole numbers 0..high, at most five, a step of 1, 2 or 5 x a power of ten."""
    step = next(s for s in (m * 10**e for e in range(15) for m in (1, 2, 5)) if high / s <= 4)
    return list(range(0, int(high) + 1, step))


def _stacked(panel_at, series: Sequence[Health], layers, title: str) -> list[str]:
    """Step areas stacked in the order of `layers`, each window's value held until the next."""
    tops, base = [], [0.0] * len(series)
    for field, _, colour in layers:
        top = [b + getattr(h, field) for b, h in zip(base, series, strict=True)]
        tops.append((base, top, colour))
        base = top
    panel = panel_at(max(max(base, default=0), 1) * 1.15)
    parts = panel.axis(_count_ticks(panel.high), str, title)
    parts += [panel.area(low, high, colour) for low, high, colour in tops]
    return parts + panel.legend([(label, colour, None) for _, label, colour in layers])


def _dates(first: date, days: int, y: float) -> list[str]:
    """At most six dates under the panels, a whole number of days apart."""
    step = next((s for s in (1, 2, 7, 14, 28, 56, 91, 182, 364) if days / s <= 6), -(-days // 6))
    marks = [first + timedelta(days=d) for d in range(0, days + 1, step)]
    x = _Panel(first, days, 0, 1, 0, 1).x
    return [svg.path(f"M{x(d):.1f} {y - 14}v5", "#757575") for d in marks] + [
        svg.text(x(d), y + 4, d.isoformat(), TICK, "middle") for d in marks]


def health_svg(title: str, series: Sequence[Health]) -> str:
    """Three panels over the windows of `series`: accuracy and false-positive rate against their
    targets; how the A/B experiments decided so far ended; what is open at each window's end."""
    first, days = series[0].as_of, len(series)
    heights = [h * (HEIGHT - TOP - AXIS - 2 * GAP) / 3.2 for h in (1.1, 1.2, 0.9)]
    tops = [TOP, TOP + heights[0] + GAP, TOP + heights[0] + heights[1] + 2 * GAP]

    def panel_at(i: int):
        return lambda high: _Panel(first, days, tops[i], heights[i], 0, high)

    rates = _Panel(first, days, tops[0], heights[0], -5, 105)
    parts = [svg.text(16, 26, visible_text(title), 16), *rates.axis((0, 25, 50, 75, 100), lambda t: f"{t:.0f}%", "% of promotions")]
    legend = []
    for field, label, colour, target, target_label in RATES:
        values = [None if getattr(h, field) is None else 100 * getattr(h, field) for h in series]
        parts.append(svg.path(f"M{LEFT} {rates.y(100 * target):.1f}H{RIGHT}", colour, 1.3, "2 3"))
        parts.append(svg.path(rates.steps(values), colour, 2.2))
        legend += [(label, colour, ""), (target_label, colour, "2 3")]
    parts += rates.legend(legend)
    parts += _stacked(panel_at(1), series, OUTCOMES, "A/B verdicts so far")
    parts += _stacked(panel_at(2), series, OPEN, "open")
    parts += _dates(first, days, HEIGHT - AXIS + 28)
    return svg.document(WIDTH, HEIGHT, parts)
