"""Loop health over time as a PNG embedded in markdown, legible at the size the UI shows it (1:1
in the markdown dialog: 900 x 640 px, 10-12 pt text at 100 dpi)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from feedback_loop_dagster.defs.per_partition.plots import figure_markdown, plt
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


def _held(values: Sequence) -> list:
    """Values per window, the last one repeated: a step plot then gives the last window its width."""
    return [*values, values[-1]]


def _percent(values: Sequence[float | None]) -> list[float]:
    return _held([float("nan") if v is None else 100.0 * v for v in values])


def _stack(axis, windows, series: Sequence[Health], layers) -> None:
    """Step areas stacked in the order of `layers`, each window's value held until the next."""
    base = [0] * len(windows)
    for field, label, colour in layers:
        top = [b + v for b, v in zip(base, _held([getattr(h, field) for h in series]), strict=True)]
        axis.fill_between(windows, base, top, step="post", color=colour, label=label, linewidth=0)
        base = top
    axis.set_ylim(0, max(max(base, default=0), 1) * 1.15)


def health_figure(title: str, series: Sequence[Health]):
    """Three panels over the windows of `series`: accuracy and false-positive rate against their
    targets; how the A/B experiments decided so far ended; what is open at each window's end."""
    windows = _held([h.as_of for h in series])
    windows[-1] += timedelta(days=1)
    figure, (rates, outcomes, still_open) = plt.subplots(3, 1, figsize=(9.0, 6.4), dpi=100, sharex=True,
                                                         gridspec_kw={"height_ratios": [1.1, 1.2, 0.9]})
    rates.step(windows, _percent([h.improvement_accuracy for h in series]), where="post", color="#2e7d32",
               linewidth=2, label="improvement accuracy")
    rates.step(windows, _percent([h.false_positive_rate for h in series]), where="post", color="#c62828",
               linewidth=2, label="false-positive rate")
    rates.axhline(100 * ACCURACY_TARGET, color="#2e7d32", linestyle=":", linewidth=1.2, label=f"target > {ACCURACY_TARGET:.0%}")
    rates.axhline(100 * FALSE_POSITIVE_TARGET, color="#c62828", linestyle=":", linewidth=1.2,
                  label=f"target < {FALSE_POSITIVE_TARGET:.0%}")
    rates.set_ylim(-5, 105)
    rates.set_ylabel("% of promotions", fontsize=10)
    _stack(outcomes, windows, series, OUTCOMES)
    outcomes.set_ylabel("A/B verdicts so far", fontsize=10)
    _stack(still_open, windows, series, OPEN)
    still_open.set_ylabel("open", fontsize=10)
    for axis in (rates, outcomes, still_open):
        axis.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        axis.tick_params(labelsize=9)
        axis.grid(axis="y", alpha=0.3)
        axis.yaxis.get_major_locator().set_params(integer=axis is not rates)
    rates.set_title(visible_text(title), fontsize=12, loc="left", parse_math=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def health_plot_markdown(title: str, series: Sequence[Health]) -> str:
    """`health_figure` as a PNG embedded in markdown."""
    return figure_markdown(health_figure(title, series), title)
