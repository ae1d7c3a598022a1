"""Loop health over time as an SVG embedded in markdown (lib/report/health_picture.py draws it)."""

from __future__ import annotations

from collections.abc import Sequence

from feedback_loop_dagster.defs.per_partition.pictures import svg_markdown
from feedback_loop_dagster.lib.report.health import Health
from feedback_loop_dagster.lib.report.health_picture import health_svg


def health_plot_markdown(title: str, series: Sequence[Health]) -> str:
    """`health_svg` as a markdown image, `title` as its alt text."""
    return svg_markdown(health_svg(title, series), title)
