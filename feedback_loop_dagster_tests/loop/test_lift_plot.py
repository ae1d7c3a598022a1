"""The lift plot of ab_test_results: short enough for Dagster's UI to show inline, however long the
experiment, with its axis in the metric's unit."""

from __future__ import annotations

import math
from datetime import date, timedelta
from urllib.parse import unquote

from feedback_loop_dagster.defs.per_partition.plots import INLINE_MARKDOWN_LIMIT, lift_plot_markdown
from feedback_loop_dagster.lib.stats.units import EffectInUnit


def test_a_long_experiment_is_thinned_out_to_stay_inline_keeping_its_last_look():
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]
    effects = [EffectInUnit(-0.2 * i, -0.2 * i - 5, -0.2 * i + 5, "pts") for i in range(60)]
    effects[0] = EffectInUnit(1.0, -math.inf, math.inf, "pts")  # an early look's unbounded interval
    text = lift_plot_markdown("#8 watch v2 vs v1", "success", days, effects)
    assert len(text) < INLINE_MARKDOWN_LIMIT
    svg = unquote(text[text.index("data:image/svg+xml,"):])
    assert "2026-01-01" in svg and "2026-03-01" in svg  # first and last look
    assert "pts</text>" in svg and "treatment - control in pts" in text and "60 look(s)" in text


def test_a_latency_plot_is_in_percent():
    effects = [EffectInUnit(-12.0, -15.0, -8.0, "%"), EffectInUnit(-11.0, -13.0, -9.0, "%")]
    text = lift_plot_markdown("#2 ab v2 vs v1", "latency", [date(2026, 1, 1), date(2026, 1, 2)], effects)
    assert "%25%3C/text%3E" in text and "in %" in text  # "-5.3%</text>", escaped in the data URL
