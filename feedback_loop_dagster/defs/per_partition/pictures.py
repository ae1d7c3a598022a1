"""Pictures in materialization metadata as markdown images of inline SVG (lib/svg.py): no files,
and the UI shows them at their natural size in its markdown dialog."""

from __future__ import annotations

from feedback_loop_dagster.defs.per_partition.plots import markdown_text
from feedback_loop_dagster.lib.svg import data_url


def svg_markdown(svg: str, alt: str) -> str:
    """The SVG as a markdown image, `alt` shown literally; the URL in angle brackets may hold blanks."""
    return f"![{markdown_text(alt)}](<{data_url(svg)}>)"
