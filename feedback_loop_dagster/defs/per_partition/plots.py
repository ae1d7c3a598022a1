"""Small PNG plots embedded in materialisation metadata, so the UI shows them without files."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from feedback_loop_dagster.lib.lineage.render import visible_text  # noqa: E402

_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~&")


def markdown_text(text: str) -> str:
    """`text` (a pattern id, a version name) shown literally in markdown: invisible characters as
    escapes, markdown and HTML punctuation backslash-escaped."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in visible_text(text))


def figure_png(figure) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def figure_markdown(figure, title: str) -> str:
    """The figure as a PNG embedded in markdown (closed afterwards), `title` as its alt text."""
    return f"![{markdown_text(title)}](data:image/png;base64,{base64.b64encode(figure_png(figure)).decode()})"


def lift_plot_markdown(title: str, windows: list, lift: list, low: list, high: list) -> str:
    """Relative improvement of the primary metric with its confidence band, one point per look."""
    figure, axis = plt.subplots(figsize=(5.5, 2.6), dpi=80)
    percent = [100 * v if v is not None else float("nan") for v in lift]
    axis.fill_between(windows, [100 * v if v is not None else float("nan") for v in low],
                      [100 * v if v is not None else float("nan") for v in high], alpha=0.25, label="confidence sequence")
    axis.plot(windows, percent, marker="o", label="lift")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_ylabel("improvement (%)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="best")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure_markdown(figure, title)
