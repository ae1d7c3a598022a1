"""A lineage graph as an SVG picture, legible at the size the Dagster UI shows it.

The UI shows a markdown image at its natural size in a dialog at most 80% of the window wide
(about 1,250 px on a 1,600 px screen), so names are 16 px (12 pt) and labels 13 px (10 pt), and the
picture is 640-1,400 px wide (wider only when names need it), a column per generation.
"""

from __future__ import annotations

import math

from feedback_loop_dagster.lib import svg
from feedback_loop_dagster.lib.lineage.graph import LineageEdge, LineageGraph
from feedback_loop_dagster.lib.lineage.render import STATUS_COLOURS, layered_layout, shown_nodes, visible_text

EVENT_COLOURS = {"promoted_over": "#2e7d32", "rolled_back_to": "#c62828", "replaced_by": "#6a1b9a"}
# How far a label move bends away from its chord (x the chord's length): arcs of different
# moves between the same two versions stay apart.
EVENT_BEND = {"promoted_over": 0.25, "rolled_back_to": -0.25, "replaced_by": 0.375}
EVENT_NAMES = {"promoted_over": "promoted", "rolled_back_to": "rolled back", "replaced_by": "replaced"}
ANCESTRY_COLOUR = "#616161"
NAME_SIZE, LABEL_SIZE, BOX_HEIGHT, ROW_HEIGHT, TOP, BOTTOM = 16, 13, 32, 90, 44, 44
HALO = ' stroke="white" stroke-width="3" paint-order="stroke"'  # labels stay legible over lines


def _clipped(centre: tuple[float, float], toward: tuple[float, float], half: tuple[float, float]) -> tuple[float, float]:
    """Where the line from `centre` toward `toward` leaves the box of half-size `half`, plus a gap."""
    dx, dy = toward[0] - centre[0], toward[1] - centre[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    t = min(half[0] / abs(ux) if ux else math.inf, half[1] / abs(uy) if uy else math.inf) + 3
    return centre[0] + ux * t, centre[1] + uy * t


def _edge(edge: LineageEdge, start: tuple[float, float], end: tuple[float, float], half_start, half_end) -> tuple[str, str]:
    """(the edge's line, its label): ancestry straight and grey (merges thick, inspirations dotted),
    label moves as dashed coloured arcs labelled at their apex with p-value and lead effect."""
    if edge.is_ancestry:
        a, b = _clipped(start, end, half_start), _clipped(end, start, half_end)
        width, dash = (3.5, None) if edge.edge_type == "merged_from" else (1.7, "2 4" if edge.edge_type == "inspired_by" else None)
        line = svg.path(f"M{a[0]:.1f} {a[1]:.1f}L{b[0]:.1f} {b[1]:.1f}", ANCESTRY_COLOUR, width, dash,
                        extra=f' marker-end="url(#arrow-{ANCESTRY_COLOUR[1:]})"')
        return line, ""
    colour, bend = EVENT_COLOURS[edge.edge_type], EVENT_BEND[edge.edge_type]
    mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
    control = (mx + bend * 2 * (end[1] - start[1]), my - bend * 2 * (end[0] - start[0]))
    a, b = _clipped(start, control, half_start), _clipped(end, control, half_end)
    line = svg.path(f"M{a[0]:.1f} {a[1]:.1f}Q{control[0]:.1f} {control[1]:.1f} {b[0]:.1f} {b[1]:.1f}", colour, 2.2, "7 4",
                    extra=f' marker-end="url(#arrow-{colour[1:]})"')
    apex = (a[0] / 4 + control[0] / 2 + b[0] / 4, a[1] / 4 + control[1] / 2 + b[1] / 4)
    # short lines: a label fits over a narrow column
    lines = [EVENT_NAMES[edge.edge_type], *([f"p={edge.p_value:.2g}"] if edge.p_value is not None else []),
             *([edge.effect_brief] if edge.effect_brief else [])]
    above = apex[1] <= my  # the label sits outside the arc
    first = apex[1] - 6 - (len(lines) - 1) * (LABEL_SIZE + 3) if above else apex[1] + 6 + LABEL_SIZE
    label = "".join(svg.text(apex[0], first + i * (LABEL_SIZE + 3), line_text, LABEL_SIZE, "middle", colour, HALO)
                    for i, line_text in enumerate(lines))
    return line, label


def lineage_svg(title: str, graph: LineageGraph, max_nodes: int = 30) -> str:
    """Versions in columns by ancestry depth (time runs left to right), each a box coloured by its
    status; ancestry edges grey, label moves as coloured arcs; the statuses' legend below."""
    nodes = shown_nodes(graph, max_nodes)
    positions = layered_layout(graph, nodes)
    widths = {n.id: max(44.0, svg.text_width(visible_text(n.version), NAME_SIZE) + 20) for n in nodes}
    columns = int(max((x for x, _ in positions.values()), default=0)) + 1
    # 200 px a generation leaves room for a label move's label; past 1,400 px in all, columns
    # narrow down to their widest name plus an arrow's length.
    column_width = max(min(200.0, 1360 / columns), max(widths.values(), default=0) + 40)
    ys = [y for _, y in positions.values()] or [0.0]
    width = max(640.0, 40 + columns * column_width)
    height = TOP + (max(ys) - min(ys) + 2) * ROW_HEIGHT + BOTTOM
    left = (width - columns * column_width) / 2
    centre = {i: (left + (x + 0.5) * column_width, TOP + (max(ys) + 1 - y) * ROW_HEIGHT) for i, (x, y) in positions.items()}
    half = {i: (widths[i] / 2, BOX_HEIGHT / 2) for i in positions}
    lines, labels = [], []
    for edge in graph.edges:
        if edge.from_id in centre and edge.to_id in centre and edge.from_id != edge.to_id:
            line, label = _edge(edge, centre[edge.from_id], centre[edge.to_id], half[edge.from_id], half[edge.to_id])
            lines.append(line)
            labels.append(label)
    boxes = []
    for node in nodes:
        (x, y), w = centre[node.id], widths[node.id]
        ink = "white" if node.status in ("active", "candidate", "rolled_back") else "black"
        boxes.append(f'<rect x="{x - w / 2:.1f}" y="{y - BOX_HEIGHT / 2:.1f}" width="{w:.1f}" height="{BOX_HEIGHT}" rx="7" '
                     f'fill="{STATUS_COLOURS[node.status]}" stroke="#333333"/>')
        boxes.append(svg.text(x, y + NAME_SIZE * 0.35, visible_text(node.version), NAME_SIZE, "middle", ink))
    hidden = len(graph) - len(nodes)
    heading = visible_text(title) + (f"  ({len(nodes)} of {len(graph)} versions shown)" if hidden else "")
    body = [svg.arrow_markers([ANCESTRY_COLOUR, *EVENT_COLOURS.values()]), svg.text(16, 28, heading, NAME_SIZE),
            *lines, *labels, *boxes, *_legend(width, height - 16)]
    return svg.document(width, height, body)


def _legend(width: float, baseline: float) -> list[str]:
    """A swatch and the name of each status, centred on one line."""
    entries = [(colour, status.replace("_", " ")) for status, colour in STATUS_COLOURS.items()]
    sizes = [18 + svg.text_width(name, LABEL_SIZE) + 18 for _, name in entries]
    x = (width - sum(sizes)) / 2
    parts = []
    for (colour, name), size in zip(entries, sizes, strict=True):
        parts.append(f'<rect x="{x:.1f}" y="{baseline - 11:.1f}" width="13" height="13" fill="{colour}" stroke="#333333"/>')
        parts.append(svg.text(x + 18, baseline, name, LABEL_SIZE))
        x += size
    return parts
