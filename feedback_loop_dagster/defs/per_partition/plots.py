"""Pictures in materialization metadata as markdown images of inline SVG (lib/svg.py): no files,
and the UI shows them at their natural size (inline when short enough, see INLINE_MARKDOWN_LIMIT)."""

from __future__ import annotations

import math

from feedback_loop_dagster.lib.lineage.render import visible_text
from feedback_loop_dagster.lib.stats.metrics import METRICS
from feedback_loop_dagster.lib.stats.units import EffectInUnit, format_in_unit, unit_of
from feedback_loop_dagster.lib.svg import data_url

_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~&")


def markdown_text(text: str) -> str:
    """`text` (a pattern id, a version name) shown literally in markdown: invisible characters as
    escapes, markdown and HTML punctuation backslash-escaped."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in visible_text(text))


def svg_markdown(svg: str, alt: str) -> str:
    """The SVG as a markdown image, `alt` shown literally; the URL in angle brackets may hold blanks."""
    return f"![{markdown_text(alt)}](<{data_url(svg)}>)"


# Dagster's UI shows a markdown value inline in a partition's metadata when it is shorter than 1,000
# characters, and behind "[Show Markdown]" otherwise (ui-core/src/metadata/MetadataEntry.tsx,
# dagster 1.13); a PNG never fits, a small SVG of a few dozen points does.
INLINE_MARKDOWN_LIMIT = 1000
_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 520, 176, 86, 510, 10, 146


def _lift_svg(metric: str, windows: list, effects: list[EffectInUnit]) -> str:
    finite = [v for e in effects for v in (e.value, e.low, e.high) if v is not None and math.isfinite(v)] + [0.0]
    bottom, top = min(finite), max(finite)
    pad = (top - bottom) * 0.08 or 1.0
    bottom, top = bottom - pad, top + pad

    def y(v: float) -> int:
        v = min(max(v, bottom), top)  # an unbounded side of an early look is drawn at the edge
        return round(_BOTTOM - (v - bottom) / (top - bottom) * (_BOTTOM - _TOP))

    step = (_RIGHT - _LEFT) / max(len(windows) - 1, 1)
    xs = [round(_LEFT + i * step) if len(windows) > 1 else (_LEFT + _RIGHT) // 2 for i in range(len(windows))]
    known = [(x, e) for x, e in zip(xs, effects, strict=True) if e.value is not None]
    band = " ".join(f"{x},{y(e.high)}" for x, e in known) + " " + " ".join(f"{x},{y(e.low)}" for x, e in reversed(known))
    line = " ".join(f"{x},{y(e.value)}" for x, e in known)
    label = "font-size='12' text-anchor='end'"
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{_HEIGHT}' font-family='sans-serif'>"
        f"<polygon points='{band}' fill='lightsteelblue'/>"
        f"<path d='M{_LEFT} {y(0)}H{_RIGHT}' stroke='black'/>"
        f"<polyline points='{line}' fill='none' stroke='navy' stroke-width='2'/>"
        f"<text x='{_LEFT - 4}' y='{_TOP + 9}' {label}>{format_in_unit(metric, top)}</text>"
        f"<text x='{_LEFT - 4}' y='{y(0) + 4}' {label}>0</text>"
        f"<text x='{_LEFT - 4}' y='{_BOTTOM}' {label}>{format_in_unit(metric, bottom)}</text>"
        f"<text x='{_LEFT}' y='{_HEIGHT - 6}' font-size='12'>{windows[0]}</text>"
        f"<text x='{_RIGHT}' y='{_HEIGHT - 6}' {label}>{windows[-1]}</text></svg>"
    )


def lift_plot_markdown(title: str, metric: str, windows: list, effects: list[EffectInUnit]) -> str:
    """The effect of `metric` (treatment - control, in its unit) at each look with its interval
    [low, high] as a band: a caption and an SVG short enough for the UI to show inline (looks
    thinned out evenly, the last kept, when there are too many)."""
    caption = f"**{markdown_text(title)}**: {METRICS[metric].label}, treatment - control in {unit_of(metric)}, " \
              f"band = its interval; {len(windows)} look(s)\n\n"
    stride = 1
    while True:
        picked = sorted({*range(0, len(windows), stride), len(windows) - 1})
        text = caption + svg_markdown(_lift_svg(metric, [windows[i] for i in picked], [effects[i] for i in picked]), title)
        if len(text) < INLINE_MARKDOWN_LIMIT or len(picked) <= 2:
            return text
        stride += 1
