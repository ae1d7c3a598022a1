"""A lineage graph as an SVG embedded in markdown (lib/lineage/picture.py draws it)."""

from __future__ import annotations

from feedback_loop_dagster.defs.per_partition.pictures import svg_markdown
from feedback_loop_dagster.lib.lineage import LineageGraph
from feedback_loop_dagster.lib.lineage.picture import lineage_svg


def lineage_picture_markdown(title: str, graph: LineageGraph, max_nodes: int = 30) -> str:
    """`lineage_svg` as a markdown image, `title` as its alt text."""
    return svg_markdown(lineage_svg(title, graph, max_nodes), title)
