"""A small PNG of a lineage graph, embedded in markdown (the idiom of defs/plots.py)."""

from __future__ import annotations

import base64
import io

from feedback_loop_dagster.defs.plots import plt
from feedback_loop_dagster.lib.lineage import LineageGraph, layered_layout
from feedback_loop_dagster.lib.lineage.render import STATUS_COLOURS, shown_nodes

EVENT_COLOURS = {"promoted_over": "#2e7d32", "rolled_back_to": "#c62828", "replaced_by": "#6a1b9a"}
EVENT_BEND = {"promoted_over": 0.35, "rolled_back_to": -0.35, "replaced_by": 0.55}


def lineage_png_markdown(title: str, graph: LineageGraph, max_nodes: int = 30) -> str:
    """Versions in layers by ancestry depth (time runs left to right), coloured by status;
    ancestry edges grey (merges thick), label moves as coloured arcs."""
    nodes = shown_nodes(graph, max_nodes)
    positions = layered_layout(graph, nodes)
    columns = max((x for x, _ in positions.values()), default=0) + 1
    rows = max((sum(1 for p in positions.values() if p[0] == c) for c in range(int(columns))), default=1)
    figure, axis = plt.subplots(figsize=(min(9.0, 1.6 + 1.1 * columns), min(6.0, 1.4 + 0.55 * rows)), dpi=80)
    for edge in graph.edges:
        if edge.from_id not in positions or edge.to_id not in positions:
            continue
        (x1, y1), (x2, y2) = positions[edge.from_id], positions[edge.to_id]
        if edge.is_ancestry:
            style = dict(arrowstyle="-|>", color="#616161", lw=2.2 if edge.edge_type == "merged_from" else 1.0,
                         linestyle=":" if edge.edge_type == "inspired_by" else "-", shrinkA=14, shrinkB=14)
        else:
            bend = EVENT_BEND[edge.edge_type]
            style = dict(arrowstyle="-|>", color=EVENT_COLOURS[edge.edge_type], lw=1.3, linestyle="--",
                         connectionstyle=f"arc3,rad={bend}", shrinkA=14, shrinkB=14)
            # The label sits near the arc's apex: the chord's midpoint pushed sideways by the bend.
            mx, my = (x1 + x2) / 2 + bend * (y2 - y1) / 2, (y1 + y2) / 2 - bend * (x2 - x1) / 2
            short = {"promoted_over": "promoted", "rolled_back_to": "rolled back", "replaced_by": "replaced"}[edge.edge_type]
            detail = f" p={edge.p_value:.2g}" if edge.p_value is not None else ""
            axis.text(mx, my, short + detail, fontsize=5.5, color=EVENT_COLOURS[edge.edge_type], ha="center", va="center")
        axis.annotate("", xy=(x2, y2), xytext=(x1, y1), arrowprops=style)
    for node in nodes:
        x, y = positions[node.id]
        colour = STATUS_COLOURS[node.status]
        text_colour = "white" if node.status in ("active", "candidate", "rolled_back") else "black"
        axis.text(x, y, node.version, ha="center", va="center", fontsize=7, color=text_colour,
                  bbox=dict(boxstyle="round,pad=0.3", facecolor=colour, edgecolor="#333333"))
    for status, colour in STATUS_COLOURS.items():
        axis.scatter([], [], color=colour, label=status, s=30)
    axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axis.set_xlim(-0.6, columns - 0.4)
    ys = [y for _, y in positions.values()] or [0.0]
    axis.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    axis.axis("off")
    hidden = len(graph) - len(nodes)
    axis.set_title(title + (f" ({len(nodes)} of {len(graph)} versions shown)" if hidden else ""), fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"
