"""A lineage graph as a PNG embedded in markdown, legible at the size the Dagster UI shows it.

The UI shows a markdown image at its natural size in a dialog at most 80% of the window wide
(about 1,250 px on a 1,600 px screen), so the picture is drawn at 100 dpi with 11-12 pt text
(about 15 px): 640-1,400 px wide, depending on how many generations the graph has.
"""

from __future__ import annotations

from feedback_loop_dagster.defs.per_partition.plots import figure_markdown, plt
from feedback_loop_dagster.lib.lineage import LineageGraph, layered_layout
from feedback_loop_dagster.lib.lineage.render import STATUS_COLOURS, shown_nodes, visible_text

EVENT_COLOURS = {"promoted_over": "#2e7d32", "rolled_back_to": "#c62828", "replaced_by": "#6a1b9a"}
EVENT_BEND = {"promoted_over": 0.5, "rolled_back_to": -0.5, "replaced_by": 0.75}
EVENT_NAMES = {"promoted_over": "promoted", "rolled_back_to": "rolled back", "replaced_by": "replaced"}
DPI = 100


def _size(columns: int, rows: int) -> tuple[float, float]:
    """Inches: room for a 12 pt version name per column and per row, within 6.4-14 x 3.4-9."""
    return min(14.0, max(6.4, 2.4 + 1.9 * columns)), min(9.0, max(3.4, 2.2 + 0.9 * rows))


def lineage_png_markdown(title: str, graph: LineageGraph, max_nodes: int = 30) -> str:
    """Versions in layers by ancestry depth (time runs left to right), coloured by status;
    ancestry edges grey (merges thick), label moves as coloured arcs with their p-value and
    the lead metric's effect in its unit."""
    nodes = shown_nodes(graph, max_nodes)
    positions = layered_layout(graph, nodes)
    columns = int(max((x for x, _ in positions.values()), default=0)) + 1
    rows = max((sum(1 for p in positions.values() if p[0] == c) for c in range(columns)), default=1)
    figure, axis = plt.subplots(figsize=_size(columns, rows), dpi=DPI)
    labels = []  # (edge, from, to): placed once the layout is final
    for edge in graph.edges:
        if edge.from_id not in positions or edge.to_id not in positions:
            continue
        (x1, y1), (x2, y2) = positions[edge.from_id], positions[edge.to_id]
        if edge.is_ancestry:
            style = dict(arrowstyle="-|>", color="#616161", lw=2.6 if edge.edge_type == "merged_from" else 1.3,
                         linestyle=":" if edge.edge_type == "inspired_by" else "-", shrinkA=22, shrinkB=22,
                         mutation_scale=16)
        else:
            style = dict(arrowstyle="-|>", color=EVENT_COLOURS[edge.edge_type], lw=1.8, linestyle="--",
                         connectionstyle=f"arc3,rad={EVENT_BEND[edge.edge_type]}", shrinkA=22, shrinkB=22,
                         mutation_scale=16)
            labels.append((edge, (x1, y1), (x2, y2)))
        axis.annotate("", xy=(x2, y2), xytext=(x1, y1), arrowprops=style)
    for node in nodes:
        x, y = positions[node.id]
        text_colour = "white" if node.status in ("active", "candidate", "rolled_back") else "black"
        axis.text(x, y, visible_text(node.version), ha="center", va="center", fontsize=12, color=text_colour,
                  parse_math=False, bbox=dict(boxstyle="round,pad=0.4", facecolor=STATUS_COLOURS[node.status],
                                               edgecolor="#333333"))
    for status, colour in STATUS_COLOURS.items():
        axis.scatter([], [], color=colour, label=status.replace("_", " "), s=80, marker="s")
    axis.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(STATUS_COLOURS), frameon=False,
                handletextpad=0.3, columnspacing=1.2)
    axis.set_xlim(-0.6, columns - 0.4)
    ys = [y for _, y in positions.values()] or [0.0]
    axis.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    axis.axis("off")
    hidden = len(graph) - len(nodes)
    axis.set_title(visible_text(title) + (f"  ({len(nodes)} of {len(graph)} versions shown)" if hidden else ""),
                   fontsize=12, loc="left", parse_math=False)
    figure.tight_layout()
    for edge, start, end in labels:
        _event_label(axis, edge, start, end)
    return figure_markdown(figure, title)


def _event_label(axis, edge, start, end) -> None:
    """The label of a label move just outside its arc's apex. matplotlib bends `arc3` in display
    space (control point = chord midpoint + rad x the chord turned by 90 degrees), so the apex,
    halfway to that point, is found there too, then mapped back to data coordinates."""
    (x1, y1), (x2, y2) = axis.transData.transform([start, end])
    bend = EVENT_BEND[edge.edge_type]
    ax, ay = (x1 + x2) / 2 + bend * (y2 - y1) / 2, (y1 + y2) / 2 - bend * (x2 - x1) / 2
    text = EVENT_NAMES[edge.edge_type] + (f", p={edge.p_value:.2g}" if edge.p_value is not None else "")
    text += f"\n{edge.effect_brief}" if edge.effect_brief else ""
    x, y = axis.transData.inverted().transform((ax, ay))
    axis.text(x, y, text, fontsize=10, color=EVENT_COLOURS[edge.edge_type], ha="center",
              va="bottom" if ay >= (y1 + y2) / 2 else "top", parse_math=False)
